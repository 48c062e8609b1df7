package sockdiag

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

func TestMain(m *testing.M) {
	workload.RunRoleIfChild()
	os.Exit(m.Run())
}

// Live, in a namespace of its own: a reader that stopped reading is
// stalled on every socket, its age the time since its data arrived and
// growing with the clock; a reader that keeps reading 4 KiB every 50 ms
// from queues that stay full is never stalled. Holders says the same per
// process, and lists the stalled sockets by the cookies events carry.
func TestStallLive(t *testing.T) {
	privtest.Require(t)
	// Nothing global is lowered here, but a lowered tcp_mem elsewhere would
	// change what the readers receive: not beside the tests that lower it.
	workload.LockT(t)
	const conns = 8
	env, err := workload.StartStall(workload.Stall{Conns: conns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	if err := env.Run(); err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("/proc/%d/ns/net", env.WriterPID)
	type look struct {
		at   time.Time
		ages map[uint64]time.Duration // the stalled reader's sockets, by cookie
	}
	var first, last look
	var slowLast time.Duration
	var slowQueued uint32
	for time.Since(env.Since) < StallAfter+4*time.Second {
		socks, err := DumpNetns(ns)
		if err != nil {
			t.Fatal(err)
		}
		at, owners := time.Now(), Owners("/proc")
		l := look{at: at, ages: map[uint64]time.Duration{}}
		for i := range socks {
			s := &socks[i]
			age, stalled := s.StallAge()
			switch owners[s.Inode].PID {
			case env.SlowPID:
				if stalled {
					t.Errorf("the slow reader's socket %d is stalled: %v unread, data %v ago", s.Cookie, s.RecvQ, s.LastDataRecv)
				}
				slowLast, slowQueued = max(slowLast, s.LastDataRecv), max(slowQueued, s.RecvQ)
			case env.StalledPID:
				if s.State == 10 { // its listener
					continue
				}
				if stalled {
					l.ages[s.Cookie] = age
				}
				if elapsed := at.Sub(env.Since); s.LastDataRecv < elapsed-100*time.Millisecond || s.LastDataRecv > elapsed+time.Second {
					t.Errorf("stalled reader's socket %d: data %v ago, its last arrived %v ago", s.Cookie, s.LastDataRecv, elapsed)
				}
			}
		}
		if since := at.Sub(env.Since); since >= StallAfter+time.Second {
			if len(l.ages) != conns {
				t.Fatalf("%v after its data: %d of the stalled reader's %d sockets stalled", since, len(l.ages), conns)
			}
			if first.ages == nil {
				first = l
			}
			last = l
		}
		time.Sleep(200 * time.Millisecond)
	}
	gap := last.at.Sub(first.at)
	for cookie, a := range first.ages {
		if cookie == 0 {
			t.Error("a socket without its cookie")
		}
		if grew := last.ages[cookie] - a; grew < gap-300*time.Millisecond || grew > gap+300*time.Millisecond {
			t.Errorf("socket %d: stall age %v then %v, %v apart", cookie, a, last.ages[cookie], gap)
		}
	}
	t.Logf("stall ages %v then %v (%v apart); the slow reader: up to %d bytes unread, data at most %v apart",
		first.ages, last.ages, gap.Round(time.Millisecond), slowQueued, slowLast)
	if slowQueued < 64<<10 {
		t.Errorf("the slow reader's queues never held 64 KiB (at most %d bytes): it kept up, which proves nothing", slowQueued)
	}

	h, err := Holders(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	var seen int
	for _, o := range h.Holders {
		switch o.PID {
		case env.StalledPID:
			seen++
			if o.Comm != "tmt-stalled" || o.StalledSockets != conns || o.StalledBytes != o.RecvBytes || o.StalledBytes < conns*256<<10 ||
				o.StallAge() < StallAfter+4*time.Second {
				t.Errorf("stalled holder %+v", o)
			}
		case env.SlowPID:
			seen++
			if o.StalledSockets != 0 || o.StalledMs != 0 || o.RecvBytes == 0 || NotReading(o, "") != "" {
				t.Errorf("slow holder %+v", o)
			}
		}
	}
	if seen != 2 {
		t.Errorf("%d of the two readers among %d holders", seen, len(h.Holders))
	}
	listed := 0
	for _, s := range h.Stalled {
		if s.PID == env.StalledPID {
			listed++
			if _, ok := last.ages[s.Cookie]; !ok || s.Comm != "tmt-stalled" || s.Bytes == 0 {
				t.Errorf("stalled socket %+v", s)
			}
		}
		if s.PID == env.SlowPID {
			t.Errorf("the slow reader's socket listed as stalled: %+v", s)
		}
	}
	if listed != conns && len(h.Stalled) < MaxStalled {
		t.Errorf("%d of the %d stalled sockets listed", listed, conns)
	}
}
