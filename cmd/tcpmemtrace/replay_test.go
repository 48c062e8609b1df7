package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The committed recording replays, unprivileged, to the same JSON Lines
// and text as ever: a replay runs through the whole pipeline (reader,
// enrichment, aggregation, renderers), so this pins what it outputs.
func TestReplayGolden(t *testing.T) {
	defer func(l *time.Location) { time.Local = l }(time.Local)
	time.Local = time.UTC // the text shows local times
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"replay.jsonl", []string{"--json"}},
		{"replay.txt", nil},
		{"replay-by-cgroup.txt", []string{"--by", "cgroup"}},
		{"replay-pid-filter.jsonl", []string{"--json", "-p", "18731"}},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"-r", "../../testdata/rcvbuf-6.18.tmtrec"}, tc.args...)
		if code := mainExit(args, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		p := filepath.Join("testdata", tc.golden)
		if *update {
			os.MkdirAll("testdata", 0o755)
			if err := os.WriteFile(p, stdout.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(stdout.Bytes(), want) {
			t.Errorf("%v: output differs from %s (go test ./cmd/tcpmemtrace -run ReplayGolden -update to accept):\n%s", args, p, stdout.String())
		}
	}
}
