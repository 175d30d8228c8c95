// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the emulation fallback (src/vmm/emulate.c).
 *
 * The input is a vCPU and its guest: its first HDR bytes choose the mode (64-bit with 4- or
 * 5-level paging, 32-bit with or without paging, PAE, real mode), CR0/CR3/CR4 bits, the CPL,
 * segment bases and limits, the general registers, XCR0 and the XSAVE layout; the rest is
 * guest RAM, page tables and instruction bytes included (RIP points into it). Guest RAM is a
 * heap buffer of exactly its size, so AddressSanitizer stops the run at the first byte touched
 * outside it; MMIO callbacks check each access is 1, 2, 4 or 8 bytes, naturally aligned and
 * outside RAM. What comes back must be consistent: an exception has a vector the fallback
 * raises, RIP moves only when the instruction ran (or trapped), and nothing unhandled moves it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/emulate.h"
#include "vmm/memory.h"

#define HDR 96

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t ram_size;

static void check_mmio(uint64_t gpa, unsigned size)
{
	if ((size != 1 && size != 2 && size != 4 && size != 8) || (gpa & (size - 1)))
		abort();
	if (gpa < ram_size)
		abort(); /* RAM reached through the MMIO path */
}

static void mmio_read(void *opaque, uint64_t gpa, void *data, unsigned size)
{
	check_mmio(gpa, size);
	memset(data, (int)(gpa & 0xff), size);
}

static void mmio_write(void *opaque, uint64_t gpa, const void *data, unsigned size)
{
	volatile uint8_t sink = 0;

	check_mmio(gpa, size);
	for (unsigned i = 0; i < size; i++)
		sink ^= ((const uint8_t *)data)[i];
	(void)sink;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static void segment(struct kvm_segment *s, const uint8_t *p, bool l, bool db)
{
	*s = (struct kvm_segment){
	    .base = p[0] & 1 ? 0 : (uint64_t)p[1] << 12,
	    .limit = p[0] & 2 ? 0xffffffffu : (uint32_t)p[2] << 12 | 0xfff,
	    .type = (uint8_t)(p[0] >> 4),
	    .present = !(p[0] & 4),
	    .unusable = !!(p[0] & 8),
	    .db = db,
	    .l = l,
	    .s = 1,
	    .g = 1,
	};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct emu_mmio mmio = {mmio_read, mmio_write, NULL, NULL};
	static uint8_t xsave[4096];
	struct kvm_regs regs, before;
	struct kvm_sregs sregs = {0};
	struct emu_xstate xs = {0};
	struct guest_mem mem = {.memfd = -1};
	struct emu_outcome out;
	enum emu_result rc;
	uint8_t mode, *ram;
	__u64 *gprs[16] = {&regs.rax, &regs.rbx, &regs.rcx, &regs.rdx, &regs.rsi, &regs.rdi,
			   &regs.rsp, &regs.rbp, &regs.r8,  &regs.r9,  &regs.r10, &regs.r11,
			   &regs.r12, &regs.r13, &regs.r14, &regs.r15};

	if (size < HDR + 1)
		return 0;
	ram_size = size - HDR;
	ram = malloc(ram_size);
	if (!ram)
		return 0;
	memcpy(ram, data + HDR, ram_size);
	if (gm_add_region(&mem, 0, ram_size, ram)) {
		free(ram);
		return 0;
	}

	/* Registers: small values mostly (addresses inside RAM), sometimes anything. */
	memset(&regs, 0, sizeof(regs));
	for (unsigned i = 0; i < 16; i++) {
		uint8_t b = data[i];

		*gprs[i] = b & 0x80 ? get64(data + 16 + (i % 4) * 8) ^ b : (uint64_t)b * 97;
	}
	regs.rip = (uint64_t)(data[48] | data[49] << 8) % (ram_size + 16);
	regs.rflags = 0x2 | ((uint64_t)data[50] << 10 & 0x40000) | (data[51] & 0xd5);

	mode = data[52];
	sregs.cr0 = 0x1 | ((uint64_t)(data[53] & 0x2e)) | (data[53] & 0x80 ? 0x10000 : 0);
	sregs.cr3 = ((uint64_t)(data[54] | data[55] << 8) << 12) % (ram_size + 4096);
	sregs.cr4 = (data[56] & 1 ? 0x40000 : 0) | (data[56] & 2 ? 0x10 : 0) |
		    (data[56] & 8 ? 0x200000 : 0); /* OSXSAVE, PSE, SMAP */
	switch (mode & 7) {
	case 0: /* 64-bit, 4-level */
	case 1: /* 64-bit, 5-level */
		sregs.cr0 |= 0x80000000;
		sregs.cr4 |= 0x20 | (mode & 1 ? 0x1000 : 0);
		sregs.efer = 0x500 | (data[56] & 4 ? 0x800 : 0);
		break;
	case 2: /* 32-bit paging */
		sregs.cr0 |= 0x80000000;
		break;
	case 3: /* PAE */
		sregs.cr0 |= 0x80000000;
		sregs.cr4 |= 0x20;
		break;
	case 4: /* protected mode, paging off */
		break;
	case 5: /* real mode */
		sregs.cr0 &= ~1ULL;
		break;
	case 6: /* compatibility mode */
		sregs.cr0 |= 0x80000000;
		sregs.cr4 |= 0x20;
		sregs.efer = 0x500;
		break;
	default: /* a paging mode that makes no sense */
		sregs.cr0 |= 0x80000000;
		sregs.efer = 0x500;
		break;
	}
	segment(&sregs.cs, data + 57, (mode & 7) <= 1, !(mode & 8));
	sregs.cs.type |= 8; /* code */
	segment(&sregs.ds, data + 60, false, true);
	segment(&sregs.es, data + 63, false, true);
	segment(&sregs.ss, data + 66, false, true);
	segment(&sregs.fs, data + 69, false, true);
	segment(&sregs.gs, data + 72, false, true);
	if (data[75] & 1)
		sregs.fs.base = get64(data + 16);
	sregs.ss.dpl = data[75] >> 6;

	/* XSAVE state: a layout that may or may not fit the buffer. */
	memset(xsave, data[76], sizeof(xsave));
	xs.buf = xsave;
	xs.size = data[77] & 1 ? sizeof(xsave) : (size_t)data[77] * 16;
	xs.xcr0 = 0x3 | (uint64_t)data[78] << 2;
	for (unsigned i = 2; i < 10; i++) {
		xs.comp_offset[i] = 576 + (uint32_t)data[79 + i] * 8;
		xs.comp_size[i] = (uint32_t)data[88 + (i - 2)] * 4;
	}

	before = regs;
	rc = emu_run(&mem, data[95] & 1 ? &mmio : NULL, &regs, &sregs, NULL, &out);
	if (rc == EMU_NEED_XSTATE)
		rc = emu_run(&mem, &mmio, &regs, &sregs, &xs, &out);
	switch (rc) {
	case EMU_DONE:
		if (!out.decoded || out.insn >= EMU_NR_INSNS || !out.nr_bytes)
			abort();
		break;
	case EMU_EXCEPTION:
		if (out.vector != EMU_VEC_BP && memcmp(&regs, &before, sizeof(regs)))
			abort(); /* a fault leaves the registers as they were */
		if (out.vector > 31)
			abort();
		break;
	case EMU_UNHANDLED:
		if (!out.why || memcmp(&regs, &before, sizeof(regs)))
			abort();
		break;
	default:
		abort(); /* NEED_XSTATE twice */
	}
	if (out.nr_bytes > sizeof(out.bytes))
		abort();
	free(ram);
	return 0;
}
