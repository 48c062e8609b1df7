/* SPDX-License-Identifier: GPL-2.0-only */
/* Picks the BTF-generated kernel type dump for the target architecture. */
#if defined(__TARGET_ARCH_x86)
#include "vmlinux_x86.h"
#else
#error "tcpmemtrace: no vmlinux header for this architecture (see bpf/headers/README.md)"
#endif
