package record

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var errCutHeader = errors.New("recording cut before its header ended: nothing to replay")

// Reader replays a recording as a stream.Source.
type Reader struct {
	r       *bufio.Reader
	closer  io.Closer
	header  Header
	offset  int64
	strings map[uint64]string
	// warning says the file was cut inside a record (a crash, a full disk).
	warning error
}

// Open reads a recording's header; the records follow in Run.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.closer = f
	return r, nil
}

// NewReader reads the header from r.
func NewReader(in io.Reader) (*Reader, error) {
	r := &Reader{r: bufio.NewReaderSize(in, 256<<10), strings: map[uint64]string{0: ""}}
	head := make([]byte, len(magic)+1)
	n, err := io.ReadFull(r.r, head)
	if n == 0 {
		return nil, ErrEmpty
	}
	if k := min(n, len(magic)); !bytes.Equal(head[:k], []byte(magic)[:k]) {
		return nil, ErrForeign
	}
	if err != nil {
		return nil, errCutHeader
	}
	if head[len(magic)] != version {
		return nil, fmt.Errorf("recording format version %d: this tcpmemtrace reads version %d", head[len(magic)], version)
	}
	r.offset = int64(len(head))
	typ, payload, k, err := readFrame(r.r, nil, r.offset)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errCutHeader
		}
		return nil, err
	}
	if typ != recHeader {
		return nil, &CorruptError{r.offset, fmt.Sprintf("first record is of type %d, not the header", typ)}
	}
	if err := json.Unmarshal(payload, &r.header); err != nil || r.header.Format != "tcpmemtrace recording" {
		return nil, &CorruptError{r.offset, "unreadable header"}
	}
	r.offset += int64(k)
	return r, nil
}

// Header is the recording's description.
func (r *Reader) Header() Header { return r.header }

// Info is the recorded trace's Info.
func (r *Reader) Info() stream.Info { return r.header.Info }

// Warning is set after Run when the file ended inside a record.
func (r *Reader) Warning() error { return r.warning }

// Close closes the file.
func (r *Reader) Close() error {
	if r.closer != nil {
		return r.closer.Close()
	}
	return nil
}

// Run replays every record, ending with the last snapshot marked final. A
// file cut inside a record ends the replay at the last whole one (see
// Warning); a corrupt one is an error.
func (r *Reader) Run(ctx context.Context, fn func(stream.Record) error) error {
	var (
		ev   stream.Event
		last *stream.Snapshot
		buf  []byte
	)
	for ctx.Err() == nil {
		typ, payload, n, err := readFrame(r.r, buf, r.offset)
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			r.warning = fmt.Errorf("recording cut at byte %d, inside a record: replayed up to the last whole one", r.offset+int64(n))
			break
		}
		if err != nil {
			return err
		}
		buf = payload[:cap(payload)]
		switch typ {
		case recString:
			id, k := binary.Uvarint(payload)
			if k <= 0 || id != uint64(len(r.strings)) {
				return &CorruptError{r.offset, "bad string definition"}
			}
			r.strings[id] = string(payload[k:])
		case recEvent:
			d := decoder{b: payload, strings: r.strings}
			if err := d.event(&ev); err != nil {
				return &CorruptError{r.offset, "event: " + err.Error()}
			}
			if err := fn(stream.Record{Event: &ev}); err != nil {
				return err
			}
		case recSnapshot:
			var s stream.Snapshot
			if err := json.Unmarshal(payload, &s); err != nil {
				return &CorruptError{r.offset, "snapshot: " + err.Error()}
			}
			last = &s
			if s.Final {
				break // the last one is sent below, once
			}
			if err := fn(stream.Record{Snapshot: &s}); err != nil {
				return err
			}
		case recHeader: // a later part's header cannot appear in one file
			return &CorruptError{r.offset, "a second header"}
		default:
			return &CorruptError{r.offset, fmt.Sprintf("unknown record type %d", typ)}
		}
		r.offset += int64(n)
	}
	if last == nil {
		last = &stream.Snapshot{Totals: stream.Totals{}, Time: r.header.Created}
		if r.warning == nil {
			r.warning = errors.New("the recording holds no counts (it ended before its first second)")
		}
	}
	final := *last
	final.Final = true
	return fn(stream.Record{Snapshot: &final})
}
