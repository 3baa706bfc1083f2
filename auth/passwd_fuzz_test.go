package auth

import (
	"strings"
	"testing"
)

// FuzzPasswd: any file parses to users or to an error naming its path and line, never a panic; a file that parses
// and has a user edited (a lock, here) still parses, with that user locked and the others unchanged.
func FuzzPasswd(f *testing.F) {
	f.Add([]byte(fixture))
	f.Add([]byte("alice:*:\n"))
	f.Add([]byte("a:b\n"))
	f.Add([]byte("x:g1, g2 ,*:!!$6$rounds=1000$salt$\r\n#c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := parsePasswd("users.passwd", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "users.passwd:") {
				t.Fatalf("error without the file's name: %v", err)
			}
			return
		}
		for name := range users {
			if validName("user", name) != nil {
				continue // ocgate passwd refuses to edit such names
			}
			out, err := editLines("users.passwd", data, PasswdLock, name, nil, "")
			if err != nil {
				return // an edit the tool refuses (reported to the user)
			}
			again, err := parsePasswd("users.passwd", out)
			if err != nil {
				t.Fatalf("the file no longer parses after locking %q: %v\n%q", name, err, out)
			}
			if !again[name].locked || len(again) != len(users) {
				t.Fatalf("after locking %q: locked=%v, %d users (was %d)", name, again[name].locked, len(again), len(users))
			}
			break
		}
	})
}
