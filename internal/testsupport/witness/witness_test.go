package witness

import "testing"

func TestCountable(t *testing.T) {
	for _, c := range []struct {
		name   string
		kernel uint64
		counts Counts
		want   uint64
	}{
		{"all seen", 100, Counts{All: 100, Netns: 100, Fired: 100}, 100},
		{"two hidden", 100, Counts{All: 98, Netns: 98, Fired: 100, ByTask: map[string]int64{"tokio-rt-worker-75": 2}}, 98},
		{"no ftrace", 100, Counts{All: 98, Netns: 98, Fired: -1}, 100},
		{"no witness", 100, Unknown, 100},
		{"the host's namespace not known", 100, Counts{All: 98, Netns: -1, Fired: 100}, 100},
		{"events outside the namespace: hidden ones may be too", 100, Counts{All: 99, Netns: 98, Fired: 100}, 100},
		{"the witness turned some away itself", 100, Counts{All: 98, Netns: 98, Misses: 2, Fired: 100}, 100},
		{"more hidden than counted", 1, Counts{All: 0, Netns: 0, Fired: 3}, 1},
		{"the program saw more than ftrace", 100, Counts{All: 100, Netns: 100, Fired: 99}, 100},
	} {
		if got := Countable(t, c.kernel, c.counts); got != c.want {
			t.Errorf("%s: Countable(%d, %+v) = %d, want %d", c.name, c.kernel, c.counts, got, c.want)
		}
	}
}
