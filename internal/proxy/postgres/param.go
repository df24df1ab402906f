package postgres

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
)

// maxDecodeParam bounds the binary values that are decoded for the session
// log: a larger one is recorded in hexadecimal, as a value of an unknown
// type is. Its text would be cut at maxParamLen anyway, and decoding it
// would cost the relay.
const maxDecodeParam = 16 << 10

// binaryParam is a binary value of a Bind, copied out of the relay's
// buffer, that waits for the types of the statement's parameters: the
// server side decodes it when the Bind is answered.
type binaryParam struct {
	index int    // the parameter's position
	value []byte // never nil
}

// bindParams renders the values of a Bind as renderParams does, except for
// its binary values up to maxDecodeParam bytes, which it copies, into one
// buffer, for the server side to decode (backendObserver.bindValues): their
// places in the result are left empty until then.
func (f *frontendObserver) bindParams(values [][]byte, format func(int) int16) ([]string, []binaryParam) {
	if len(values) == 0 {
		return nil, nil
	}
	deferred := func(i int, v []byte) bool {
		return v != nil && format(i) == 1 && len(v) <= maxDecodeParam
	}
	n, size := 0, 0
	for i, v := range values {
		if deferred(i, v) {
			n++
			size += len(v)
		}
	}
	var bin []binaryParam
	var buf []byte
	if n > 0 {
		bin = make([]binaryParam, 0, n)
		buf = make([]byte, 0, size)
	}
	out := make([]string, len(values))
	for i, v := range values {
		if deferred(i, v) {
			start := len(buf)
			buf = append(buf, v...)
			bin = append(bin, binaryParam{index: i, value: buf[start:len(buf):len(buf)]})
			continue
		}
		out[i] = applyPatterns(renderParam(v, format(i)), f.log.extra())
	}
	return out, bin
}

// bindValues completes the values of Bind request it, once the server has
// answered it or the Bind is settled without an answer: its binary values
// are decoded according to the types of the parameters of st, the
// statement it binds (nil when it is not known). Those of a sensitive
// statement are masked without being decoded.
func (b *backendObserver) bindValues(it *pending, st *statement) {
	if len(it.binary) == 0 {
		return
	}
	var oids []uint32
	if st != nil {
		oids = st.paramOIDs
	}
	for _, p := range it.binary {
		if p.index >= len(it.params) {
			continue
		}
		if st != nil && st.sensitive {
			it.params[p.index] = masked
			continue
		}
		var oid uint32
		if p.index < len(oids) {
			oid = oids[p.index]
		}
		it.params[p.index] = applyPatterns(b.values.render(oid, p.value), b.log.extra())
	}
	it.binary = nil
}

// parameterDescription records the types of the parameters of st that a
// ParameterDescription gives, for the values later bound to it: the types
// the server settled on, where the Parse message left them unspecified.
// It allocates only when st has parameters whose type it did not know.
func (b *backendObserver) parameterDescription(st *statement, body []byte, size int) {
	if st == nil || len(body) != size || len(body) < 2 {
		return
	}
	n := int(binary.BigEndian.Uint16(body))
	if n == 0 || len(st.paramOIDs) == n && !slices.Contains(st.paramOIDs, 0) {
		return
	}
	var m pgproto3.ParameterDescription
	if m.Decode(body) != nil {
		return
	}
	st.paramOIDs = m.ParameterOIDs
	b.log.mu.Lock()
	st.described = m.ParameterOIDs
	b.log.mu.Unlock()
}

// valueDecoder renders binary parameter values as their text, with pgx's
// pgtype. It belongs to the server side of one connection: a pgtype.Map is
// not safe for concurrent use (it memoizes its encoding plans). The map is
// made when the first value is decoded.
type valueDecoder struct {
	types *pgtype.Map
}

// render returns v, a binary value of the type oid, as the session log
// records it: as its text, cut at maxParamLen, or, when the type is not
// known (0 included) or v does not decode, as \x and hexadecimal digits.
func (d *valueDecoder) render(oid uint32, v []byte) string {
	s, ok := d.text(oid, v)
	if !ok {
		return renderParam(v, 1)
	}
	if len(s) > maxParamLen {
		return validPrefix(s, maxParamLen) + fmt.Sprintf("… [%d bytes]", len(s))
	}
	return s
}

// text returns the text of v, a binary value of the type oid: what
// PostgreSQL would print, but for dates and times, written as RFC 3339
// (a timestamptz in UTC; a timestamp, which has no time zone, without
// one); bytea and unknown types are left to the caller. pgtype's codecs
// decode the value: a failure (or a panic, on a value the client made up)
// reports false.
func (d *valueDecoder) text(oid uint32, v []byte) (s string, ok bool) {
	if oid == 0 || oid == pgtype.ByteaOID {
		// bytea's text is \x and hexadecimal digits: the fallback.
		return "", false
	}
	if d.types == nil {
		d.types = pgtype.NewMap()
	}
	t, found := d.types.TypeForOID(oid)
	if !found || !t.Codec.FormatSupported(pgtype.BinaryFormatCode) {
		// Unknown, or a type pgtype reads only as text (jsonpath...).
		return "", false
	}
	if v == nil {
		v = []byte{} // a codec reads nil as NULL
	}
	defer func() {
		if recover() != nil {
			s, ok = "", false
		}
	}()
	var value any
	var err error
	switch t.Codec.(type) {
	case *pgtype.JSONCodec, *pgtype.JSONBCodec:
		// As the client sent it: DecodeValue would unmarshal it, and
		// lose the order of the keys.
		plan := t.Codec.PlanScan(d.types, oid, pgtype.BinaryFormatCode, &s)
		if plan == nil || plan.Scan(v, &s) != nil {
			return "", false
		}
		return s, true
	case *pgtype.ArrayCodec:
		// With its dimensions: DecodeValue flattens them.
		var a pgtype.Array[any]
		plan := t.Codec.PlanScan(d.types, oid, pgtype.BinaryFormatCode, &a)
		if plan == nil {
			return "", false
		}
		err = plan.Scan(v, &a)
		value = a
	default:
		value, err = t.Codec.DecodeValue(d.types, oid, pgtype.BinaryFormatCode, v)
	}
	if err != nil || value == nil {
		return "", false
	}
	switch x := value.(type) {
	case string:
		return x, true
	case float32:
		return formatFloat(float64(x), 32), true
	case float64:
		return formatFloat(x, 64), true
	case time.Time:
		switch oid {
		case pgtype.DateOID:
			return x.Format(time.DateOnly), true
		case pgtype.TimestampOID:
			return x.Format("2006-01-02T15:04:05.999999999"), true
		}
		return x.UTC().Format(time.RFC3339Nano), true
	}
	text, err := d.types.Encode(oid, pgtype.TextFormatCode, value, nil)
	if err != nil || text == nil {
		return "", false
	}
	return string(text), true
}

// formatFloat writes f as PostgreSQL does (with extra_float_digits at its
// default, 1): the shortest text that reads back as f, in exponential
// notation below 1e-4 and from 1e15 (1e6 for a real) on.
func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	s := strconv.FormatFloat(f, 'e', -1, bits)
	exp, _ := strconv.Atoi(s[strings.IndexByte(s, 'e')+1:])
	digits := 15
	if bits == 32 {
		digits = 6
	}
	if exp < -4 || exp >= digits {
		return s
	}
	return strconv.FormatFloat(f, 'f', -1, bits)
}
