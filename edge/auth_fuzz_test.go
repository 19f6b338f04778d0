package edge

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzBearerToken: any Authorization header is either refused or yields a non-empty token
// without spaces at its ends, taken from the header itself.
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc.def.ghi", "bearer  x", "Bearer ", "Bearer", "Basic dXNlcjpwYXNz", "BEARER\tx", "Bearer a b", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, h []byte) {
		tok, ok := bearerToken(h)
		if !ok {
			if tok != nil {
				t.Fatalf("refused %q but returned %q", h, tok)
			}
			return
		}
		if len(tok) == 0 || tok[0] == ' ' || tok[len(tok)-1] == ' ' || !bytes.Contains(h, tok) {
			t.Fatalf("header %q gave token %q", h, tok)
		}
		if !bytes.EqualFold(h[:6], []byte("bearer")) || h[6] != ' ' {
			t.Fatalf("accepted %q, which is not of the Bearer scheme", h)
		}
	})
}

// FuzzAuthBody: the account routes' bodies decode into their one shape or are refused; what
// decodes encodes back to JSON that decodes the same.
func FuzzAuthBody(f *testing.F) {
	for _, s := range []string{`{"email":"a@example.com","password":"long enough"}`, `{"refresh_token":"x"}`, `{}`,
		`{"email":1}`, `{"email":"a","email":"b"}`, `{"a":1}`, `[]`, `null`, `{"email":"a"} {}`, "{\"email\":\"\\u0000\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c credentialsJSON
		if err := decodeStrict(b, &c); err == nil {
			again, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			var c2 credentialsJSON
			if err := decodeStrict(again, &c2); err != nil || c2 != c {
				t.Fatalf("%q decoded to %+v, which does not round-trip: %+v %v", b, c, c2, err)
			}
		}
		var r refreshJSON
		if err := decodeStrict(b, &r); err == nil {
			again, _ := json.Marshal(r)
			var r2 refreshJSON
			if err := decodeStrict(again, &r2); err != nil || r2 != r {
				t.Fatalf("%q decoded to %+v, which does not round-trip", b, r)
			}
		}
	})
}
