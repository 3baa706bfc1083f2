package auth

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/go-crypt/crypt/algorithm/shacrypt"
)

// shaCryptVectors are the test vectors of the specification (also in glibc's and libxcrypt's tests), plus
// libxcrypt's explicit rounds=5000 and PHP's empty salt.
var shaCryptVectors = []struct{ setting, password, want string }{
	{"$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
	{"$5$rounds=5000$saltstring", "Hello world!", "$5$rounds=5000$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
	{"$5$rounds=10000$saltstringsaltstring", "Hello world!", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"},
	{"$5$rounds=5000$toolongsaltstring", "This is just a test", "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"},
	{"$5$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.",
		"$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"},
	{"$5$rounds=77777$short", "we have a short salt string but not a short password", "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/"},
	{"$5$rounds=123456$asaltof16chars..", "a short string", "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD"},
	{"$5$rounds=10$roundstoolow", "the minimum number is still observed", "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"},

	{"$6$saltstring", "Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
	{"$6$rounds=5000$saltstring", "Hello world!", "$6$rounds=5000$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
	{"$6$rounds=10000$saltstringsaltstring", "Hello world!",
		"$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
	{"$6$rounds=5000$toolongsaltstring", "This is just a test",
		"$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
	{"$6$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.",
		"$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"},
	{"$6$rounds=77777$short", "we have a short salt string but not a short password",
		"$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"},
	{"$6$rounds=123456$asaltof16chars..", "a short string",
		"$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"},
	{"$6$rounds=10$roundstoolow", "the minimum number is still observed",
		"$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
	{"$6$$bar$", "foo", "$6$$QMXjqd7rHQZPQ1yHsXkQqC1FBzDiVfTHXL.LaeDAeVV.IzMaV9VU4MQ8kPuZa2SOP1A0RPm772EaFYjpEJtdu."},
}

func TestSHACryptVectors(t *testing.T) {
	for _, v := range shaCryptVectors {
		if got, err := shaCryptString(v.password, v.setting); got != v.want || err != nil {
			t.Errorf("crypt(%q, %q) = %q, %v; want %q", v.password, v.setting, got, err, v.want)
		}
		// crypt(3)'s verification: hashing with the complete hash as the setting gives it back.
		if got, err := shaCryptString(v.password, v.want); got != v.want || err != nil {
			t.Errorf("crypt(%q, %q) = %q, %v; want it back", v.password, v.want, got, err)
		}
		h, ok := parseSHACryptHash(v.want)
		if !ok {
			t.Errorf("parseSHACryptHash(%q) failed", v.want)
			continue
		}
		if !h.Match(v.password) || h.Match(v.password+"!") || h.Match(v.password[:len(v.password)-1]) {
			t.Errorf("%q: Match(right) = %v, Match(wrong) = %v", v.want, h.Match(v.password), h.Match(v.password+"!"))
		}
	}
}

// TestSHACryptMatchesGoCrypt compares with go-crypt, which verified our hashes before, for random passwords of
// 0..200 bytes (every length that is special to steps 9-11 and 16: around multiples of 32 and 64), salts and
// rounds.
func TestSHACryptMatchesGoCrypt(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{'o', 'c', 'g', 'a', 't', 'e'}))
	saltChars := shaCryptAlphabet + ":;!*=,\x00\x7f\xff" // anything but '$' is a salt character
	lengths := []int{0, 1, 2, 3, 31, 32, 33, 63, 64, 65, 95, 96, 97, 127, 128, 129, 191, 192, 193, 200}
	for range 30 {
		lengths = append(lengths, rng.IntN(201))
	}
	for i, n := range lengths {
		for _, variant := range []shacrypt.Opt{shacrypt.WithSHA256(), shacrypt.WithSHA512()} {
			pw := make([]byte, n)
			for j := range pw {
				pw[j] = byte(rng.UintN(256))
			}
			salt := make([]byte, 1+rng.IntN(shaCryptSaltMax))
			for j := range salt {
				salt[j] = saltChars[rng.IntN(len(saltChars))]
			}
			rounds := shaCryptRoundsMin + rng.IntN(1000)
			if i%5 == 0 {
				rounds = shaCryptRoundsDefault // written without rounds=
			}
			hasher, err := shacrypt.New(variant, shacrypt.WithIterations(rounds))
			if err != nil {
				t.Fatal(err)
			}
			d, err := hasher.HashWithSalt(string(pw), salt)
			if err != nil {
				t.Fatal(err)
			}
			want := d.Encode()
			if got, err := shaCryptString(string(pw), want); got != want || err != nil {
				t.Errorf("password %x: got %q, %v; go-crypt %q", pw, got, err, want)
				continue
			}
			h, ok := parseSHACryptHash(want)
			if !ok || !h.Match(string(pw)) || h.Match(string(pw)+"x") {
				t.Errorf("password %x: %q does not verify as it should", pw, want)
			}
		}
	}
}

// TestPasswdVerifiesAsBefore checks that a passwd line verifies exactly as it did with go-crypt alone, including
// $5$/$6$ hashes in forms crypt(3) does not write, which shacrypt.go leaves to go-crypt.
func TestPasswdVerifiesAsBefore(t *testing.T) {
	hashes := map[string]bool{} // hash: whether shacrypt.go should take it
	passwords := map[string]bool{"": true, "secret": true}
	for _, v := range shaCryptVectors {
		hashes[v.want], passwords[v.password] = true, true
	}
	for _, h := range []string{
		"$5$rounds=10$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC",        // the clamped key, unclamped rounds
		"$5$rounds=05000$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",       // leading zero
		"$5$rounds=5000$toolongsaltstring$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5", // untruncated salt
		"$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEcE",                    // bits beyond the key
		"$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc",                     // short key
		"$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5x",                   // long key
		"$5$saltstring$5B8vYYiY_CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",                    // not the alphabet
		"$5$saltstring$",
		"$5$saltstring",
		"$5$rounds=x$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
		"$6$rounds=4294967296$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
		"$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1",
	} {
		hashes[h] = false
	}
	passwords["Hello world!"] = true
	for h, ours := range hashes {
		e, err := parseLine("u::" + h)
		d, derr := decoder.Decode(h)
		if (err == nil) != (derr == nil) {
			t.Errorf("%q: parseLine error %v, go-crypt error %v", h, err, derr)
			continue
		}
		if err != nil {
			continue
		}
		if _, isOurs := e.hash.(*shaCryptHash); isOurs != ours {
			t.Errorf("%q: verified by shacrypt.go: %v, want %v", h, isOurs, ours)
		}
		for pw := range passwords {
			if e.hash.Match(pw) != d.Match(pw) {
				t.Errorf("%q, password %q: Match = %v, go-crypt %v", h, pw, e.hash.Match(pw), d.Match(pw))
			}
		}
	}
}

func TestSHACryptMaxPasswordLen(t *testing.T) {
	long := strings.Repeat("p", MaxPasswordLen)
	s, err := shaCryptString(long, "$6$saltstring")
	if err != nil {
		t.Fatal(err)
	}
	d, err := decoder.Decode(s)
	if err != nil || !d.Match(long) {
		t.Fatalf("go-crypt does not verify our %d-byte password's hash %q: %v", MaxPasswordLen, s, err)
	}
	h, _ := parseSHACryptHash(s)
	if !h.Match(long) || h.Match(long+"p") {
		t.Error("the longest password does not verify, or a longer one does")
	}
	if _, err := shaCryptString(long+"p", "$6$saltstring"); err == nil {
		t.Error("hashed a password longer than MaxPasswordLen")
	}
}

// TestSHACryptAllocs checks that a verify allocates nothing, whatever the rounds: what it needs is pooled. (Under
// the race detector sync.Pool drops a quarter of what it is given, so some verifies allocate the state and the
// hash; over 50 runs that averages well under one.)
func TestSHACryptAllocs(t *testing.T) {
	for _, s := range []string{
		"$5$rounds=1000$saltstring$",
		"$5$rounds=10000$saltstring$",
		"$6$rounds=1000$saltstring$",
		"$6$rounds=10000$saltstring$",
	} {
		hashed, err := shaCryptString("secret", s)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := parseSHACryptHash(hashed)
		h.Match("secret") // fill the pool
		if n := testing.AllocsPerRun(50, func() { h.Match("secret") }); n != 0 {
			t.Errorf("%s: %v allocations per verify", hashed, n)
		}
	}
}

// bob's line in passwd_test.go: what ocpasswd writes ($5$, 16-character salt, 5000 rounds).
const benchHash, benchPassword = "$5$saltsaltsaltsalt$X0ra9qlY7TJaGBDgorLevriQfwysW8fXnbybcO4mF4/", "secret"

func BenchmarkSHACrypt256Verify(b *testing.B) {
	h, ok := parseSHACryptHash(benchHash)
	if !ok {
		b.Fatal("parse failed")
	}
	b.ReportAllocs()
	for b.Loop() {
		if !h.Match(benchPassword) {
			b.Fatal("no match")
		}
	}
}

// BenchmarkSHACrypt256VerifyGoCrypt is the same verify with go-crypt, which did it before shacrypt.go.
func BenchmarkSHACrypt256VerifyGoCrypt(b *testing.B) {
	d, err := decoder.Decode(benchHash)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !d.Match(benchPassword) {
			b.Fatal("no match")
		}
	}
}
