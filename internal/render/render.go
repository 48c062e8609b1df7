// Package render writes a trace for people (bcc-style lines and a summary
// table) or for programs (JSON Lines, schema in docs/json.md).
package render

import (
	"fmt"

	"github.com/tcpmemtrace/tcpmemtrace/internal/aggregate"
	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// Sink is one output format.
type Sink interface {
	// Start is written once every hook is attached.
	Start(info stream.Info) error
	Event(e *stream.Event) error
	// Notice says what the tool did beside tracing (a flight recording).
	Notice(n *stream.Notice) error
	Summary(info stream.Info, s aggregate.Summary) error
	Flush() error
}

// Discard is the sink of --quiet.
type Discard struct{}

func (Discard) Start(stream.Info) error                      { return nil }
func (Discard) Event(*stream.Event) error                    { return nil }
func (Discard) Notice(*stream.Notice) error                  { return nil }
func (Discard) Summary(stream.Info, aggregate.Summary) error { return nil }
func (Discard) Flush() error                                 { return nil }

// pct is v as a percentage of of, 0 when of is 0.
func pct(v, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(v) / float64(of)
}

// protoName names an IP protocol number.
func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 0:
		return ""
	}
	return fmt.Sprint(p)
}

// appendMemVsLimits says where allocated pages stand against the tcp_mem
// watermark they crossed: "mem 3068 > high 3000 pages".
func appendMemVsLimits(b []byte, alloc int64, lim [3]int64) []byte {
	b = appendInt(append(b, "mem "...), alloc)
	switch {
	case lim[2] > 0 && alloc > lim[2]:
		return append(appendInt(append(b, " > high "...), lim[2]), " pages"...)
	case lim[1] > 0 && alloc > lim[1]:
		b = appendInt(append(b, " > pressure "...), lim[1])
	case lim[0] > 0 && alloc > lim[0]:
		b = appendInt(append(b, " > low "...), lim[0])
	default:
		return append(appendInt(append(b, " <= low "...), lim[0]), " pages"...)
	}
	return append(appendInt(append(b, " pages (high "...), lim[2]), ')')
}
