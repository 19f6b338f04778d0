package gossip

import (
	"errors"
	"strings"
	"testing"
)

func TestMetaEncodeDecode(t *testing.T) {
	tests := []struct {
		name    string
		meta    Meta
		wantErr error
	}{
		{"full", Meta{ID: "eu-1", Region: "eu-west", URL: "https://eu1.example.com"}, nil},
		{"ID only", Meta{ID: "x"}, nil},
		{"unicode", Meta{ID: "édge", Region: "ap-south"}, nil},
		{"too large", Meta{ID: "x", URL: strings.Repeat("u", MetaMaxSize)}, ErrMetaTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.meta.encode()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("encode() = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("encode(): %v", err)
			}
			got, err := decodeMeta(b)
			if err != nil || got != tt.meta {
				t.Fatalf("decodeMeta(encode(%+v)) = %+v, %v", tt.meta, got, err)
			}
		})
	}
}

// FuzzDecodeMeta feeds decodeMeta what a peer could send: it must not
// panic, and what it accepts must survive a round trip.
func FuzzDecodeMeta(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","region":"r","url":"http://a"}`,
		`{"id":"a","extra":[1,2,3]}`,
		`{"id":""}`, `null`, `[]`, `"id"`, ``, `{"id":1}`, "{\"id\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if m.ID == "" {
			t.Fatalf("decodeMeta(%q) accepted an empty id", b)
		}
		enc, err := m.encode()
		if err != nil {
			return // e.g. escaping made it longer than the limit
		}
		again, err := decodeMeta(enc)
		if err != nil || again != m {
			t.Fatalf("round trip of %+v gave %+v, %v", m, again, err)
		}
	})
}
