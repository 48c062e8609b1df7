#!/usr/bin/env bash
# make test-kernels: the privileged tracer tests inside Debian kernels under
# qemu, with the oracle assertions of the host tests: x86_64 5.10 (Debian 11),
# 6.1 and 6.12 (Debian 12), and arm64 6.12 (Debian 12's cloud flavour,
# emulated). Prints one result line per kernel, naming its architecture, with
# the hook variant chosen for each event, and exits non-zero if any failed.
#
# Needs qemu-system-x86, qemu-system-arm, busybox-static, cpio, xz-utils (apt)
# and Debian's mirror. Kernels with their sock_diag modules, the arm64
# busybox and private apt indexes live in $TCPMEMTRACE_KERNEL_CACHE; offline,
# the newest cached kernel of each series runs.
#
#   TMT_KERNELS   kernels to run (default: all of $kernels below)
#   TMT_XFAIL     kernels whose failure is shown but does not fail the run
#   TMT_JOBS      guests at once (default 1; see the schedule below)
#   TMT_TESTS     the tracer tests to run (-test.run)
#   TMT_E2E       the command's tests to run (-test.run): those that meet the
#                 kernel; the rest (input, files, terminals) are the host's
#   TMT_LOGS      keep the guests' serial logs in this directory
#   TMT_FACTS=1   no tests: report what each kernel offers the tracer
#                 (test/kernels/facts: programs, fexit/tp_btf targets, helpers)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${TCPMEMTRACE_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tcpmemtrace/kernels}
tests=${TMT_TESTS:-TestOutOfMemoryAborts|TestTooManyOrphans|TestRcvbufDrops|TestPressureOnly|TestMemcgLimitedDrops|TestHandOver}
e2e=${TMT_E2E:-TestOutOfMemoryEndToEnd|TestAttributionEndToEnd|FilterEndToEnd|TestSlowConsumerEndToEnd|TestListProbes|TestRecordAndReplay|TestPreexistingConnections|TestSigtermDetaches|TestUnknownNetns}
mirror=${TMT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${TMT_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
logs=${TMT_LOGS:-$work/logs}
mkdir -p "$logs"

# Each kernel: its Debian architecture, package-name pattern, and the hook
# policies to run there as policy:expected-variant (6.1 has no tracepoint
# fallback for aborts; 5.10 and arm64 run the default policy only).
kernels=(5.10 6.1 6.12 arm64-6.12)
declare -A arch=([5.10]=amd64 [6.1]=amd64 [6.12]=amd64 [arm64-6.12]=arm64)
declare -A pattern=(
	[5.10]='^linux-image-5\.10\.0-[0-9]+-amd64$'
	[6.1]='^linux-image-6\.1\.0-[0-9]+-amd64$'
	[6.12]='^linux-image-6\.12\.[0-9]+\+deb12-amd64$'
	[arm64-6.12]='^linux-image-6\.12\.[0-9]+\+deb12-cloud-arm64$'
)
declare -A runs=(
	[5.10]='auto:fexit'
	[6.1]='auto:fexit'
	[6.12]='auto:fexit tracepoints:tracepoint'
	[arm64-6.12]='auto:fexit'
)
# Debian suites whose index is searched, per architecture.
declare -A suites=([amd64]='bookworm bullseye' [arm64]='bookworm')
read -ra selected <<< "${TMT_KERNELS:-${kernels[*]}}"
for k in "${selected[@]}"; do
	[ -n "${arch[$k]:-}" ] || { echo "test-kernels: unknown kernel $k (known: ${kernels[*]})"; exit 2; }
done
needs() { # debian-arch: is a kernel of it selected?
	local k
	for k in "${selected[@]}"; do [ "${arch[$k]}" = "$1" ] && return 0; done
	return 1
}

tools=(cpio dpkg-deb)
needs amd64 && tools+=(qemu-system-x86_64 busybox)
needs arm64 && tools+=(qemu-system-aarch64)
for tool in "${tools[@]}"; do
	command -v "$tool" >/dev/null || { echo "test-kernels: $tool missing (apt-get install qemu-system-x86 qemu-system-arm busybox-static cpio xz-utils)"; exit 1; }
done

# A package index per architecture, private to the cache: the host's apt
# sources stay as they are (and need not list Debian 11, or arm64).
aptc() { # debian-arch command...: run an apt command on that index
	APT_CONFIG="$cache/apt/$1/apt.conf" "${@:2}"
}
apt_index() { # debian-arch
	local d="$cache/apt/$1" s
	local key=/usr/share/keyrings/debian-archive-keyring.gpg
	command -v apt-get >/dev/null || return 0
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/parts"
	for s in ${suites[$1]}; do
		echo "deb [arch=$1 signed-by=$key] $mirror $s main"
		echo "deb [arch=$1 signed-by=$key] $security $s-security main"
	done > "$d/sources.list"
	# APT_CONFIG is read before the host's apt.conf.d, so Dir::Etc::parts
	# here keeps the host's hooks and extra index targets (DEP-11) out.
	cat > "$d/apt.conf" <<-EOF
		Dir::Etc::sourcelist "$d/sources.list";
		Dir::Etc::sourceparts "-";
		Dir::Etc::parts "$d/parts";
		Dir::State::Lists "$d/lists";
		Dir::State::status "/dev/null";
		Dir::Cache "$d/cache";
		# No binary caches (70 MB an index): each call parses the lists.
		Dir::Cache::pkgcache "";
		Dir::Cache::srcpkgcache "";
		APT::Architecture "$1";
		APT::Architectures { "$1"; };
		APT::Sandbox::User "root";
		Acquire::Languages "none";
		Acquire::GzipIndexes "true";
	EOF
	# apt-get update exits 0 on most fetch failures; its W:/E: lines tell.
	local out
	if ! out=$(aptc "$1" apt-get update -qq 2>&1) || grep -q '^[WE]:' <<< "$out"; then
		echo "test-kernels: could not refresh the $1 package index (offline?): using the cache" >&2
	fi
}

unpack() { # file: its contents, decompressed by suffix
	case $1 in
	*.xz) xz -dc "$1" ;;
	*.zst) zstd -qdc "$1" ;;
	*) cat "$1" ;;
	esac
}

# Download a kernel package into the cache: $img and, in $img.modules/, the
# sock_diag modules (Debian builds inet_diag/tcp_diag as modules; the guest
# has no modprobe to autoload them).
fetch() { # debian-arch package image
	local tmp="$work/pkg-$2" m f
	mkdir -p "$tmp/x" && (cd "$tmp" && aptc "$1" apt-get download -qq "$2") >&2 &&
		dpkg-deb -x "$tmp"/*.deb "$tmp/x" || return 1
	rm -rf "$3.modules.part" && mkdir -p "$3.modules.part" || return 1
	for m in inet_diag tcp_diag; do
		f=$(ls "$tmp"/x/lib/modules/*/kernel/net/ipv4/$m.ko* | head -1) &&
			unpack "$f" > "$3.modules.part/$m.ko" || return 1
	done
	rm -rf "$3.modules" && mv "$3.modules.part" "$3.modules" &&
		cp "$tmp"/x/boot/vmlinuz-* "$3.part" && mv "$3.part" "$3" && rm -rf "$tmp"
}

# The cached images whose package name matches the kernel's pattern, oldest
# first.
cached() { # kernel
	local f
	for f in "$cache"/vmlinuz-*; do
		if [ -f "$f" ] && [ -d "$f.modules" ] && grep -qE "${pattern[$1]}" <<< "linux-image-${f##*/vmlinuz-}"; then
			echo "$f"
		fi
	done | sort -V
}

# vmlinuz for a kernel: the newest package in the index, cached by name.
kernel() { # kernel -> image path
	local pkg img
	pkg=$(aptc "${arch[$1]}" apt-cache pkgnames linux-image- 2>/dev/null | grep -E "${pattern[$1]}" | sort -V | tail -1 || true)
	if [ -n "$pkg" ]; then
		img="$cache/vmlinuz-${pkg#linux-image-}"
		if [ -s "$img" ] && [ -d "$img.modules" ] || fetch "${arch[$1]}" "$pkg" "$img"; then
			# The series' older images are not needed any more.
			cached "$1" | while read -r f; do
				[ "$f" = "$img" ] || rm -rf "$f" "$f.modules"
			done
			echo "$img"
			return
		fi
		echo "test-kernels: could not download $pkg: trying the cache" >&2
	fi
	img=$(cached "$1" | tail -1)
	[ -n "$img" ] || { echo "test-kernels: no $1 kernel in the package index and none cached" >&2; return 1; }
	echo "$img"
}

# A static busybox for the guest: the host's on x86, Debian's arm64 build.
busybox_for() { # debian-arch -> path
	if [ "$1" = amd64 ]; then
		command -v busybox
		return
	fi
	local bb="$cache/busybox-$1" tmp="$work/busybox-$1"
	if [ ! -s "$bb" ]; then
		mkdir -p "$tmp" && (cd "$tmp" && aptc "$1" apt-get download -qq busybox-static) >&2 &&
			dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/x" &&
			cp "$tmp/x/bin/busybox" "$bb.part" && mv "$bb.part" "$bb" ||
			{ echo "test-kernels: no $1 busybox-static in the package index and none cached" >&2; return 1; }
	fi
	echo "$bb"
}

# "event=variant;..." from --list-probes output on stdin.
probes() {
	grep -E '^  [a-z]' | sed -E 's/^ +//; s/ {2,}/=/; s/ reasons.*//' | paste -sd ';' - || true
}

for a in amd64 arm64; do
	needs "$a" && apt_index "$a"
done
declare -A img=()
for k in "${selected[@]}"; do
	img[$k]=$(kernel "$k") || img[$k]=
done

# The guest's root: static test binaries for its architecture (Debian and Go
# name amd64 and arm64 alike), its busybox and /init, as a gzip'd cpio.
for a in amd64 arm64; do
	needs "$a" || continue
	echo "== building static test binaries ($a)"
	r="$work/root-$a"
	mkdir -p "$r/bin" "$r/proc" "$r/sys" "$r/dev" "$r/tmp"
	(cd "$root" && export CGO_ENABLED=0 GOARCH=$a &&
		go test -c -o "$r/tracer.test" ./tracer &&
		go test -c -o "$r/cmd.test" ./cmd/tcpmemtrace &&
		go build -o "$r/tcpmemtrace" ./cmd/tcpmemtrace &&
		if [ -n "${TMT_FACTS:-}" ]; then
			go build -o "$r/facts" ./test/kernels/facts &&
				cp "tracer/bpf_$([ "$a" = amd64 ] && echo x86 || echo "$a")_bpfel.o" "$r/bpf.o"
		fi)
	bb=$(busybox_for "$a")
	cp "$bb" "$r/bin/busybox"
	cp "$root/test/kernels/init.sh" "$r/init"
	chmod +x "$r/init" "$r/bin/busybox"
	(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1 > "$work/initrd-$a.gz")
done

# x86: KVM when it can boot a stock kernel here; some hosts' KVM cannot. TCG
# runs single-threaded: multi-threaded TCG does not keep the kernel's live
# code patching (int3-based text_poke, done when tracepoints are switched on
# and off) coherent across vCPUs, and the guest oopses on a stray int3.
# arm64 is always emulated (TCG), single-threaded too so that it takes one
# host core beside an x86 guest and the tests' timing is not starved.
# pauth-impdef: QEMU's own pointer-authentication hash instead of the
# architected QARMA, which is costly to emulate and the kernel uses on every
# function entry.
accel=(-accel tcg,thread=single -cpu max)
if needs amd64 && [ -w /dev/kvm ] &&
	qemu-system-x86_64 -accel kvm -cpu host -m 64M -nographic -no-reboot -nic none \
		-kernel /dev/null -display none -S -daemonize -pidfile "$work/kvm.pid" >/dev/null 2>&1; then
	kill "$(cat "$work/kvm.pid")" 2>/dev/null || true
	accel=(-accel kvm -cpu host)
fi
declare -A qemu=(
	[amd64]="qemu-system-x86_64 ${accel[*]}"
	[arm64]="qemu-system-aarch64 -M virt -accel tcg,thread=single -cpu max,pauth-impdef=on"
)
declare -A console=([amd64]=ttyS0 [arm64]=ttyAMA0)
declare -A uname_m=([amd64]=x86_64 [arm64]=aarch64)
needs amd64 && echo "== x86_64: ${qemu[amd64]}"
needs arm64 && echo "== aarch64: ${qemu[arm64]}"

# Boot one kernel and run the tests there. Writes $work/$k.out (the lines to
# show) and $work/$k.result (its line in the matrix); fails if the tests did.
guest() { # kernel
	local k=$1 a=${arch[$1]} i=${img[$1]} log="$logs/$1.log" initrd="$work/initrd-$1.gz"
	local start verdict kernel hooks
	if [ -z "$i" ]; then
		echo "${uname_m[$a]} $k NO KERNEL" > "$work/$k.result"
		: > "$work/$k.out"
		return 1
	fi
	start=$(date +%s)
	# The kernel's modules ride in a second cpio archive, which the kernel
	# unpacks over the first.
	cp "$work/initrd-$a.gz" "$initrd"
	mkdir -p "$work/mod-$k/modules" && cp "$i.modules"/*.ko "$work/mod-$k/modules/" &&
		(cd "$work/mod-$k" && find . | cpio -o -H newc --quiet | gzip -1 >> "$initrd")
	# shellcheck disable=SC2086 # ${qemu[$a]} is a command line
	timeout 45m ${qemu[$a]} -m 1G -smp 2 -nographic -no-reboot -nic none \
		-kernel "$i" -initrd "$initrd" \
		-append "console=${console[$a]} quiet panic=-1 TMT_RUNS=\"${runs[$k]}\" TMT_TESTS=$tests TMT_E2E=$e2e TMT_FACTS=${TMT_FACTS:-}" \
		< /dev/null > "$log" 2>&1 || true
	tr -d '\r' < "$log" > "$log.txt"
	{
		grep -aE '^TMT-(TEST|RUN|PROBES|FACT)' "$log.txt" | sed -E 's/^TMT-(TEST|PROBES|FACT) //' || true
		grep -aqE '^TMT-EXIT (0|facts)' "$log.txt" || grep -avE '^TMT-' "$log.txt" | tail -20 || true
	} > "$work/$k.out"
	# TMT-KERNEL release machine
	kernel=$(grep -a '^TMT-KERNEL ' "$log.txt" | cut -d' ' -f2,3 || true)
	# The variant per event, from the auto run's --list-probes.
	hooks=$(probes < <(grep -a '^TMT-PROBES auto ' "$log.txt" | sed 's/^TMT-PROBES auto //') || true)
	verdict=FAIL
	grep -aq '^TMT-EXIT 0' "$log.txt" && verdict=PASS
	grep -aq '^TMT-EXIT facts' "$log.txt" && verdict=FACTS
	if [ -n "$kernel" ]; then
		kernel="${kernel#* } ${kernel%% *}" # machine first
	else
		kernel="${uname_m[$a]} $(basename "$i") (no boot)"
	fi
	local status=0
	if [ $verdict = FAIL ]; then
		status=1
		if [[ " ${TMT_XFAIL:-} " == *" $k "* ]]; then
			verdict='FAIL (expected: TMT_XFAIL)'
			status=0
		fi
	fi
	echo "$kernel $verdict ($(($(date +%s) - start))s) runs: ${runs[$k]} e2e | $hooks" > "$work/$k.result"
	return $status
}

show() { # kernel: its lines, once it is done
	echo "== $1 done: $(basename "${img[$1]:-(no kernel)}")"
	cat "$work/$1.out" 2>/dev/null || echo "test-kernels: the job running $1 died"
}

# Schedule: one guest at a time by default. Two at once (TMT_JOBS=2, the
# longest first) take the matrix from about 6m15s to 3m50s on 2 cores, but
# the guests' timing then varies: TestTooManyOrphans' timer-path abort came
# 0.96-1.65 s after close with a guest alone (33 runs, none failed) and
# 0.35-1.42 s beside a second guest, x86 or arm64, where 4 of 145 runs
# failed (no abort 150 ms or more after close; a 101st abort, the reader's).
jobs=${TMT_JOBS:-1}
queue=("${selected[@]}")
if [ "$jobs" -gt 1 ]; then
	# About 110 s each for the x86 6.x guests, 95 s for arm64, 30 s for
	# 5.10 while it cannot load the programs: two lanes end together.
	queue=()
	for k in 6.1 6.12 arm64-6.12 5.10 "${selected[@]}"; do
		if [[ " ${selected[*]} " == *" $k "* && " ${queue[*]} " != *" $k "* ]]; then
			queue+=("$k")
		fi
	done
fi
fail=0
declare -A running=() # pid -> kernel
reap() { # wait for one guest, show it
	local pid
	# Polled rather than wait -n -p, which once lost track of a guest here
	# ("pid: command not found") and ended the script under the others.
	while :; do
		for pid in "${!running[@]}"; do
			if ! kill -0 "$pid" 2>/dev/null; then
				wait "$pid" || fail=1
				show "${running[$pid]}"
				unset "running[$pid]"
				return
			fi
		done
		sleep 1
	done
}
for k in "${queue[@]}"; do
	[ "${#running[@]}" -lt "$jobs" ] || reap
	echo "== $k started: $(basename "${img[$k]:-(no kernel)}")"
	guest "$k" &
	running[$!]=$k
done
while [ "${#running[@]}" -gt 0 ]; do
	reap
done

echo
echo "== kernel matrix"
for k in "${selected[@]}"; do
	cat "$work/$k.result" 2>/dev/null || echo "$k: NO RESULT"
done
if [ "$(id -u)" = 0 ] && [ -x "$work/root-amd64/tcpmemtrace" ] && [ "$(uname -m)" = x86_64 ]; then
	echo "$(uname -m) $(uname -r) (host, tested by make test) | $("$work/root-amd64/tcpmemtrace" --list-probes 2>/dev/null | probes)"
fi
exit $fail
