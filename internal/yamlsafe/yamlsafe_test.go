package yamlsafe

import (
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// TestTagWhereAListIsExpected: input that makes goccy/go-yaml panic is an error, and good
// input still decodes.
func TestTagWhereAListIsExpected(t *testing.T) {
	var v struct {
		Limits []int `yaml:"limits"`
	}
	for _, in := range []string{"limits: !x 0", "limits: !!str x", "limits: !000000 00000000"} {
		err := Unmarshal([]byte(in), &v, yaml.Strict())
		if err == nil || !strings.Contains(err.Error(), "malformed YAML") {
			t.Errorf("%q: %v", in, err)
		}
	}
	if err := Unmarshal([]byte("limits: [1, 2]"), &v, yaml.Strict()); err != nil || len(v.Limits) != 2 {
		t.Fatalf("good input: %v %v", v.Limits, err)
	}
}
