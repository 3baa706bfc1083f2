package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// PasswdOp is an edit of a password file, one per ocpasswd mode.
type PasswdOp int

const (
	PasswdSet    PasswdOp = iota // add the user or change its password (and its groups, when given)
	PasswdDelete                 // remove the user (ocpasswd -d)
	PasswdLock                   // prefix the hash with '!' (ocpasswd -l)
	PasswdUnlock                 // remove the '!' (ocpasswd -u)
)

// EditPasswordFile applies op to user in the ocpasswd-format file at path, as ocpasswd does.
//
//   - create: create the file (mode 0600) if it is missing; otherwise a missing file is an error.
//   - groups: for PasswdSet, the user's groups; nil keeps those of an existing user (ocpasswd would reset them to
//     "*"), a new user without groups is written as user::hash. Ignored by the other operations.
//   - password: for PasswdSet only; hashed with HashPassword.
//
// Other lines are kept byte for byte. The file is rewritten through FILE.tmp and a rename, so readers see the old
// or the new file, never a partial one; FILE.tmp is created exclusively and doubles as the lock ocpasswd uses, so
// concurrent edits (by ocpasswd too) fail instead of losing one another. The mode (and, as root, the owner) of an
// existing file is kept; a symbolic link is followed and the file it points to is replaced. A file that does not
// parse is not edited (the error names file:line), and deleting, locking or unlocking a missing user is an error.
func EditPasswordFile(path string, create bool, op PasswdOp, user string, groups []string, password string) error {
	if err := validName("user", user); err != nil {
		return err
	}
	if strings.HasPrefix(user, "#") {
		return fmt.Errorf("invalid user name %q: a line starting with '#' is a comment", user)
	}
	if op < PasswdSet || op > PasswdUnlock {
		return fmt.Errorf("unknown password file operation %d", op)
	}
	var hash string
	if op == PasswdSet {
		for _, g := range groups {
			if err := validName("group", g); err != nil {
				return err
			}
			if strings.ContainsRune(g, ',') || g == "*" || strings.TrimSpace(g) != g {
				return fmt.Errorf("invalid group name %q", g)
			}
		}
		var err error
		if hash, err = HashPassword(password); err != nil {
			return err
		}
	}

	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	_, err := os.Stat(path) // existence only: the mode and owner are read again once the lock is held
	exists := err == nil
	switch {
	case exists:
	case errors.Is(err, fs.ErrNotExist) && create:
	default:
		return err
	}

	tmpPath := path + ".tmp"
	tmp, err := os.OpenFile(tmpPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s is locked: %s exists (another edit is running, or one was interrupted: then remove it)", path, tmpPath)
	}
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmpPath)
		}
	}()

	// Read under the lock, so that an edit that finished meanwhile is not lost.
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) && create:
		data, exists = nil, false
	default:
		return err
	}
	if _, err := parsePasswd(path, data); err != nil {
		return err
	}
	out, err := editLines(path, data, op, user, groups, hash)
	if err != nil {
		return err
	}

	if exists {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if err := tmp.Chmod(fi.Mode().Perm()); err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 &&
			(int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid()) {
			if err := tmp.Chown(int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
	}
	if _, err := tmp.Write(out); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return err
	}
	renamed = true
	if d, err := os.Open(filepath.Dir(path)); err == nil { // make the rename durable; best effort
		d.Sync()
		d.Close()
	}
	return nil
}

// editLines returns data with op applied to user's line. Lines are matched as ocpasswd matches them: by the text
// before the first ':'.
func editLines(path string, data []byte, op PasswdOp, user string, groups []string, hash string) ([]byte, error) {
	var out bytes.Buffer
	found := false
	for rest := data; len(rest) > 0; {
		n := bytes.IndexByte(rest, '\n') + 1
		if n == 0 {
			n = len(rest)
		}
		line := rest[:n]
		rest = rest[n:]
		body := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		eol := line[len(body):]
		name, after, ok := strings.Cut(string(body), ":")
		if !ok || name != user {
			out.Write(line)
			continue
		}
		found = true
		groupField, oldHash, _ := strings.Cut(after, ":")
		switch op {
		case PasswdDelete:
			continue
		case PasswdLock:
			if !strings.HasPrefix(oldHash, "!") {
				oldHash = "!" + oldHash
			}
		case PasswdUnlock:
			oldHash = strings.TrimLeft(oldHash, "!")
		case PasswdSet:
			oldHash = hash
			if groups != nil {
				groupField = strings.Join(groups, ",")
			}
		}
		fmt.Fprintf(&out, "%s:%s:%s%s", user, groupField, oldHash, eol)
	}
	if found {
		return out.Bytes(), nil
	}
	if op != PasswdSet {
		return nil, fmt.Errorf("%s: no user %q", path, user)
	}
	if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
		out.WriteByte('\n')
	}
	fmt.Fprintf(&out, "%s:%s:%s\n", user, strings.Join(groups, ","), hash)
	return out.Bytes(), nil
}

// validName rejects what cannot be stored in a user:groups:hash line: empty names, ':' and control characters
// (newlines above all).
func validName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s name", kind)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r == ':' || r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("invalid %s name %q: no ':' or control characters", kind, s)
	}
	return nil
}
