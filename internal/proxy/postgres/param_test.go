package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/airlockpam/airlock/internal/testenv"
	"github.com/airlockpam/airlock/internal/tunnel"
)

// binaryText is pgx's text codec, but for the format pgx prefers to send
// text values in: binary (a text value's binary form is its bytes).
type binaryText struct{ pgtype.TextCodec }

func (binaryText) PreferredFormat() int16 { return pgtype.BinaryFormatCode }

// moneyOID is the type money, which pgtype does not know.
const moneyOID = 790

// TestRecordBinaryParams sends values of the common types in binary, with
// pgx, through a recording proxy to a real PostgreSQL, and checks that the
// log shows them as text: whether the types come from the server's
// description of the statement (pgx's prepared statements, named or not)
// or from the Parse message (pgconn's ExecParams with types).
func TestRecordBinaryParams(t *testing.T) {
	db := testenv.SharedPostgres(t)
	p, rec := startRecording(t, db, accountConfig(db, db.Cluster.SCRAMUser, tunnel.TLS{}))
	ctx := testContext(t)
	connect := func(mode pgx.QueryExecMode) *pgx.Conn {
		cc, err := pgx.ParseConfig(p.clientURL("x", "", ""))
		if err != nil {
			t.Fatal(err)
		}
		cc.DefaultQueryExecMode = mode
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		conn.TypeMap().RegisterType(&pgtype.Type{Name: "text", OID: pgtype.TextOID, Codec: binaryText{}})
		return conn
	}

	const query = "SELECT $1::int4, $2::int8, $3::float8, $4::bool, $5::text, $6::uuid, $7::timestamptz, $8::numeric, $9::bytea, $10::int4"
	oids := []uint32{pgtype.Int4OID, pgtype.Int8OID, pgtype.Float8OID, pgtype.BoolOID, pgtype.TextOID, pgtype.UUIDOID,
		pgtype.TimestamptzOID, pgtype.NumericOID, pgtype.ByteaOID, pgtype.Int4OID}
	var num pgtype.Numeric
	if err := num.Scan("-12345.6780"); err != nil {
		t.Fatal(err)
	}
	args := []any{int32(21), int64(-9007199254740993), 0.1, true, "héllo wörld", [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11},
		time.Date(2024, 2, 29, 13, 4, 5, 123456000, time.FixedZone("CET", 3600)), num, []byte{0xde, 0xad, 0xbe, 0xef}, nil}
	want := `[21|-9007199254740993|0.1|t|héllo wörld|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|2024-02-29T12:04:05.123456Z|-12345.6780|\xdeadbeef|NULL]`
	// What the server got, read back.
	wantRow := `[21 -9007199254740993 0.1 true héllo wörld [160 238 188 153 156 11 78 248 187 109 107 185 189 56 10 17] 2024-02-29 12:04:05.123456 +0000 UTC -12345.6780 [222 173 190 239] <nil>]`
	readRow := func(t *testing.T, rows pgx.Rows) {
		t.Helper()
		if !rows.Next() {
			t.Fatalf("no row: %v", rows.Err())
		}
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		rows.Close()
		for i, v := range vals {
			switch x := v.(type) {
			case time.Time:
				vals[i] = x.UTC()
			case pgtype.Numeric:
				vals[i], _ = x.Value()
			}
		}
		if got := fmt.Sprint(vals); got != wantRow {
			t.Errorf("row %s, want %s", got, wantRow)
		}
	}

	for _, mode := range []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"named prepared statement", pgx.QueryExecModeCacheStatement},
		{"unnamed statement described", pgx.QueryExecModeDescribeExec},
	} {
		t.Run(mode.name, func(t *testing.T) {
			conn := connect(mode.mode)
			for i, oid := range oids {
				if f := conn.TypeMap().FormatCodeForOID(oid); f != pgtype.BinaryFormatCode {
					t.Fatalf("pgx sends parameter %d (oid %d) in format %d", i+1, oid, f)
				}
			}
			rec.reset()
			rows, err := conn.Query(ctx, query, args...)
			if err != nil {
				t.Fatal(err)
			}
			readRow(t, rows)
			checkEvents(t, rec.queries(), []brief{{Kind: "execute", Statement: query, Params: want, Outcome: "SELECT 1", Rows: 1}})
		})
	}

	t.Run("types in the Parse message", func(t *testing.T) {
		conn := connect(pgx.QueryExecModeCacheStatement)
		m := conn.TypeMap()
		var values [][]byte
		for i, a := range args {
			v, err := m.Encode(oids[i], pgtype.BinaryFormatCode, a, nil)
			if err != nil {
				t.Fatal(err)
			}
			values = append(values, v)
		}
		formats := make([]int16, len(values))
		for i := range formats {
			formats[i] = pgtype.BinaryFormatCode
		}
		rec.reset()
		res := conn.PgConn().ExecParams(ctx, query, values, oids, formats, nil).Read()
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		// The log shows what the server prints, but for the timestamp.
		sameAsServer := func(res *pgconn.Result, want string, skip ...int) {
			t.Helper()
			logged := strings.Split(strings.Trim(want, "[]"), "|")
			for i, v := range res.Rows[0] {
				if v == nil {
					v = []byte("NULL")
				}
				if !slices.Contains(skip, i) && string(v) != logged[i] {
					t.Errorf("parameter %d: the server prints %q, the log %q", i+1, v, logged[i])
				}
			}
		}
		sameAsServer(res, want, 6)
		// Types pgx sends in text, sent in binary here; a type pgtype
		// does not know stays in hexadecimal.
		extra := "SELECT $1::json, $2::jsonb, $3::int4[], $4::float4, $5::float8, $6::date, $7::timestamp, $8::money"
		extraOIDs := []uint32{pgtype.JSONOID, pgtype.JSONBOID, pgtype.Int4ArrayOID, pgtype.Float4OID, pgtype.Float8OID,
			pgtype.DateOID, pgtype.TimestampOID, moneyOID}
		extraArgs := []any{`{"b": 1, "a": [1, 2]}`, `{"b": 1, "a": [1, 2]}`, [][]int32{{1, 2}, {3, 4}}, float32(1.5e7), 1e15,
			time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), time.Date(2024, 2, 29, 13, 4, 5, 0, time.UTC)}
		values = values[:0]
		for i, a := range extraArgs {
			v, err := m.Encode(extraOIDs[i], pgtype.BinaryFormatCode, a, nil)
			if err != nil {
				t.Fatal(err)
			}
			values = append(values, v)
		}
		values = append(values, binary.BigEndian.AppendUint64(nil, 12345)) // $123.45
		res = conn.PgConn().ExecParams(ctx, extra, values, extraOIDs, formats[:len(values)], nil).Read()
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if got := string(res.Rows[0][7]); got != "$123.45" {
			t.Errorf("money %q", got)
		}
		wantExtra := `[{"b": 1, "a": [1, 2]}|{"b": 1, "a": [1, 2]}|{{1,2},{3,4}}|1.5e+07|1e+15|2024-02-29|2024-02-29T13:04:05|\x0000000000003039]`
		// jsonb is printed normalized; the timestamp and money differ.
		sameAsServer(res, wantExtra, 1, 6, 7)
		checkEvents(t, rec.queries(), []brief{
			{Kind: "execute", Statement: query, Params: want, Outcome: "SELECT 1", Rows: 1},
			{Kind: "execute", Statement: extra, Params: wantExtra, Outcome: "SELECT 1", Rows: 1},
		})
	})

	t.Run("a password statement", func(t *testing.T) {
		conn := connect(pgx.QueryExecModeCacheStatement)
		rec.reset()
		var n int
		if err := conn.QueryRow(ctx, "SELECT length($1::text) AS password", "s3cret-value").Scan(&n); err != nil || n != 12 {
			t.Fatal(n, err)
		}
		checkEvents(t, rec.queries(), []brief{{Kind: "execute", Statement: "SELECT length($1::text) AS password", Params: "[***]", Outcome: "SELECT 1", Rows: 1}})
	})
}

// TestObserverBinaryParams plays the ways the observer learns the types of a
// statement's parameters, and the values it cannot decode.
func TestObserverBinaryParams(t *testing.T) {
	int4 := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	binBind := func(stmt string, values ...[]byte) *pgproto3.Bind {
		return &pgproto3.Bind{PreparedStatement: stmt, ParameterFormatCodes: []int16{1}, Parameters: values}
	}
	paramDesc := func(oids ...uint32) *pgproto3.ParameterDescription {
		return &pgproto3.ParameterDescription{ParameterOIDs: oids}
	}

	t.Run("types from the Parse message and from the description", func(t *testing.T) {
		h := newHarness(t)
		// The Parse gives the types.
		h.client(&pgproto3.Parse{Query: "SELECT $1, $2", ParameterOIDs: []uint32{pgtype.Int4OID, pgtype.TextOID}},
			binBind("", int4(21), []byte("abc")), execute, sync_)
		h.server(parseOK, bindOK, row, tag("SELECT 1"), rfq)
		// It leaves them unspecified, and nothing describes the
		// statement: hexadecimal.
		h.client(&pgproto3.Parse{Query: "SELECT $1::int"}, binBind("", int4(21)), execute, sync_)
		h.server(parseOK, bindOK, row, tag("SELECT 1"), rfq)
		// The server's description fills in what the Parse left out,
		// for a named statement and then the unnamed one.
		h.client(&pgproto3.Parse{Name: "s", Query: "SELECT $1, $2::int8", ParameterOIDs: []uint32{pgtype.BoolOID}},
			&pgproto3.Describe{ObjectType: 'S', Name: "s"}, sync_)
		h.server(parseOK, paramDesc(pgtype.BoolOID, pgtype.Int8OID), rowDesc, rfq)
		h.client(binBind("s", []byte{1}, binary.BigEndian.AppendUint64(nil, 1<<40)), describe, execute, sync_)
		h.server(bindOK, rowDesc, row, tag("SELECT 1"), rfq)
		h.client(&pgproto3.Parse{Query: "SELECT $1::uuid"}, &pgproto3.Describe{ObjectType: 'S'}, sync_)
		h.server(parseOK, paramDesc(pgtype.UUIDOID), rowDesc, rfq)
		h.client(binBind("", make([]byte, 16)), describe, execute, sync_)
		h.server(bindOK, rowDesc, row, tag("SELECT 1"), rfq)
		// A Describe of a portal describes no parameters.
		h.client(&pgproto3.Parse{Query: "SELECT $1"}, binBind("", int4(7)), describe, execute, sync_)
		h.server(parseOK, bindOK, rowDesc, row, tag("SELECT 1"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: "SELECT $1, $2", Params: "[21|abc]", Outcome: "SELECT 1", Rows: 1},
			{Kind: "execute", Statement: "SELECT $1::int", Params: `[\x00000015]`, Outcome: "SELECT 1", Rows: 1},
			{Kind: "execute", Statement: "SELECT $1, $2::int8", Params: "[t|1099511627776]", Outcome: "SELECT 1", Rows: 1},
			{Kind: "execute", Statement: "SELECT $1::uuid", Params: "[00000000-0000-0000-0000-000000000000]", Outcome: "SELECT 1", Rows: 1},
			{Kind: "execute", Statement: "SELECT $1", Params: `[\x00000007]`, Outcome: "SELECT 1", Rows: 1},
		})
	})

	t.Run("what does not decode stays in hexadecimal", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Parse{Name: "s", Query: "SELECT $1, $2, $3, $4, $5, $6",
			ParameterOIDs: []uint32{moneyOID, pgtype.Int4OID, pgtype.ByteaOID, pgtype.Int8OID, 424242, pgtype.Int4OID}}, sync_)
		h.server(parseOK, rfq)
		h.client(&pgproto3.Bind{PreparedStatement: "s", ParameterFormatCodes: []int16{1, 1, 1, 1, 1, 0},
			Parameters: [][]byte{int4(1), {0, 1, 2}, {0xff}, {}, {9}, []byte("7")}}, execute, sync_)
		h.server(errResp("08P01", "insufficient data left in message"), rfq)
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: "SELECT $1, $2, $3, $4, $5, $6", Params: `[\x00000001|\x000102|\xff|\x|\x09|7]`, Outcome: "error", ErrorCode: "08P01"},
		})
	})

	t.Run("skipped and failed Binds", func(t *testing.T) {
		h := newHarness(t)
		h.client(&pgproto3.Parse{Name: "ins", Query: "INSERT INTO t VALUES ($1)", ParameterOIDs: []uint32{pgtype.Int4OID}}, sync_)
		h.server(parseOK, rfq)
		var msgs []pgproto3.FrontendMessage
		for i := range 3 {
			msgs = append(msgs, binBind("ins", int4(uint32(i))), execute)
		}
		// A pipeline whose second statement fails; in the next one the
		// Bind itself fails, with no Execute after it.
		h.client(append(msgs, sync_)...)
		h.server(bindOK, tag("INSERT 0 1"), bindOK, errResp("23505", "duplicate key"), rfq)
		h.client(binBind("ins", int4(5)), sync_)
		h.server(errResp("22P03", "incorrect binary data format"), rfq)
		// The connection closes before the answer.
		h.client(binBind("ins", int4(6)), execute, sync_)
		h.back.finish()
		stmt := "INSERT INTO t VALUES ($1)"
		checkEvents(t, h.rec.all(), []brief{
			{Kind: "execute", Statement: stmt, Params: "[0]", Outcome: "INSERT 0 1", Rows: 1},
			{Kind: "execute", Statement: stmt, Params: "[1]", Outcome: "error", ErrorCode: "23505"},
			{Kind: "execute", Statement: stmt, Params: "[2]", Outcome: "skipped"},
			{Kind: "execute", Statement: stmt, Params: "[5]", Outcome: "error", ErrorCode: "22P03"},
			{Kind: "execute", Statement: stmt, Params: "[6]", Outcome: "outcome unknown"},
		})
	})

	t.Run("masks and caps", func(t *testing.T) {
		card := regexp.MustCompile(`\b\d{4}-\d{4}-\d{4}-\d{4}\b`)
		h := newHarness(t, card)
		text := []uint32{pgtype.TextOID}
		// A password statement: its values are masked, never decoded.
		h.client(&pgproto3.Parse{Query: "UPDATE users SET password = $1", ParameterOIDs: text}, binBind("", []byte("hunter2-secret")), execute, sync_)
		h.server(parseOK, bindOK, tag("UPDATE 1"), rfq)
		// The project's patterns apply to the decoded text.
		h.client(&pgproto3.Parse{Query: "SELECT $1", ParameterOIDs: text}, binBind("", []byte("card 1111-2222-3333-4444")), execute, sync_)
		h.server(parseOK, bindOK, row, tag("SELECT 1"), rfq)
		// Long values are cut: as text when they decode, in hexadecimal
		// past maxDecodeParam.
		long := strings.Repeat("é", 3000)
		h.client(&pgproto3.Parse{Query: "SELECT $1, $2, $3", ParameterOIDs: []uint32{pgtype.TextOID, pgtype.TextOID, pgtype.Int4ArrayOID}},
			&pgproto3.Bind{ParameterFormatCodes: []int16{1}, Parameters: [][]byte{[]byte(long), []byte(strings.Repeat("y", maxDecodeParam+1)), int4Array(t, 1500)}},
			execute, sync_)
		h.server(parseOK, bindOK, row, tag("SELECT 1"), rfq)
		evs := h.rec.all()
		if len(evs) != 3 {
			t.Fatalf("%d events", len(evs))
		}
		if p := evs[0].Params; len(p) != 1 || p[0] != masked {
			t.Errorf("password statement: %q", p)
		}
		if p := evs[1].Params; len(p) != 1 || p[0] != "card ***" {
			t.Errorf("masked pattern: %q", p)
		}
		p := evs[2].Params
		if len(p) != 3 || p[0] != strings.Repeat("é", maxParamLen/2)+"… [6000 bytes]" ||
			p[1] != `\x`+strings.Repeat("79", maxParamLen/2)+fmt.Sprintf("… [%d bytes]", maxDecodeParam+1) ||
			!strings.HasPrefix(p[2], "{1,2,3,4,") || !strings.HasSuffix(p[2], fmt.Sprintf("… [%d bytes]", len(int4ArrayText(1500)))) ||
			len(p[2]) > maxParamLen+20 {
			t.Errorf("params %.80q", p)
		}
	})
}

// int4Array returns the binary form of the int4[] {1, ..., n}.
func int4Array(t *testing.T, n int) []byte {
	t.Helper()
	a := make([]int32, n)
	for i := range a {
		a[i] = int32(i + 1)
	}
	b, err := pgtype.NewMap().Encode(pgtype.Int4ArrayOID, pgtype.BinaryFormatCode, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func int4ArrayText(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, i+1)
	}
	b.WriteByte('}')
	return b.String()
}

// TestValueDecoder checks the text of binary values of many types, made by
// pgtype's encoders, against what PostgreSQL would print.
func TestValueDecoder(t *testing.T) {
	m := pgtype.NewMap()
	var num, numNaN pgtype.Numeric
	_ = num.Scan("1.50")
	_ = numNaN.Scan("NaN")
	cases := []struct {
		oid   uint32
		value any
		want  string
	}{
		{pgtype.Int2OID, int16(-5), "-5"},
		{pgtype.Int4OID, int32(math.MinInt32), "-2147483648"},
		{pgtype.Int8OID, int64(math.MaxInt64), "9223372036854775807"},
		{pgtype.OIDOID, uint32(4000000000), "4000000000"},
		{pgtype.Float8OID, 0.1, "0.1"},
		{pgtype.Float8OID, 1e14, "100000000000000"},
		{pgtype.Float8OID, 1e15, "1e+15"},
		{pgtype.Float8OID, 1.5e-5, "1.5e-05"},
		{pgtype.Float8OID, 0.0001, "0.0001"},
		{pgtype.Float8OID, math.Inf(-1), "-Infinity"},
		{pgtype.Float8OID, math.NaN(), "NaN"},
		{pgtype.Float4OID, float32(123456), "123456"},
		{pgtype.Float4OID, float32(1234567), "1.234567e+06"},
		{pgtype.Float4OID, float32(0.1), "0.1"},
		{pgtype.BoolOID, false, "f"},
		{pgtype.TextOID, "", ""},
		{pgtype.VarcharOID, "v ", "v "},
		{pgtype.NameOID, "pg_class", "pg_class"},
		{pgtype.NumericOID, num, "1.50"},
		{pgtype.NumericOID, numNaN, "NaN"},
		{pgtype.NumericOID, pgtype.Numeric{InfinityModifier: pgtype.Infinity, Valid: true}, "Infinity"},
		{pgtype.DateOID, time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC), "1999-12-31"},
		{pgtype.DateOID, pgtype.Date{InfinityModifier: pgtype.Infinity, Valid: true}, "infinity"},
		{pgtype.TimestampOID, time.Date(2024, 2, 29, 13, 4, 5, 100000000, time.UTC), "2024-02-29T13:04:05.1"},
		{pgtype.TimestamptzOID, time.Date(2024, 2, 29, 23, 4, 5, 0, time.FixedZone("", -5*3600)), "2024-03-01T04:04:05Z"},
		{pgtype.TimestamptzOID, pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, "-infinity"},
		{pgtype.TimeOID, pgtype.Time{Microseconds: 3600e6 + 5, Valid: true}, "01:00:00.000005"},
		{pgtype.IntervalOID, pgtype.Interval{Days: 1, Microseconds: 90 * 60e6, Valid: true}, "1 day 01:30:00"},
		{pgtype.UUIDOID, [16]byte{0xa0, 0xee, 0xbc, 0x99, 15: 0x11}, "a0eebc99-0000-0000-0000-000000000011"},
		{pgtype.JSONBOID, `{"z": [1, 2.50], "a": null}`, `{"z": [1, 2.50], "a": null}`},
		{pgtype.TextArrayOID, []*string{nil, new("a b"), new(`q"`)}, `{NULL,"a b","q\""}`},
		{pgtype.Int8ArrayOID, []int64{}, "{}"},
		{pgtype.InetOID, netip.MustParsePrefix("192.168.0.1/24"), "192.168.0.1/24"},
		{pgtype.ByteaOID, []byte{0, 1}, `\x0001`},
	}
	var d valueDecoder
	for _, c := range cases {
		v, err := m.Encode(c.oid, pgtype.BinaryFormatCode, c.value, nil)
		if err != nil {
			t.Errorf("encode %v as oid %d: %v", c.value, c.oid, err)
			continue
		}
		if got := d.render(c.oid, v); got != c.want {
			t.Errorf("oid %d, %v: got %q, want %q", c.oid, c.value, got, c.want)
		}
	}
	// Values that do not decode, rather than panic, and a type pgtype reads
	// only as text.
	for oid, v := range map[uint32][]byte{pgtype.NumericOID: {0xff, 0xff, 0, 0, 0, 0, 0, 0}, pgtype.Int4ArrayOID: {0, 0, 0, 9},
		pgtype.JSONBOID: {2, '{', '}'}, pgtype.TimestamptzOID: {1}, pgtype.JSONPathOID: {1, '$'}} {
		if got, want := d.render(oid, v), renderParam(v, 1); got != want {
			t.Errorf("oid %d, %x: got %q, want %q", oid, v, got, want)
		}
	}
}

// TestObserverParamTypesNoAllocations checks that a statement's
// description costs no allocation when the Parse gave every type, or when
// the statement has no parameter.
func TestObserverParamTypesNoAllocations(t *testing.T) {
	h := newHarness(t)
	st := &statement{paramOIDs: []uint32{pgtype.Int4OID, pgtype.TextOID}}
	body := encodeBackend(t, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{pgtype.Int4OID, pgtype.TextOID}})[5:]
	none := encodeBackend(t, &pgproto3.ParameterDescription{})[5:]
	if allocs := testing.AllocsPerRun(100, func() {
		h.back.parameterDescription(st, body, len(body))
		h.back.parameterDescription(&statement{}, none, len(none))
	}); allocs != 0 {
		t.Errorf("%v allocations", allocs)
	}
	unknown := &statement{}
	h.back.parameterDescription(unknown, body, len(body))
	if fmt.Sprint(unknown.paramOIDs) != "[23 25]" {
		t.Errorf("types %v", unknown.paramOIDs)
	}
}
