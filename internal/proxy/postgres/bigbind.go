package postgres

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// bigBindBudget bounds the value bytes kept of one Bind larger than
// maxDecodeLen: past it, values are recorded by their size only.
const bigBindBudget = 1 << 20

// maxNameKept bounds what is kept of a portal or statement name in a large
// Bind (PostgreSQL's names are at most 63 bytes).
const maxNameKept = 256

// Stages of a bigBind.
const (
	bbPortal = iota
	bbStatement
	bbFormatCount
	bbFormats
	bbParamCount
	bbParamLen
	bbParamBytes
	bbRest
)

// bigValue is one parameter value of a large Bind, as kept.
type bigValue struct {
	null     bool
	size     int    // the value's length
	kept     []byte // its first bytes: all of it when len(kept) == size
	dropped  bool   // over the Bind's budget: only its size is recorded
	isBinary bool
}

// bigBind parses a Bind message larger than maxDecodeLen as its bytes pass,
// keeping of each value what the session log records (its first maxParamLen
// bytes, or all of a binary value up to maxDecodeParam bytes, to decode),
// within bigBindBudget bytes in all: a large Bind's values are recorded
// like a small one's, in bounded memory.
type bigBind struct {
	stage   int
	fixed   [4]byte // an integer split across chunks
	fixedN  int
	portal  []byte
	stmt    []byte
	formats []int16
	nFmt    int
	nParams int
	values  []bigValue
	left    int // bytes of the current value still to come
	keep    int // bytes of it to keep
	budget  int
}

func newBigBind() *bigBind { return &bigBind{budget: bigBindBudget} }

// format returns the format code of parameter i.
func (b *bigBind) format(i int) int16 {
	switch len(b.formats) {
	case 0:
		return 0
	case 1:
		return b.formats[0]
	}
	if i < len(b.formats) {
		return b.formats[i]
	}
	return 0
}

// fill gathers an n-byte integer from p; it reports whether it is whole and
// returns the rest of p.
func (b *bigBind) fill(p []byte, n int) (bool, []byte) {
	k := copy(b.fixed[b.fixedN:n], p)
	b.fixedN += k
	if b.fixedN < n {
		return false, p[k:]
	}
	b.fixedN = 0
	return true, p[k:]
}

// write takes the next body bytes of the Bind.
func (b *bigBind) write(p []byte) {
	for len(p) > 0 {
		switch b.stage {
		case bbPortal, bbStatement:
			name := &b.portal
			if b.stage == bbStatement {
				name = &b.stmt
			}
			i := indexNUL(p)
			if i < 0 {
				*name = appendMax(*name, p, maxNameKept)
				return
			}
			*name = appendMax(*name, p[:i], maxNameKept)
			p = p[i+1:]
			b.stage++
		case bbFormatCount, bbFormats, bbParamCount:
			ok, rest := b.fill(p, 2)
			p = rest
			if !ok {
				return
			}
			v := int(binary.BigEndian.Uint16(b.fixed[:2]))
			switch b.stage {
			case bbFormatCount:
				b.nFmt = v
				b.formats = make([]int16, 0, v)
				b.stage = bbFormats
				if v == 0 {
					b.stage = bbParamCount
				}
			case bbFormats:
				b.formats = append(b.formats, int16(v))
				if len(b.formats) == b.nFmt {
					b.stage = bbParamCount
				}
			case bbParamCount:
				b.nParams = v
				b.values = make([]bigValue, 0, min(v, 1024))
				b.stage = bbParamLen
				if v == 0 {
					b.stage = bbRest
				}
			}
		case bbParamLen:
			ok, rest := b.fill(p, 4)
			p = rest
			if !ok {
				return
			}
			size := int(int32(binary.BigEndian.Uint32(b.fixed[:4])))
			i := len(b.values)
			if size < 0 {
				b.values = append(b.values, bigValue{null: true})
				b.nextParam()
				continue
			}
			v := bigValue{size: size, isBinary: b.format(i) == 1}
			keep := min(size, maxParamLen)
			if v.isBinary && size <= maxDecodeParam {
				keep = size
			}
			if keep > b.budget {
				keep, v.dropped = 0, true
			}
			b.budget -= keep
			v.kept = make([]byte, 0, keep)
			b.values = append(b.values, v)
			b.left, b.keep = size, keep
			if size == 0 {
				b.nextParam()
				continue
			}
			b.stage = bbParamBytes
		case bbParamBytes:
			n := min(len(p), b.left)
			v := &b.values[len(b.values)-1]
			v.kept = appendMax(v.kept, p[:n], b.keep)
			p = p[n:]
			b.left -= n
			if b.left == 0 {
				b.nextParam()
			}
		default:
			return // the result format codes: not recorded
		}
	}
}

func (b *bigBind) nextParam() {
	b.stage = bbParamLen
	if len(b.values) >= b.nParams {
		b.stage = bbRest
	}
}

// fill fills in the request of the Bind, as bind does for a small one.
func (b *bigBind) finish(f *frontendObserver, it *pending) {
	it.name, it.stmtName = string(b.portal), string(b.stmt)
	if len(b.values) == 0 {
		return
	}
	out := make([]string, len(b.values))
	for i, v := range b.values {
		switch {
		case v.null:
			out[i] = "NULL"
		case v.dropped:
			out[i] = fmt.Sprintf("[%d bytes: not recorded, the Bind's recorded values reached %d bytes]", v.size, bigBindBudget)
		case v.isBinary && len(v.kept) == v.size && v.size <= maxDecodeParam:
			it.binary = append(it.binary, binaryParam{index: i, value: v.kept})
			continue
		case len(v.kept) == v.size:
			out[i] = renderParam(v.kept, b.format(i))
		case v.isBinary:
			n := min(len(v.kept), maxParamLen/2)
			out[i] = `\x` + hex.EncodeToString(v.kept[:n]) + fmt.Sprintf("… [%d bytes]", v.size)
		default:
			out[i] = validPrefix(string(v.kept), maxParamLen) + fmt.Sprintf("… [%d bytes]", v.size)
		}
		out[i] = applyPatterns(out[i], f.log.extra())
	}
	it.params = out
}
