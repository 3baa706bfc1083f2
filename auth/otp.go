package auth

// One-time passwords from an oath-toolkit users file (ocserv's plain[otp=FILE]), one token a line:
//
//	HOTP/T30   alice  -  3132333435363738393031323334353637383930
//	HOTP       bob    -  HEXKEY  5  755224  2026-01-02T03:04:05L
//
// type (HOTP or HOTP/E: counter based; HOTP/T30, HOTP/T60/8: time based with that step; a last /N is the number of
// digits, 6 by default), user, PIN ("-" or "+": none; otherwise typed before the code), the key in hex, then the
// state liboath writes back after a login: the counter of the last code used, that code and when. A code is
// accepted once: TOTP within one step either side of now and after the last step used, HOTP within hotpWindow
// counters after the last used. The arithmetic (RFC 4226, 6238) is pquerna/otp's.

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
)

const (
	hotpWindow = 20 // counters searched after the last one used (ocserv passes liboath a window of 20)
	totpWindow = 1  // time steps either side of now
)

// ErrReplayed is a one-time password that was already used.
var ErrReplayed = errors.New("one-time password already used")

// otpToken is one line of the users file.
type otpToken struct {
	user    string
	pin     string // "" = none
	key     []byte
	digits  int
	step    time.Duration // 0 = counter based (HOTP)
	counter int64         // the last counter (or time step) used; -1 = none yet
}

// parseOTPLine parses one line; ok is false for blank and comment lines.
func parseOTPLine(line string) (t otpToken, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 || strings.HasPrefix(f[0], "#") {
		return t, false, nil
	}
	if len(f) < 4 {
		return t, false, errors.New("want TYPE USER PIN HEXKEY [COUNTER OTP TIME]")
	}
	t = otpToken{user: f[1], pin: f[2], digits: 6, counter: -1}
	if t.pin == "-" || t.pin == "+" {
		t.pin = ""
	}
	if t.digits, t.step, err = parseOTPType(f[0]); err != nil {
		return t, false, err
	}
	if t.key, err = hex.DecodeString(f[3]); err != nil || len(t.key) == 0 || len(t.key) > 128 {
		return t, false, fmt.Errorf("user %q: the key is not hex", t.user)
	}
	if len(f) >= 5 {
		if t.counter, err = strconv.ParseInt(f[4], 10, 64); err != nil || t.counter < 0 {
			return t, false, fmt.Errorf("user %q: counter %.20q is not a number", t.user, f[4])
		}
	}
	return t, true, nil
}

// parseOTPType parses HOTP, HOTP/E, HOTP/E/8, HOTP/T30, HOTP/T60/8.
func parseOTPType(s string) (digits int, step time.Duration, err error) {
	parts := strings.Split(s, "/")
	if parts[0] != "HOTP" || len(parts) > 3 {
		return 0, 0, fmt.Errorf("token type %.20q: want HOTP, HOTP/E, HOTP/T30 (optionally /DIGITS)", s)
	}
	digits = 6
	rest := parts[1:]
	if len(rest) > 0 {
		switch p := rest[0]; {
		case p == "E":
			rest = rest[1:]
		case strings.HasPrefix(p, "T"):
			n, err := strconv.Atoi(p[1:])
			if err != nil || n <= 0 || n > 3600 {
				return 0, 0, fmt.Errorf("token type %.20q: bad time step", s)
			}
			step = time.Duration(n) * time.Second
			rest = rest[1:]
		}
	}
	if len(rest) > 0 {
		n, err := strconv.Atoi(rest[0])
		if err != nil || n < 6 || n > 8 || len(rest) > 1 {
			return 0, 0, fmt.Errorf("token type %.20q: digits must be 6, 7 or 8", s)
		}
		digits = n
	}
	return digits, step, nil
}

// ParseOTPFile checks a whole users file (config check, the fuzz target); it returns the users it names.
func ParseOTPFile(data []byte) ([]string, error) {
	var users []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		t, ok, err := parseOTPLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if ok {
			users = append(users, t.user)
		}
	}
	return users, sc.Err()
}

// OTPFile verifies one-time passwords against an oath-toolkit users file. The file is read at each check and the
// new state written back (a temporary file renamed over it), so edits apply at once.
type OTPFile struct {
	path string
	now  func() time.Time
}

// otpLocks serialises the checks of one file, even across the OTPFile values a reload creates.
var otpLocks sync.Map // path → *sync.Mutex

// OpenOTPFile checks that path parses and returns its verifier.
func OpenOTPFile(path string) (*OTPFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("otp file: %w", err)
	}
	if _, err := ParseOTPFile(data); err != nil {
		return nil, fmt.Errorf("otp file %s: %w", path, err)
	}
	return &OTPFile{path: path, now: time.Now}, nil
}

// Verify checks user's code and, when it is right, records it as used. A user without a line, a wrong code and a
// replayed one all fail (ErrBadCredentials, ErrReplayed).
func (f *OTPFile) Verify(user, code string) error {
	mu, _ := otpLocks.LoadOrStore(f.path, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("otp file: %w", err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	for i, line := range lines {
		t, ok, err := parseOTPLine(line)
		if err != nil || !ok || t.user != user {
			continue
		}
		now := f.now()
		counter, err := t.match(code, now)
		if err != nil {
			return err
		}
		f2 := strings.Fields(line)[:4]
		lines[i] = fmt.Sprintf("%s %s %s %s %d %s %s\n", f2[0], f2[1], f2[2], f2[3], counter,
			code[len(t.pin):], now.Format("2006-01-02T15:04:05L"))
		return writeAtomic(f.path, []byte(strings.Join(lines, "")))
	}
	return ErrBadCredentials
}

// match returns the counter (or time step) of code.
func (t *otpToken) match(code string, now time.Time) (int64, error) {
	pin, otpCode := code[:min(len(t.pin), len(code))], code[min(len(t.pin), len(code)):]
	if subtle.ConstantTimeCompare([]byte(pin), []byte(t.pin)) != 1 || len(otpCode) != t.digits {
		return 0, ErrBadCredentials
	}
	var lo, hi int64
	if t.step > 0 {
		cur := now.Unix() / int64(t.step/time.Second)
		lo, hi = cur-totpWindow, cur+totpWindow
	} else {
		lo, hi = t.counter, t.counter+hotpWindow // the last one used is found, as a replay
	}
	secret := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(t.key)
	opts := hotp.ValidateOpts{Digits: otp.Digits(t.digits), Algorithm: otp.AlgorithmSHA1}
	for c := max(lo, 0); c <= hi; c++ {
		want, err := hotp.GenerateCodeCustom(secret, uint64(c), opts)
		if err != nil {
			return 0, err
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(otpCode)) == 1 {
			if c <= t.counter {
				return 0, ErrReplayed
			}
			return c, nil
		}
	}
	return 0, ErrBadCredentials
}

// writeAtomic replaces path by data: a temporary file in the same directory, synced, renamed over it, with the
// old file's permissions.
func writeAtomic(path string, data []byte) error {
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("otp file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("otp file: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("otp file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("otp file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("otp file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("otp file: %w", err)
	}
	return nil
}
