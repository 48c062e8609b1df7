package sockdiag

import (
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/stream"
)

// The rule: unread data, nothing new for StallAfter, in a state a process
// still reads from.
func TestStallAge(t *testing.T) {
	for _, c := range []struct {
		name    string
		s       Socket
		stalled bool
	}{
		{"unread, nothing new for 93 s", Socket{State: stateEstablished, RecvQ: 1, LastDataRecv: 93 * time.Second}, true},
		{"exactly StallAfter", Socket{State: stateEstablished, RecvQ: 1, LastDataRecv: StallAfter}, true},
		{"peer closed, data left unread", Socket{State: stateCloseWait, RecvQ: 10, LastDataRecv: time.Minute}, true},
		{"half-closed by us, still reading", Socket{State: stateFinWait2, RecvQ: 10, LastDataRecv: time.Minute}, true},
		{"read everything, peer idle", Socket{State: stateEstablished, RecvQ: 0, LastDataRecv: time.Hour}, false},
		{"a slow reader: data arrived lately", Socket{State: stateEstablished, RecvQ: 1 << 20, LastDataRecv: StallAfter - time.Millisecond}, false},
		{"a listener's backlog", Socket{State: 10, RecvQ: 5, LastDataRecv: time.Hour}, false},
		{"time-wait: no tcp_info", Socket{State: 6, RecvQ: 0}, false},
	} {
		age, stalled := c.s.StallAge()
		if stalled != c.stalled || stalled && age != c.s.LastDataRecv || !stalled && age != 0 {
			t.Errorf("%s: %v %v", c.name, age, stalled)
		}
	}
}

// Per owner: how many stalled sockets, their queued bytes, and the
// shortest age (it has read none of them for at least that long); a
// process that reads is never stalled, whatever it holds.
func TestRankStalled(t *testing.T) {
	est := func(ino uint32, rmem uint32, last time.Duration, cookie uint64) Socket {
		return Socket{State: stateEstablished, Inode: ino, RecvQ: 1, Mem: MemInfo{RmemAlloc: rmem}, LastDataRecv: last, Cookie: cookie}
	}
	socks := []Socket{
		est(1, 3<<20, 120*time.Second, 11), est(2, 1<<20, 93*time.Second, 12), est(3, 1<<10, time.Second, 13), // nginx: 2 of 3 stalled
		est(4, 8<<20, 100*time.Millisecond, 14), // curl: a big reader that reads
		est(5, 2<<20, time.Hour, 15),            // no owner known: never ranked
	}
	owners := map[uint32]stream.Process{1: {PID: 4242, Comm: "nginx"}, 2: {PID: 4242, Comm: "nginx"}, 3: {PID: 4242, Comm: "nginx"},
		4: {PID: 4300, Comm: "curl"}}
	hs := Rank(socks, owners, 10)
	if len(hs) != 2 || hs[0].PID != 4300 || hs[1].PID != 4242 {
		t.Fatalf("%+v", hs)
	}
	if curl := hs[0]; curl.StalledSockets != 0 || curl.StalledBytes != 0 || curl.StalledMs != 0 || NotReading(curl, "") != "" {
		t.Errorf("a reading holder is stalled: %+v", curl)
	}
	nginx := hs[1]
	if nginx.Sockets != 3 || nginx.StalledSockets != 2 || nginx.StalledBytes != 4<<20 || nginx.StalledMs != 93000 {
		t.Errorf("nginx %+v", nginx)
	}
	if got, want := NotReading(nginx, ""), "pid 4242 (nginx) has not read for 93 s with 4.0 MiB queued on 2 sockets"; got != want {
		t.Errorf("NotReading: %q, want %q", got, want)
	}
	if got, want := NotReading(nginx, "shop/web"), "pid 4242 (nginx) in shop/web has not read for 93 s with 4.0 MiB queued on 2 sockets"; got != want {
		t.Errorf("NotReading: %q, want %q", got, want)
	}
	one := stream.Holder{Process: stream.Process{PID: 1, Comm: "x"}, StalledSockets: 1, StalledBytes: 2048, StalledMs: 150000}
	if got, want := NotReading(one, ""), "pid 1 (x) has not read for 2 min with 2.0 KiB queued on 1 socket"; got != want {
		t.Errorf("NotReading: %q, want %q", got, want)
	}

	st := StalledSockets(socks, owners, 10)
	if len(st) != 2 || st[0].Cookie != 11 || st[0].PID != 4242 || st[0].Bytes != 3<<20 || st[0].StalledMs != 120000 || st[1].Cookie != 12 {
		t.Errorf("stalled sockets %+v", st)
	}
	if st := StalledSockets(socks, owners, 1); len(st) != 1 || st[0].Cookie != 11 {
		t.Errorf("bounded to 1: %+v", st)
	}
}
