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
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

var errCutHeader = errors.New("recording cut before its header ended: nothing to replay")

// Reader replays a recording as a stream.Source.
type Reader struct {
	r       *bufio.Reader
	file    *os.File // nil when reading from elsewhere
	header  Header
	offset  int64
	strings map[uint64]string
	version byte
	// warning says how the replay fell short of the whole trace: the file
	// was cut, corrupt, or ends without the trace's final counts.
	warning error
}

// Open opens a recording and reads its header; the records follow in Run.
// A FIFO or a pipe works too: opening it waits for a writer, reading for
// data, and both give up when ctx ends.
func Open(ctx context.Context, path string) (*Reader, error) {
	if path == "" {
		return nil, errors.New("no recording named (an empty file name)")
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a directory, not a recording", path)
	}
	f, err := openContext(ctx, path)
	if err != nil {
		return nil, err
	}
	// Reads from a FIFO wait for the writer: ctx's end unblocks them.
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })
	r, err := NewReader(f)
	stop()
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: interrupted while reading its header", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.file = f
	return r, nil
}

// openContext opens path for reading; opening a FIFO blocks until a writer
// comes, so the open runs aside and ctx can end the wait.
func openContext(ctx context.Context, path string) (*os.File, error) {
	type opened struct {
		f   *os.File
		err error
	}
	c := make(chan opened, 1)
	go func() {
		f, err := os.Open(path)
		c <- opened{f, err}
	}()
	select {
	case o := <-c:
		return o.f, o.err
	case <-ctx.Done():
		go func() { // the open may still succeed: close what it gives
			if o := <-c; o.f != nil {
				o.f.Close()
			}
		}()
		return nil, fmt.Errorf("%s: interrupted while waiting for a writer", path)
	}
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
	if v := head[len(magic)]; v < minVersion || v > version {
		return nil, fmt.Errorf("recording format version %d: this tcpmemtrace reads versions %d to %d", v, minVersion, version)
	}
	r.version = head[len(magic)]
	r.offset = int64(len(head))
	typ, payload, k, err := readFrame(r.r, nil, r.offset)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errCutHeader
		}
		return nil, err
	}
	if typ != recHeader {
		return nil, &CorruptError{Offset: r.offset, Reason: fmt.Sprintf("first record is of type %d, not the header", typ)}
	}
	if err := json.Unmarshal(payload, &r.header); err != nil || r.header.Format != "tcpmemtrace recording" {
		return nil, &CorruptError{Offset: r.offset, Reason: "unreadable header"}
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
	if r.file != nil {
		return r.file.Close()
	}
	return nil
}

// Run replays every record, ending with the last snapshot marked final. It
// stops early, with a Warning, at a cut or corrupt record: the summary is
// then the last good snapshot's.
func (r *Reader) Run(ctx context.Context, fn func(stream.Record) error) error {
	if r.file != nil { // a FIFO's reads wait for data: ctx's end unblocks them
		stop := context.AfterFunc(ctx, func() { r.file.SetReadDeadline(time.Now()) })
		defer stop()
	}
	var (
		ev   stream.Event
		last *snapshotRecord
		buf  []byte
	)
	for ctx.Err() == nil {
		typ, payload, n, err := readFrame(r.r, buf, r.offset)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.warning = r.stopped(ctx, err, n, last)
			break
		}
		buf = payload[:cap(payload)]
		if err := r.record(typ, payload, &ev, &last, fn); err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) {
				return err // the consumer's
			}
			r.warning = r.stopped(ctx, err, 0, last)
			break
		}
		r.offset += int64(n)
	}
	if r.warning == nil && ctx.Err() == nil {
		r.warning = ending(last)
	}
	if last == nil {
		last = &snapshotRecord{Snapshot: stream.Snapshot{Time: r.header.Created}}
	}
	final := last.Snapshot
	final.Final = true
	return fn(stream.Record{Snapshot: &final})
}

// record replays one record.
func (r *Reader) record(typ byte, payload []byte, ev *stream.Event, last **snapshotRecord, fn func(stream.Record) error) error {
	switch typ {
	case recString:
		id, k := binary.Uvarint(payload)
		if k <= 0 || id != uint64(len(r.strings)) {
			return &CorruptError{Offset: r.offset, Reason: "bad string definition"}
		}
		r.strings[id] = string(payload[k:])
	case recEvent:
		d := decoder{b: payload, strings: r.strings, version: r.version}
		if err := d.event(ev); err != nil {
			return &CorruptError{Offset: r.offset, Reason: "event: " + err.Error()}
		}
		return fn(stream.Record{Event: ev})
	case recSnapshot:
		var s snapshotRecord
		if err := json.Unmarshal(payload, &s); err != nil {
			return &CorruptError{Offset: r.offset, Reason: "snapshot: " + err.Error()}
		}
		*last = &s
		if s.Final || s.Rotated {
			return nil // the last one is sent once, at the end
		}
		return fn(stream.Record{Snapshot: &s.Snapshot})
	case recHeader: // a later part's header cannot appear in one file
		return &CorruptError{Offset: r.offset, Reason: "a second header"}
	default:
		return &CorruptError{Offset: r.offset, Reason: fmt.Sprintf("unknown record type %d", typ)}
	}
	return nil
}

// stopped says why the replay ended before the file did, and what the
// summary then shows.
func (r *Reader) stopped(ctx context.Context, err error, n int, last *snapshotRecord) error {
	counts := "no counts: it ended before its first snapshot"
	if last != nil {
		counts = "the counts are those of " + last.Time.Format("15:04:05")
	}
	var ce *CorruptError
	switch {
	case ctx.Err() != nil:
		return nil // interrupted: not the file's fault
	case errors.As(err, &ce) && ce.joined:
		return fmt.Errorf("a second recording starts at byte %d (files joined together?): replayed the first; replay each file on its own; %s", ce.Offset, counts)
	case errors.As(err, &ce):
		return fmt.Errorf("%v: replayed up to the last good record; %s", err, counts)
	}
	return fmt.Errorf("recording cut at byte %d, inside a record: replayed up to the last whole one; %s", r.offset+int64(n), counts)
}

// ending says whether the file holds the trace to its end.
func ending(last *snapshotRecord) error {
	switch {
	case last == nil:
		return errors.New("the recording holds no counts (it ended before its first second)")
	case last.Rotated:
		return fmt.Errorf("this part ends where the next one begins (rotated at %s): its counts are those of then", last.Time.Format("15:04:05"))
	case !last.Final:
		return fmt.Errorf("the recording ends without its final counts (the tracer was killed, or the file is still being written): the counts are those of %s", last.Time.Format("15:04:05"))
	}
	return nil
}
