package record

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The bytes a recording holds are a format: a fixed stream must write the
// very same file, release after release (docs/recording.md).
func TestWriteGolden(t *testing.T) {
	defer func(old func() time.Time) { clock = old }(clock)
	clock = func() time.Time { return t0.Add(-time.Second) }
	path := filepath.Join(t.TempDir(), "trace.tmtrec")
	write(t, path, 0, 2)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "trace.tmtrec.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the recording's bytes changed (%d bytes, golden %d): go test ./internal/record -update to accept a format change", len(got), len(want))
	}
}
