#!/usr/bin/env bash
# make test-kernels: the privileged tracer tests inside Debian's 6.1 and 6.12
# kernels under qemu, with the oracle assertions of the host tests. Prints one
# result line per kernel with the hook variant chosen for each event.
#
# Needs qemu-system-x86, busybox-static, cpio (apt) and Debian's package index
# for the kernels; images are cached in $TCPMEMTRACE_KERNEL_CACHE.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${TCPMEMTRACE_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tcpmemtrace/kernels}
tests=${TMT_TESTS:-TestOutOfMemoryAborts|TestTooManyOrphans|TestRcvbufDrops|TestPressureOnly|TestMemcgLimitedDrops}
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
logs=${TMT_LOGS:-$work}

for tool in qemu-system-x86_64 busybox cpio; do
	command -v "$tool" >/dev/null || { echo "test-kernels: $tool missing (apt-get install qemu-system-x86 busybox-static cpio)"; exit 1; }
done

# kernel series -> package-name pattern, and the hook policies to run there
# as policy:expected-variant (6.1 has no tracepoint fallback for aborts).
declare -A pattern=(
	[6.1]='^linux-image-6\.1\.0-[0-9]+-amd64$'
	[6.12]='^linux-image-6\.12\.[0-9]+\+deb12-amd64$'
)
declare -A runs=(
	[6.1]='auto:fexit'
	[6.12]='auto:fexit tracepoints:tracepoint'
)

# vmlinuz for a series: the newest package in the index, cached by name,
# with the sock_diag modules (Debian builds inet_diag/tcp_diag as modules;
# the guest has no modprobe to autoload them) in $img.modules/.
kernel() {
	local pkg img ver
	pkg=$(apt-cache pkgnames linux-image- | grep -E "${pattern[$1]}" | sort -V | tail -1 || true)
	if [ -z "$pkg" ]; then # offline: whatever is cached
		img=$(ls "$cache"/vmlinuz-"$1"* 2>/dev/null | grep -v modules | sort -V | tail -1 || true)
		[ -n "$img" ] || { echo "test-kernels: no $1 kernel package in the apt index and none cached" >&2; return 1; }
		echo "$img"
		return
	fi
	ver=${pkg#linux-image-}
	img="$cache/vmlinuz-$ver"
	if [ ! -s "$img" ] || [ ! -d "$img.modules" ]; then
		(cd "$work" && apt-get download -qq "$pkg" 2>/dev/null &&
			dpkg-deb -x "$pkg"_*.deb "$work/pkg-$ver" &&
			mkdir -p "$img.modules" &&
			for m in inet_diag tcp_diag; do
				f=$(ls "$work/pkg-$ver"/lib/modules/*/kernel/net/ipv4/$m.ko* | head -1)
				case $f in
				*.xz) xz -dc "$f" ;;
				*.zst) zstd -qdc "$f" ;;
				*) cat "$f" ;;
				esac > "$img.modules/$m.ko"
			done &&
			cp "$work/pkg-$ver"/boot/vmlinuz-* "$img.part" && mv "$img.part" "$img" &&
			rm -rf "$pkg"_*.deb "$work/pkg-$ver") >&2
	fi
	echo "$img"
}

# "event=variant;..." from --list-probes output on stdin.
probes() {
	grep -E '^  [a-z]' | sed -E 's/^ +//; s/ {2,}/=/; s/ reasons.*//' | paste -sd ';' - || true
}

echo "== building static test binaries"
mkdir -p "$work/root/bin" "$work/root/proc" "$work/root/sys" "$work/root/dev" "$work/root/tmp"
(cd "$root" && CGO_ENABLED=0 go test -c -o "$work/root/tracer.test" ./tracer &&
	CGO_ENABLED=0 go test -c -o "$work/root/cmd.test" ./cmd/tcpmemtrace &&
	CGO_ENABLED=0 go build -o "$work/root/tcpmemtrace" ./cmd/tcpmemtrace)
cp "$(command -v busybox)" "$work/root/bin/busybox"
cp "$root/test/kernels/init.sh" "$work/root/init"
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -1 > "$work/initrd.gz")

# KVM when it can boot a stock kernel here; some hosts' KVM cannot. TCG runs
# single-threaded: multi-threaded TCG does not keep the kernel's live code
# patching (int3-based text_poke, done when tracepoints are switched on and
# off) coherent across vCPUs, and the guest oopses on a stray int3.
accel=(-accel tcg,thread=single -cpu max)
if [ -w /dev/kvm ] && qemu-system-x86_64 -accel kvm -cpu host -m 64M -nographic -no-reboot -nic none \
	-kernel /dev/null -display none -S -daemonize -pidfile "$work/kvm.pid" >/dev/null 2>&1; then
	kill "$(cat "$work/kvm.pid")" 2>/dev/null || true
	accel=(-accel kvm -cpu host)
fi
echo "== qemu ${accel[*]}"

fail=0
results=()
for series in 6.1 6.12; do
	img=$(kernel "$series") || { results+=("$series: NO KERNEL"); fail=1; continue; }
	log="$logs/$series.log"
	echo "== $(basename "$img")"
	start=$SECONDS
	# The kernel's modules ride in a second cpio archive, which the kernel
	# unpacks over the first.
	initrd="$work/initrd-$series.gz"
	cp "$work/initrd.gz" "$initrd"
	if [ -d "$img.modules" ]; then
		(cd "$img.modules" &&
			mkdir -p "$work/mod-$series/modules" && cp ./*.ko "$work/mod-$series/modules/" &&
			cd "$work/mod-$series" && find . | cpio -o -H newc --quiet | gzip -1 >> "$initrd")
	fi
	timeout 45m qemu-system-x86_64 "${accel[@]}" -m 1G -smp 2 -nographic -no-reboot -nic none \
		-kernel "$img" -initrd "$initrd" \
		-append "console=ttyS0 quiet panic=-1 TMT_RUNS=\"${runs[$series]}\" TMT_TESTS=$tests" \
		< /dev/null > "$log" 2>&1 || true
	tr -d '\r' < "$log" > "$log.txt"
	grep -aE '^TMT-(TEST|RUN|PROBES)' "$log.txt" | sed -E 's/^TMT-(TEST|PROBES) //' || true
	kernel=$(grep -a '^TMT-KERNEL ' "$log.txt" | cut -d' ' -f2 || true)
	# The variant per event, from the auto run's --list-probes.
	hooks=$(probes < <(grep -a '^TMT-PROBES auto ' "$log.txt" | sed 's/^TMT-PROBES auto //') || true)
	if grep -aq '^TMT-EXIT 0' "$log.txt"; then
		verdict=PASS
	else
		verdict=FAIL
		fail=1
		grep -avE '^TMT-' "$log.txt" | tail -20 || true
	fi
	results+=("${kernel:-$series} $verdict ($((SECONDS - start))s) runs: ${runs[$series]} e2e | $hooks")
done

echo
echo "== kernel matrix"
printf '%s\n' "${results[@]}"
if [ "$(id -u)" = 0 ]; then
	echo "$(uname -r) (host, tested by make test) | $("$work/root/tcpmemtrace" --list-probes 2>/dev/null | probes)"
fi
exit $fail
