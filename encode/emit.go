package encode

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// appendYAML renders a decoded JSON object, appended to buf, as
// go.yaml.in/yaml/v2's Marshal does, byte for byte (FuzzEmitMatchesYAMLv2 holds it to that), at a
// fraction of the cost: it writes the bytes straight from the tree where
// yaml.v2 builds events, analyses every scalar in a generic emitter and
// sorts keys through reflection. It knows the documents that objects are
// made of: maps with string keys, lists, strings of printable ASCII (on
// several lines as literal blocks), integers, floats, booleans and nulls.
// For anything else (non-ASCII text, a key longer than a simple key may
// be, a merge key, a string yaml.v2 would escape, fold or write with block
// hints) it returns false and the caller uses yaml.v2. What it writes reads
// back as the object it was written from (FuzzEmitMatchesYAMLv2), so
// validate-yaml need not parse it again.
func appendYAML(buf []byte, obj map[string]any) ([]byte, bool) {
	e := emitter{buf: buf}
	if len(obj) == 0 {
		return append(e.buf, "{}\n"...), true
	}
	if !e.mapping(obj, 0, false) {
		return nil, false
	}
	return e.buf, true
}

type emitter struct{ buf []byte }

// mapping writes the keys of a non-empty m at column indent; inline means
// the first key follows a sequence's "- " on the current line.
func (e *emitter) mapping(m map[string]any, indent int, inline bool) bool {
	keys := make(keyList, 0, len(m))
	for k := range m {
		if k == "<<" {
			return false // a merge key: marshalYAML renames it
		}
		for i := 0; i < len(k); i++ {
			if k[i] < 0x20 || k[i] > 0x7e {
				return false // keyLess compares ASCII
			}
		}
		keys = append(keys, k)
	}
	// The algorithm yaml.v2 sorts with, for the same order whatever the
	// map's, where its comparison is an order over these keys.
	sort.Sort(keys)
	if !keys.ordered() {
		return false
	}
	for i, k := range keys {
		if i > 0 || !inline {
			e.indent(indent)
		}
		if len(k) > maxSimpleKey || !e.scalar(k, true, 0) {
			return false
		}
		e.buf = append(e.buf, ':')
		switch v := m[k].(type) {
		case map[string]any:
			if len(v) == 0 {
				e.buf = append(e.buf, " {}\n"...)
			} else {
				e.buf = append(e.buf, '\n')
				if !e.mapping(v, indent+2, false) {
					return false
				}
			}
		case []any:
			if len(v) == 0 {
				e.buf = append(e.buf, " []\n"...)
			} else {
				// A list under a key is not indented: its dashes start
				// in the key's column.
				e.buf = append(e.buf, '\n')
				if !e.sequence(v, indent, false) {
					return false
				}
			}
		default:
			e.buf = append(e.buf, ' ')
			if !e.value(v, indent+2) {
				return false
			}
		}
	}
	return true
}

// sequence writes the items of a non-empty list with their dashes at
// column indent; inline means the first dash follows another's "- ".
func (e *emitter) sequence(list []any, indent int, inline bool) bool {
	for i, item := range list {
		if i > 0 || !inline {
			e.indent(indent)
		}
		e.buf = append(e.buf, '-', ' ')
		switch v := item.(type) {
		case map[string]any:
			if len(v) == 0 {
				e.buf = append(e.buf, "{}\n"...)
			} else if !e.mapping(v, indent+2, true) {
				return false
			}
		case []any:
			if len(v) == 0 {
				e.buf = append(e.buf, "[]\n"...)
			} else if !e.sequence(v, indent+2, true) {
				return false
			}
		default:
			if !e.value(v, indent+2) {
				return false
			}
		}
	}
	return true
}

// foldColumn is yaml.v2's best_width.
const foldColumn = 80

// column is the current line's length so far.
func (e *emitter) column() int {
	for i := len(e.buf) - 1; i >= 0; i-- {
		if e.buf[i] == '\n' {
			return len(e.buf) - 1 - i
		}
	}
	return len(e.buf)
}

func (e *emitter) indent(n int) {
	for range n {
		e.buf = append(e.buf, ' ')
	}
}

// value writes a scalar and ends its line; a literal block's lines are at
// column blockIndent.
func (e *emitter) value(v any, blockIndent int) bool {
	switch t := v.(type) {
	case string:
		if !e.scalar(t, false, blockIndent) {
			return false
		}
	case int64:
		e.buf = strconv.AppendInt(e.buf, t, 10)
	case float64:
		s := strconv.FormatFloat(t, 'g', -1, 64)
		switch s {
		case "+Inf":
			s = ".inf"
		case "-Inf":
			s = "-.inf"
		case "NaN":
			s = ".nan"
		}
		e.buf = append(e.buf, s...)
	case bool:
		e.buf = strconv.AppendBool(e.buf, t)
	case nil:
		e.buf = append(e.buf, "null"...)
	default:
		return false
	}
	if n := len(e.buf); e.buf[n-1] != '\n' {
		e.buf = append(e.buf, '\n')
	}
	return true
}

// maxSimpleKey is the longest key yaml.v2 writes as "key:"; a longer one
// is written as a complex key ("? key").
const maxSimpleKey = 128

// scalar writes a string in the style yaml.v2 picks for it: plain when it
// reads back as the same string and no indicator forbids it, single-quoted
// when only an indicator does, double-quoted when plain would read back as
// another type, a literal block when it has line breaks.
func (e *emitter) scalar(s string, key bool, blockIndent int) bool {
	multiline := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\n':
			multiline = true
		case c < 0x20 || c > 0x7e:
			return false // escaped, or non-ASCII: left to yaml.v2
		}
	}
	if multiline {
		return !key && e.literal(s, blockIndent)
	}
	// yaml.v2 folds a value at a space past column 80 (best_width); such
	// values are left to it.
	if !key && strings.IndexByte(s, ' ') >= 0 && e.column()+len(s)+2 > foldColumn {
		return false
	}
	if !resolvesToString(s) || isBase60Float(s) {
		if strings.ContainsAny(s, `"\`) {
			return false // escaped in double quotes
		}
		e.buf = append(e.buf, '"')
		e.buf = append(e.buf, s...)
		e.buf = append(e.buf, '"')
		return true
	}
	if plainAllowed(s) {
		e.buf = append(e.buf, s...)
		return true
	}
	e.buf = append(e.buf, '\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			e.buf = append(e.buf, '\'')
		}
		e.buf = append(e.buf, s[i])
	}
	e.buf = append(e.buf, '\'')
	return true
}

// literal writes a string with line breaks as a literal block, its lines at
// column indent. Those that need an indentation hint or keep trailing blank
// lines ("|+"), or that yaml.v2 double-quotes instead (a space at the end
// of a line), are left to yaml.v2.
func (e *emitter) literal(s string, indent int) bool {
	n := len(s)
	if s[0] == ' ' || s[0] == '\n' || s[n-1] == ' ' || strings.Contains(s, " \n") {
		return false
	}
	switch {
	case s[n-1] != '\n':
		e.buf = append(e.buf, "|-\n"...)
	case n >= 2 && s[n-2] == '\n':
		return false // "|+"
	default:
		e.buf = append(e.buf, "|\n"...)
	}
	for line := range strings.Lines(s) {
		if line != "\n" {
			e.indent(indent)
		}
		e.buf = append(e.buf, line...)
	}
	return true
}

// plainAllowed is yaml.v2's block_plain_allowed for a one-line string of
// printable ASCII: no leading or trailing space, no indicator at the start,
// no ": " or " #" inside, no document marker.
func plainAllowed(s string) bool {
	n := len(s)
	if s[0] == ' ' || s[n-1] == ' ' || strings.HasPrefix(s, "---") || strings.HasPrefix(s, "...") {
		return false
	}
	blankAfter := func(i int) bool { return i+1 >= n || s[i+1] == ' ' }
	switch s[0] {
	case '#', ',', '[', ']', '{', '}', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`':
		return false
	case '?', ':', '-':
		if blankAfter(0) {
			return false
		}
	}
	for i := 1; i < n; i++ {
		switch s[i] {
		case ':':
			if blankAfter(i) {
				return false
			}
		case '#':
			if s[i-1] == ' ' {
				return false
			}
		}
	}
	return true
}

// resolvesToString is yaml.v2's resolve: whether s, written plain, reads
// back as a string and not as a null, a boolean, a number or a time.
func resolvesToString(s string) bool {
	if s == "" {
		return false
	}
	hint := resolveHint(s[0])
	if hint == 0 {
		return true
	}
	if resolvedWords[s] {
		return false
	}
	switch hint {
	case '.':
		_, err := strconv.ParseFloat(s, 64)
		return err != nil
	case 'D', 'S':
		if isTimestamp(s) {
			return false
		}
		plain := strings.ReplaceAll(s, "_", "")
		if _, err := strconv.ParseInt(plain, 0, 64); err == nil {
			return false
		}
		if _, err := strconv.ParseUint(plain, 0, 64); err == nil {
			return false
		}
		if yamlStyleFloat.MatchString(plain) {
			if _, err := strconv.ParseFloat(plain, 64); err == nil {
				return false
			}
		}
		if bin, ok := strings.CutPrefix(plain, "0b"); ok {
			if _, err := strconv.ParseInt(bin, 2, 64); err == nil {
				return false
			}
			if _, err := strconv.ParseUint(bin, 2, 64); err == nil {
				return false
			}
		} else if bin, ok := strings.CutPrefix(plain, "-0b"); ok {
			if _, err := strconv.ParseInt("-"+bin, 2, 64); err == nil {
				return false
			}
		}
	}
	return true
}

// resolveHint is yaml.v2's resolveTable: what the first byte of a plain
// scalar says it may be.
func resolveHint(c byte) byte {
	switch {
	case c == '+' || c == '-':
		return 'S'
	case c >= '0' && c <= '9':
		return 'D'
	case strings.IndexByte("yYnNtTfFoO~", c) >= 0:
		return 'M'
	case c == '.':
		return '.'
	}
	return 0
}

// resolvedWords are the plain scalars yaml.v2 reads as something else than
// a string by name.
var resolvedWords = func() map[string]bool {
	out := map[string]bool{}
	for _, w := range strings.Fields(`y Y yes Yes YES true True TRUE on On ON n N no No NO false False FALSE off Off OFF
		~ null Null NULL .nan .NaN .NAN .inf .Inf .INF +.inf +.Inf +.INF -.inf -.Inf -.INF <<`) {
		out[w] = true
	}
	return out
}()

var (
	yamlStyleFloat = regexp.MustCompile(`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`)
	base60Float    = regexp.MustCompile(`^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`)
)

// isBase60Float is yaml.v2's: a YAML 1.1 sexagesimal number, which it
// quotes for other parsers' sake.
func isBase60Float(s string) bool {
	if s == "" {
		return false
	}
	c := s[0]
	if c != '+' && c != '-' && (c < '0' || c > '9') || strings.IndexByte(s, ':') < 0 {
		return false
	}
	return base60Float.MatchString(s)
}

// timestampFormats are the times yaml.v2 reads from a plain scalar.
var timestampFormats = []string{
	"2006-1-2T15:4:5.999999999Z07:00",
	"2006-1-2t15:4:5.999999999Z07:00",
	"2006-1-2 15:4:5.999999999",
	"2006-1-2",
}

// isTimestamp is yaml.v2's parseTimestamp: four digits and a dash, then
// one of timestampFormats.
func isTimestamp(s string) bool {
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
	}
	if i != 4 || i == len(s) || s[i] != '-' {
		return false
	}
	for _, f := range timestampFormats {
		if _, err := time.Parse(f, s); err == nil {
			return true
		}
	}
	return false
}

// keyList orders map keys of printable ASCII as yaml.v2's keyList does:
// letters before other characters, and runs of digits by their numeric
// value ("a2" before "a10").
type keyList []string

func (l keyList) Len() int           { return len(l) }
func (l keyList) Swap(i, j int)      { l[i], l[j] = l[j], l[i] }
func (l keyList) Less(i, j int) bool { return keyLess(l[i], l[j]) }

// maxCheckedKeys bounds the keys whose order ordered checks pair by pair;
// a map with more keys that needs the check is left to yaml.v2.
const maxCheckedKeys = 256

// ordered reports whether sorted keys are in an order yaml.v2's
// comparison agrees with pair by pair. Runs of digits with leading zeros
// can make that comparison intransitive ("02A", "007", "0B0"): sorting
// then depends on the map's iteration order, in yaml.v2 as here, and no
// byte-equal answer exists. Only keys holding a '0' can do that.
func (l keyList) ordered() bool {
	zero := false
	for _, k := range l {
		if strings.IndexByte(k, '0') >= 0 {
			zero = true
			break
		}
	}
	if !zero {
		return true
	}
	if len(l) > maxCheckedKeys {
		return false
	}
	for i := range l {
		for j := i + 1; j < len(l); j++ {
			if keyLess(l[j], l[i]) {
				return false
			}
		}
	}
	return true
}

// keyLess is yaml.v2's keyList.Less for two strings of ASCII.
func keyLess(a, b string) bool {
	isLetter := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == b[i] {
			continue
		}
		al, bl := isLetter(a[i]), isLetter(b[i])
		if al && bl {
			return a[i] < b[i]
		}
		if al || bl {
			return bl
		}
		var ai, bi int
		var an, bn int64
		if a[i] == '0' || b[i] == '0' {
			for j := i - 1; j >= 0 && isDigit(a[j]); j-- {
				if a[j] != '0' {
					an, bn = 1, 1
					break
				}
			}
		}
		for ai = i; ai < len(a) && isDigit(a[ai]); ai++ {
			an = an*10 + int64(a[ai]-'0')
		}
		for bi = i; bi < len(b) && isDigit(b[bi]); bi++ {
			bn = bn*10 + int64(b[bi]-'0')
		}
		if an != bn {
			return an < bn
		}
		if ai != bi {
			return ai < bi
		}
		return a[i] < b[i]
	}
	return len(a) < len(b)
}
