package auth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// The JSON that this package reads from outside (token headers and claims, key sets, stored
// keys) is read strictly: valid UTF-8, exactly one top-level object, and no member name twice
// in an object. encoding/json alone takes the last of two equal names, and two parsers that
// disagree about which one counts are how a signed document comes to mean two things.

// decodeObject reads data as one JSON object, calling member for each member name; member
// reads the value from dec (with readString, readInt, skipValue or dec.Decode). Every error
// wraps ErrMalformed.
func decodeObject(data []byte, member func(name string, dec *json.Decoder) error) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: not UTF-8", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := readObject(dec, member); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the object", ErrMalformed)
	}
	return nil
}

// readObject reads the object that comes next in dec; see decodeObject.
func readObject(dec *json.Decoder, member func(name string, dec *json.Decoder) error) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if tok != json.Delim('{') {
		return fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var seen []string        // the names so far, while there are few
	var many map[string]bool // and then
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		name, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%w: bad member name", ErrMalformed)
		}
		dup := many[name]
		for _, s := range seen {
			dup = dup || s == name
		}
		if dup {
			return fmt.Errorf("%w: member %q twice", ErrMalformed, name)
		}
		if many == nil && len(seen) < 16 {
			seen = append(seen, name)
		} else {
			if many == nil {
				many = make(map[string]bool)
			}
			many[name] = true
		}
		if err := member(name, dec); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// readString reads a JSON string value of at most limit bytes.
func readString(dec *json.Decoder, name string, limit int) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("%w: %s is not a string", ErrMalformed, name)
	}
	if len(s) > limit {
		return "", fmt.Errorf("%w: %s longer than %d bytes", ErrMalformed, name, limit)
	}
	return s, nil
}

// readInt reads a JSON number that is an integer in 0..limit, written without fraction or
// exponent.
func readInt(dec *json.Decoder, name string, limit int64) (int64, error) {
	tok, err := dec.Token()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	n, ok := tok.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%w: %s is not a number", ErrMalformed, name)
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil || v < 0 || v > limit {
		return 0, fmt.Errorf("%w: %s is not an integer in 0..%d", ErrMalformed, name, limit)
	}
	return v, nil
}

// skipValue reads and discards the next value, whatever it is.
func skipValue(dec *json.Decoder) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}
