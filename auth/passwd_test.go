package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const fixture = `# comment
alice:a,b:$5$IY2iqMyKO96Gnf03$iNftMv6zx.K65a9jiVLZHN4rM9om5pA7MsDK1dNtKq8
bob::$5$saltsaltsaltsalt$X0ra9qlY7TJaGBDgorLevriQfwysW8fXnbybcO4mF4/
carol:ops:$6$saltsaltsaltsalt$ph0yGsyjzqdeFaon7.gJZo8eAG5/rj9/JdzOu1Rl7dKzBYg3xgvl7T2VQ2Rt81bc5AXkdA54r0p8QvC1omD6R1
dave::!$5$saltsaltsaltsalt$X0ra9qlY7TJaGBDgorLevriQfwysW8fXnbybcO4mF4/
`

// alice's line was written by Debian's ocpasswd ("pw"); bob's and carol's by `openssl passwd -5/-6` ("secret").
func TestPlainFileChecks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.passwd")
	os.WriteFile(path, []byte(fixture), 0o600)
	p, err := OpenPlainFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		user, pw string
		groups   []string
		err      error
	}{
		{"alice", "pw", []string{"a", "b"}, nil},
		{"bob", "secret", nil, nil},
		{"carol", "secret", []string{"ops"}, nil},
		{"alice", "wrong", nil, ErrBadCredentials},
		{"nobody", "pw", nil, ErrBadCredentials},
		{"dave", "secret", nil, ErrLocked},
		{"dave", "wrong", nil, ErrBadCredentials},
	}
	for _, tc := range tests {
		id, err := p.CheckPassword(ctx, tc.user, tc.pw)
		if !errors.Is(err, tc.err) || err == nil && strings.Join(id.Groups, ",") != strings.Join(tc.groups, ",") {
			t.Errorf("CheckPassword(%s, %s) = %+v, %v; want groups %v, err %v", tc.user, tc.pw, id, err, tc.groups, tc.err)
		}
	}
}

func TestPlainFileErrorsNameLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.passwd")
	os.WriteFile(path, []byte("ok::$5$saltsaltsaltsalt$X0ra9qlY7TJaGBDgorLevriQfwysW8fXnbybcO4mF4/\nbroken line\n"), 0o600)
	if _, err := OpenPlainFile(path); err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Fatalf("err = %v, want %s:2", err, path)
	}
	os.WriteFile(path, []byte("x::$9$notahash\n"), 0o600)
	if _, err := OpenPlainFile(path); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Fatalf("unsupported hash: err = %v", err)
	}
}

func TestEditPasswordFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.passwd")
	os.WriteFile(path, []byte(fixture), 0o640)
	if err := EditPasswordFile(path, false, PasswdSet, "erin", []string{"g1", "g2"}, "new pw"); err != nil {
		t.Fatal(err)
	}
	if err := EditPasswordFile(path, false, PasswdSet, "bob", nil, "changed"); err != nil {
		t.Fatal(err)
	}
	if err := EditPasswordFile(path, false, PasswdLock, "carol", nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := EditPasswordFile(path, false, PasswdUnlock, "dave", nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := EditPasswordFile(path, false, PasswdDelete, "alice", nil, ""); err != nil {
		t.Fatal(err)
	}
	if err := EditPasswordFile(path, false, PasswdDelete, "nobody", nil, ""); err == nil {
		t.Fatal("deleting a missing user succeeded")
	}
	if err := EditPasswordFile(path, false, PasswdSet, "bad:name", nil, "x"); err == nil {
		t.Fatal("a user name with ':' was accepted")
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# comment\nbob::$5$") || !strings.Contains(string(b), "\ncarol:ops:!$6$saltsaltsaltsalt$ph0y") ||
		!strings.Contains(string(b), "\ndave::$5$saltsaltsaltsalt$X0ra") || !strings.Contains(string(b), "\nerin:g1,g2:$5$") ||
		strings.Contains(string(b), "alice") {
		t.Fatalf("file after edits:\n%s", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640 kept", fi.Mode().Perm())
	}
	p, err := OpenPlainFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for user, pw := range map[string]string{"erin": "new pw", "bob": "changed", "dave": "secret"} {
		if _, err := p.CheckPassword(context.Background(), user, pw); err != nil {
			t.Errorf("%s after edit: %v", user, err)
		}
	}
	if _, err := p.CheckPassword(context.Background(), "carol", "secret"); !errors.Is(err, ErrLocked) {
		t.Errorf("carol after lock: %v", err)
	}
}

func TestPlainFileReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.passwd")
	if err := EditPasswordFile(path, true, PasswdSet, "a", nil, "one"); err != nil {
		t.Fatal(err)
	}
	p, err := OpenPlainFile(path)
	if err != nil {
		t.Fatal(err)
	}
	EditPasswordFile(path, false, PasswdSet, "a", nil, "two-longer")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := p.CheckPassword(context.Background(), "a", "two-longer"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the changed password never took effect")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNewCookie(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		c := NewCookie()
		if len(c) != 43 || strings.ContainsAny(c, "=;+/") || seen[c] {
			t.Fatalf("cookie %q", c)
		}
		seen[c] = true
	}
}
