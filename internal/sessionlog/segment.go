package sessionlog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// The spool's files on disk.
//
// A segment file, seg-<number>.log (numbers rise by one from 1), starts with
// the 8-byte magic "AIRSPL01" and holds records back to back:
//
//	length  uint32, little endian: the size of payload in bytes (> 0)
//	crc     uint32, little endian: CRC-32C (Castagnoli) of length's 4 bytes, then payload
//	payload the event as JSON
//
// The payload of a start record (Spool.Begin) is the event's JSON with
// `"start":true,` inserted after its opening brace.
//
// Records are only appended, and a batch of them is fsynced before the
// spool counts it as written. A crash can therefore leave only a torn tail
// in the newest segment: a short header, a length running past the end of
// the file, zeros, or a checksum that does not match. Opening the spool
// truncates the segment at the first such record; nothing after it is read.
//
// The file "ack" holds the position of the first event not yet acknowledged
// by the server, replaced atomically (write ack.tmp, fsync, rename, fsync the
// directory):
//
//	magic   "AIRACK01"
//	segment uint64, little endian
//	offset  uint64, little endian: a record boundary in that segment
//	crc     uint32, little endian: CRC-32C of the 24 bytes before it
const (
	segmentMagic  = "AIRSPL01"
	headerSize    = int64(len(segmentMagic))
	recordHeader  = 8
	maxRecordSize = 256 << 20 // sanity bound on a length field
	ackMagic      = "AIRACK01"
	ackFileName   = "ack"
	ackSize       = len(ackMagic) + 8 + 8 + 4
	lockFileName  = "lock"
	rejectedName  = "rejected.jsonl"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord means the bytes at a position are not a whole, intact record.
var errBadRecord = errors.New("torn or damaged record")

// position is a place in the spool: a segment and a byte offset in it.
type position struct {
	seg uint64
	off int64
}

func segmentName(n uint64) string { return fmt.Sprintf("seg-%016d.log", n) }

func parseSegmentName(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, "seg-")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ".log")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n > 0
}

// listSegments returns the segment numbers in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []uint64
	for _, e := range entries {
		if n, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			segs = append(segs, n)
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i] < segs[j] })
	return segs, nil
}

// appendRecord appends payload, framed as a record, to dst.
func appendRecord(dst, payload []byte) []byte {
	var h [recordHeader]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	crc := crc32.Update(0, castagnoli, h[0:4])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(h[4:8], crc)
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// peekRecordSize returns the total size (header and payload) of the record
// r starts with, without consuming it. remaining is how many bytes are left
// before the end of the valid data. It returns io.EOF when remaining is 0.
func peekRecordSize(r *bufio.Reader, remaining int64) (int64, error) {
	if remaining == 0 {
		return 0, io.EOF
	}
	if remaining < recordHeader {
		return 0, errBadRecord
	}
	h, err := r.Peek(4)
	if err != nil {
		return 0, errBadRecord
	}
	n := int64(binary.LittleEndian.Uint32(h))
	if n == 0 || n > maxRecordSize || recordHeader+n > remaining {
		return 0, errBadRecord
	}
	return recordHeader + n, nil
}

// readRecord reads one record and returns its payload (in buf's storage when
// it fits) and its total size. It returns io.EOF when remaining is 0 and
// errBadRecord when the bytes are not a whole, intact record.
func readRecord(r *bufio.Reader, remaining int64, buf []byte) ([]byte, int64, error) {
	size, err := peekRecordSize(r, remaining)
	if err != nil {
		return nil, 0, err
	}
	var h [recordHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, 0, errBadRecord
	}
	n := int(size - recordHeader)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	payload := buf[:n]
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, 0, errBadRecord
	}
	crc := crc32.Update(0, castagnoli, h[0:4])
	crc = crc32.Update(crc, castagnoli, payload)
	if crc != binary.LittleEndian.Uint32(h[4:8]) {
		return nil, 0, errBadRecord
	}
	return payload, size, nil
}

// segmentScan is what scanning a segment found.
type segmentScan struct {
	size     int64   // the file's size
	validEnd int64   // end of the last intact record (headerSize if none)
	starts   []int64 // offset of every intact record
}

// scanSegment reads a segment and finds where its intact records end. A
// file shorter than the magic that holds only a prefix of it (or zeros) is
// a segment whose creation a crash interrupted: scan reports it with
// validEnd 0.
func scanSegment(path string) (segmentScan, error) { return scanSegmentVisit(path, nil) }

// scanSegmentVisit is scanSegment, calling visit (when not nil) with the
// offset and payload of each intact record, in order; the payload is only
// valid during the call.
func scanSegmentVisit(path string, visit func(off int64, payload []byte)) (segmentScan, error) {
	f, err := os.Open(path)
	if err != nil {
		return segmentScan{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return segmentScan{}, err
	}
	return scanSegmentReader(f, info.Size(), visit)
}

func scanSegmentReader(rd io.Reader, size int64, visit func(off int64, payload []byte)) (segmentScan, error) {
	sc := segmentScan{size: size}
	head := make([]byte, headerSize)
	n, _ := io.ReadFull(rd, head)
	if int64(n) < headerSize {
		if bytes.HasPrefix([]byte(segmentMagic), head[:n]) || allZero(head[:n]) {
			return sc, nil
		}
		return sc, errors.New("not a session log spool segment (bad magic)")
	}
	if string(head) != segmentMagic {
		if allZero(head) {
			return sc, nil // created, never written: the crash came before the header reached the disk
		}
		return sc, errors.New("not a session log spool segment (bad magic)")
	}
	sc.validEnd = headerSize
	br := bufio.NewReaderSize(rd, 64<<10)
	var buf []byte
	for {
		payload, n, err := readRecord(br, size-sc.validEnd, buf)
		if err != nil {
			return sc, nil // io.EOF: clean end; errBadRecord: torn tail from here on
		}
		buf = payload[:0]
		if visit != nil {
			visit(sc.validEnd, payload)
		}
		sc.starts = append(sc.starts, sc.validEnd)
		sc.validEnd += n
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// readAck reads the acknowledged position. ok is false when there is no
// ack file or it is damaged (then everything in the spool is sent again).
func readAck(dir string) (pos position, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, ackFileName))
	if errors.Is(err, os.ErrNotExist) {
		return position{}, false, nil
	}
	if err != nil {
		return position{}, false, err
	}
	if len(b) != ackSize || string(b[:len(ackMagic)]) != ackMagic ||
		crc32.Checksum(b[:ackSize-4], castagnoli) != binary.LittleEndian.Uint32(b[ackSize-4:]) {
		return position{}, false, errBadRecord
	}
	pos.seg = binary.LittleEndian.Uint64(b[8:16])
	pos.off = int64(binary.LittleEndian.Uint64(b[16:24]))
	return pos, true, nil
}

// writeAck replaces the ack file atomically and durably.
func writeAck(dir string, pos position) error {
	b := make([]byte, 0, ackSize)
	b = append(b, ackMagic...)
	b = binary.LittleEndian.AppendUint64(b, pos.seg)
	b = binary.LittleEndian.AppendUint64(b, uint64(pos.off))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	tmp := filepath.Join(dir, ackFileName+".tmp")
	if err := writeFileSync(tmp, b); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, ackFileName)); err != nil {
		return err
	}
	return syncDir(dir)
}

// writeFileSync writes a new file (mode 0600) and fsyncs it.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir fsyncs a directory, so that files created, renamed or removed in
// it stay so after a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// createSegment creates segment n with its magic, durably.
func createSegment(dir string, n uint64) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, segmentName(n)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt([]byte(segmentMagic), 0); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
