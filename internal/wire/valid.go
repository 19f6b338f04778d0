package wire

import "encoding/binary"

// Valid reports whether data is one JSON value, with only whitespace around it, exactly as
// json.Valid does for every input (FuzzValid checks it): the same grammar, bytes of any
// value at or above 0x20 in strings (json.Valid does not check their UTF-8), and the same
// limit of maxNesting arrays and objects inside each other. It is one recursive descent
// over the bytes, where json.Valid steps a state machine through a function call for each
// byte, so it is several times faster on documents (BenchmarkValid); every document on the
// write path is checked more than once on its way.
func Valid(data []byte) bool {
	v := validator{data: data}
	return v.value(0) && v.end()
}

// maxNesting is how deep arrays and objects may nest in a value json.Valid accepts.
const maxNesting = 10000

type validator struct {
	data []byte
	i    int
}

func (v *validator) ws() {
	for v.i < len(v.data) {
		switch v.data[v.i] {
		case ' ', '\t', '\n', '\r':
			v.i++
		default:
			return
		}
	}
}

// end reports whether only whitespace is left.
func (v *validator) end() bool {
	v.ws()
	return v.i == len(v.data)
}

// next skips whitespace and returns the byte after it, or 0 at the end.
func (v *validator) next() byte {
	v.ws()
	if v.i < len(v.data) {
		return v.data[v.i]
	}
	return 0
}

// value reads one value, inside depth arrays and objects.
func (v *validator) value(depth int) bool {
	switch v.next() {
	case '{':
		return v.object(depth + 1)
	case '[':
		return v.array(depth + 1)
	case '"':
		return v.str()
	case 't':
		return v.literal("true")
	case 'f':
		return v.literal("false")
	case 'n':
		return v.literal("null")
	default:
		return v.number()
	}
}

func (v *validator) object(depth int) bool {
	if depth > maxNesting {
		return false
	}
	v.i++ // {
	if v.next() == '}' {
		v.i++
		return true
	}
	for {
		if v.next() != '"' || !v.str() || v.next() != ':' {
			return false
		}
		v.i++
		if !v.value(depth) {
			return false
		}
		switch v.next() {
		case ',':
			v.i++
		case '}':
			v.i++
			return true
		default:
			return false
		}
	}
}

func (v *validator) array(depth int) bool {
	if depth > maxNesting {
		return false
	}
	v.i++ // [
	if v.next() == ']' {
		v.i++
		return true
	}
	for {
		if !v.value(depth) {
			return false
		}
		switch v.next() {
		case ',':
			v.i++
		case ']':
			v.i++
			return true
		default:
			return false
		}
	}
}

// str reads a string, v.i at its opening quote.
func (v *validator) str() bool {
	d := v.data
	for i := v.i + 1; ; i++ {
		i = skipPlain(d, i)
		if i >= len(d) {
			return false
		}
		switch d[i] {
		case '"':
			v.i = i + 1
			return true
		case '\\':
			i++
			if i == len(d) {
				return false
			}
			switch d[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(d) || !isHex(d[i+1]) || !isHex(d[i+2]) || !isHex(d[i+3]) || !isHex(d[i+4]) {
					return false
				}
				i += 4
			default:
				return false
			}
		default:
			return false // a control character
		}
	}
}

// skipPlain returns the index of the first byte from i on that a string cannot hold as it
// is: a quote, a backslash or a control character; len(d) when there is none. It looks at
// eight bytes at a time while none of them is one.
func skipPlain(d []byte, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(d); i += 8 {
		x := binary.LittleEndian.Uint64(d[i:])
		q, b := x^(ones*'"'), x^(ones*'\\')
		// Each term has a high bit set where a byte is below 0x20, a quote or a backslash
		// (and, past such a byte, maybe elsewhere: it only says whether to look closer).
		if (x-ones*0x20)&^x&highs|(q-ones)&^q&highs|(b-ones)&^b&highs != 0 {
			break
		}
	}
	for i < len(d) && d[i] >= 0x20 && d[i] != '"' && d[i] != '\\' {
		i++
	}
	return i
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func (v *validator) literal(lit string) bool {
	if len(v.data)-v.i < len(lit) || string(v.data[v.i:v.i+len(lit)]) != lit {
		return false
	}
	v.i += len(lit)
	return true
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (v *validator) number() bool {
	d, i := v.data, v.i
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		i = digits(d, i+1)
	default:
		return false
	}
	if i < len(d) && d[i] == '.' {
		if j := digits(d, i+1); j > i+1 {
			i = j
		} else {
			return false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := digits(d, i)
		if j == i {
			return false
		}
		i = j
	}
	v.i = i
	return true
}

// digits returns the index of the first byte from i on that is not a decimal digit.
func digits(d []byte, i int) int {
	for i < len(d) && '0' <= d[i] && d[i] <= '9' {
		i++
	}
	return i
}
