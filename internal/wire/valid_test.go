package wire

import (
	"encoding/json"
	"strings"
	"testing"
)

// validSeeds are JSON texts and near misses of them, for TestValid and FuzzValid.
var validSeeds = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e+10`, `-12.25E-3`, `true`, `false`, `null`, ` {"a" : [1, 2.0, "x", {"b":null}] } `,
	`{"n":1,"pad":"` + strings.Repeat("x", 850) + `"}`, `"\u00e9\n\t\"\\\/\b\f\r"`, `"é😀"`, "\"\xff\xfe\"", "\"\x7f\"",
	``, ` `, `{`, `}`, `[`, `[1,]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{1:2}`, `{"a":1 "b":2}`, `[1 2]`, `01`, `-`, `1.`, `.5`,
	`1e`, `1e+`, `+1`, `0x1`, `tru`, `truex`, `nul`, `nulll`, `[true false]`, `"\x01"`, "\"\t\"", `"\u12"`, `"\u12g4"`,
	`"\a"`, `"abc`, `"abc\"`, `{"a":1}{"b":2}`, `1 2`, "\ufeff{}", "{}\x00", `[[[]]]`, `{"":{"":{"":[]}}}`,
}

func TestValid(t *testing.T) {
	for _, s := range validSeeds {
		if got, want := Valid([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("Valid(%q) = %v, json.Valid %v", s, got, want)
		}
	}
}

// TestValidNestingLimit: arrays and objects nest as deep as json.Valid lets them, and no
// deeper.
func TestValidNestingLimit(t *testing.T) {
	for _, n := range []int{maxNesting - 1, maxNesting, maxNesting + 1} {
		for _, open := range []string{"[", `{"a":`} {
			closing := "]"
			if open != "[" {
				closing = "}"
			}
			s := []byte(strings.Repeat(open, n) + "1" + strings.Repeat(closing, n))
			if got, want := Valid(s), json.Valid(s); got != want {
				t.Errorf("%d deep %q: Valid %v, json.Valid %v", n, open, got, want)
			}
		}
	}
}

// FuzzValid holds Valid to json.Valid.
func FuzzValid(f *testing.F) {
	for _, s := range validSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := Valid(data), json.Valid(data); got != want {
			t.Fatalf("Valid(%q) = %v, json.Valid %v", data, got, want)
		}
	})
}

// BenchmarkValid compares Valid with json.Valid on a 1 KB document and a small one, in
// alternation within one run: it reports the ns of each and Valid's time as a fraction of
// json.Valid's.
func BenchmarkValid(b *testing.B) {
	docs := [][]byte{[]byte(`{"n":123,"pad":"` + strings.Repeat("x", 850) + `","list":[1,2.5,-3e2,true,null,{"k":"v"}]}`),
		[]byte(`{"n":17,"s":"some text of a small document"}`)}
	check := func(valid func([]byte) bool) func() error {
		return func() error {
			for _, d := range docs {
				if !valid(d) {
					return errInvalid
				}
			}
			return nil
		}
	}
	alternate(b, "json", check(json.Valid), "valid", check(Valid))
}

var errInvalid = errorString("invalid")

type errorString string

func (e errorString) Error() string { return string(e) }
