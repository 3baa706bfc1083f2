package protocol

import (
	"slices"
	"testing"
)

// The user index follows Add and Remove, including a session replaced under the same cookie.
func TestMemoryStoreUserIndex(t *testing.T) {
	m := NewMemoryStore()
	a1 := &Session{User: "alice", cookie: "c1"}
	a2 := &Session{User: "alice", cookie: "c2"}
	b1 := &Session{User: "bob", cookie: "c3"}
	for _, s := range []*Session{a1, a2, b1} {
		m.Add(s)
	}
	check := func(step, user string, want ...*Session) {
		t.Helper()
		got := m.UserSessions(user)
		if len(got) != len(want) || m.CountUser(user) != len(want) {
			t.Fatalf("%s: %s has %d sessions (count %d), want %d", step, user, len(got), m.CountUser(user), len(want))
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Fatalf("%s: %s's sessions lack %p", step, user, w)
			}
		}
	}
	check("added", "alice", a1, a2)
	check("added", "bob", b1)
	m.Remove(a1)
	check("removed", "alice", a2)
	m.Remove(a1) // absent: no-op
	check("removed twice", "alice", a2)
	b2 := &Session{User: "bob", cookie: "c2"} // replaces a2 under its cookie
	m.Add(b2)
	check("replaced", "alice")
	check("replaced", "bob", b1, b2)
	m.Remove(a2) // no longer stored under c2: no-op
	check("stale remove", "bob", b1, b2)
	if m.Len() != 2 {
		t.Fatalf("Len %d, want 2", m.Len())
	}
}
