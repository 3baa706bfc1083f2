package protocol

import (
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"sync"
)

// SessionStore holds the live sessions, found by cookie. It is an interface so that a shared store (several
// ocgate instances behind a load balancer) can back it later; the in-memory one serves a single process.
// Implementations are safe for concurrent use.
type SessionStore interface {
	// Add stores a new session under its cookie.
	Add(s *Session)
	// Lookup returns the session whose cookie equals cookie, or nil. The comparison is constant-time.
	Lookup(cookie string) *Session
	// Remove deletes a session; removing one that is absent is a no-op.
	Remove(s *Session)
	// All returns a snapshot of every session.
	All() []*Session
	// CountUser returns the number of sessions of a user.
	CountUser(user string) int
	// UserSessions returns a snapshot of a user's sessions.
	UserSessions(user string) []*Session
	// Len returns the number of sessions.
	Len() int
}

// memoryStore is the in-process SessionStore. Sessions are keyed by the SHA-256 of their cookie, so the map
// lookup's timing says nothing about the cookie itself; the final comparison is constant-time. They are indexed
// by user too: each CONNECT counts its user's sessions (max_same_clients), which must not cost a walk over every
// session of the server.
type memoryStore struct {
	mu       sync.RWMutex
	byCookie map[[sha256.Size]byte]*Session // guarded by mu
	byUser   map[string][]*Session          // guarded by mu: the same sessions, by User
}

// NewMemoryStore returns an empty in-memory session store.
func NewMemoryStore() SessionStore {
	return &memoryStore{byCookie: make(map[[sha256.Size]byte]*Session), byUser: make(map[string][]*Session)}
}

func (m *memoryStore) Add(s *Session) {
	k := sha256.Sum256([]byte(s.cookie))
	m.mu.Lock()
	if old := m.byCookie[k]; old != nil {
		m.dropUser(old)
	}
	m.byCookie[k] = s
	m.byUser[s.User] = append(m.byUser[s.User], s)
	m.mu.Unlock()
}

// dropUser removes s from the user index. Called with mu held.
func (m *memoryStore) dropUser(s *Session) {
	l := m.byUser[s.User]
	if i := slices.Index(l, s); i >= 0 {
		l[i] = l[len(l)-1]
		l[len(l)-1] = nil
		l = l[:len(l)-1]
	}
	if len(l) == 0 {
		delete(m.byUser, s.User)
	} else {
		m.byUser[s.User] = l
	}
}

func (m *memoryStore) Lookup(cookie string) *Session {
	m.mu.RLock()
	s := m.byCookie[sha256.Sum256([]byte(cookie))]
	m.mu.RUnlock()
	if s == nil || subtle.ConstantTimeCompare([]byte(s.cookie), []byte(cookie)) != 1 {
		return nil
	}
	return s
}

func (m *memoryStore) Remove(s *Session) {
	k := sha256.Sum256([]byte(s.cookie))
	m.mu.Lock()
	if m.byCookie[k] == s {
		delete(m.byCookie, k)
		m.dropUser(s)
	}
	m.mu.Unlock()
}

func (m *memoryStore) All() []*Session {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Session, 0, len(m.byCookie))
	for _, s := range m.byCookie {
		out = append(out, s)
	}
	return out
}

func (m *memoryStore) CountUser(user string) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byUser[user])
}

func (m *memoryStore) UserSessions(user string) []*Session {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.byUser[user])
}

func (m *memoryStore) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byCookie)
}
