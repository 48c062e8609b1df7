// Package testsupport holds what the tests share and the product never
// uses: privtest gates privileged tests, workload reproduces TCP memory
// failures in network namespaces of its own (the benchmarks drive it too),
// witness counts an event with a minimal BPF program and with ftrace
// (tracefs) to tell the hits no BPF program ran for, podmantest runs real
// containers, streamfuzz fuzzes the stream format, treecheck guards the
// layers.
package testsupport
