// SPDX-License-Identifier: MIT
/*
 * The emulation fallback: instruction bytes placed in a fake guest RAM behind hand-built page
 * tables, run through emu_run(), and the registers, flags, memory, MMIO accesses and
 * exceptions that come out compared with what the SDM says the CPU does.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vmm/emulate.h"
#include "vmm/layout.h"
#include "vmm/memory.h"

#define RAM_SIZE (8 * MiB)

#define P  0x1ULL
#define RW 0x2ULL
#define US 0x4ULL

/* RFLAGS bits. */
#define CF    0x1ULL
#define PF    0x4ULL
#define AF    0x10ULL
#define ZF    0x40ULL
#define SF    0x80ULL
#define OF    0x800ULL
#define AC    0x40000ULL
#define ARITH (CF | PF | AF | ZF | SF | OF)

/*
 * Linear addresses (4-level paging, 4 KiB pages, identity-mapped below 2 MiB unless noted):
 * code at CODE, data at DATA, NOTPRESENT not mapped, READONLY read-only, SUPER supervisor-only;
 * MMIO_LA maps the device at MMIO_GPA, which is not RAM.
 */
#define CODE	   0x10000ULL
#define DATA	   0x20000ULL
#define NOTPRESENT 0x30000ULL
#define READONLY   0x40000ULL
#define SUPER	   0x50000ULL
#define MMIO_LA	   0x200000ULL
#define MMIO_GPA   0xfe000000ULL

struct access {
	uint64_t gpa;
	unsigned size;
	bool write;
	uint64_t value;
};

struct fixture {
	struct guest_mem m;
	uint8_t *ram;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct emu_outcome out;
	/* The fake device: 64 bytes of registers, and a log of accesses. */
	uint8_t dev[64];
	struct access log[16];
	unsigned nr_log;
	uint8_t xsave[4096];
	struct emu_xstate xs;
};

static void dev_read(void *opaque, uint64_t gpa, void *data, unsigned size)
{
	struct fixture *f = opaque;
	uint64_t off = gpa - MMIO_GPA, v = 0;

	assert_true(off + size <= sizeof(f->dev));
	memcpy(&v, f->dev + off, size);
	memcpy(data, &v, size);
	if (f->nr_log < 16)
		f->log[f->nr_log++] = (struct access){gpa, size, false, v};
}

static void dev_write(void *opaque, uint64_t gpa, const void *data, unsigned size)
{
	struct fixture *f = opaque;
	uint64_t off = gpa - MMIO_GPA, v = 0;

	assert_true(off + size <= sizeof(f->dev));
	memcpy(&v, data, size);
	memcpy(f->dev + off, &v, size);
	if (f->nr_log < 16)
		f->log[f->nr_log++] = (struct access){gpa, size, true, v};
}

/* The device's last page stands for one KVM serves in the kernel. */
static bool dev_in_kernel(void *opaque, uint64_t gpa, uint64_t len)
{
	return gpa + len > MMIO_GPA + 0x3000;
}

static struct emu_mmio mmio_ops = {dev_read, dev_write, dev_in_kernel, NULL};

static void put64(struct fixture *f, uint64_t gpa, uint64_t v)
{
	memcpy(f->ram + gpa, &v, 8);
}

static uint64_t get64(struct fixture *f, uint64_t gpa)
{
	uint64_t v;

	memcpy(&v, f->ram + gpa, 8);
	return v;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool l, bool db, uint8_t dpl)
{
	*s = (struct kvm_segment){.base = 0,
				  .limit = 0xffffffff,
				  .selector = sel,
				  .type = type,
				  .present = 1,
				  .dpl = dpl,
				  .db = db,
				  .s = 1,
				  .l = l,
				  .g = 1};
}

/* 64-bit mode, ring 0, with the page tables above. */
static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	f->m.memfd = -1;
	assert_int_equal(gm_add_region(&f->m, 0, RAM_SIZE, f->ram), 0);
	put64(f, 0x1000, 0x2000 | P | RW | US);
	put64(f, 0x2000, 0x3000 | P | RW | US);
	put64(f, 0x3000, 0x4000 | P | RW | US);
	put64(f, 0x3000 + 8, 0x5000 | P | RW | US);
	for (uint64_t i = 16; i < 512; i++)
		put64(f, 0x4000 + i * 8, (i << 12) | P | RW | US);
	put64(f, 0x4000 + (NOTPRESENT >> 12) * 8, 0);
	put64(f, 0x4000 + (READONLY >> 12) * 8, READONLY | P | US);
	put64(f, 0x4000 + (SUPER >> 12) * 8, SUPER | P | RW);
	for (uint64_t i = 0; i < 4; i++)
		put64(f, 0x5000 + i * 8, (MMIO_GPA + (i << 12)) | P | RW | US);
	seg(&f->sregs.cs, 0x08, 0xb, true, false, 0);
	seg(&f->sregs.ds, 0x10, 0x3, false, true, 0);
	f->sregs.es = f->sregs.fs = f->sregs.gs = f->sregs.ss = f->sregs.ds;
	f->sregs.cr0 = 0x80010033; /* PG, WP, NE, ET, MP, PE */
	f->sregs.cr3 = 0x1000;
	f->sregs.cr4 = 0x20 | (1u << 18); /* PAE, OSXSAVE */
	f->sregs.efer = 0xd00;		  /* LME, LMA, NXE */
	f->regs.rip = CODE;
	f->regs.rflags = 0x2;
	for (unsigned i = 0; i < sizeof(f->dev); i++)
		f->dev[i] = (uint8_t)(0x11 * (i + 1));
	mmio_ops.opaque = f;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	free(f->ram);
	free(f);
	return 0;
}

/* Put the bytes at linear (= physical, below 2 MiB) address `at` and run them from there. */
static enum emu_result run_at(struct fixture *f, uint64_t at, const void *code, size_t n,
			      struct emu_xstate *xs)
{
	memcpy(f->ram + at, code, n);
	f->regs.rip = at;
	return emu_run(&f->m, &mmio_ops, &f->regs, &f->sregs, xs, &f->out);
}

#define RUN(f, ...)                                           \
	({                                                    \
		static const uint8_t code_[] = {__VA_ARGS__}; \
		run_at(f, CODE, code_, sizeof(code_), NULL);  \
	})

static void assert_exception(struct fixture *f, enum emu_result rc, uint8_t vector, bool has_error,
			     uint32_t error)
{
	assert_int_equal(rc, EMU_EXCEPTION);
	assert_int_equal(f->out.vector, vector);
	assert_int_equal(f->out.has_error_code, has_error);
	if (has_error)
		assert_int_equal(f->out.error_code, error);
}

/* ---- popcnt ---- */

static void test_popcnt_register_forms(void **state)
{
	struct fixture *f = *state;

	/* popcnt rax, rbx: every arithmetic flag set before; only ZF's value counts after. */
	f->regs.rbx = 0xf0f0f0f0f0f0f0f0ULL;
	f->regs.rax = 1;
	f->regs.rflags = 0x2 | ARITH;
	assert_int_equal(RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0xc3), EMU_DONE);
	assert_int_equal(f->regs.rax, 32);
	assert_int_equal(f->regs.rflags, 0x2);
	assert_int_equal(f->regs.rip, CODE + 5);
	assert_true(f->out.decoded);
	assert_int_equal(f->out.insn, EMU_POPCNT);
	assert_string_equal(emu_insn_name(f->out.insn), "popcnt");

	/* popcnt eax, ebx: 32 bits of source, the result zero-extends. */
	f->regs.rax = ~0ULL;
	assert_int_equal(RUN(f, 0xf3, 0x0f, 0xb8, 0xc3), EMU_DONE);
	assert_int_equal(f->regs.rax, 16);

	/* popcnt ax, cx of 0: ZF set, the upper 48 bits of RAX kept. */
	f->regs.rax = 0x1234567890abcdefULL;
	f->regs.rcx = 0xffff0000ULL;
	assert_int_equal(RUN(f, 0x66, 0xf3, 0x0f, 0xb8, 0xc1), EMU_DONE);
	assert_int_equal(f->regs.rax, 0x1234567890ab0000ULL);
	assert_int_equal(f->regs.rflags, 0x2 | ZF);
	assert_int_equal(f->regs.rip, CODE + 5);

	/* popcnt r9, r15 (REX.WRB). */
	f->regs.r15 = 0x7;
	assert_int_equal(RUN(f, 0xf3, 0x4d, 0x0f, 0xb8, 0xcf), EMU_DONE);
	assert_int_equal(f->regs.r9, 3);
}

static void test_popcnt_memory_forms(void **state)
{
	struct fixture *f = *state;

	/* popcnt rax, [rbx] */
	put64(f, DATA + 8, 0x8000000000000001ULL);
	f->regs.rbx = DATA + 8;
	assert_int_equal(RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_DONE);
	assert_int_equal(f->regs.rax, 2);

	/* popcnt eax, [rip + 0x100]: relative to the next instruction. */
	put64(f, CODE + 8 + 0x100, 0xff);
	assert_int_equal(RUN(f, 0xf3, 0x0f, 0xb8, 0x05, 0x00, 0x01, 0x00, 0x00), EMU_DONE);
	assert_int_equal(f->regs.rax, 8);
	assert_int_equal(f->regs.rip, CODE + 8);

	/* popcnt rax, [r12 + r9*4 + 8] (SIB, REX.X and REX.B, disp8). */
	put64(f, DATA + 0x40 + 0x20 + 8, 0xffff);
	f->regs.r12 = DATA + 0x40;
	f->regs.r9 = 8;
	assert_int_equal(RUN(f, 0xf3, 0x4b, 0x0f, 0xb8, 0x44, 0x8c, 0x08), EMU_DONE);
	assert_int_equal(f->regs.rax, 16);

	/* popcnt rax, [rsi*8 + disp32] (SIB without a base). */
	put64(f, DATA + 0x800, 0x3);
	f->regs.rsi = 0x100;
	assert_int_equal(RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x04, 0xf5, 0x00, 0x00, 0x02, 0x00),
			 EMU_DONE);
	assert_int_equal(f->regs.rax, 2);

	/* popcnt eax, fs:[rax + disp32 - 4]: FS's base applies in 64-bit mode. */
	f->sregs.fs.base = DATA;
	put64(f, DATA + 0x10, 0x1f);
	f->regs.rax = 0x14;
	assert_int_equal(RUN(f, 0x64, 0xf3, 0x0f, 0xb8, 0x80, 0xfc, 0xff, 0xff, 0xff), EMU_DONE);
	assert_int_equal(f->regs.rax, 5);

	/* popcnt eax, [ebx] with 67: 32-bit addressing drops the upper half of RBX. */
	put64(f, DATA, 0x1);
	f->regs.rbx = 0xffffffff00000000ULL | DATA;
	assert_int_equal(RUN(f, 0x67, 0xf3, 0x0f, 0xb8, 0x03), EMU_DONE);
	assert_int_equal(f->regs.rax, 1);

	/* An operand across two mapped pages. */
	put64(f, DATA + 0xffc, 0xffffffffffffffffULL);
	f->regs.rbx = DATA + 0xffc;
	assert_int_equal(RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_DONE);
	assert_int_equal(f->regs.rax, 64);
}

static void test_popcnt_mmio(void **state)
{
	struct fixture *f = *state;

	/* popcnt rax, [rbx]: one 8-byte read of the device. */
	f->regs.rbx = MMIO_LA + 8;
	assert_int_equal(RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_DONE);
	assert_int_equal(f->nr_log, 1);
	assert_int_equal(f->log[0].gpa, MMIO_GPA + 8);
	assert_int_equal(f->log[0].size, 8);
	assert_false(f->log[0].write);
	assert_int_equal(f->regs.rax, __builtin_popcountll(f->log[0].value));

	/* popcnt ax, [rbx] unaligned: split into the naturally aligned accesses a bus takes. */
	f->nr_log = 0;
	f->regs.rbx = MMIO_LA + 3;
	assert_int_equal(RUN(f, 0x66, 0xf3, 0x0f, 0xb8, 0x03), EMU_DONE);
	assert_int_equal(f->nr_log, 2);
	assert_int_equal(f->log[0].gpa, MMIO_GPA + 3);
	assert_int_equal(f->log[0].size, 1);
	assert_int_equal(f->log[1].gpa, MMIO_GPA + 4);
	assert_int_equal(f->regs.rax & 0xffff,
			 __builtin_popcount((unsigned)f->dev[3] | (unsigned)f->dev[4] << 8));
	/* A device KVM serves itself (its LAPIC): not emulated, nothing read. */
	f->nr_log = 0;
	f->regs.rbx = MMIO_LA + 0x3000;
	assert_int_equal(RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_UNHANDLED);
	assert_int_equal(f->nr_log, 0);
}

static void test_faults_data(void **state)
{
	struct fixture *f = *state;
	struct kvm_regs before;

	/* Across into a page that is not present: #PF on the second page, supervisor read. */
	f->regs.rbx = NOTPRESENT - 4;
	f->regs.rax = 0x55;
	before = f->regs;
	before.rip = CODE;
	assert_exception(f, RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_VEC_PF, true, 0);
	assert_int_equal(f->out.cr2, NOTPRESENT);
	assert_memory_equal(&f->regs, &before, sizeof(before));

	/* Wholly in it: CR2 is the operand's own address. */
	f->regs.rbx = NOTPRESENT + 0x10;
	assert_exception(f, RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_VEC_PF, true, 0);
	assert_int_equal(f->out.cr2, NOTPRESENT + 0x10);

	/* Non-canonical: #GP(0), through RBP #SS(0). */
	f->regs.rbx = 0x0000800000000000ULL;
	assert_exception(f, RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_VEC_GP, true, 0);
	f->regs.rbp = 0x0000800000000000ULL;
	assert_exception(f, RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x45, 0x00), EMU_VEC_SS, true, 0);
	/* An operand whose last byte is past the canonical hole. */
	f->regs.rbx = 0x00007ffffffffffcULL;
	assert_exception(f, RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_VEC_GP, true, 0);

	/* SMAP: ring 0 reading a user page faults unless RFLAGS.AC is set (P, no U). */
	f->sregs.cr4 |= 1ULL << 21;
	f->regs.rbx = DATA;
	assert_exception(f, RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_VEC_PF, true, GM_PF_PRESENT);
	assert_int_equal(f->out.cr2, DATA);
	f->regs.rbx = SUPER; /* a supervisor page is fine */
	assert_int_equal(RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_DONE);
	f->regs.rflags |= AC;
	f->regs.rbx = DATA;
	assert_int_equal(RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_DONE);
	f->regs.rflags &= ~AC;
	/* ... and never an instruction fetch. */
	f->regs.rbx = 0;
	assert_int_equal(RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0xc3), EMU_DONE);
	f->sregs.cr4 &= ~(1ULL << 21);

	/* Ring 3 reading a supervisor page: P | U. */
	f->sregs.cs.dpl = f->sregs.ss.dpl = 3;
	f->regs.rbx = SUPER;
	assert_exception(f, RUN(f, 0xf3, 0x48, 0x0f, 0xb8, 0x03), EMU_VEC_PF, true,
			 GM_PF_PRESENT | GM_PF_USER);
	assert_int_equal(f->out.cr2, SUPER);
}

static void test_faults_fetch(void **state)
{
	struct fixture *f = *state;
	static const uint8_t popcnt[] = {0xf3, 0x48, 0x0f, 0xb8, 0xc3};

	/* An instruction across two mapped pages. */
	f->regs.rbx = 1;
	assert_int_equal(run_at(f, DATA + 0xffe, popcnt, sizeof(popcnt), NULL), EMU_DONE);
	assert_int_equal(f->regs.rax, 1);
	assert_int_equal(f->regs.rip, DATA + 0xffe + 5);
	assert_int_equal(f->out.nr_bytes, 15); /* the rest of the second page's share */
	assert_memory_equal(f->out.bytes, popcnt, 5);

	/* ... and into a page that is not there: a fetch #PF at the second page. */
	assert_exception(f, run_at(f, NOTPRESENT - 2, popcnt, 2, NULL), EMU_VEC_PF, true,
			 GM_PF_FETCH);
	assert_int_equal(f->out.cr2, NOTPRESENT);
	assert_int_equal(f->regs.rip, NOTPRESENT - 2);
	assert_int_equal(f->out.nr_bytes, 2);

	/* Ring 3 running a supervisor page. */
	f->sregs.cs.dpl = f->sregs.ss.dpl = 3;
	assert_exception(f, run_at(f, SUPER, popcnt, sizeof(popcnt), NULL), EMU_VEC_PF, true,
			 GM_PF_PRESENT | GM_PF_USER | GM_PF_FETCH);

	/* Code in MMIO is not fetched. */
	f->sregs.cs.dpl = f->sregs.ss.dpl = 0;
	f->regs.rip = MMIO_LA;
	assert_int_equal(emu_run(&f->m, &mmio_ops, &f->regs, &f->sregs, NULL, &f->out),
			 EMU_UNHANDLED);

	/* More than 15 bytes: #GP(0). */
	static const uint8_t long_insn[16] = {0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
					      0x66, 0x66, 0x66, 0xf3, 0x0f, 0xb8, 0x04, 0x24};
	assert_exception(f, run_at(f, CODE, long_insn, sizeof(long_insn), NULL), EMU_VEC_GP, true,
			 0);
}

static void test_lock_and_unknown(void **state)
{
	struct fixture *f = *state;

	/* LOCK on a form that takes none: #UD, nothing changed. */
	f->regs.rbx = 3;
	assert_exception(f, RUN(f, 0xf0, 0xf3, 0x48, 0x0f, 0xb8, 0xc3), EMU_VEC_UD, false, 0);
	assert_int_equal(f->regs.rax, 0);
	assert_int_equal(f->regs.rip, CODE);
	assert_exception(f, RUN(f, 0xf0, 0x0f, 0x01, 0xca), EMU_VEC_UD, false, 0);

	/* Unknown: never skipped, the bytes are there for the message. */
	assert_int_equal(RUN(f, 0x90, 0x90), EMU_UNHANDLED);
	assert_non_null(f->out.why);
	assert_int_equal(f->out.nr_bytes, 15);
	assert_int_equal(f->out.bytes[0], 0x90);
	assert_int_equal(f->regs.rip, CODE);
	assert_int_equal(RUN(f, 0x0f, 0x0b), EMU_UNHANDLED);		 /* ud2 */
	assert_int_equal(RUN(f, 0xf2, 0x0f, 0xb8, 0xc3), EMU_UNHANDLED); /* not popcnt */
	assert_int_equal(RUN(f, 0x0f, 0x01, 0xc8), EMU_UNHANDLED);	 /* monitor */
	assert_int_equal(RUN(f, 0x0f, 0xc7, 0xf0), EMU_UNHANDLED);	 /* rdrand */
	assert_int_equal(RUN(f, 0x0f, 0xae, 0xe8), EMU_UNHANDLED);	 /* lfence */
	/* F2 after F3: the last one decides, and F2 0F B8 is nothing. */
	assert_int_equal(RUN(f, 0xf3, 0xf2, 0x0f, 0xb8, 0xc3), EMU_UNHANDLED);
	/* A REX before a legacy prefix is ignored: this is popcnt eax, ebx. */
	f->regs.rbx = ~0ULL;
	assert_int_equal(RUN(f, 0x48, 0xf3, 0x0f, 0xb8, 0xc3), EMU_DONE);
	assert_int_equal(f->regs.rax, 32);
	/* Real mode and 16-bit code are not decoded. */
	f->sregs.cs.l = 0;
	assert_int_equal(RUN(f, 0xcc), EMU_UNHANDLED);
	f->sregs.cr0 = 0x10;
	assert_int_equal(RUN(f, 0xcc), EMU_UNHANDLED);
}

/* ---- int3, clac, stac, fwait ---- */

static void test_int3(void **state)
{
	struct fixture *f = *state;

	f->regs.rax = 7;
	assert_exception(f, RUN(f, 0xcc), EMU_VEC_BP, false, 0);
	assert_int_equal(f->out.insn, EMU_INT3);
	/* A trap: the return address is the next instruction. */
	assert_int_equal(f->regs.rip, CODE + 1);
	assert_int_equal(f->regs.rax, 7);
}

static void test_clac_stac(void **state)
{
	struct fixture *f = *state;

	f->regs.rflags = 0x2 | CF;
	assert_int_equal(RUN(f, 0x0f, 0x01, 0xcb), EMU_DONE);
	assert_int_equal(f->regs.rflags, 0x2 | CF | AC);
	assert_int_equal(f->regs.rip, CODE + 3);
	assert_int_equal(f->out.insn, EMU_STAC);
	assert_int_equal(RUN(f, 0x0f, 0x01, 0xca), EMU_DONE);
	assert_int_equal(f->regs.rflags, 0x2 | CF);
	assert_int_equal(f->out.insn, EMU_CLAC);
	/* Only in ring 0. */
	f->sregs.cs.dpl = f->sregs.ss.dpl = 3;
	assert_exception(f, RUN(f, 0x0f, 0x01, 0xcb), EMU_VEC_UD, false, 0);
	assert_int_equal(f->regs.rflags, 0x2 | CF);
	assert_int_equal(f->regs.rip, CODE);
}

static void init_xstate(struct fixture *f)
{
	memset(f->xsave, 0, sizeof(f->xsave));
	f->xsave[0] = 0x7f; /* FCW 0x37f */
	f->xsave[1] = 0x03;
	f->xsave[24] = 0x80; /* MXCSR 0x1f80 */
	f->xsave[25] = 0x1f;
	f->xsave[28] = 0xff; /* MXCSR_MASK 0xffff */
	f->xsave[29] = 0xff;
	f->xs = (struct emu_xstate){.buf = f->xsave, .size = sizeof(f->xsave), .xcr0 = 0x7};
	f->xs.comp_offset[2] = 576;
	f->xs.comp_size[2] = 256;
}

static void test_fwait(void **state)
{
	struct fixture *f = *state;
	static const uint8_t fwait[] = {0x9b};

	init_xstate(f);
	/* It reads FSW: the caller must fetch the XSAVE state first. */
	assert_int_equal(run_at(f, CODE, fwait, 1, NULL), EMU_NEED_XSTATE);
	assert_int_equal(f->regs.rip, CODE);
	assert_int_equal(run_at(f, CODE, fwait, 1, &f->xs), EMU_DONE);
	assert_int_equal(f->regs.rip, CODE + 1);
	assert_false(f->xs.changed);
	/* FSW.ES with x87 state in use: #MF. */
	f->xsave[2] = 0x81;
	f->xsave[512] = 1;
	assert_exception(f, run_at(f, CODE, fwait, 1, &f->xs), EMU_VEC_MF, false, 0);
	assert_int_equal(f->regs.rip, CODE);
	/* x87 in its initial state (XSTATE_BV[0] clear): FSW is 0 whatever the bytes say. */
	f->xsave[512] = 0;
	assert_int_equal(run_at(f, CODE, fwait, 1, &f->xs), EMU_DONE);
	/* CR0.TS and CR0.MP: #NM, before any state is needed. */
	f->sregs.cr0 |= 0x8;
	assert_exception(f, run_at(f, CODE, fwait, 1, NULL), EMU_VEC_NM, false, 0);
	/* TS without MP: WAIT runs. */
	f->sregs.cr0 &= ~0x2ULL;
	assert_int_equal(run_at(f, CODE, fwait, 1, &f->xs), EMU_DONE);
}

/* ---- cmpxchg8b / cmpxchg16b ---- */

static void test_cmpxchg8b(void **state)
{
	struct fixture *f = *state;

	/* Equal: ECX:EBX stored, ZF set, EDX:EAX kept (upper halves too). */
	put64(f, DATA, 0x1111111122222222ULL);
	f->regs.rdi = DATA;
	f->regs.rax = 0xaaaaaaaa22222222ULL;
	f->regs.rdx = 0xbbbbbbbb11111111ULL;
	f->regs.rbx = 0x44444444;
	f->regs.rcx = 0x33333333;
	assert_int_equal(RUN(f, 0xf0, 0x0f, 0xc7, 0x0f), EMU_DONE); /* lock cmpxchg8b [rdi] */
	assert_int_equal(get64(f, DATA), 0x3333333344444444ULL);
	assert_true(f->regs.rflags & ZF);
	assert_int_equal(f->regs.rax, 0xaaaaaaaa22222222ULL);
	assert_int_equal(f->regs.rip, CODE + 4);
	assert_int_equal(f->out.insn, EMU_CMPXCHG8B);

	/* Different: ZF clear, EDX:EAX loaded and zero-extended, memory as it was. */
	assert_int_equal(RUN(f, 0x0f, 0xc7, 0x0f), EMU_DONE);
	assert_false(f->regs.rflags & ZF);
	assert_int_equal(f->regs.rax, 0x44444444);
	assert_int_equal(f->regs.rdx, 0x33333333);
	assert_int_equal(get64(f, DATA), 0x3333333344444444ULL);

	/* Across two pages: read, compare, write. */
	put64(f, DATA + 0xffc, 0x0123456789abcdefULL);
	f->regs.rdi = DATA + 0xffc;
	f->regs.rax = 0x89abcdef;
	f->regs.rdx = 0x01234567;
	assert_int_equal(RUN(f, 0x0f, 0xc7, 0x0f), EMU_DONE);
	assert_true(f->regs.rflags & ZF);
	assert_int_equal(get64(f, DATA + 0xffc), 0x3333333344444444ULL);

	/* Across into a read-only page: #PF (P|W) on the second page, the first untouched. */
	put64(f, READONLY - 4, 0x0123456789abcdefULL);
	f->regs.rdi = READONLY - 4;
	f->regs.rax = 0x89abcdef;
	assert_exception(f, RUN(f, 0xf0, 0x0f, 0xc7, 0x0f), EMU_VEC_PF, true,
			 GM_PF_PRESENT | GM_PF_WRITE);
	assert_int_equal(f->out.cr2, READONLY);
	assert_int_equal(get64(f, READONLY - 4), 0x0123456789abcdefULL);
	/* Read-only even when the comparison fails: the CPU writes either way. */
	f->regs.rdi = READONLY;
	assert_exception(f, RUN(f, 0x0f, 0xc7, 0x0f), EMU_VEC_PF, true,
			 GM_PF_PRESENT | GM_PF_WRITE);

	/* A register operand: #UD. */
	assert_exception(f, RUN(f, 0x0f, 0xc7, 0xcf), EMU_VEC_UD, false, 0);
}

static void test_cmpxchg16b(void **state)
{
	struct fixture *f = *state;

	put64(f, DATA + 0x10, 0x1111);
	put64(f, DATA + 0x18, 0x2222);
	f->regs.rsi = DATA + 0x10;
	f->regs.rax = 0x1111;
	f->regs.rdx = 0x2222;
	f->regs.rbx = 0xbbbbbbbbbbbbbbbbULL;
	f->regs.rcx = 0xccccccccccccccccULL;
	/* lock cmpxchg16b [rsi] */
	assert_int_equal(RUN(f, 0xf0, 0x48, 0x0f, 0xc7, 0x0e), EMU_DONE);
	assert_int_equal(f->out.insn, EMU_CMPXCHG16B);
	assert_true(f->regs.rflags & ZF);
	assert_int_equal(get64(f, DATA + 0x10), 0xbbbbbbbbbbbbbbbbULL);
	assert_int_equal(get64(f, DATA + 0x18), 0xccccccccccccccccULL);
	assert_int_equal(f->regs.rip, CODE + 5);

	/* Unequal in the high half only. */
	f->regs.rax = 0xbbbbbbbbbbbbbbbbULL;
	assert_int_equal(RUN(f, 0x48, 0x0f, 0xc7, 0x0e), EMU_DONE);
	assert_false(f->regs.rflags & ZF);
	assert_int_equal(f->regs.rax, 0xbbbbbbbbbbbbbbbbULL);
	assert_int_equal(f->regs.rdx, 0xccccccccccccccccULL);

	/* Not 16-byte aligned: #GP(0). */
	f->regs.rsi = DATA + 8;
	assert_exception(f, RUN(f, 0xf0, 0x48, 0x0f, 0xc7, 0x0e), EMU_VEC_GP, true, 0);

	/* On MMIO: a read, then the write of RCX:RBX. */
	f->regs.rsi = MMIO_LA + 0x10;
	memcpy(&f->regs.rax, f->dev + 0x10, 8);
	memcpy(&f->regs.rdx, f->dev + 0x18, 8);
	assert_int_equal(RUN(f, 0x48, 0x0f, 0xc7, 0x0e), EMU_DONE);
	assert_true(f->regs.rflags & ZF);
	assert_int_equal(f->nr_log, 4);
	assert_false(f->log[0].write);
	assert_false(f->log[1].write);
	assert_true(f->log[2].write);
	assert_int_equal(f->log[2].gpa, MMIO_GPA + 0x10);
	assert_int_equal(f->log[2].value, 0xbbbbbbbbbbbbbbbbULL);
	assert_int_equal(f->log[3].value, 0xccccccccccccccccULL);
}

/* ---- xrstor ---- */

/* An XSAVE image at DATA: x87, SSE and AVX state filled with recognisable bytes. */
static void xsave_image(struct fixture *f, uint64_t xstate_bv)
{
	uint8_t *img = f->ram + DATA;

	for (unsigned i = 0; i < 832; i++)
		img[i] = (uint8_t)(i * 7 + 1);
	memset(img + 24, 0, 8);
	img[24] = 0x40; /* MXCSR 0x1f40 */
	img[25] = 0x1f;
	memset(img + 512, 0, 64);
	memcpy(img + 512, &xstate_bv, 8);
}

static void test_xrstor(void **state)
{
	static const uint8_t xrstor64[] = {0x48, 0x0f, 0xae, 0x2b};
	struct fixture *f = *state;
	uint64_t bv;

	init_xstate(f);
	memset(f->xsave + 160, 0x5a, 256); /* XMM state before */
	memset(f->xsave + 576, 0xa5, 256); /* YMM_Hi128 before */
	f->xsave[512] = 0x7;
	xsave_image(f, 0x7);
	f->regs.rbx = DATA;
	f->regs.rax = 0x7;
	f->regs.rdx = 0;
	/* xrstor64 [rbx] needs the XSAVE state. */
	assert_int_equal(RUN(f, 0x48, 0x0f, 0xae, 0x2b), EMU_NEED_XSTATE);
	assert_int_equal(run_at(f, CODE, xrstor64, 4, &f->xs), EMU_DONE);
	assert_int_equal(f->out.insn, EMU_XRSTOR);
	assert_true(f->xs.changed);
	assert_int_equal(f->regs.rip, CODE + 4);
	/* x87 (bar MXCSR_MASK), MXCSR, XMM0-15 and the upper YMM halves come from memory. */
	assert_memory_equal(f->xsave, f->ram + DATA, 28);
	assert_memory_equal(f->xsave + 32, f->ram + DATA + 32, 416 - 32);
	assert_memory_equal(f->xsave + 576, f->ram + DATA + 576, 256);
	assert_int_equal(f->xsave[28], 0xff);
	memcpy(&bv, f->xsave + 512, 8);
	assert_int_equal(bv, 0x7);

	/* XSTATE_BV = x87 only: SSE and AVX to their initial state (zeros), MXCSR still loaded. */
	xsave_image(f, 0x1);
	f->ram[DATA + 24] = 0x00; /* MXCSR 0x1f00 */
	assert_int_equal(run_at(f, CODE, xrstor64, 4, &f->xs), EMU_DONE);
	for (unsigned i = 160; i < 416; i++)
		assert_int_equal(f->xsave[i], 0);
	for (unsigned i = 576; i < 832; i++)
		assert_int_equal(f->xsave[i], 0);
	assert_int_equal(f->xsave[24] | f->xsave[25] << 8, 0x1f00);
	memcpy(&bv, f->xsave + 512, 8);
	assert_int_equal(bv, 0x3); /* AVX in its initial state */

	/* RFBM without AVX (EAX = 3): AVX left alone. */
	memset(f->xsave + 576, 0xa5, 256);
	f->xsave[512] = 0x7;
	xsave_image(f, 0x7);
	f->regs.rax = 0x3;
	assert_int_equal(run_at(f, CODE, xrstor64, 4, &f->xs), EMU_DONE);
	assert_int_equal(f->xsave[576], 0xa5);
	assert_int_equal(f->xsave[831], 0xa5);
	/* RFBM without x87: the legacy x87 bytes stay. */
	memset(f->xsave + 32, 0x77, 8);
	f->regs.rax = 0x2;
	assert_int_equal(run_at(f, CODE, xrstor64, 4, &f->xs), EMU_DONE);
	assert_int_equal(f->xsave[32], 0x77);
	/* The form without REX.W keeps 32-bit FIP and FDP, without FCS and FDS. */
	f->regs.rax = 0x7;
	assert_int_equal(RUN(f, 0x0f, 0xae, 0x2b), EMU_NEED_XSTATE);
	assert_int_equal(run_at(f, CODE, xrstor64 + 1, 3, &f->xs), EMU_DONE);
	assert_memory_equal(f->xsave + 8, f->ram + DATA + 8, 4);
	assert_memory_equal(f->xsave + 16, f->ram + DATA + 16, 4);
	for (unsigned i = 12; i < 16; i++)
		assert_int_equal(f->xsave[i] | f->xsave[i + 8], 0);
}

static void test_xrstor_faults(void **state)
{
	struct fixture *f = *state;
	static const uint8_t xrstor[] = {0x0f, 0xae, 0x2b};
	uint8_t before[4096];

	init_xstate(f);
	f->regs.rax = 0x7;
	f->regs.rbx = DATA;
	memcpy(before, f->xsave, sizeof(before));
	/* Not 64-byte aligned. */
	f->regs.rbx = DATA + 16;
	assert_exception(f, run_at(f, CODE, xrstor, 3, &f->xs), EMU_VEC_GP, true, 0);
	f->regs.rbx = DATA;
	/* XSTATE_BV with a bit XCR0 lacks. */
	xsave_image(f, 0x9);
	assert_exception(f, run_at(f, CODE, xrstor, 3, &f->xs), EMU_VEC_GP, true, 0);
	/* Bytes 23:16 of the header not zero. */
	xsave_image(f, 0x7);
	f->ram[DATA + 512 + 20] = 1;
	assert_exception(f, run_at(f, CODE, xrstor, 3, &f->xs), EMU_VEC_GP, true, 0);
	/* MXCSR with a reserved bit. */
	xsave_image(f, 0x7);
	f->xsave[30] = 0; /* MXCSR_MASK 0xffff: bit 16 is reserved */
	f->ram[DATA + 26] = 1;
	assert_exception(f, run_at(f, CODE, xrstor, 3, &f->xs), EMU_VEC_GP, true, 0);
	assert_false(f->xs.changed);
	/* The compacted format is not emulated. */
	xsave_image(f, 0x7);
	f->ram[DATA + 512 + 15] = 0x80;
	assert_int_equal(run_at(f, CODE, xrstor, 3, &f->xs), EMU_UNHANDLED);
	/* An image running into a page that is not there: #PF there, nothing restored. */
	f->regs.rbx = NOTPRESENT - 0x240;
	f->ram[DATA + 512 + 15] = 0;
	memcpy(f->ram + NOTPRESENT - 0x240, f->ram + DATA, 0x240);
	assert_exception(f, run_at(f, CODE, xrstor, 3, &f->xs), EMU_VEC_PF, true, 0);
	assert_int_equal(f->out.cr2, NOTPRESENT);
	assert_memory_equal(f->xsave, before, sizeof(before));
	/* CR0.TS: #NM; CR4.OSXSAVE clear: #UD; LOCK: #UD. */
	f->regs.rbx = DATA;
	f->sregs.cr0 |= 0x8;
	assert_exception(f, run_at(f, CODE, xrstor, 3, &f->xs), EMU_VEC_NM, false, 0);
	f->sregs.cr0 &= ~0x8ULL;
	f->sregs.cr4 &= ~(1ULL << 18);
	assert_exception(f, run_at(f, CODE, xrstor, 3, &f->xs), EMU_VEC_UD, false, 0);
	f->sregs.cr4 |= 1ULL << 18;
	assert_exception(f, RUN(f, 0xf0, 0x0f, 0xae, 0x2b), EMU_VEC_UD, false, 0);
}

/* ---- 32-bit protected mode ---- */

static void test_protected_mode(void **state)
{
	struct fixture *f = *state;

	/* Paging off, flat 32-bit code, DS based at 0x1000 with a 1 MiB limit. */
	seg(&f->sregs.cs, 0x08, 0xb, false, true, 0);
	f->sregs.ds.base = 0x1000;
	f->sregs.ds.limit = 0xfffff;
	f->sregs.cr0 = 0x33;
	f->sregs.cr4 = 0;
	f->sregs.efer = 0;
	put64(f, DATA + 0x1000, 0xff00ff);
	f->regs.rbx = DATA;
	f->regs.rax = 0xdeadbeef00000000ULL;
	/* popcnt eax, [ebx] through DS's base. */
	assert_int_equal(RUN(f, 0xf3, 0x0f, 0xb8, 0x03), EMU_DONE);
	assert_int_equal(f->regs.rax, 16);
	assert_int_equal(f->regs.rip, CODE + 4);
	/* 0x48 is dec eax here, not REX. */
	assert_int_equal(RUN(f, 0x48), EMU_UNHANDLED);
	/* Past DS's limit: #GP(0); through EBP (SS): #SS(0) once SS has a limit. */
	f->regs.rbx = 0xffffe;
	assert_exception(f, RUN(f, 0xf3, 0x0f, 0xb8, 0x03), EMU_VEC_GP, true, 0);
	f->sregs.ss.limit = 0xfff;
	f->regs.rbp = 0x2000;
	assert_exception(f, RUN(f, 0xf3, 0x0f, 0xb8, 0x45, 0x00), EMU_VEC_SS, true, 0);
	/* An ES override with an unusable ES. */
	f->sregs.es.unusable = 1;
	f->sregs.es.present = 0;
	f->regs.rbx = DATA;
	assert_exception(f, RUN(f, 0x26, 0xf3, 0x0f, 0xb8, 0x03), EMU_VEC_GP, true, 0);
	/* cmpxchg8b through a read-only data segment. */
	f->sregs.ds.type = 0x1;
	assert_exception(f, RUN(f, 0x0f, 0xc7, 0x0b), EMU_VEC_GP, true, 0);
	/* 16-bit addressing (67) is not decoded. */
	assert_int_equal(RUN(f, 0x67, 0xf3, 0x0f, 0xb8, 0x07), EMU_UNHANDLED);
	/* int3 in 32-bit code. */
	assert_exception(f, RUN(f, 0xcc), EMU_VEC_BP, false, 0);
	assert_int_equal(f->regs.rip, CODE + 1);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_popcnt_register_forms),
	    T(test_popcnt_memory_forms),
	    T(test_popcnt_mmio),
	    T(test_faults_data),
	    T(test_faults_fetch),
	    T(test_lock_and_unknown),
	    T(test_int3),
	    T(test_clac_stac),
	    T(test_fwait),
	    T(test_cmpxchg8b),
	    T(test_cmpxchg16b),
	    T(test_xrstor),
	    T(test_xrstor_faults),
	    T(test_protected_mode),
	};
#undef T
	return cmocka_run_group_tests_name("emulate", tests, NULL, NULL);
}
