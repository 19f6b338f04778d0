package edge

import (
	"strings"
	"testing"
)

func TestParseRules(t *testing.T) {
	r, err := ParseRules([]byte(`
default: {read: authenticated, write: owner}
collections:
  notes: {read: owner, write: owner}
  posts: {read: public, write: authenticated}
`))
	if err != nil {
		t.Fatal(err)
	}
	for coll, want := range map[string]Rule{
		"notes": {AccessOwner, AccessOwner}, "posts": {AccessPublic, AccessAuthenticated}, "other": {AccessAuthenticated, AccessOwner},
	} {
		if got := r.For([]byte(coll)); got != want {
			t.Errorf("%s: %+v, want %+v", coll, got, want)
		}
	}
	if r.Open() {
		t.Error("rules with owner collections are not open")
	}
	// JSON works too; a default left out, or half of it, is DefaultRules'.
	j, err := ParseRules([]byte(`{"default":{"read":"public"},"collections":{"posts":{"read":"public","write":"public"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := j.For([]byte("x")); got != (Rule{AccessPublic, AccessOwner}) {
		t.Errorf("half a default: %+v", got)
	}
	if e, err := ParseRules(nil); err != nil || e.For([]byte("x")) != DefaultRules().Default {
		t.Errorf("an empty file: %+v %v", e, err)
	}
	if !OpenRules().Open() || !(*Rules)(nil).Open() || DefaultRules().Open() {
		t.Error("Open")
	}
	for _, bad := range []string{
		`default: {read: everyone, write: owner}`,
		`default: {read: public, writes: owner}`,
		`collections: {notes: {read: owner}}`,
		`collections: {"no/slash": {read: owner, write: owner}}`,
		`rules: []`,
		`default: [public]`,
	} {
		if _, err := ParseRules([]byte(bad)); err == nil || !strings.Contains(err.Error(), "rules file") {
			t.Errorf("%q: %v, want an error", bad, err)
		}
	}
}

// TestRuleLookupDoesNotAllocate: the rule of a request's collection is looked up on every
// request.
func TestRuleLookupDoesNotAllocate(t *testing.T) {
	r := DefaultRules()
	r.Collections = map[string]Rule{"notes": {AccessOwner, AccessOwner}}
	c := []byte("notes")
	if n := testing.AllocsPerRun(100, func() { _ = r.For(c) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
