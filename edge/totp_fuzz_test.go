package edge

import (
	"encoding/json"
	"testing"
)

// FuzzTOTPBody: the second factor's bodies (a code; an empty enrollment; a login with a code)
// decode into their one shape or are refused; what decodes encodes back to JSON that decodes
// the same, and a code is taken for a TOTP code only when it is six ASCII digits.
func FuzzTOTPBody(f *testing.F) {
	for _, s := range []string{`{"code":"123456"}`, `{"code":"7k2m-qx9d-0bzt-4wre"}`, `{}`, `{"code":1}`, `{"code":"1","code":"2"}`,
		`{"email":"a@example.com","password":"long enough","totp":"123456"}`, `{"email":"a","recovery_code":"x"}`,
		`{"totp":null}`, `[]`, `null`, `{"code":"12345６"}`, "{\"code\":\"\\u0000\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c totpCodeJSON
		if err := decodeStrict(b, &c); err == nil {
			again, _ := json.Marshal(c)
			var c2 totpCodeJSON
			if err := decodeStrict(again, &c2); err != nil || c2 != c {
				t.Fatalf("%q decoded to %+v, which does not round-trip: %+v %v", b, c, c2, err)
			}
			if isTOTPCode(c.Code) {
				if len(c.Code) != 6 {
					t.Fatalf("%q taken for a TOTP code", c.Code)
				}
				for _, r := range []byte(c.Code) {
					if r < '0' || r > '9' {
						t.Fatalf("%q taken for a TOTP code", c.Code)
					}
				}
			}
		}
		var e totpEnrollJSON
		if err := decodeStrict(b, &e); err == nil {
			if again, _ := json.Marshal(e); string(again) != "{}" {
				t.Fatalf("%q decoded to an enrollment that encodes as %s", b, again)
			}
		}
		var l credentialsJSON
		if err := decodeStrict(b, &l); err == nil {
			again, _ := json.Marshal(l)
			var l2 credentialsJSON
			if err := decodeStrict(again, &l2); err != nil || l2 != l {
				t.Fatalf("%q decoded to %+v, which does not round-trip: %+v %v", b, l, l2, err)
			}
		}
	})
}
