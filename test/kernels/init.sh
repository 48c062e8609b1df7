#!/bin/busybox sh
# /init of the test guest: mount what the tracer reads, run the privileged
# tracer tests once per hook policy in $TMT_RUNS and the command's
# end-to-end tests once, print markers, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# Classic tracepoints (the syscalls' ones stamp owners at listen and
# accept) are attached by their ids in tracefs, as on any host.
mount -t tracefs tracefs /sys/kernel/tracing
# Hybrid cgroups, as on the development host: the v1 memory controller
# (TCP memory limits) where the kernel still has it, cgroup2 beside it.
mount -t tmpfs cgroup /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/memory /sys/fs/cgroup/unified
mount -t cgroup -o memory memory /sys/fs/cgroup/memory 2>/dev/null || rmdir /sys/fs/cgroup/memory
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
# sock_diag for TCP, built as modules by Debian (no modprobe here to autoload).
for m in inet_diag tcp_diag; do
	[ -f /modules/$m.ko ] && insmod /modules/$m.ko
done
echo; echo "TMT-KERNEL $(uname -r) $(uname -m)"
# TMT_FACTS=1: what this kernel offers the tracer, instead of the tests.
if [ -n "$TMT_FACTS" ]; then
	/tcpmemtrace --list-probes > /tmp/out 2>&1
	/facts /bpf.o >> /tmp/out 2>&1
	sed "s/^/TMT-FACT /" /tmp/out
	echo "TMT-EXIT facts"
	poweroff -f
fi
status=0
for run in $TMT_RUNS; do
	policy=${run%%:*}
	expect=${run#*:}
	/tcpmemtrace --list-probes --hooks "$policy" > /tmp/probes 2>&1
	sed "s/^/TMT-PROBES $policy /" /tmp/probes
	TCPMEMTRACE_TEST_HOOKS=$policy TCPMEMTRACE_EXPECT_HOOKS=$expect \
		/tracer.test -test.v -test.count=1 -test.timeout=20m -test.run "$TMT_TESTS" > /tmp/out 2>&1
	rc=$?
	sed "s/^/TMT-TEST $policy /" /tmp/out
	echo "TMT-RUN $policy rc=$rc"
	[ $rc -eq 0 ] || status=1
done
# The command's end-to-end tests (the real binary, attribution, filters), once.
TCPMEMTRACE_BINARY=/tcpmemtrace /cmd.test -test.v -test.count=1 -test.timeout=20m -test.run "$TMT_E2E" > /tmp/out 2>&1
rc=$?
sed "s/^/TMT-TEST e2e /" /tmp/out
echo "TMT-RUN e2e rc=$rc"
[ $rc -eq 0 ] || status=1
echo "TMT-EXIT $status"
poweroff -f
