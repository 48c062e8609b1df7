/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Picks the BTF-generated kernel type dump for the target architecture.
 * arm64 uses the x86 dump too: the programs reach kernel types only through
 * CO-RE relocations (tp_btf/fexit/iter/tracepoint, no pt_regs), so the
 * dump only supplies names; see README.md.
 */
#if defined(__TARGET_ARCH_x86) || defined(__TARGET_ARCH_arm64)
#include "vmlinux_x86.h"
#else
#error "tcpmemtrace: no vmlinux header for this architecture (see bpf/headers/README.md)"
#endif
