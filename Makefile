# tcpmemtrace. `make help` lists the targets.

# The committed BPF objects were built with Debian 12's clang 14.0.6 and
# libbpf-dev 1.1; `make generate` reproduces them byte for byte only with those.
CLANG ?= clang
STRIP ?= llvm-strip
CLANG_VERSION := 14.0.6
BPF2GO_CFLAGS := -O2 -g -Wall -Werror -mcpu=v3
GO_TEST_FLAGS ?=

# sudo's secure_path usually lacks the Go toolchain.
export PATH := $(PATH):/usr/local/go/bin

export BPF2GO_CC := $(CLANG)
export BPF2GO_STRIP := $(STRIP)
export BPF2GO_CFLAGS

.PHONY: help generate check-generate build test test-unit test-kernels format lint bench bench-deps

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

generate: ## rebuild the BPF objects (amd64, arm64), their Go bindings and the stream's constants (clang 14, llvm-strip, libbpf-dev)
	@$(CLANG) --version | grep -q 'clang version $(CLANG_VERSION)' || \
		{ echo "make generate: needs clang $(CLANG_VERSION) (apt-get install clang llvm libbpf-dev on Debian 12), got: $$($(CLANG) --version | head -1)"; exit 1; }
	go generate ./tracer/
	go generate ./stream/

# git status, not git diff: an output for a new target is an untracked file.
check-generate: generate ## fail if the committed generated files differ from a fresh build
	@test -z "$$(git status --porcelain -- tracer/ stream/)" || { git status --short -- tracer/ stream/; git diff --stat -- tracer/ stream/; echo "make generate changed committed files: commit its output"; exit 1; }

build: ## build ./tcpmemtrace, static (no clang needed)
	CGO_ENABLED=0 go build -o tcpmemtrace ./cmd/tcpmemtrace

# Packages run one at a time: the privileged tests lower global sysctls
# (they also hold a lock, so this is belt and braces).
# deploy/ is a module of its own (its test-only Kubernetes dependencies stay
# out of the tool's).
test: lint ## run every test: privileged ones as root (sudo make test), skipped with a reason otherwise
	go test -count=1 -p 1 -timeout 30m $(GO_TEST_FLAGS) ./...
	cd deploy && go test -count=1 -timeout 10m $(GO_TEST_FLAGS) ./...

test-unit: ## only the tests that need no privileges
	go test -count=1 -short ./...
	cd deploy && go test -count=1 -short ./...

format: ## gofmt the Go code, clang-format the C
	gofmt -w $$(git ls-files --cached --others --exclude-standard '*.go')
	clang-format -i bpf/*.c bpf/*.h

lint: ## go vet, gofmt and clang-format checks
	go vet ./...
	cd deploy && go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go'))" || { gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go'); echo "gofmt: run make format"; exit 1; }
	@if command -v clang-format >/dev/null; then clang-format --dry-run -Werror bpf/*.c bpf/*.h; else echo "lint: clang-format not installed, C not checked"; fi

test-kernels: ## the privileged tracer tests inside Debian's x86_64 5.10, 6.1, 6.12 and arm64 6.12 kernels under qemu (root)
	test/kernels/run.sh

bench-deps: ## install what make bench compares against (bpftrace, iperf3; Debian/Ubuntu, root)
	@command -v bpftrace >/dev/null && command -v iperf3 >/dev/null || { \
		command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { echo "make bench needs bpftrace and iperf3: install them (Debian: sudo apt-get install bpftrace iperf3)"; exit 1; }; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bpftrace iperf3; }

bench: build bench-deps ## measure tcpmemtrace against bpftrace (root, ~5 min); writes BENCHMARKS.md and bench/results.json
	go run ./bench -tcpmemtrace ./tcpmemtrace -out BENCHMARKS.md -results bench/results.json
