// Package units formats sizes and ages for people.
package units

import (
	"fmt"
	"time"
)

// IEC formats a byte count: 1.5 GiB.
func IEC(b int64) string {
	const unit = 1024
	if b < unit && b > -unit {
		return fmt.Sprintf("%d B", b)
	}
	v, i := float64(b), -1
	for ; (v >= unit || v <= -unit) && i < 5; i++ {
		v /= unit
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

// Age formats how long something has lasted, cut down to the unit shown
// (it lasted at least that long): "93 s", "25 min", "5 h", "3 d".
func Age(d time.Duration) string {
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%d s", int64(d/time.Second))
	case d < 2*time.Hour:
		return fmt.Sprintf("%d min", int64(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", int64(d/time.Hour))
	}
	return fmt.Sprintf("%d d", int64(d/(24*time.Hour)))
}
