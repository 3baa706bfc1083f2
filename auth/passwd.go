// Package auth holds the authenticators (password files so far), cookie minting and related checks. It is pure
// logic behind small interfaces and never talks to clients.
package auth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-crypt/crypt"
	"github.com/go-crypt/crypt/algorithm"
	"github.com/go-crypt/crypt/algorithm/md5crypt"
	"github.com/go-crypt/crypt/algorithm/shacrypt"
)

// Identity is an authenticated user.
type Identity struct {
	User   string
	Groups []string
}

var (
	// ErrBadCredentials is returned for an unknown user or a wrong password (the two are not told apart).
	ErrBadCredentials = errors.New("wrong user name or password")
	// ErrLocked is returned for a locked account (hash prefixed with '!').
	ErrLocked = errors.New("account locked")
)

// PasswordChecker verifies a user's password. It is the seam that privilege separation will put behind a local
// socket, so it takes and returns plain values only.
type PasswordChecker interface {
	CheckPassword(ctx context.Context, user, password string) (Identity, error)
}

// entry is one line of an ocpasswd file: user:group1,group2:hash.
type entry struct {
	user   string
	groups []string
	hash   string // without the lock mark
	locked bool
}

// decoder knows the crypt(3) formats ocpasswd files hold: $5$ (what ocpasswd writes), $6$ and legacy $1$.
var decoder = func() *crypt.Decoder {
	d := crypt.NewDecoder()
	if err := shacrypt.RegisterDecoder(d); err != nil {
		panic(err)
	}
	if err := md5crypt.RegisterDecoder(d); err != nil {
		panic(err)
	}
	return d
}()

// dummyDigest is checked for unknown users so that the answer takes as long as for a known one.
var dummyDigest = func() algorithm.Digest {
	h, err := HashPassword("no such user")
	if err == nil {
		var d algorithm.Digest
		if d, err = decoder.Decode(h); err == nil {
			return d
		}
	}
	panic(err)
}()

// PlainFile is a PasswordChecker over an ocpasswd-format file. It re-reads the file when its modification time or
// size changes (checked at most once a second), so `ocgate passwd` edits apply without a restart. A file that fails
// to parse on reload keeps the previous contents; the error is returned by Reload.
type PlainFile struct {
	path string

	mu        sync.Mutex
	users     map[string]entry // guarded by mu
	modTime   time.Time        // guarded by mu
	size      int64            // guarded by mu
	inode     uint64           // guarded by mu: editors replace the file by rename, often within one mtime tick
	lastCheck time.Time        // guarded by mu
	digests   map[string]algorithm.Digest
}

// OpenPlainFile reads an ocpasswd-format file. Errors name the file and line.
func OpenPlainFile(path string) (*PlainFile, error) {
	p := &PlainFile{path: path}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload re-reads the file if it changed.
func (p *PlainFile) Reload() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reloadLocked(true)
}

func (p *PlainFile) reloadLocked(force bool) error {
	now := time.Now()
	if !force && now.Sub(p.lastCheck) < time.Second {
		return nil
	}
	p.lastCheck = now
	fi, err := os.Stat(p.path)
	if err != nil {
		return fmt.Errorf("password file: %w", err)
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	if p.users != nil && fi.ModTime().Equal(p.modTime) && fi.Size() == p.size && ino == p.inode {
		return nil
	}
	data, err := os.ReadFile(p.path)
	if err != nil {
		return fmt.Errorf("password file: %w", err)
	}
	users, err := parsePasswd(p.path, data)
	if err != nil {
		return err
	}
	p.users, p.modTime, p.size, p.inode = users, fi.ModTime(), fi.Size(), ino
	p.digests = make(map[string]algorithm.Digest)
	return nil
}

func parsePasswd(path string, data []byte) (map[string]entry, error) {
	users := make(map[string]entry)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if _, dup := users[e.user]; dup {
			return nil, fmt.Errorf("%s:%d: user %q appears twice", path, n, e.user)
		}
		users[e.user] = e
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return users, nil
}

func parseLine(line string) (entry, error) {
	parts := strings.SplitN(line, ":", 3)
	if len(parts) != 3 || parts[0] == "" {
		return entry{}, errors.New("want user:groups:hash")
	}
	e := entry{user: parts[0], hash: parts[2]}
	if parts[1] != "" && parts[1] != "*" {
		for g := range strings.SplitSeq(parts[1], ",") {
			if g = strings.TrimSpace(g); g != "" {
				e.groups = append(e.groups, g)
			}
		}
	}
	if h, ok := strings.CutPrefix(e.hash, "!"); ok {
		e.locked, e.hash = true, h
	}
	if e.hash != "" {
		if _, err := decoder.Decode(e.hash); err != nil {
			return entry{}, fmt.Errorf("user %q: unsupported or malformed password hash (want $5$, $6$ or $1$ crypt)", e.user)
		}
	}
	return e, nil
}

// CheckPassword verifies user's password. Unknown users and wrong passwords both give ErrBadCredentials after the
// same amount of work; a locked user gives ErrLocked only when the password was right.
func (p *PlainFile) CheckPassword(ctx context.Context, user, password string) (Identity, error) {
	p.mu.Lock()
	reloadErr := p.reloadLocked(false)
	e, ok := p.users[user]
	var d algorithm.Digest
	if ok && e.hash != "" {
		d = p.digests[e.hash]
		if d == nil {
			d, _ = decoder.Decode(e.hash) // validated when the file was parsed
			p.digests[e.hash] = d
		}
	}
	p.mu.Unlock()
	_ = reloadErr // the previous contents stay in force; the caller sees reload errors through Reload
	if err := ctx.Err(); err != nil {
		return Identity{}, err
	}
	if d == nil {
		dummyDigest.Match(password)
		return Identity{}, ErrBadCredentials
	}
	if !d.Match(password) { // the library compares digests in constant time
		return Identity{}, ErrBadCredentials
	}
	if e.locked {
		return Identity{}, ErrLocked
	}
	return Identity{User: e.user, Groups: append([]string(nil), e.groups...)}, nil
}

// Lookup returns a user's identity (groups) without checking a password.
func (p *PlainFile) Lookup(user string) (Identity, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reloadLocked(false)
	e, ok := p.users[user]
	if !ok {
		return Identity{}, false
	}
	return Identity{User: e.user, Groups: append([]string(nil), e.groups...)}, true
}

// HashPassword returns a $5$ SHA-256-crypt hash with a 16-character random salt and the default 5000 rounds, as
// ocpasswd writes.
func HashPassword(password string) (string, error) {
	h, err := shacrypt.New(shacrypt.WithSHA256(), shacrypt.WithIterations(shacrypt.IterationsDefaultOmitted), shacrypt.WithSaltLength(16))
	if err != nil {
		return "", err
	}
	d, err := h.Hash(password)
	if err != nil {
		return "", err
	}
	return d.Encode(), nil
}

// PasswdOp is an edit of a password file.
type PasswdOp int

const (
	PasswdSet    PasswdOp = iota // add the user or change its password (and groups, when given)
	PasswdDelete                 // remove the user
	PasswdLock                   // prefix the hash with '!'
	PasswdUnlock                 // remove the '!'
)

// EditPasswordFile applies op to user in the ocpasswd-format file at path, as ocpasswd does. Other lines are kept
// byte for byte; the file is replaced atomically. With create, a missing file is created (mode 0600). groups nil
// keeps the user's groups.
func EditPasswordFile(path string, create bool, op PasswdOp, user string, groups []string, password string) error {
	if user == "" || strings.ContainsAny(user, ":\n\r") {
		return fmt.Errorf("invalid user name %q", user)
	}
	for _, g := range groups {
		if g == "" || strings.ContainsAny(g, ":,\n\r") {
			return fmt.Errorf("invalid group name %q", g)
		}
	}
	data, err := os.ReadFile(path)
	mode := os.FileMode(0o600)
	switch {
	case err == nil:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
		}
	case errors.Is(err, os.ErrNotExist) && (create || op == PasswdSet):
		data = nil
	default:
		return err
	}
	if _, err := parsePasswd(path, data); err != nil {
		return err
	}
	var out bytes.Buffer
	found := false
	for line := range strings.SplitAfterSeq(string(data), "\n") {
		if line == "" {
			continue
		}
		name, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ":")
		if name != user {
			out.WriteString(line)
			if !strings.HasSuffix(line, "\n") {
				out.WriteString("\n")
			}
			continue
		}
		found = true
		oldGroups, hash, _ := strings.Cut(rest, ":")
		switch op {
		case PasswdDelete:
			continue
		case PasswdLock:
			if !strings.HasPrefix(hash, "!") {
				hash = "!" + hash
			}
		case PasswdUnlock:
			hash = strings.TrimPrefix(hash, "!")
		case PasswdSet:
			if hash, err = HashPassword(password); err != nil {
				return err
			}
			if groups != nil {
				oldGroups = strings.Join(groups, ",")
			}
		}
		fmt.Fprintf(&out, "%s:%s:%s\n", user, oldGroups, hash)
	}
	if !found {
		if op != PasswdSet {
			return fmt.Errorf("%s: no user %q", path, user)
		}
		hash, err := HashPassword(password)
		if err != nil {
			return err
		}
		fmt.Fprintf(&out, "%s:%s:%s\n", user, strings.Join(groups, ","), hash)
	}
	return writeAtomic(path, out.Bytes(), mode)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
