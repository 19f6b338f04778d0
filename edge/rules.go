package edge

import (
	"bytes"
	"fmt"
	"os"
	"slices"

	"github.com/goccy/go-yaml"

	"github.com/perchhq/perch/internal/wire"
	"github.com/perchhq/perch/internal/yamlsafe"
)

// Access is who may read or write a collection's documents (DESIGN §3).
type Access string

const (
	// AccessPublic: anyone, with or without an access token.
	AccessPublic Access = "public"
	// AccessAuthenticated: any user with a valid access token.
	AccessAuthenticated Access = "authenticated"
	// AccessOwner: the user who created the document. A new document belongs to its
	// creator; lists, sync and change streams show each user only their own.
	AccessOwner Access = "owner"
)

func (a Access) valid() bool {
	return a == AccessPublic || a == AccessAuthenticated || a == AccessOwner
}

// Rule is the access to one collection.
type Rule struct {
	Read  Access `yaml:"read" json:"read"`
	Write Access `yaml:"write" json:"write"`
}

// Rules are the access rules of every collection: Collections by name, Default for the rest.
// The zero value (and nil) is every collection open to everyone, as `perch dev` runs without
// a rules file.
type Rules struct {
	Default     Rule            `yaml:"default" json:"default"`
	Collections map[string]Rule `yaml:"collections" json:"collections"`
}

// OpenRules lets everyone read and write everything.
func OpenRules() *Rules { return &Rules{Default: Rule{Read: AccessPublic, Write: AccessPublic}} }

// DefaultRules are the rules of a production edge without a rules file: any user may read,
// only a document's owner may change it.
func DefaultRules() *Rules {
	return &Rules{Default: Rule{Read: AccessAuthenticated, Write: AccessOwner}}
}

// For returns the rule of a collection. It allocates nothing.
func (r *Rules) For(collection []byte) Rule {
	if r == nil {
		return Rule{Read: AccessPublic, Write: AccessPublic}
	}
	if c, ok := r.Collections[string(collection)]; ok {
		return c
	}
	return r.Default
}

// Open reports whether every collection is open to everyone for reads and writes.
func (r *Rules) Open() bool {
	if r == nil {
		return true
	}
	if r.Default != (Rule{Read: AccessPublic, Write: AccessPublic}) {
		return false
	}
	for _, c := range r.Collections {
		if c != r.Default {
			return false
		}
	}
	return true
}

// Validate reports the first rule that is not public, authenticated or owner, or a
// collection name that is not one.
func (r *Rules) Validate() error {
	check := func(where string, rule Rule) error {
		if !rule.Read.valid() {
			return fmt.Errorf("%s: read %q: want public, authenticated or owner", where, rule.Read)
		}
		if !rule.Write.valid() {
			return fmt.Errorf("%s: write %q: want public, authenticated or owner", where, rule.Write)
		}
		return nil
	}
	if err := check("default", r.Default); err != nil {
		return err
	}
	names := make([]string, 0, len(r.Collections))
	for name := range r.Collections {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !wire.ValidCollection(name) {
			return fmt.Errorf("collections: %q is not a collection name", name)
		}
		if err := check("collections."+name, r.Collections[name]); err != nil {
			return err
		}
	}
	return nil
}

// ParseRules reads a rules file (YAML, so JSON too):
//
//	default: {read: authenticated, write: owner}
//	collections:
//	  notes: {read: owner, write: owner}
//	  posts: {read: public, write: authenticated}
//
// A missing default, or a missing half of it, is DefaultRules' (authenticated read, owner
// write); a collection's rule must give both read and write. Unknown fields are errors, so that a misspelt one does not
// silently open a collection.
func ParseRules(data []byte) (*Rules, error) {
	r := &Rules{Default: DefaultRules().Default}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := yamlsafe.Unmarshal(data, r, yaml.Strict()); err != nil {
			return nil, fmt.Errorf("rules file: %w", err)
		}
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("rules file: %w", err)
	}
	return r, nil
}

// LoadRules reads and parses the rules file at path.
func LoadRules(path string) (*Rules, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseRules(data)
}
