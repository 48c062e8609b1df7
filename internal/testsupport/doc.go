// Package testsupport holds what the tests share and the product never
// uses: privtest gates privileged tests, workload reproduces TCP memory
// failures in network namespaces of its own (the benchmarks drive it too),
// tracefs counts a tracepoint's hits through ftrace, beside BPF.
package testsupport
