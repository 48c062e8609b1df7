package render

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tcpmemtrace/tcpmemtrace/internal/termsafe"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// An event line is written by appending to one reused buffer, not with
// fmt: at 100k drops a second the line stream's formatting was the
// largest part of the tool's own CPU. appendLine writes exactly what
// fmt.Sprintf(lineFormat, ...) would (TestLineMatchesFormat holds it).

// column appends what add appends, then spaces up to width runes: fmt's
// %-*s.
func column(b []byte, width int, add func([]byte) []byte) []byte {
	start := len(b)
	b = add(b)
	for n := utf8.RuneCount(b[start:]); n < width; n++ {
		b = append(b, ' ')
	}
	return b
}

func str(s string) func([]byte) []byte { return func(b []byte) []byte { return append(b, s...) } }

// Widths of lineFormat's columns before the detail.
var lineWidths = [...]int{12, 7, 15, 21, 21, 11, 19}

// appendLine appends e's line; detail is its DETAIL column, already made.
func appendLine(b []byte, e *stream.Event, event string, detail []byte) []byte {
	cols := [len(lineWidths)]func([]byte) []byte{
		func(b []byte) []byte { return e.Time.AppendFormat(b, "15:04:05.000") },
		str("-"), str("-"), str("-"), str("-"), str("-"), str(event),
	}
	if e.Owner.PID != 0 {
		cols[1] = func(b []byte) []byte { return strconv.AppendUint(b, uint64(e.Owner.PID), 10) }
		cols[2] = str(termsafe.Name(e.Owner.Comm))
	}
	if s := &e.Socket; s.Src.IsValid() {
		cols[3] = s.Src.AppendTo
		cols[4] = s.Dst.AppendTo
		cols[5] = str(s.State.String())
	}
	for i, add := range cols {
		b = append(column(b, lineWidths[i], add), ' ')
	}
	b = append(b, detail...)
	return append(b, '\n')
}

// eventDetail appends an event's DETAIL column, its parts joined by "; ",
// and returns its EVENT column ("" for a line not written).
func eventDetail(d []byte, e *stream.Event) ([]byte, string) {
	s := &e.Socket
	switch e.Kind {
	case stream.KindAbort:
		d = appendMem(appendInt(append(d, "wmem_queued "...), int64(s.WmemQueued)), e.Mem)
		if s.Orphan {
			d = append(d, "; orphan"...)
			if since, ok := e.SinceClose(); ok {
				d = append(append(append(d, ", closed "...), since.Round(time.Millisecond).String()...), " ago"...)
			}
		}
		return d, "ABORT " + e.Cause
	case stream.KindDrop:
		event := "DROP " + e.Reason
		d = append(appendInt(d, int64(e.Bytes)), " bytes"...)
		if e.DropCause != "" {
			d = append(append(d, "; cause "...), e.DropCause...)
		}
		if e.Location != "" {
			d = append(append(d, "; at "...), termsafe.Name(e.Location)...)
		}
		if s.Family != 0 && s.Protocol == 6 {
			d = appendMem(appendPair(append(d, "; rmem "...), s.RmemAlloc, s.Rcvbuf), e.Mem)
		}
		if s.Protocol != 6 && s.Protocol != 0 {
			event += "/" + protoName(s.Protocol)
		}
		return d, event
	case stream.KindRefusal:
		event := "REFUSED recv"
		if e.Send {
			event = "REFUSED send"
		}
		d = appendPair(append(d, "rmem "...), s.RmemAlloc, s.Rcvbuf)
		d = appendMem(appendPair(append(d, " wmem_queued "...), s.WmemQueued, s.Sndbuf), e.Mem)
		if s.Memcg {
			d = append(d, "; memcg"...)
		}
		return d, event
	case stream.KindPressureEnter:
		return appendMemVsLimits(d, e.Mem.Allocated, e.Mem.Limits), "PRESSURE enter"
	case stream.KindPressureLeave:
		return appendMemVsLimits(d, e.Mem.Allocated, e.Mem.Limits), "PRESSURE leave"
	}
	return d, e.Kind.String()
}

func appendInt(b []byte, v int64) []byte { return strconv.AppendInt(b, v, 10) }

func appendPair(b []byte, x, y int32) []byte {
	return appendInt(append(appendInt(b, int64(x)), '/'), int64(y))
}

// appendMem appends "; " and where memory stands against tcp_mem.
func appendMem(b []byte, m stream.Mem) []byte {
	return appendMemVsLimits(append(b, "; "...), m.Allocated, m.Limits)
}
