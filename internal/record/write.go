package record

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// clock dates a recording's header; tests fix it.
var clock = time.Now

// Writer appends a trace to a file, rotating it past a size.
type Writer struct {
	path     string
	maxSize  int64 // bytes; 0: no rotation
	maxFiles int   // rotated files kept beside the current one
	header   Header
	f        *os.File
	w        *bufio.Writer
	size     int64
	strings  map[string]uint64
	enc      encoder
	frame    []byte
	last     []byte // the last snapshot's payload, repeated at the top of a new file
}

// Create starts a recording at path: mode 0600, never through a symlink.
// Past maxSize bytes the file rotates to path.1 (path.1 to path.2, ...),
// keeping maxFiles old files.
func Create(path string, info stream.Info, maxSize int64, maxFiles int) (*Writer, error) {
	w := &Writer{path: path, maxSize: maxSize, maxFiles: maxFiles, header: Header{
		Format: "tcpmemtrace recording", Version: version, Created: clock(), Info: info,
		DropReasons: stream.MemoryDropReasons, ResetReason: stream.AbortResetReason,
	}}
	w.enc.intern = w.intern
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// openFile creates or truncates path for writing without following a
// symlink, refuses anything but a regular file, and makes it 0600.
func openFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link: refusing to write through it", path)
		}
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", path)
	}
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (w *Writer) open() error {
	f, err := openFile(w.path)
	if err != nil {
		return err
	}
	w.f, w.w, w.size = f, bufio.NewWriterSize(f, 256<<10), 0
	w.strings = map[string]uint64{"": 0}
	if _, err := w.w.WriteString(magic); err != nil {
		return err
	}
	w.w.WriteByte(version)
	w.size = int64(len(magic) + 1)
	hdr, err := json.Marshal(w.header)
	if err != nil {
		return err
	}
	if err := w.put(recHeader, hdr); err != nil {
		return err
	}
	if w.last != nil { // a rotated file stands alone: it starts with the totals so far
		return w.put(recSnapshot, w.last)
	}
	return nil
}

func (w *Writer) put(typ byte, payload []byte) error {
	w.frame = frame(w.frame[:0], typ, payload)
	n, err := w.w.Write(w.frame)
	w.size += int64(n)
	return err
}

// intern returns a string's id, writing its definition first if new.
func (w *Writer) intern(s string) uint64 {
	if id, ok := w.strings[s]; ok {
		return id
	}
	id := uint64(len(w.strings))
	w.strings[s] = id
	w.put(recString, append(binary.AppendUvarint(nil, id), s...)) // a write error resurfaces at the next Write
	return id
}

// Write appends one record of the stream. Snapshots also flush, so a crash
// loses at most the last second.
func (w *Writer) Write(r stream.Record) error {
	switch {
	case r.Event != nil:
		w.enc.b = w.enc.b[:0]
		w.enc.event(r.Event) // may define strings first
		if err := w.put(recEvent, w.enc.b); err != nil {
			return err
		}
	case r.Snapshot != nil:
		b, err := json.Marshal(r.Snapshot)
		if err != nil {
			return err
		}
		if err := w.put(recSnapshot, b); err != nil {
			return err
		}
		w.last = b
		if err := w.w.Flush(); err != nil {
			return err
		}
	}
	if w.maxSize > 0 && w.size >= w.maxSize {
		return w.rotate()
	}
	return nil
}

// rotate moves path to path.1 (and so on, dropping the oldest) and starts
// a new file with the same header, its part number one more.
func (w *Writer) rotate() error {
	if err := w.closeFile(); err != nil {
		return err
	}
	os.Remove(fmt.Sprintf("%s.%d", w.path, w.maxFiles))
	for i := w.maxFiles - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", w.path, i), fmt.Sprintf("%s.%d", w.path, i+1))
	}
	if w.maxFiles > 0 {
		if err := os.Rename(w.path, w.path+".1"); err != nil {
			return fmt.Errorf("rotating %s: %w", w.path, err)
		}
	}
	w.header.Part++
	return w.open()
}

func (w *Writer) closeFile() error {
	err := w.w.Flush()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close flushes and closes the file.
func (w *Writer) Close() error { return w.closeFile() }
