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

// Create starts a recording at path, mode 0600, in a file it creates itself
// (O_EXCL, never through a link). Past maxSize bytes the file rotates to
// path.1 (path.1 to path.2, ...), keeping maxFiles old files.
//
// An earlier recording at path is kept: it moves to path.1 as a rotation
// would. Anything else there is refused and left as it is: a file that is
// not a recording, one that belongs to another user or has other hard
// links (writing it would hand them the trace), or one that is not a
// regular file (a FIFO would block the tracer).
func Create(path string, info stream.Info, maxSize int64, maxFiles int) (*Writer, error) {
	w := &Writer{path: path, maxSize: maxSize, maxFiles: maxFiles, header: Header{
		Format: "tcpmemtrace recording", Version: version, Created: clock(), Info: info,
		DropReasons: stream.MemoryDropReasons, ResetReason: stream.AbortResetReason,
	}}
	w.enc.intern = w.intern
	existing, err := replaceable(path)
	if err != nil {
		return nil, err
	}
	if existing {
		if err := w.shift(); err != nil {
			return nil, err
		}
	}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// replaceable checks what is at path: nothing (false), an earlier
// recording of ours (true), or something to leave alone (an error).
func replaceable(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); errors.Is(err, unix.ENOENT) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return false, fmt.Errorf("%s is a symbolic link: refusing to write through it", path)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return false, fmt.Errorf("%s is not a regular file (%s): a recording needs one", path, fileKind(st.Mode))
	case st.Uid != uint32(os.Geteuid()):
		return false, fmt.Errorf("%s exists and belongs to uid %d: refusing to replace another user's file", path, st.Uid)
	case st.Nlink > 1:
		return false, fmt.Errorf("%s has %d hard links: refusing to replace a file that is also elsewhere", path, st.Nlink)
	case st.Size == 0:
		return true, nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	head := make([]byte, len(magic))
	n, _ := unix.Read(fd, head)
	unix.Close(fd)
	if n != len(magic) || string(head) != magic {
		return false, fmt.Errorf("%s exists and is not a tcpmemtrace recording: refusing to replace it (remove it, or choose another name)", path)
	}
	return true, nil
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "not a regular file"
}

// openFile creates path, which must not exist, for writing: mode 0600,
// never through a symlink.
func openFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating %s: something else created it meanwhile", path)
		}
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if err := f.Chmod(0o600); err != nil { // whatever the umask
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

// rotate ends the file, saying that the trace goes on in the next, moves
// it to path.1 (and so on) and starts a new file with the same header, its
// part number one more.
func (w *Writer) rotate() error {
	if w.last != nil {
		if err := w.put(recSnapshot, rotatedSnapshot(w.last)); err != nil {
			return err
		}
	}
	if err := w.closeFile(); err != nil {
		return err
	}
	if err := w.shift(); err != nil {
		return err
	}
	w.header.Part++
	return w.open()
}

// shift moves path to path.1, path.1 to path.2 and so on, dropping what
// falls past maxFiles.
func (w *Writer) shift() error {
	os.Remove(fmt.Sprintf("%s.%d", w.path, w.maxFiles))
	for i := w.maxFiles - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", w.path, i), fmt.Sprintf("%s.%d", w.path, i+1))
	}
	var err error
	if w.maxFiles > 0 {
		err = os.Rename(w.path, w.path+".1")
	} else {
		err = os.Remove(w.path)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotating %s: %w", w.path, err)
	}
	return nil
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
