// Package wire reads the API server's JSON as it comes off the wire: watch
// streams split at their newlines and their envelopes taken apart without
// a parse (Serializer), objects decoded in one pass (DecodeObject), and
// lists read item by item without ever being held whole (ReadList, List).
// Each reader is held to the stock decoder of the API machinery by a
// differential test and a fuzzer, and hands anything it does not
// recognise to that decoder.
package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// DecodeObject decodes one JSON object in a single pass into the tree
// the API machinery's JSON decoder (k8s.io/apimachinery/pkg/util/json)
// makes of it: map[string]any and []any, strings, bools, nil, int64 for a
// number without a '.' that fits, float64 for the others. That decoder
// validates the whole input, then decodes it; the unstructured scheme
// scans it once more before, to tell a list from an object. Here every
// byte is read once. ok is false for anything outside plain valid JSON
// (malformed input, a number a float64 cannot hold, nesting past
// maxDepth): the caller then takes the stock path, which gives the error
// or the result. FuzzDecodeObject holds it to the stock decoder.
func DecodeObject(data []byte) (map[string]any, bool) {
	d := jsonDecoder{data: data}
	d.space()
	m, n, ok := decodeObjectPrefix(data[d.off:])
	if !ok {
		return nil, false
	}
	d.off += n
	d.space()
	return m, d.off == len(d.data)
}

// decodeObjectPrefix decodes the object data starts with ('{' first)
// and says how many bytes it took; what follows is not read. ok is false
// as for DecodeObject, and when data ends before the object does.
func decodeObjectPrefix(data []byte) (map[string]any, int, bool) {
	if len(data) == 0 || data[0] != '{' {
		return nil, 0, false
	}
	d := jsonDecoder{data: data}
	m, ok := d.object(0)
	if !ok {
		return nil, 0, false
	}
	return m, d.off, true
}

// maxDepth bounds the nesting the fast path follows; deeper documents go to
// the stock decoder, which has its own limit.
const maxDepth = 1000

type jsonDecoder struct {
	data []byte
	off  int
}

func (d *jsonDecoder) space() {
	for d.off < len(d.data) {
		switch d.data[d.off] {
		case ' ', '\t', '\n', '\r':
			d.off++
		default:
			return
		}
	}
}

// object reads an object whose '{' is at d.off.
func (d *jsonDecoder) object(depth int) (map[string]any, bool) {
	if depth > maxDepth {
		return nil, false
	}
	m := make(map[string]any)
	if d.open('}') {
		return m, true
	}
	for {
		if d.off >= len(d.data) || d.data[d.off] != '"' {
			return nil, false
		}
		k, ok := d.string()
		if !ok {
			return nil, false
		}
		d.space()
		if d.off >= len(d.data) || d.data[d.off] != ':' {
			return nil, false
		}
		d.off++
		d.space()
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		m[k] = v // the last of duplicate keys wins, as in encoding/json
		if more, ok := d.more('}'); !more {
			return m, ok
		}
	}
}

// array reads an array whose '[' is at d.off.
func (d *jsonDecoder) array(depth int) ([]any, bool) {
	if depth > maxDepth {
		return nil, false
	}
	list := make([]any, 0)
	if d.open(']') {
		return list, true
	}
	for {
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		list = append(list, v)
		if more, ok := d.more(']'); !more {
			return list, ok
		}
	}
}

// open steps over an opening bracket and the space after it, and over
// closing when it follows at once (an empty object or array).
func (d *jsonDecoder) open(closing byte) bool {
	d.off++
	d.space()
	if d.off < len(d.data) && d.data[d.off] == closing {
		d.off++
		return true
	}
	return false
}

// more steps over what follows a member: a ',' (more members follow) or
// closing (the last one). ok is false for anything else.
func (d *jsonDecoder) more(closing byte) (more, ok bool) {
	d.space()
	if d.off >= len(d.data) {
		return false, false
	}
	switch d.data[d.off] {
	case ',':
		d.off++
		d.space()
		return true, true
	case closing:
		d.off++
		return false, true
	}
	return false, false
}

// value reads the value at d.off.
func (d *jsonDecoder) value(depth int) (any, bool) {
	if d.off >= len(d.data) {
		return nil, false
	}
	switch c := d.data[d.off]; {
	case c == '{':
		return d.object(depth)
	case c == '[':
		return d.array(depth)
	case c == '"':
		return d.string()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	}
	return nil, false
}

func (d *jsonDecoder) literal(word string) bool {
	if len(d.data)-d.off < len(word) || string(d.data[d.off:d.off+len(word)]) != word {
		return false
	}
	d.off += len(word)
	return true
}

// string reads the string whose opening quote is at d.off. One without
// escapes and of valid UTF-8 is copied as it is; the others are unquoted by
// encoding/json, which the API machinery's decoder is a fork of.
func (d *jsonDecoder) string() (string, bool) {
	start := d.off + 1
	escaped, nonASCII := false, false
	for i := start; i < len(d.data); i++ {
		switch c := d.data[i]; {
		case c == '"':
			d.off = i + 1
			raw := d.data[start:i]
			// encoding/json replaces invalid UTF-8, and unquotes what
			// unescape leaves.
			if !nonASCII || utf8.Valid(raw) {
				if !escaped {
					return string(raw), true
				}
				if s, ok := unescape(raw); ok {
					return s, true
				}
			}
			var s string
			if err := json.Unmarshal(d.data[start-1:i+1], &s); err != nil {
				return "", false
			}
			return s, true
		case c == '\\':
			escaped = true
			i++ // the escaped byte, which may be a quote
		case c < 0x20:
			return "", false
		case c >= 0x80:
			nonASCII = true
		}
	}
	return "", false
}

// unescape is encoding/json's unquote for the escapes objects hold: the
// short ones and \u of a character or a surrogate pair. ok is false for
// anything else (a lone surrogate, a malformed escape), left to
// encoding/json.
func unescape(raw []byte) (string, bool) {
	var out strings.Builder // one allocation, handed over as the string
	out.Grow(len(raw))
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\\')
		if i < 0 {
			out.Write(raw)
			break
		}
		out.Write(raw[:i])
		if raw = raw[i+1:]; len(raw) == 0 {
			return "", false
		}
		n := 1 // bytes of the escape after the backslash
		switch c := raw[0]; c {
		case '"', '\\', '/':
			out.WriteByte(c)
		case 'b':
			out.WriteByte('\b')
		case 'f':
			out.WriteByte('\f')
		case 'n':
			out.WriteByte('\n')
		case 'r':
			out.WriteByte('\r')
		case 't':
			out.WriteByte('\t')
		case 'u':
			r, ok := hex4(raw[1:])
			if !ok {
				return "", false
			}
			n = 5
			if utf16.IsSurrogate(r) {
				if len(raw) < 11 || raw[5] != '\\' || raw[6] != 'u' {
					return "", false
				}
				r2, ok := hex4(raw[7:])
				if !ok {
					return "", false
				}
				if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
					return "", false
				}
				n = 11
			}
			out.WriteRune(r)
		default:
			return "", false
		}
		raw = raw[n:]
	}
	return out.String(), true
}

// hex4 reads the four hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a number as the API machinery's decoder converts it: an
// int64 when it has no '.' and fits, else a float64.
func (d *jsonDecoder) number() (any, bool) {
	start := d.off
	i := d.off
	if i < len(d.data) && d.data[i] == '-' {
		i++
	}
	switch {
	case i < len(d.data) && d.data[i] == '0':
		i++
	case i < len(d.data) && d.data[i] >= '1' && d.data[i] <= '9':
		i = d.digits(i)
	default:
		return nil, false
	}
	fraction := false
	if i < len(d.data) && d.data[i] == '.' {
		fraction = true
		if j := d.digits(i + 1); j > i+1 {
			i = j
		} else {
			return nil, false
		}
	}
	if i < len(d.data) && (d.data[i] == 'e' || d.data[i] == 'E') {
		i++
		if i < len(d.data) && (d.data[i] == '+' || d.data[i] == '-') {
			i++
		}
		if j := d.digits(i); j > i {
			i = j
		} else {
			return nil, false
		}
	}
	d.off = i
	s := string(d.data[start:i])
	if !fraction {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n, true
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil
}

// digits returns the index after the digits from i.
func (d *jsonDecoder) digits(i int) int {
	for i < len(d.data) && d.data[i] >= '0' && d.data[i] <= '9' {
		i++
	}
	return i
}
