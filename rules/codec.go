package rules

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	"github.com/vmihailenco/msgpack/v5"
)

// Formats a payload can be read from and written to.
const (
	fmtJSON    = "json"
	fmtCBOR    = "cbor"
	fmtMsgpack = "msgpack"
	fmtBase64  = "base64"
	fmtHex     = "hex"
	fmtText    = "text"
)

// structured reports whether f is a format of values (not of bytes).
func structured(f string) bool { return f == fmtJSON || f == fmtCBOR || f == fmtMsgpack }

// contentType is the MQTT 5 content type set on messages written in f.
func contentType(f string) string {
	switch f {
	case fmtJSON:
		return "application/json"
	case fmtCBOR:
		return "application/cbor"
	case fmtMsgpack:
		return "application/msgpack"
	case fmtText, fmtBase64, fmtHex:
		return "text/plain"
	}
	return ""
}

// Values decoded from any format have one shape, so that converting between
// formats keeps them: objects are map[string]any, arrays []any, integers
// int64 (uint64 above MaxInt64), other numbers float64, plus string, bool,
// nil and []byte (CBOR and MessagePack byte strings).

// decodeJSON parses one JSON value. Numbers that are integers and fit
// int64/uint64 become integers, so large ids survive a round trip.
func decodeJSON(b []byte) (any, error) { return parseJSON(b) }

// decodeJSONStd is decodeJSON with encoding/json: the reference
// FuzzParseJSON holds parseJSON to.
func decodeJSONStd(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("json: data after the value")
	}
	return fixNumbers(v)
}

func fixNumbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return u, nil
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return nil, fmt.Errorf("json: number %s: %w", x, err)
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			n, err := fixNumbers(e)
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
	case []any:
		for i, e := range x {
			n, err := fixNumbers(e)
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
	}
	return v, nil
}

// encodeJSON writes v as compact JSON without HTML escaping: what
// encoding/json writes with SetEscapeHTML(false), except for floats from
// 2^53 to 1e21 (see appendFloat). The decoded shapes are written by hand
// (FuzzEncodeJSON holds this to encoding/json); anything else an
// expression may yield goes through encoding/json.
func encodeJSON(v any) ([]byte, error) {
	return appendJSON(make([]byte, 0, 64), v, 0)
}

func appendJSON(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errors.New("json: nested too deeply")
	}
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case string:
		return appendString(b, x), nil
	case float64:
		return appendFloat(b, x)
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case []byte:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, x)
		return append(b, '"'), nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendJSON(b, x[k], depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...), nil
}

// appendFloat writes f as encoding/json does, except that Go's shortest
// form of a float from 2^53 (where float64 stops holding every integer) to
// 1e21 (where Go switches to exponents itself) looks like an integer,
// "18446744073709552000" for 1.8446744073709552e19, which decodeJSON would
// read back as an integer of another value: those get an exponent, so they
// read back as the same float.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("json: unsupported value: %v", f)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= exactBelow) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9, as encoding/json.
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

const exactBelow = 1 << 53

const hexDigits = "0123456789abcdef"

// appendString quotes s as encoding/json does without HTML escaping.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

var (
	cborDec = func() cbor.DecMode {
		m, err := cbor.DecOptions{
			DefaultMapType:  reflect.TypeOf(map[string]any(nil)),
			IntDec:          cbor.IntDecConvertNone,
			MaxNestedLevels: maxDepth + 1,
		}.DecMode()
		if err != nil {
			panic(err) // constant options
		}
		return m
	}()
	cborEnc = func() cbor.EncMode {
		m, err := cbor.EncOptions{ShortestFloat: cbor.ShortestFloat16}.EncMode()
		if err != nil {
			panic(err) // constant options
		}
		return m
	}()
)

func decodeCBOR(b []byte) (any, error) {
	var v any
	if err := cborDec.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return normalize(v, 0)
}

func encodeCBOR(v any) ([]byte, error) { return cborEnc.Marshal(v) }

func decodeMsgpack(b []byte) (any, error) {
	if err := checkMsgpack(b); err != nil {
		return nil, err
	}
	d := msgpack.NewDecoder(bytes.NewReader(b))
	d.UseLooseInterfaceDecoding(true)
	v, err := d.DecodeInterface()
	if err != nil {
		return nil, err
	}
	return normalize(v, 0)
}

func encodeMsgpack(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := msgpack.NewEncoder(&b)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// maxDepth bounds the nesting of decoded values (encoding/json allows
// 10000; a message router needs far less, and recursion stays shallow).
const maxDepth = 1000

// normalize brings a decoded value to the common shape.
func normalize(v any, depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	switch x := v.(type) {
	case nil, string, bool, int64, float64, []byte:
		return v, nil
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), nil
		}
		return x, nil
	case int:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case uint:
		return normalize(uint64(x), depth)
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case float32:
		return float64(x), nil
	case map[string]any:
		for k, e := range x {
			n, err := normalize(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
		return x, nil
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			s, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("map key %v (%T) is not a string", k, k)
			}
			n, err := normalize(e, depth+1)
			if err != nil {
				return nil, err
			}
			m[s] = n
		}
		return m, nil
	case []any:
		for i, e := range x {
			n, err := normalize(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
		return x, nil
	}
	return nil, fmt.Errorf("unsupported value of type %T", v)
}

// checkMsgpack walks one MessagePack value without allocating and checks that
// every declared length fits in the input and nesting is bounded: the
// decoder sizes arrays and maps from the declared lengths, so five bytes
// could otherwise ask for gigabytes.
func checkMsgpack(b []byte) error {
	n, err := skipMsgpack(b, 0)
	if err != nil {
		return fmt.Errorf("msgpack: %w", err)
	}
	if n != len(b) {
		return errors.New("msgpack: data after the value")
	}
	return nil
}

var errShort = errors.New("truncated value")

func skipMsgpack(b []byte, depth int) (int, error) {
	if depth > maxDepth {
		return 0, errors.New("nested too deeply")
	}
	if len(b) == 0 {
		return 0, errShort
	}
	c := b[0]
	lenAt := func(size int) (int, int, error) { // value length, header length
		if len(b) < 1+size {
			return 0, 0, errShort
		}
		var n uint64
		switch size {
		case 1:
			n = uint64(b[1])
		case 2:
			n = uint64(binary.BigEndian.Uint16(b[1:]))
		case 4:
			n = uint64(binary.BigEndian.Uint32(b[1:]))
		}
		if n > uint64(len(b)) {
			return 0, 0, errShort
		}
		return int(n), 1 + size, nil
	}
	blob := func(size int) (int, error) {
		n, h, err := lenAt(size)
		if err != nil {
			return 0, err
		}
		if h+n > len(b) {
			return 0, errShort
		}
		return h + n, nil
	}
	ext := func(size int) (int, error) { // length, then a type byte, then data
		n, h, err := lenAt(size)
		if err != nil {
			return 0, err
		}
		if h+1+n > len(b) {
			return 0, errShort
		}
		return h + 1 + n, nil
	}
	items := func(count, off int) (int, error) {
		if count > len(b)-off {
			return 0, errShort // every item takes at least one byte
		}
		for range count {
			k, err := skipMsgpack(b[off:], depth+1)
			if err != nil {
				return 0, err
			}
			off += k
		}
		return off, nil
	}
	fixed := func(n int) (int, error) {
		if len(b) < n {
			return 0, errShort
		}
		return n, nil
	}
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		return 1, nil
	case c >= 0x80 && c <= 0x8f:
		return items(2*int(c&0x0f), 1)
	case c >= 0x90 && c <= 0x9f:
		return items(int(c&0x0f), 1)
	case c >= 0xa0 && c <= 0xbf:
		return fixed(1 + int(c&0x1f))
	}
	switch c {
	case 0xc4, 0xd9:
		return blob(1)
	case 0xc5, 0xda:
		return blob(2)
	case 0xc6, 0xdb:
		return blob(4)
	case 0xc7:
		return ext(1)
	case 0xc8:
		return ext(2)
	case 0xc9:
		return ext(4)
	case 0xca:
		return fixed(5)
	case 0xcb:
		return fixed(9)
	case 0xcc, 0xd0:
		return fixed(2)
	case 0xcd, 0xd1:
		return fixed(3)
	case 0xce, 0xd2:
		return fixed(5)
	case 0xcf, 0xd3:
		return fixed(9)
	case 0xd4:
		return fixed(3)
	case 0xd5:
		return fixed(4)
	case 0xd6:
		return fixed(6)
	case 0xd7:
		return fixed(10)
	case 0xd8:
		return fixed(18)
	case 0xdc, 0xdd, 0xde, 0xdf:
		size := 2
		if c == 0xdd || c == 0xdf {
			size = 4
		}
		n, h, err := lenAt(size)
		if err != nil {
			return 0, err
		}
		if c >= 0xde {
			if n > len(b)/2 {
				return 0, errShort
			}
			n *= 2
		}
		return items(n, h)
	}
	return 0, fmt.Errorf("invalid byte 0x%02x", c)
}

// decodeAs decodes b from format f into a value.
func decodeAs(f string, b []byte) (any, error) {
	switch f {
	case fmtJSON:
		return decodeJSON(b)
	case fmtCBOR:
		return decodeCBOR(b)
	case fmtMsgpack:
		return decodeMsgpack(b)
	}
	return nil, fmt.Errorf("%s is not a format of values", f)
}

// encodeAs writes v in format f.
func encodeAs(f string, v any) ([]byte, error) {
	switch f {
	case fmtJSON:
		return encodeJSON(v)
	case fmtCBOR:
		return encodeCBOR(v)
	case fmtMsgpack:
		return encodeMsgpack(v)
	}
	return nil, fmt.Errorf("%s is not a format of values", f)
}

// decodeBytes undoes a byte encoding (base64, hex).
func decodeBytes(f string, b []byte) ([]byte, error) {
	b = bytes.TrimSpace(b)
	switch f {
	case fmtBase64:
		out := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
		n, err := base64.StdEncoding.Decode(out, b)
		if err != nil {
			// Accept the URL alphabet and missing padding too.
			n2, err2 := base64.RawURLEncoding.Decode(out, bytes.TrimRight(b, "="))
			if err2 != nil {
				return nil, fmt.Errorf("base64: %w", err)
			}
			n = n2
		}
		return out[:n], nil
	case fmtHex:
		out := make([]byte, hex.DecodedLen(len(b)))
		n, err := hex.Decode(out, b)
		if err != nil {
			return nil, fmt.Errorf("hex: %w", err)
		}
		return out[:n], nil
	}
	return b, nil
}

// encodeBytes applies a byte encoding (base64, hex).
func encodeBytes(f string, b []byte) []byte {
	switch f {
	case fmtBase64:
		return base64.StdEncoding.AppendEncode(nil, b)
	case fmtHex:
		return hex.AppendEncode(nil, b)
	}
	return b
}
