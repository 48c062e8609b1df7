// Package treecheck tests the source tree as a whole: that its packages
// import only downward, and that the unprivileged tests stay unprivileged.
package treecheck

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tcpmemtrace/tcpmemtrace"

// layers: a package may import packages of lower layers only (and the
// standard library and third parties). Test helpers stand apart.
var layers = map[string]int{
	"stream": 0, // the model: the record stream's types

	"internal/units": 1, "internal/procfs": 1, "internal/kmsg": 1, "internal/netns": 1, "internal/ksym": 1, // system readers
	"internal/termsafe": 1, // text made safe for terminals

	"internal/owner": 2, "internal/sockdiag": 2, "internal/ctrnames": 2, // owners, sockets and containers, named

	"tracer": 3, "internal/record": 3, "internal/enrich": 3, // sources and the enrich stage
	"internal/aggregate": 3, // the summary's fold

	"internal/render": 4, "internal/tui": 4, "internal/metrics": 4, "internal/diagnose": 4, "internal/flight": 4, // consumers

	"cmd/tcpmemtrace": 5, // composes them
}

// Packages that must not link the BPF library: a replay, the renderers,
// the view and the metrics build without it.
var noBPF = []string{"stream", "internal/record", "internal/aggregate", "internal/render", "internal/tui",
	"internal/metrics", "internal/enrich", "internal/diagnose", "internal/flight"}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func TestImportsPointDown(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = "../../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		layer, ok := layers[rel]
		if !ok {
			continue // test support, the bench harness, tools
		}
		seen++
		for _, imp := range p.Imports {
			dep, ours := strings.CutPrefix(imp, module+"/")
			if !ours {
				continue
			}
			if strings.HasPrefix(dep, "internal/testsupport") {
				t.Errorf("%s imports test support %s", rel, dep)
				continue
			}
			if l, known := layers[dep]; !known || l >= layer {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports must point down", rel, layer, dep, l)
			}
		}
		if slices.Contains(noBPF, rel) {
			for _, d := range p.Deps {
				if strings.HasPrefix(d, "github.com/cilium/ebpf") {
					t.Errorf("%s links %s", rel, d)
				}
			}
		}
	}
	if seen != len(layers) {
		t.Errorf("%d of the %d layered packages found: update the table", seen, len(layers))
	}
}
