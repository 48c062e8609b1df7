package stream

//go:generate go run ../internal/genenums -obj ../tracer/bpf_x86_bpfel.o -out enums_gen.go
