// Package yamlsafe decodes the YAML files that operators and benchmark users write (rules,
// rate limits, load scenarios) with goccy/go-yaml, returning an error where the decoder
// panics. goccy/go-yaml v1.19 panics on some malformed input, such as a tag on a scalar
// where a list is expected (`limits: !x 0`; goccy/go-yaml#735): a file that a running edge
// reloads must not stop it, and one given at start must be a usage error, not a crash.
package yamlsafe

import (
	"fmt"

	"github.com/goccy/go-yaml"
)

// Unmarshal is yaml.UnmarshalWithOptions, with a panic of the decoder returned as an error.
func Unmarshal(data []byte, v any, opts ...yaml.DecodeOption) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed YAML: the decoder failed on it (%v)", r)
		}
	}()
	return yaml.UnmarshalWithOptions(data, v, opts...)
}
