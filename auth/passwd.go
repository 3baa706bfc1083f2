package auth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-crypt/crypt"
	"github.com/go-crypt/crypt/algorithm/bcrypt"
	"github.com/go-crypt/crypt/algorithm/md5crypt"
	"github.com/go-crypt/crypt/algorithm/shacrypt"
)

// MaxPasswordLen is the longest password accepted, in bytes: libxcrypt's CRYPT_MAX_PASSPHRASE_SIZE, so ocserv (which
// calls crypt(3)) refuses the same passwords. It also bounds the work of SHA-crypt, which grows with the length.
const MaxPasswordLen = 512

// entry is one line of an ocpasswd file: user:group1,group2:hash.
type entry struct {
	user   string
	groups []string
	hash   passwordHash // nil: no password login ('*' hash); emptyHash{}: the empty password (empty hash)
	locked bool
}

// passwordHash is a parsed hash: a *shaCryptHash for $5$ and $6$, a go-crypt algorithm.Digest otherwise. Both
// compare digests with crypto/subtle.
type passwordHash interface {
	Match(password string) bool
}

// decoder knows the crypt(3) formats an ocpasswd file may hold: $5$ (what ocpasswd writes), $6$, $1$ (what
// ocpasswd falls back to) and bcrypt $2a$/$2b$/$2y$ (libxcrypt, e.g. from mkpasswd). Not $y$ (yescrypt): no Go
// implementation in our dependencies; such lines are reported as unsupported. $5$ and $6$ hashes in crypt(3)'s
// own form are verified by shacrypt.go instead (see parseLine); the go-crypt decoder keeps the odd ones.
var decoder = func() *crypt.Decoder {
	d := crypt.NewDecoder()
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(shacrypt.RegisterDecoder(d))
	must(md5crypt.RegisterDecoderCommon(d))
	bc := bcrypt.DecodeVariant(bcrypt.VariantStandard)
	for _, id := range []string{bcrypt.AlgIdentifier, bcrypt.AlgIdentifierVerA, bcrypt.AlgIdentifierVerY} {
		must(d.RegisterDecodeFunc(id, bc))
	}
	return d
}()

// dummyHash is checked for unknown users (and users without a password) so that the answer takes as long as
// for a user with a $5$ hash of the default cost, which is what ocpasswd writes. It is computed on first use, not at
// package init, so that commands that never check a password (config check, passwd) do not pay for it.
var dummyHash = sync.OnceValue(func() *shaCryptHash {
	s, err := HashPassword("no such user")
	if err != nil {
		panic(err)
	}
	h, ok := parseSHACryptHash(s)
	if !ok {
		panic("HashPassword wrote a hash shacrypt.go cannot parse: " + s)
	}
	return h
})

// fileStamp identifies one version of the file. The inode is there because editors replace the file by rename,
// possibly within one modification-time tick and with the same size.
type fileStamp struct {
	modTime time.Time
	size    int64
	inode   uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	s := fileStamp{modTime: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.inode = st.Ino
	}
	return s
}

// PlainFile is a PasswordChecker over an ocpasswd-format file. It re-reads the file when its modification time,
// size or inode changes (checked at most once a second), so `ocgate passwd` edits apply without a restart. A file
// that fails to read or parse on reload keeps the previous contents in force; a file that was removed leaves no
// user able to log in. Reload errors are returned by Reload and passed to the OnReloadError function.
type PlainFile struct {
	path string

	mu        sync.Mutex
	users     map[string]entry // guarded by mu
	loaded    fileStamp        // guarded by mu: the version in users
	failed    *fileStamp       // guarded by mu: the version that last failed to load, already reported
	lastCheck time.Time        // guarded by mu
	onErr     func(error)      // guarded by mu
}

var _ PasswordChecker = (*PlainFile)(nil)

// OpenPlainFile reads an ocpasswd-format file. It fails if the file is missing or malformed; parse errors name the
// file and line.
func OpenPlainFile(path string) (*PlainFile, error) {
	p := &PlainFile{path: path}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// OnReloadError sets a function called once for each version of the file that fails to load during the automatic
// reloads (and for its disappearance). It runs with the PlainFile's lock held and must not call back into it.
func (p *PlainFile) OnReloadError(fn func(error)) {
	p.mu.Lock()
	p.onErr = fn
	p.mu.Unlock()
}

// Reload re-reads the file now if it changed since it was last loaded.
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
		if errors.Is(err, fs.ErrNotExist) && p.users != nil {
			p.users, p.loaded = map[string]entry{}, fileStamp{} // removed on purpose: nobody may log in
		}
		return p.failLocked(fileStamp{}, fmt.Errorf("password file: %w", err))
	}
	st := stampOf(fi)
	if p.users != nil && st == p.loaded {
		return nil
	}
	if !force && p.failed != nil && *p.failed == st {
		return nil // this version was already tried and reported
	}
	data, err := os.ReadFile(p.path)
	if err != nil {
		return p.failLocked(st, fmt.Errorf("password file: %w", err))
	}
	users, err := parsePasswd(p.path, data)
	if err != nil {
		return p.failLocked(st, err)
	}
	p.users, p.loaded, p.failed = users, st, nil
	return nil
}

func (p *PlainFile) failLocked(st fileStamp, err error) error {
	if p.failed == nil || *p.failed != st {
		p.failed = &st
		if p.onErr != nil {
			p.onErr(err)
		}
	}
	return err
}

func parsePasswd(path string, data []byte) (map[string]entry, error) {
	users := make(map[string]entry)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if _, dup := users[e.user]; dup {
			// ocserv would use the first line; an edit meant for the second would silently do nothing.
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
	e := entry{user: parts[0], groups: splitGroups(parts[1])}
	hash := strings.TrimLeft(parts[2], "!") // ocpasswd -l adds one '!' per call
	e.locked = len(hash) != len(parts[2])
	if hash == "" {
		e.hash = emptyHash{} // ocserv lets such a user in with an empty password
		return e, nil
	}
	if strings.HasPrefix(hash, "*") {
		return e, nil // no password login, as /etc/shadow's '*'
	}
	if h, ok := parseSHACryptHash(hash); ok {
		e.hash = h
		return e, nil
	}
	// Everything else goes to go-crypt, including $5$ and $6$ hashes not in the form crypt(3) writes: rounds
	// out of range or with leading zeros, salts over 16 characters. go-crypt neither clamps nor truncates those
	// as crypt(3) does, so keeping it for them keeps such lines verifying exactly as they did.
	d, err := decoder.Decode(hash)
	if err != nil {
		return entry{}, fmt.Errorf("user %q: unsupported or malformed password hash (want $5$, $6$, $1$ or $2b$ crypt)", e.user)
	}
	e.hash = d
	return e, nil
}

// emptyHash is an empty hash field (`user:group:`), which only the empty password matches.
type emptyHash struct{}

func (emptyHash) Match(password string) bool {
	dummyHash().Match(password) // the same work as for any user
	return password == ""
}

// splitGroups splits the group field as ocserv does: comma-separated, spaces around names ignored. "*" is what
// ocpasswd writes when no group was given; it is not a group.
func splitGroups(field string) []string {
	var groups []string
	for g := range strings.SplitSeq(field, ",") {
		if g = strings.TrimSpace(g); g != "" && g != "*" {
			groups = append(groups, g)
		}
	}
	return groups
}

// CheckPassword verifies user's password. Unknown users, users without a password and wrong passwords all give
// ErrBadCredentials after the same kind of hash computation; a locked user gives ErrLocked, and only when the
// password was right.
func (p *PlainFile) CheckPassword(ctx context.Context, user, password string) (Identity, error) {
	if err := ctx.Err(); err != nil {
		return Identity{}, err
	}
	p.mu.Lock()
	_ = p.reloadLocked(false) // on failure the previous contents stay in force; reported through OnReloadError
	e, ok := p.users[user]
	p.mu.Unlock()
	if len(password) > MaxPasswordLen {
		dummyHash().Match(password[:MaxPasswordLen])
		return Identity{}, ErrBadCredentials
	}
	if !ok || e.hash == nil {
		dummyHash().Match(password)
		return Identity{}, ErrBadCredentials
	}
	if !e.hash.Match(password) {
		return Identity{}, ErrBadCredentials
	}
	if e.locked {
		return Identity{}, ErrLocked
	}
	return e.identity(), nil
}

// Lookup returns a user's identity (name and groups) without checking a password, for methods that authenticate
// the user otherwise (certificates). Locked users are not found; users without a password are.
func (p *PlainFile) Lookup(user string) (Identity, bool) {
	p.mu.Lock()
	_ = p.reloadLocked(false)
	e, ok := p.users[user]
	p.mu.Unlock()
	if !ok || e.locked {
		return Identity{}, false
	}
	return e.identity(), true
}

// Groups returns every group the file names, sorted (auto_select_group offers them).
func (p *PlainFile) Groups() []string {
	p.mu.Lock()
	_ = p.reloadLocked(false)
	var out []string
	for _, e := range p.users {
		for _, g := range e.groups {
			if !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	p.mu.Unlock()
	slices.Sort(out)
	return out
}

func (e entry) identity() Identity {
	return Identity{User: e.user, Groups: append([]string(nil), e.groups...)}
}

// HashPassword returns a $5$ SHA-256-crypt hash with a 16-character random salt and the default 5000 rounds (not
// written out), as ocpasswd writes.
func HashPassword(password string) (string, error) {
	if len(password) > MaxPasswordLen {
		return "", fmt.Errorf("password longer than %d bytes", MaxPasswordLen)
	}
	if strings.IndexByte(password, 0) >= 0 {
		return "", errors.New("password contains a NUL byte, which crypt(3) cannot hash")
	}
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
