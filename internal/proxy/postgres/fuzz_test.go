package postgres

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockpam/airlock/internal/proxy/common"
)

// seedExchanges are protocol exchanges, client bytes and server bytes, that
// seed FuzzRelay (besides the corpus in testdata/fuzz/FuzzRelay).
func seedExchanges(t testing.TB) [][2][]byte {
	return [][2][]byte{
		{
			encode(t, &pgproto3.Query{String: "SELECT 1; ALTER ROLE x PASSWORD 'p'"}),
			encodeBackend(t, rowDesc, row, tag("SELECT 1"), tag("ALTER ROLE"), rfq),
		},
		{
			encode(t, &pgproto3.Parse{Name: "s", Query: "SELECT $1"}, bind("s", "v"), describe, execute,
				bind("s", "w"), &pgproto3.Execute{MaxRows: 1}, sync_),
			encodeBackend(t, parseOK, bindOK, noData, row, tag("SELECT 1"), bindOK, errResp("22012", "x"), rfq),
		},
		{
			encode(t, &pgproto3.Query{String: "COPY t FROM STDIN"}, &pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyDone{},
				&pgproto3.FunctionCall{Function: 1, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{{1}, nil}}),
			encodeBackend(t, &pgproto3.CopyInResponse{}, tag("COPY 1"), rfq, &pgproto3.FunctionCallResponse{Result: []byte("x")}, rfq),
		},
		{
			// Binary values, typed by the Parse and the description: an
			// int4 and an int4[] {7}.
			encode(t, &pgproto3.Parse{Name: "t", Query: "SELECT $1, $2", ParameterOIDs: []uint32{23}}, &pgproto3.Describe{ObjectType: 'S', Name: "t"}, sync_,
				&pgproto3.Bind{PreparedStatement: "t", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 21},
					{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 7}}}, execute, sync_),
			encodeBackend(t, parseOK, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{23, 1007}}, noData, rfq, bindOK, row, tag("SELECT 1"), rfq),
		},
	}
}

// FuzzRelay feeds arbitrary client and server byte streams, cut into
// arbitrary chunks, to the observers of one connection: they must not
// panic, and what they hold must stay within the limits however large the
// messages claim to be.
func FuzzRelay(f *testing.F) {
	for i, ex := range seedExchanges(f) {
		f.Add(ex[0], ex[1], uint64(i))
	}
	f.Fuzz(func(t *testing.T, front, back []byte, seed uint64) {
		rec := &memRecorder{}
		sess := common.NewSession("s", common.WithRecorder(rec))
		l := newConnLog(sess, Config{Database: "db"}, "c")
		fo, bo := newFrontendObserver(l), newBackendObserver(l)
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		var ferr, berr error
		for (len(front) > 0 && ferr == nil) || (len(back) > 0 && berr == nil) {
			if len(front) > 0 && ferr == nil {
				n := min(len(front), 1+rng.IntN(64))
				ferr = fo.observe(front[:n])
				front = front[n:]
			}
			if len(back) > 0 && berr == nil {
				n := min(len(back), 1+rng.IntN(64))
				berr = bo.observe(back[:n])
				back = back[n:]
			}
			if c := cap(fo.scan.buf); c > 2*maxDecodeLen {
				t.Fatalf("client side buffer of %d bytes", c)
			}
			if c := cap(bo.scan.buf); c > 2*maxDecodeLen {
				t.Fatalf("server side buffer of %d bytes", c)
			}
			if bo.state.bytes > maxStatementBytes+maxDecodeLen {
				t.Fatalf("%d bytes of statements", bo.state.bytes)
			}
		}
		bo.finish()
		if l.peek() != nil {
			t.Error("requests left after finish")
		}
		for _, ev := range rec.all() {
			if ev.ID == "" || ev.Kind == "" || ev.DurationUS < 0 {
				t.Errorf("event %+v", ev)
			}
		}
	})
}

// FuzzToBoundary splits a stream of backend messages at arbitrary points
// and checks scanner.toBoundary against the messages' real ends: writing
// the bytes it returns always leaves the stream at a message boundary.
func FuzzToBoundary(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4}, uint8(3), uint8(7))
	f.Add([]byte("hello world"), uint8(0), uint8(1))
	f.Fuzz(func(t *testing.T, payload []byte, cut1, cut2 uint8) {
		var stream []byte
		var ends []int // offsets where a message ends
		for i := 0; i < 4; i++ {
			body := payload[:min(len(payload), i*3)]
			stream = append(stream, 'D', 0, 0, 0, 0)
			binary.BigEndian.PutUint32(stream[len(stream)-4:], uint32(4+len(body)))
			stream = append(stream, body...)
			ends = append(ends, len(stream))
		}
		a := min(int(cut1), len(stream))
		b := min(a+int(cut2), len(stream))
		chunks := [][]byte{stream[:a], stream[a:b], stream[b:]}
		s := scanner{decode: backendDecode}
		pos := 0
		for _, c := range chunks {
			n := s.toBoundary(c)
			if n < 0 || n > len(c) {
				t.Fatalf("toBoundary = %d for a chunk of %d", n, len(c))
			}
			end := pos + n
			atEnd := end == pos && s.atBoundary()
			for _, e := range ends {
				atEnd = atEnd || e == end
			}
			if n < len(c) && !atEnd {
				t.Fatalf("toBoundary stops at %d, not a message end %v", end, ends)
			}
			for _, e := range ends {
				if pos < e && e < end {
					t.Fatalf("toBoundary goes on to %d past the message end %d", end, e)
				}
			}
			if err := s.feed(c, nopHandler{}); err != nil {
				t.Fatal(err)
			}
			pos += len(c)
		}
	})
}

type nopHandler struct{}

func (nopHandler) message(byte, []byte, int) error { return nil }

// FuzzBigBind feeds the streaming Bind parser any body, cut at any place:
// it never panics, never keeps more than its budget, and agrees with
// pgproto3's decoder on the names and the number of values of a valid Bind.
func FuzzBigBind(f *testing.F) {
	for _, m := range []*pgproto3.Bind{
		{DestinationPortal: "p", PreparedStatement: "s", ParameterFormatCodes: []int16{0, 1}, Parameters: [][]byte{[]byte("a"), nil, {1, 2}}},
		{},
	} {
		b, _ := m.Encode(nil)
		f.Add(b[5:], uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, cut uint8) {
		bb := newBigBind()
		step := int(cut)%64 + 1
		for p := body; len(p) > 0; {
			n := min(step, len(p))
			bb.write(p[:n])
			p = p[n:]
		}
		kept := 0
		for _, v := range bb.values {
			kept += len(v.kept)
		}
		if kept > bigBindBudget {
			t.Fatalf("kept %d bytes", kept)
		}
		var m pgproto3.Bind
		if m.Decode(body) == nil {
			cut := func(s string) string { return s[:min(len(s), maxNameKept)] }
			if string(bb.portal) != cut(m.DestinationPortal) || string(bb.stmt) != cut(m.PreparedStatement) || len(bb.values) != len(m.Parameters) {
				t.Fatalf("got %q %q %d values, pgproto3 %q %q %d", bb.portal, bb.stmt, len(bb.values), m.DestinationPortal, m.PreparedStatement, len(m.Parameters))
			}
			for i, v := range bb.values {
				if v.null != (m.Parameters[i] == nil) || !v.null && v.size != len(m.Parameters[i]) {
					t.Fatalf("value %d differs", i)
				}
			}
		}
	})
}
