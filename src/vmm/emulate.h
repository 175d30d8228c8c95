/* SPDX-License-Identifier: MIT */
/*
 * The emulation fallback: instructions KVM's own emulator gives up on. When a guest touches
 * MMIO (or, on kvm_pvm hosts, runs ring-0 code) with an instruction arch/x86/kvm/emulate.c does
 * not know, KVM_RUN stops with KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION and the
 * instruction not executed. emu_run() fetches it at CS:RIP through the guest's page tables,
 * decodes it, and either carries it out on the registers, guest memory and MMIO as the CPU
 * would, or names the exception it raises, or says it does not know it. It makes no KVM
 * ioctls: the caller reads and writes the vCPU's state.
 *
 * Decoded: legacy prefixes, REX, ModRM/SIB with disp8/disp32 and RIP-relative addressing, in
 * 64-bit mode and in 32-bit protected mode (segment bases and limits); anything else (real
 * mode, virtual-8086, 16-bit code or addressing) is not handled.
 */
#ifndef YUN_VMM_EMULATE_H
#define YUN_VMM_EMULATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/memory.h"

enum emu_insn {
	EMU_INT3,
	EMU_CLAC,
	EMU_STAC,
	EMU_FWAIT,
	EMU_POPCNT,
	EMU_CMPXCHG8B,
	EMU_CMPXCHG16B,
	EMU_XRSTOR,
	EMU_NR_INSNS,
};

enum emu_result {
	EMU_DONE,      /* carried out: registers, memory (and XSAVE state) updated, RIP advanced */
	EMU_EXCEPTION, /* inject out->vector; nothing changed but RIP for a trap (#BP) */
	EMU_NEED_XSTATE, /* call again with xs set: the instruction reads x87/XSAVE state */
	EMU_UNHANDLED,	 /* not carried out: out->why says why; stop the VM */
};

/* Accesses to guest-physical addresses that are not RAM; size is 1, 2, 4 or 8. */
struct emu_mmio {
	void (*read)(void *opaque, uint64_t gpa, void *data, unsigned size);
	void (*write)(void *opaque, uint64_t gpa, const void *data, unsigned size);
	/* Optional: true for a range only KVM serves (its LAPIC, IOAPIC), which read and write
	 * cannot reach: the instruction is then not emulated. */
	bool (*in_kernel)(void *opaque, uint64_t gpa, uint64_t len);
	void *opaque;
};

#define EMU_XFEATURES 64

/*
 * The vCPU's XSAVE state: KVM_GET_XSAVE's region (the standard, non-compacted format: legacy
 * area, header at 512, component i at CPUID.(0xD,i).EBX), XCR0, and the guest's CPUID leaf 0xD
 * (component i's size in EAX, offset in EBX, for i >= 2).
 */
struct emu_xstate {
	uint8_t *buf;
	size_t size;
	uint64_t xcr0;
	uint32_t comp_offset[EMU_XFEATURES];
	uint32_t comp_size[EMU_XFEATURES];
	bool changed; /* set when buf was written: the caller puts it back (KVM_SET_XSAVE) */
};

struct emu_outcome {
	bool decoded;
	enum emu_insn insn; /* when decoded */
	uint8_t bytes[15];  /* what was fetched at CS:RIP */
	unsigned nr_bytes;
	/* EMU_EXCEPTION */
	uint8_t vector;
	bool has_error_code;
	uint32_t error_code;
	uint64_t cr2; /* for #PF */
	/* EMU_UNHANDLED */
	const char *why;
};

/* Exception vectors (Intel SDM vol. 3A §6.3.1). */
#define EMU_VEC_BP 3
#define EMU_VEC_UD 6
#define EMU_VEC_NM 7
#define EMU_VEC_SS 12
#define EMU_VEC_GP 13
#define EMU_VEC_PF 14
#define EMU_VEC_MF 16

/*
 * Emulate the instruction at CS:RIP. regs is updated only on EMU_DONE (and RIP on a #BP); sregs
 * is only read; xs may be NULL until EMU_NEED_XSTATE asks for it.
 */
enum emu_result emu_run(const struct guest_mem *m, const struct emu_mmio *mmio,
			struct kvm_regs *regs, const struct kvm_sregs *sregs, struct emu_xstate *xs,
			struct emu_outcome *out);

/* "popcnt", "cmpxchg16b", ...: the names metrics use. */
const char *emu_insn_name(enum emu_insn insn);

#endif
