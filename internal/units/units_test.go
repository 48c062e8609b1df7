package units

import "testing"

func TestIEC(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB", -2048: "-2.0 KiB"} {
		if got := IEC(in); got != want {
			t.Errorf("IEC(%d) = %q, want %q", in, got, want)
		}
	}
}
