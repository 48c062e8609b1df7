package kmsg

import "testing"

func TestRecords(t *testing.T) {
	w := &Watcher{c: Counts{Lines: map[string]int{}}}
	for _, rec := range []string{
		"6,1234,1183289338,-;TCP: out of memory -- consider tuning tcp_mem\n",
		"6,1235,1183289459,-;TCP: out of memory -- consider tuning tcp_mem\n",
		"6,1236,1183289500,-;TCP: too many orphaned sockets\n SUBSYSTEM=net\n",
		"4,1237,1188000000,-;net_ratelimit: 290 callbacks suppressed\n",
		"4,1238,1188000001,-;net_ratelimit: 7 callbacks suppressed\n",
		"6,1239,1188000002,-;TCP: request_sock_TCP: Possible SYN flooding on port 80\n",
		"garbage without a separator",
	} {
		w.add([]byte(rec))
	}
	if w.c.Lines["mem_aborts"] != 2 || w.c.Lines["orphan_aborts"] != 1 || w.c.Suppressed != 297 {
		t.Errorf("%+v", w.c)
	}
}

// Live: the watcher starts at the end of the log, so old lines are not counted.
func TestStartsAtEnd(t *testing.T) {
	w, err := Start()
	if err != nil {
		t.Skipf("/dev/kmsg not readable here: %v", err)
	}
	if c := w.Stop(); c.Lines["mem_aborts"] != 0 || c.Lines["orphan_aborts"] != 0 {
		t.Errorf("counted lines from before Start: %+v", c)
	}
}
