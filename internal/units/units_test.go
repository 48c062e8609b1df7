package units

import (
	"testing"
	"time"
)

func TestIEC(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB", -2048: "-2.0 KiB"} {
		if got := IEC(in); got != want {
			t.Errorf("IEC(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestAge(t *testing.T) {
	for in, want := range map[time.Duration]string{
		0: "0 s", 93*time.Second + 999*time.Millisecond: "93 s", 119 * time.Second: "119 s", 2 * time.Minute: "2 min",
		119 * time.Minute: "119 min", 2 * time.Hour: "2 h", 47*time.Hour + 59*time.Minute: "47 h", 72 * time.Hour: "3 d",
	} {
		if got := Age(in); got != want {
			t.Errorf("Age(%v) = %q, want %q", in, got, want)
		}
	}
}
