package tracer

import "testing"

func TestRecordsPerWindow(t *testing.T) {
	for _, c := range []struct {
		rate, cpus int
		want       uint32
	}{
		{0, 4, 0},     // no limit
		{1000, 2, 50}, // 1000/s = 100 per 100 ms, 50 per CPU
		{1000, 3, 34}, // rounded up
		{1, 64, 1},    // never 0, which would mean no limit
	} {
		if got := recordsPerWindow(c.rate, c.cpus); got != c.want {
			t.Errorf("recordsPerWindow(%d, %d) = %d, want %d", c.rate, c.cpus, got, c.want)
		}
	}
}
