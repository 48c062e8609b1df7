package tracer

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type event -type counters -type owner -type counts bpf ../bpf/tcpmemtrace.bpf.c -- -I../bpf/headers -I../bpf
