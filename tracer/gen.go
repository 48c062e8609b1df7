package tracer

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type event -type counters -type counts -type owner -type owner_key -type owner_stats -type owner_filter -type drop_place bpf ../bpf/tcpmemtrace.bpf.c -- -I../bpf/headers -I../bpf
