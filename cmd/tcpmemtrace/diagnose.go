package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/tcpmemtrace/tcpmemtrace/internal/ctrnames"
	"github.com/tcpmemtrace/tcpmemtrace/internal/diagnose"
)

// diagnoseExit runs `tcpmemtrace diagnose`: read-only, no BPF; as root it
// reads every network namespace and every process's sockets.
func diagnoseExit(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("tcpmemtrace diagnose", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "write the report as JSON")
	top := fs.Int("top", 10, "sockets and processes to list")
	criSockets := fs.StringSlice("cri-socket", nil, "ask this CRI runtime socket for pod and container names (repeatable; default: the well-known ones)")
	hostRoot := fs.String("host-root", "/", "where the host's / is mounted: runtime sockets and files are found under it")
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err == nil && *top < 0 {
		err = fmt.Errorf("--top: %d is negative", *top)
	}
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: tcpmemtrace diagnose [flags]\n\nFlags:\n%s", fs.FlagUsages())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "tcpmemtrace diagnose: %v\nUsage: tcpmemtrace diagnose [flags]\n\nFlags:\n%s", err, fs.FlagUsages())
		return 2
	}
	names := ctrnames.New(ctrnames.Options{CRIEndpoints: *criSockets, Root: *hostRoot})
	defer names.Close()
	in, err := diagnose.Gather(names)
	if err != nil {
		fmt.Fprintf(stderr, "tcpmemtrace diagnose: %v\n", err)
		return 1
	}
	r := diagnose.Analyze(in, *top)
	if *asJSON {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tcpmemtrace diagnose: %v\n", err)
		return 1
	}
	return 0
}
