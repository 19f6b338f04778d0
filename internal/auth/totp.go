package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// TOTP parameters (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps, and one step either
// side accepted, the ones every authenticator app uses by default.
const (
	TOTPDigits    = 6
	TOTPPeriod    = 30 * time.Second
	TOTPSecretLen = 20 // bytes: 160 bits, the length RFC 4226 §4 recommends
)

// GenerateTOTPSecret returns a new random TOTP secret of TOTPSecretLen bytes. The store
// keeps it as a secret (it is what the user's authenticator holds).
func GenerateTOTPSecret() []byte {
	s := make([]byte, TOTPSecretLen)
	rand.Read(s)
	return s
}

// TOTPStep is the RFC 6238 time step of t: the number of whole periods since the Unix epoch.
func TOTPStep(t time.Time) int64 {
	u := t.Unix()
	step := u / int64(TOTPPeriod/time.Second)
	if u < 0 && u%int64(TOTPPeriod/time.Second) != 0 {
		step-- // floor, not truncation
	}
	return step
}

// TOTPCode returns the TOTP code of secret at t: TOTPDigits decimal digits.
func TOTPCode(secret []byte, t time.Time) string {
	var buf [TOTPDigits]byte
	return string(hotp(buf[:], secret, uint64(TOTPStep(t))))
}

// hotp writes the RFC 4226 HOTP value of counter as len(dst) decimal digits into dst.
func hotp(dst, secret []byte, counter uint64) []byte {
	mac := hmac.New(sha1.New, secret)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], counter)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
	return dst
}

// VerifyTOTP reports whether code is the TOTP code of secret at t or one step before or after
// (a clock off by up to 30 s, or a code typed as it changed). The comparison takes the same
// time whichever step matches, or none. It does not stop a code from being used twice: a
// caller that records the step of the last code accepted uses VerifyTOTPAfter.
func VerifyTOTP(secret []byte, code string, t time.Time) bool {
	_, ok := VerifyTOTPAfter(secret, code, t, -1<<63)
	return ok
}

// VerifyTOTPAfter is VerifyTOTP that accepts only a step after last, and returns the step that
// matched: the store keeps it per user and passes it as last next time, so that a code cannot
// be replayed once it was accepted (RFC 6238 §5.2). A code that is not TOTPDigits ASCII digits
// is refused at once (its length is no secret).
func VerifyTOTPAfter(secret []byte, code string, t time.Time, last int64) (step int64, ok bool) {
	if len(code) != TOTPDigits {
		return 0, false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return 0, false
		}
	}
	now := TOTPStep(t)
	match := 0
	var buf [TOTPDigits]byte
	for s := now - 1; s <= now+1; s++ {
		eq := subtle.ConstantTimeCompare(hotp(buf[:], secret, uint64(s)), []byte(code))
		if s > last && eq == 1 && match == 0 {
			step, match = s, 1
		}
	}
	return step, match == 1
}

// b32TOTP is the base32 that authenticator apps read secrets in: RFC 4648, no padding.
var b32TOTP = base32.StdEncoding.WithPadding(base32.NoPadding)

// TOTPURI returns the otpauth:// URI (the Key Uri Format of Google Authenticator, which the
// other apps read too) that a QR code gives the user's authenticator:
//
//	otpauth://totp/Issuer:account?secret=BASE32&issuer=Issuer&algorithm=SHA1&digits=6&period=30
//
// issuer names the service and account the user (their email); neither may be empty or hold
// a colon, and both are percent-encoded (spaces as %20, which every app reads). The secret
// must have at least 16 bytes.
func TOTPURI(issuer, account string, secret []byte) (string, error) {
	switch {
	case issuer == "" || account == "" || strings.Contains(issuer, ":") || strings.Contains(account, ":"):
		return "", fmt.Errorf("auth: TOTP issuer and account must be non-empty and without a colon")
	case len(issuer) > 256 || len(account) > 256:
		return "", fmt.Errorf("auth: TOTP issuer and account must be at most 256 bytes")
	case len(secret) < 16:
		return "", fmt.Errorf("auth: TOTP secret of %d bytes, want at least 16", len(secret))
	}
	return "otpauth://totp/" + escape(issuer) + ":" + escape(account) +
		"?secret=" + b32TOTP.EncodeToString(secret) +
		"&issuer=" + escape(issuer) +
		"&algorithm=SHA1&digits=6&period=30", nil
}

// escape percent-encodes every byte of s but RFC 3986's unreserved characters.
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// Recovery codes: one-time codes that stand in for the authenticator when it is lost. Each is
// 80 random bits written as 16 characters of Crockford's base32 (no i, l, o, u), shown in four
// groups: "7k2m-qx9d-0bzt-4wre".
const (
	maxRecoveryCodes   = 100
	recoveryCodeChars  = 16
	recoveryCodeBytes  = 10
	recoveryCodeGroups = 4
)

var b32Recovery = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding) // 16 characters are exactly 80 bits: one encoding per code

// NewRecoveryCodes returns n new recovery codes (1 to 100), to show the user once, and the
// hashes to store for subject (the user's id), in the same order. A code is used once: the
// store deletes the hash MatchRecoveryCode matched, in the transaction that accepts it.
//
// The hash is SHA-256 of the code's 80 bits and the subject: 80 random bits are too many to
// guess even at SHA-256's speed, and binding the subject makes a stolen table a separate
// search per user.
func NewRecoveryCodes(n int, subject string) (codes []string, hashes [][]byte, err error) {
	if n < 1 || n > maxRecoveryCodes {
		return nil, nil, fmt.Errorf("auth: %d recovery codes, want 1 to %d", n, maxRecoveryCodes)
	}
	codes = make([]string, n)
	hashes = make([][]byte, n)
	for i := range codes {
		var raw [recoveryCodeBytes]byte
		rand.Read(raw[:])
		s := b32Recovery.EncodeToString(raw[:])
		var b strings.Builder
		for g := range recoveryCodeGroups {
			if g > 0 {
				b.WriteByte('-')
			}
			b.WriteString(s[g*4 : g*4+4])
		}
		codes[i] = b.String()
		hashes[i] = hashRecovery(subject, raw[:])
	}
	return codes, hashes, nil
}

// HashRecoveryCode returns the stored hash of code for subject. It reads a code as people
// type it: any case, with or without the dashes, spaces ignored, and i, l and o taken for 1,
// 1 and 0. An error wrapping ErrMalformed when what is left is not 16 characters of the code
// alphabet.
func HashRecoveryCode(subject, code string) ([]byte, error) {
	if len(code) > 64 {
		return nil, fmt.Errorf("%w: recovery code too long", ErrMalformed)
	}
	var norm [recoveryCodeChars]byte
	n := 0
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case c == '-' || c == ' ':
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		switch c {
		case 'i', 'l':
			c = '1'
		case 'o':
			c = '0'
		}
		if n == len(norm) {
			return nil, fmt.Errorf("%w: recovery code too long", ErrMalformed)
		}
		norm[n] = c
		n++
	}
	var raw [recoveryCodeBytes]byte
	if n != len(norm) {
		return nil, fmt.Errorf("%w: recovery code too short", ErrMalformed)
	}
	if m, err := b32Recovery.Decode(raw[:], norm[:]); err != nil || m != len(raw) {
		return nil, fmt.Errorf("%w: not a recovery code", ErrMalformed)
	}
	return hashRecovery(subject, raw[:]), nil
}

// MatchRecoveryCode returns the index in hashes of the hash of code for subject, comparing
// with every hash in constant time; ok is false when none matches or code is malformed.
func MatchRecoveryCode(subject, code string, hashes [][]byte) (index int, ok bool) {
	h, err := HashRecoveryCode(subject, code)
	if err != nil {
		return -1, false
	}
	index = -1
	for i, stored := range hashes {
		if subtle.ConstantTimeCompare(h, stored) == 1 && index < 0 {
			index = i
		}
	}
	return index, index >= 0
}

// hashRecovery is SHA-256 over the subject's length, the subject and the code's bits, so that
// no two (subject, code) pairs hash the same input.
func hashRecovery(subject string, raw []byte) []byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(subject)))
	h.Write(n[:])
	h.Write([]byte(subject))
	h.Write(raw)
	return h.Sum(nil)
}
