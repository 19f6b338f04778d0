package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Password length bounds, in bytes. A password is hashed as the bytes it is: the client sends
// UTF-8 and nothing here normalises it.
const (
	// MinPasswordLen is the shortest password HashPassword accepts (NIST SP 800-63B's
	// minimum for a password chosen by its user).
	MinPasswordLen = 8
	// MaxPasswordLen is the longest password that is hashed or verified at all. argon2id
	// first hashes the password with BLAKE2b, so a longer one costs little more to hash,
	// but reading, copying and hashing megabytes per login attempt is a cheap way to load a
	// server: anything longer is refused before any work.
	MaxPasswordLen = 1024
)

// Bounds on argon2id parameters, for hashes made here and for stored hashes read back. They
// keep a hostile or corrupt stored hash from making one verification allocate more than
// maxMemoryKiB or run for more than about a second.
const (
	maxMemoryKiB = 256 * 1024 // 256 MiB
	maxTime      = 16
	maxThreads   = 16
	maxWork      = 1 << 20 // memory × passes, in KiB: 1 GiB of memory traffic
	minSaltLen   = 8
	maxSaltLen   = 64
	minKeyLen    = 16
	maxKeyLen    = 64
	maxPHCLen    = 256
)

// Params are argon2id's cost parameters (RFC 9106). They are written into every hash, so
// that raising them later leaves existing hashes verifiable; VerifyPassword reports a hash
// made with other parameters (needsRehash) so that the caller rehashes the password it has
// just verified.
type Params struct {
	// Memory is the memory cost m, in KiB. At least 8·Threads, at most 256 MiB.
	Memory uint32
	// Time is the number of passes t over the memory, 1 to 16.
	Time uint32
	// Threads is the parallelism p, 1 to 16. Hashing uses that many goroutines; on a
	// server that hashes many passwords at once, 1 gives the best throughput.
	Threads uint8
	// SaltLen is the length of the random salt, 8 to 64 bytes (16 recommended).
	SaltLen uint32
	// KeyLen is the length of the hash, 16 to 64 bytes (32 recommended).
	KeyLen uint32
}

// DefaultParams are the parameters for new hashes: m = 19 MiB, t = 2, p = 1, a 16-byte salt
// and a 32-byte hash. They are OWASP's baseline for argon2id (Password Storage Cheat Sheet),
// equivalent in cost to its other recommended settings. One hash takes 40 to 50 ms of one
// core (README.md has the measured figures) and 19 MiB while it runs, so a two-core core
// worker verifies about 40 logins a second; the caller bounds how many run at once, which
// bounds the memory too.
func DefaultParams() Params {
	return Params{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
}

// Validate reports whether p is within the bounds that this package hashes and verifies
// with (see the fields of Params); the error wraps ErrBadHash.
func (p Params) Validate() error {
	switch {
	case p.Threads < 1 || p.Threads > maxThreads:
		return fmt.Errorf("%w: parallelism %d not in 1..%d", ErrBadHash, p.Threads, maxThreads)
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("%w: %d passes not in 1..%d", ErrBadHash, p.Time, maxTime)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemoryKiB:
		return fmt.Errorf("%w: memory %d KiB not in %d..%d", ErrBadHash, p.Memory, 8*uint32(p.Threads), maxMemoryKiB)
	case uint64(p.Memory)*uint64(p.Time) > maxWork:
		return fmt.Errorf("%w: memory × passes %d KiB over %d", ErrBadHash, uint64(p.Memory)*uint64(p.Time), maxWork)
	case p.SaltLen < minSaltLen || p.SaltLen > maxSaltLen:
		return fmt.Errorf("%w: salt of %d bytes not in %d..%d", ErrBadHash, p.SaltLen, minSaltLen, maxSaltLen)
	case p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("%w: hash of %d bytes not in %d..%d", ErrBadHash, p.KeyLen, minKeyLen, maxKeyLen)
	}
	return nil
}

// HashPassword hashes pw with argon2id under p and a fresh random salt, and returns the PHC
// string to store: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>, salt and hash in base64
// without padding. It refuses a password outside MinPasswordLen..MaxPasswordLen bytes
// (ErrPasswordTooShort, ErrPasswordTooLong) and parameters that p.Validate refuses.
// HashPassword takes as long as one verification: call it under the same concurrency bound.
func HashPassword(pw string, p Params) (string, error) {
	if len(pw) < MinPasswordLen {
		return "", ErrPasswordTooShort
	}
	if len(pw) > MaxPasswordLen {
		return "", ErrPasswordTooLong
	}
	if err := p.Validate(); err != nil {
		return "", err
	}
	salt := make([]byte, p.SaltLen)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return encodePHC(p, salt, key), nil
}

// VerifyPassword reports whether pw is the password encoded was made from, comparing in
// constant time; needsRehash is true when it is and encoded was made with parameters other
// than DefaultParams, so that the caller stores HashPassword(pw, DefaultParams()) in its place.
// It is p.Verify with p = DefaultParams().
func VerifyPassword(encoded, pw string) (ok, needsRehash bool, err error) {
	return DefaultParams().Verify(encoded, pw)
}

// Verify is VerifyPassword with p, the parameters of new hashes, as the reference for
// needsRehash. A wrong password is ok == false with a nil error. The errors: ErrPasswordTooLong
// for a password over MaxPasswordLen bytes (before any hashing), and ErrBadHash when encoded
// is not a canonical argon2id PHC string or its parameters are out of bounds, so that a
// hostile stored hash cannot make verification allocate more than 256 MiB. A password shorter
// than MinPasswordLen is verified like any other (it matches no hash made here).
func (p Params) Verify(encoded, pw string) (ok, needsRehash bool, err error) {
	if len(pw) > MaxPasswordLen {
		return false, false, ErrPasswordTooLong
	}
	h, err := parsePHC(encoded)
	if err != nil {
		return false, false, err
	}
	key := argon2.IDKey([]byte(pw), h.salt, h.params.Time, h.params.Memory, h.params.Threads, h.params.KeyLen)
	if subtle.ConstantTimeCompare(key, h.key) != 1 {
		return false, false, nil
	}
	return true, h.params != p, nil
}

// VerifyDummy does the work of VerifyPassword with DefaultParams for an account that does not
// exist, and throws the result away: a login for an unknown email then takes as long as one
// with a wrong password, and its timing does not tell whether the account exists. A password
// over MaxPasswordLen bytes returns at once, as VerifyPassword does.
func VerifyDummy(pw string) { DefaultParams().VerifyDummy(pw) }

// VerifyDummy is the package's VerifyDummy with p, which should be the parameters of new
// hashes (most accounts' hashes have them). When p is invalid it uses DefaultParams.
func (p Params) VerifyDummy(pw string) {
	if len(pw) > MaxPasswordLen {
		return
	}
	if p.Validate() != nil {
		p = DefaultParams()
	}
	// Parse a hash of the same shape as a real one, so that the dummy costs what a real
	// verification costs, parsing included.
	h, err := parsePHC(encodePHC(p, dummySalt[:p.SaltLen], dummyKey[:p.KeyLen]))
	if err != nil {
		return
	}
	key := argon2.IDKey([]byte(pw), h.salt, h.params.Time, h.params.Memory, h.params.Threads, h.params.KeyLen)
	subtle.ConstantTimeCompare(key, h.key)
}

// dummySalt and dummyKey make the hash VerifyDummy checks against. Their values do not matter.
var (
	dummySalt = [maxSaltLen]byte{'p', 'e', 'r', 'c', 'h'}
	dummyKey  [maxKeyLen]byte
)

// b64PHC is the base64 of PHC strings: the standard alphabet without padding, strict (the
// unused bits of the last character must be zero), so that a hash has one encoding.
var b64PHC = base64.RawStdEncoding.Strict()

// phc is a decoded argon2id PHC string.
type phc struct {
	params Params
	salt   []byte
	key    []byte
}

func encodePHC(p Params, salt, key []byte) string {
	return "$argon2id$v=" + strconv.Itoa(argon2.Version) +
		"$m=" + strconv.FormatUint(uint64(p.Memory), 10) +
		",t=" + strconv.FormatUint(uint64(p.Time), 10) +
		",p=" + strconv.FormatUint(uint64(p.Threads), 10) +
		"$" + b64PHC.EncodeToString(salt) + "$" + b64PHC.EncodeToString(key)
}

// parsePHC decodes the canonical form encodePHC writes, and nothing else: argon2id, version
// 19, the parameters m, t, p in that order as decimals without leading zeros, no optional
// fields. Its parameters must pass Params.Validate. Every error wraps ErrBadHash.
func parsePHC(s string) (phc, error) {
	var h phc
	if len(s) > maxPHCLen {
		return h, fmt.Errorf("%w: %d bytes", ErrBadHash, len(s))
	}
	const prefix = "$argon2id$v=19$"
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return h, fmt.Errorf("%w: not argon2id version 19", ErrBadHash)
	}
	fields := strings.Split(rest, "$")
	if len(fields) != 3 {
		return h, fmt.Errorf("%w: want parameters, salt and hash", ErrBadHash)
	}
	m, rest, err := phcParam(fields[0], "m=", ",", 1<<32-1)
	if err != nil {
		return h, err
	}
	t, rest, err := phcParam(rest, "t=", ",", 1<<32-1)
	if err != nil {
		return h, err
	}
	p, rest, err := phcParam(rest, "p=", "", 255)
	if err != nil {
		return h, err
	}
	if rest != "" {
		return h, fmt.Errorf("%w: unexpected parameters", ErrBadHash)
	}
	// Go's base64 decoders skip CR and LF, even strict ones: a string with them in its salt or
	// hash would decode to the same bytes without being the canonical form.
	if strings.ContainsAny(fields[1], "\r\n") || strings.ContainsAny(fields[2], "\r\n") {
		return h, fmt.Errorf("%w: line break in the salt or hash", ErrBadHash)
	}
	// Check the lengths before decoding, so that nothing is allocated for a hostile one.
	if b64PHC.DecodedLen(len(fields[1])) > maxSaltLen || b64PHC.DecodedLen(len(fields[2])) > maxKeyLen {
		return h, fmt.Errorf("%w: salt or hash too long", ErrBadHash)
	}
	if h.salt, err = b64PHC.DecodeString(fields[1]); err != nil {
		return h, fmt.Errorf("%w: salt: %v", ErrBadHash, err)
	}
	if h.key, err = b64PHC.DecodeString(fields[2]); err != nil {
		return h, fmt.Errorf("%w: hash: %v", ErrBadHash, err)
	}
	h.params = Params{Memory: uint32(m), Time: uint32(t), Threads: uint8(p),
		SaltLen: uint32(len(h.salt)), KeyLen: uint32(len(h.key))}
	if err := h.params.Validate(); err != nil {
		return h, err
	}
	return h, nil
}

// phcParam reads name, a canonical decimal at most limit, and sep (or the end when sep is
// empty) from the start of s, and returns the number and what follows sep.
func phcParam(s, name, sep string, limit uint64) (uint64, string, error) {
	s, ok := strings.CutPrefix(s, name)
	if !ok {
		return 0, "", fmt.Errorf("%w: want %s", ErrBadHash, name)
	}
	digits, rest := s, ""
	if sep != "" {
		if digits, rest, ok = strings.Cut(s, sep); !ok {
			return 0, "", fmt.Errorf("%w: want %q after %s", ErrBadHash, sep, name)
		}
	}
	n, err := parseDecimal(digits, limit)
	if err != nil {
		return 0, "", fmt.Errorf("%w: %s%q: %v", ErrBadHash, name, digits, err)
	}
	return n, rest, nil
}

// parseDecimal parses a canonical non-negative decimal: digits only, no sign, no leading zero
// (except "0" itself), at most limit.
func parseDecimal(s string, limit uint64) (uint64, error) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("not a canonical decimal")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("not a canonical decimal")
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > limit {
		return 0, fmt.Errorf("out of range")
	}
	return n, nil
}
