// SPDX-License-Identifier: MIT
#include "vmm/emulate.h"

#include <string.h>

/* RFLAGS (Intel SDM vol. 1 §3.4.3). */
#define FL_CF (1ULL << 0)
#define FL_PF (1ULL << 2)
#define FL_AF (1ULL << 4)
#define FL_ZF (1ULL << 6)
#define FL_SF (1ULL << 7)
#define FL_OF (1ULL << 11)
#define FL_VM (1ULL << 17)
#define FL_AC (1ULL << 18)

#define CR0_PE	    (1ULL << 0)
#define CR0_MP	    (1ULL << 1)
#define CR0_TS	    (1ULL << 3)
#define CR0_NE	    (1ULL << 5)
#define CR4_PAE	    (1ULL << 5)
#define CR4_OSXSAVE (1ULL << 18)
#define CR4_SMAP    (1ULL << 21)
#define EFER_LMA    (1ULL << 10)
#define PTE_US	    (1ULL << 2)

/* The XSAVE area (SDM vol. 1 §13.4): legacy region, then the header. */
#define XS_FSW	      2
#define XS_MXCSR      24
#define XS_MXCSR_MASK 28
#define XS_ST0	      32
#define XS_XMM0	      160
#define XS_HEADER     512
#define XS_MIN	      576
#define XFEATURE_X87  (1ULL << 0)
#define XFEATURE_SSE  (1ULL << 1)
#define XFEATURE_YMM  (1ULL << 2)

/* The largest XSAVE image read from the guest: struct kvm_xsave's region. */
#define XS_MAX 4096

#define PAGE_SIZE 4096ULL

enum seg { SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS };

struct emu {
	const struct guest_mem *m;
	const struct emu_mmio *mmio;
	struct kvm_regs r; /* the working copy: regs is written only on success */
	const struct kvm_sregs *s;
	struct emu_outcome *out;
	struct gm_paging pg;
	bool mode64;
	unsigned cpl;
	/* Instruction bytes fetched so far and the decode position. */
	uint8_t insn[15];
	unsigned fetched, pos;
	/* Prefixes. */
	bool lock, opsize, adsize;
	uint8_t rep; /* the last of F2/F3, or 0 */
	int seg;     /* an override, or -1 */
	uint8_t rex;
	/* ModRM. */
	unsigned mod, reg, rm;
	uint64_t ea;
	int ea_seg;
	bool rip_relative;
};

/* kvm_regs in the order the instruction encoding numbers the registers. */
static __u64 *gpr(struct emu *e, unsigned n)
{
	__u64 *const regs[16] = {
	    &e->r.rax, &e->r.rcx, &e->r.rdx, &e->r.rbx, &e->r.rsp, &e->r.rbp, &e->r.rsi, &e->r.rdi,
	    &e->r.r8,  &e->r.r9,  &e->r.r10, &e->r.r11, &e->r.r12, &e->r.r13, &e->r.r14, &e->r.r15,
	};

	return regs[n & 15];
}

static const struct kvm_segment *segment(struct emu *e, int seg)
{
	switch (seg) {
	case SEG_ES:
		return &e->s->es;
	case SEG_CS:
		return &e->s->cs;
	case SEG_SS:
		return &e->s->ss;
	case SEG_FS:
		return &e->s->fs;
	case SEG_GS:
		return &e->s->gs;
	default:
		return &e->s->ds;
	}
}

static enum emu_result raise(struct emu *e, uint8_t vector, bool has_error, uint32_t error)
{
	e->out->vector = vector;
	e->out->has_error_code = has_error;
	e->out->error_code = error;
	return EMU_EXCEPTION;
}

static enum emu_result unhandled(struct emu *e, const char *why)
{
	e->out->why = why;
	return EMU_UNHANDLED;
}

/* #GP(0), or #SS(0) for a stack-segment reference (SDM vol. 3A §6.15, interrupts 12, 13). */
static enum emu_result seg_fault(struct emu *e, int seg)
{
	return raise(e, seg == SEG_SS ? EMU_VEC_SS : EMU_VEC_GP, true, 0);
}

static bool canonical(uint64_t la, const struct gm_paging *pg)
{
	unsigned bits = (pg->cr4 & (1ULL << 12)) ? 57 : 48; /* CR4.LA57 */

	return (uint64_t)((int64_t)(la << (64 - bits)) >> (64 - bits)) == la;
}

/*
 * The linear address of seg:off for an access of size bytes (SDM vol. 3A §3.4, §5.3): in
 * 64-bit mode only FS and GS have a base and the address must be canonical; in protected mode
 * the segment must be usable, writable for a write, and hold the whole access.
 */
static enum emu_result linear(struct emu *e, int seg, uint64_t off, uint64_t size, bool write,
			      uint64_t *la)
{
	const struct kvm_segment *s = segment(e, seg);

	if (e->mode64) {
		*la = off + ((seg == SEG_FS || seg == SEG_GS) ? s->base : 0);
		if (!canonical(*la, &e->pg) || !canonical(*la + size - 1, &e->pg))
			return seg_fault(e, seg);
		return EMU_DONE;
	}
	off &= 0xffffffffULL;
	if (s->unusable || !s->present)
		return seg_fault(e, seg);
	if (seg != SEG_CS) {
		bool code = s->type & 8, writable = !code && (s->type & 2);
		bool expand_down = !code && (s->type & 4);

		if (write && !writable)
			return seg_fault(e, seg);
		if (code && !(s->type & 2))
			return seg_fault(e, seg); /* execute-only */
		if (expand_down) {
			uint64_t top = s->db ? 0xffffffffULL : 0xffffULL;

			if (off <= s->limit || off + size - 1 > top)
				return seg_fault(e, seg);
		} else if (off + size - 1 > s->limit) {
			return seg_fault(e, seg);
		}
	} else if (off + size - 1 > s->limit) {
		return seg_fault(e, seg);
	}
	*la = (s->base + off) & 0xffffffffULL;
	return EMU_DONE;
}

/* One page's part of an access: RAM (hva) or MMIO (gpa). */
struct piece {
	uint64_t gpa;
	uint8_t *hva;
	unsigned len;
};

#define MAX_PIECES (XS_MAX / PAGE_SIZE + 1)

/*
 * SMAP (SDM vol. 3A §4.6.1), which the walker leaves to its caller: with CR4.SMAP, a data
 * access from CPL < 3 to a page user mode may access faults unless RFLAGS.AC is set.
 */
static bool smap_denies(struct emu *e, const struct gm_translation *t, unsigned access)
{
	bool user = t->nr_steps > 0;

	if (!(e->s->cr4 & CR4_SMAP) || e->cpl == 3 || (access & GM_ACCESS_FETCH) ||
	    (e->r.rflags & FL_AC))
		return false;
	for (unsigned i = 0; i < t->nr_steps; i++) {
		/* A PAE PDPT entry (level 3 outside long mode) has no U/S bit. */
		if (t->steps[i].level == 3 && !(e->pg.efer & EFER_LMA) && (e->pg.cr4 & CR4_PAE))
			continue;
		user = user && (t->steps[i].entry & PTE_US);
	}
	return user;
}

/*
 * Translate [la, la+size) page by page for the access (GM_ACCESS_*); every page is translated
 * before anything is read or written, so a #PF on the second page leaves the first untouched.
 */
static enum emu_result translate(struct emu *e, uint64_t la, uint64_t size, unsigned access,
				 struct piece *p, unsigned *n)
{
	uint64_t done = 0;

	if (e->cpl == 3)
		access |= GM_ACCESS_USER;
	*n = 0;
	while (done < size) {
		uint64_t a = la + done, len;
		struct gm_translation t;

		if (!e->mode64)
			a &= 0xffffffffULL;
		len = PAGE_SIZE - (a & (PAGE_SIZE - 1));
		if (len > size - done)
			len = size - done;
		if (*n == MAX_PIECES || gm_translate(e->m, &e->pg, a, access, &t))
			return unhandled(e, "a paging mode the walker does not know");
		if (t.result == GM_WALK_OK && smap_denies(e, &t, access)) {
			e->out->cr2 = a;
			return raise(e, EMU_VEC_PF, true,
				     GM_PF_PRESENT | (access & (GM_PF_WRITE | GM_PF_FETCH)));
		}
		switch (t.result) {
		case GM_WALK_PAGE_FAULT:
			e->out->cr2 = a;
			return raise(e, EMU_VEC_PF, true, t.error_code);
		case GM_WALK_BAD_TABLE:
			return unhandled(e, "a guest page table lies outside RAM");
		case GM_WALK_NOT_IN_RAM:
			if (e->mmio && e->mmio->in_kernel &&
			    e->mmio->in_kernel(e->mmio->opaque, t.gpa, len))
				return unhandled(
				    e, "an access to a device KVM emulates in the kernel");
			p[*n] = (struct piece){t.gpa, NULL, (unsigned)len};
			break;
		case GM_WALK_OK:
			/* Regions are whole pages, so the rest of the page is in RAM too. */
			p[*n] = (struct piece){t.gpa, gm_slice(e->m, t.gpa, len), (unsigned)len};
			if (!p[*n].hva)
				return unhandled(e, "an access runs past the end of RAM");
			break;
		}
		(*n)++;
		done += len;
	}
	return EMU_DONE;
}

/* MMIO in naturally aligned accesses of 1, 2, 4 or 8 bytes, as the bus takes them. */
static void mmio_rw(struct emu *e, uint64_t gpa, uint8_t *buf, unsigned len, bool write)
{
	while (len) {
		unsigned n = 8;

		while (n > len || (gpa & (n - 1)))
			n >>= 1;
		if (!e->mmio) {
			/* Nothing there: reads see all ones, writes go nowhere. */
			if (!write)
				memset(buf, 0xff, n);
		} else if (write) {
			e->mmio->write(e->mmio->opaque, gpa, buf, n);
		} else {
			e->mmio->read(e->mmio->opaque, gpa, buf, n);
		}
		gpa += n;
		buf += n;
		len -= n;
	}
}

static void pieces_rw(struct emu *e, const struct piece *p, unsigned n, uint8_t *buf, bool write)
{
	for (unsigned i = 0; i < n; buf += p[i].len, i++) {
		if (!p[i].hva)
			mmio_rw(e, p[i].gpa, buf, p[i].len, write);
		else if (write)
			memcpy(p[i].hva, buf, p[i].len);
		else
			memcpy(buf, p[i].hva, p[i].len);
	}
}

static enum emu_result mem_read(struct emu *e, int seg, uint64_t off, void *buf, uint64_t size)
{
	struct piece p[MAX_PIECES];
	enum emu_result rc;
	unsigned n;
	uint64_t la;

	rc = linear(e, seg, off, size, false, &la);
	if (!rc)
		rc = translate(e, la, size, 0, p, &n);
	if (!rc)
		pieces_rw(e, p, n, buf, false);
	return rc;
}

/* Fetch the next instruction byte; bytes come a page's worth at a time, at most 15. */
static enum emu_result fetch(struct emu *e, uint8_t *b)
{
	if (e->pos == sizeof(e->insn))
		return raise(e, EMU_VEC_GP, true, 0); /* SDM vol. 2 §2.3.11: 15 bytes at most */
	if (e->pos == e->fetched) {
		struct piece p[MAX_PIECES];
		enum emu_result rc;
		uint64_t la, len;
		unsigned n;

		rc = linear(e, SEG_CS, e->r.rip + e->fetched, 1, false, &la);
		if (rc)
			return rc;
		len = PAGE_SIZE - (la & (PAGE_SIZE - 1));
		if (len > sizeof(e->insn) - e->fetched)
			len = sizeof(e->insn) - e->fetched;
		/* A segment limit inside the page: fetch up to it, fault beyond it. */
		if (!e->mode64 && e->s->cs.limit - ((e->r.rip + e->fetched) & 0xffffffffULL) < len)
			len = e->s->cs.limit - ((e->r.rip + e->fetched) & 0xffffffffULL) + 1;
		rc = translate(e, la, len, GM_ACCESS_FETCH, p, &n);
		if (rc)
			return rc;
		if (!p[0].hva)
			return unhandled(e, "instruction fetch from MMIO");
		memcpy(e->insn + e->fetched, p[0].hva, p[0].len);
		e->fetched += p[0].len;
		memcpy(e->out->bytes, e->insn, e->fetched);
		e->out->nr_bytes = e->fetched;
	}
	*b = e->insn[e->pos++];
	return EMU_DONE;
}

static enum emu_result fetch_le(struct emu *e, unsigned size, uint64_t *v)
{
	*v = 0;
	for (unsigned i = 0; i < size; i++) {
		uint8_t b;
		enum emu_result rc = fetch(e, &b);

		if (rc)
			return rc;
		*v |= (uint64_t)b << (8 * i);
	}
	return EMU_DONE;
}

/* ModRM, SIB and displacement, 32- and 64-bit addressing (SDM vol. 2 §2.1.5, §2.2.1). */
static enum emu_result decode_modrm(struct emu *e)
{
	uint8_t modrm, sib;
	uint64_t disp = 0;
	enum emu_result rc;

	rc = fetch(e, &modrm);
	if (rc)
		return rc;
	e->mod = modrm >> 6;
	e->reg = ((modrm >> 3) & 7) | ((e->rex & 4) << 1);
	e->rm = (modrm & 7) | ((e->rex & 1) << 3);
	if (e->mod == 3)
		return EMU_DONE;
	if (e->adsize && !e->mode64)
		return unhandled(e, "16-bit addressing");
	e->ea = 0;
	e->ea_seg = SEG_DS;
	if ((modrm & 7) == 4) {
		unsigned index, base;

		rc = fetch(e, &sib);
		if (rc)
			return rc;
		index = ((sib >> 3) & 7) | ((e->rex & 2) << 2);
		base = (sib & 7) | ((e->rex & 1) << 3);
		if (index != 4)
			e->ea += *gpr(e, index) << (sib >> 6);
		if ((sib & 7) == 5 && e->mod == 0) {
			rc = fetch_le(e, 4, &disp);
			disp = (uint64_t)(int64_t)(int32_t)disp;
		} else {
			e->ea += *gpr(e, base);
			if (base == 4 || base == 5)
				e->ea_seg = SEG_SS;
		}
	} else if ((modrm & 7) == 5 && e->mod == 0) {
		rc = fetch_le(e, 4, &disp);
		disp = (uint64_t)(int64_t)(int32_t)disp;
		e->rip_relative = e->mode64;
	} else {
		e->ea = *gpr(e, e->rm);
		if (e->rm == 5)
			e->ea_seg = SEG_SS;
	}
	if (rc)
		return rc;
	if (e->mod == 1) {
		rc = fetch_le(e, 1, &disp);
		disp = (uint64_t)(int64_t)(int8_t)disp;
	} else if (e->mod == 2) {
		rc = fetch_le(e, 4, &disp);
		disp = (uint64_t)(int64_t)(int32_t)disp;
	}
	e->ea += disp;
	if (e->seg >= 0)
		e->ea_seg = e->seg;
	return rc;
}

/* The operand's effective address, once the whole instruction is decoded (RIP-relative). */
static uint64_t effective(struct emu *e)
{
	uint64_t ea = e->ea + (e->rip_relative ? e->r.rip + e->pos : 0);

	return (e->adsize == e->mode64) ? ea & 0xffffffffULL : ea;
}

static void set_flags(struct emu *e, uint64_t mask, uint64_t value)
{
	e->r.rflags = (e->r.rflags & ~mask) | (value & mask);
}

/* POPCNT (SDM vol. 2B): ZF = source is zero; CF, OF, SF, AF, PF cleared. */
static enum emu_result do_popcnt(struct emu *e)
{
	unsigned size = (e->rex & 8) ? 8 : e->opsize ? 2 : 4;
	uint64_t src = 0;
	__u64 *dst;
	enum emu_result rc;

	if (e->mod == 3) {
		src = *gpr(e, e->rm);
	} else {
		rc = mem_read(e, e->ea_seg, effective(e), &src, size);
		if (rc)
			return rc;
	}
	if (size < 8)
		src &= (1ULL << (8 * size)) - 1;
	dst = gpr(e, e->reg);
	if (size == 2)
		*dst = (*dst & ~0xffffULL) | (uint64_t)__builtin_popcountll(src);
	else
		*dst = (uint64_t)__builtin_popcountll(src); /* a 32-bit result zero-extends */
	set_flags(e, FL_CF | FL_PF | FL_AF | FL_ZF | FL_SF | FL_OF, src ? 0 : FL_ZF);
	return EMU_DONE;
}

static bool host_cmpxchg8b(void *p, uint64_t *old, uint64_t new)
{
	uint32_t lo = (uint32_t)*old, hi = (uint32_t)(*old >> 32);
	bool ok;

	__asm__ volatile("lock cmpxchg8b %1"
			 : "=@ccz"(ok), "+m"(*(volatile uint64_t *)p), "+a"(lo), "+d"(hi)
			 : "b"((uint32_t) new), "c"((uint32_t)(new >> 32))
			 : "memory");
	*old = (uint64_t)hi << 32 | lo;
	return ok;
}

static bool host_cmpxchg16b(void *p, uint64_t old[2], const uint64_t new[2])
{
	bool ok;

	__asm__ volatile("lock cmpxchg16b %1"
			 : "=@ccz"(ok), "+m"(*(volatile unsigned __int128 *)p), "+a"(old[0]),
			   "+d"(old[1])
			 : "b"(new[0]), "c"(new[1])
			 : "memory");
	return ok;
}

/*
 * CMPXCHG8B / CMPXCHG16B (SDM vol. 2A): compare EDX:EAX (RDX:RAX) with the operand; if equal,
 * ZF=1 and ECX:EBX (RCX:RBX) is stored, else ZF=0 and the operand is loaded into EDX:EAX. The
 * destination is written either way, so the access is checked as a write. On RAM within one
 * page it is one locked compare-exchange on the host; across pages or on MMIO it is a read,
 * a compare and a write.
 */
static enum emu_result do_cmpxchg(struct emu *e)
{
	unsigned size = (e->rex & 8) ? 16 : 8, half = size / 2;
	uint64_t old[2] = {*gpr(e, 0), *gpr(e, 2)}, new[2] = {*gpr(e, 3), *gpr(e, 1)};
	uint64_t cur[2] = {0, 0}, ea = effective(e), la;
	struct piece p[MAX_PIECES];
	enum emu_result rc;
	unsigned n;
	bool equal;

	if (e->mod == 3)
		return raise(e, EMU_VEC_UD, false, 0);
	if (size == 16 && (ea & 15))
		return raise(e, EMU_VEC_GP, true, 0);
	rc = linear(e, e->ea_seg, ea, size, true, &la);
	if (!rc)
		rc = translate(e, la, size, GM_ACCESS_WRITE, p, &n);
	if (rc)
		return rc;
	if (half == 4) {
		old[0] = (old[0] & 0xffffffffULL) | old[1] << 32;
		new[0] = (new[0] & 0xffffffffULL) | new[1] << 32;
	}
	if (n == 1 && p[0].hva && size == 8) {
		cur[0] = old[0];
		equal = host_cmpxchg8b(p[0].hva, &cur[0], new[0]);
	} else if (n == 1 && p[0].hva && !((uintptr_t)p[0].hva & 15)) {
		cur[0] = old[0];
		cur[1] = old[1];
		equal = host_cmpxchg16b(p[0].hva, cur, new);
	} else {
		pieces_rw(e, p, n, (uint8_t *)cur, false);
		equal = size == 8 ? cur[0] == old[0] : cur[0] == old[0] && cur[1] == old[1];
		pieces_rw(e, p, n, (uint8_t *)(equal ? new : cur), true);
	}
	if (equal) {
		set_flags(e, FL_ZF, FL_ZF);
		return EMU_DONE;
	}
	set_flags(e, FL_ZF, 0);
	if (half == 4) {
		*gpr(e, 0) = cur[0] & 0xffffffffULL;
		*gpr(e, 2) = cur[0] >> 32;
	} else {
		*gpr(e, 0) = cur[0];
		*gpr(e, 2) = cur[1];
	}
	return EMU_DONE;
}

/* FWAIT (SDM vol. 2A WAIT/FWAIT, vol. 1 §8.6): #NM if CR0.MP and CR0.TS; #MF if FSW.ES. */
static enum emu_result do_fwait(struct emu *e, struct emu_xstate *xs)
{
	uint64_t bv;
	uint16_t fsw;

	if ((e->s->cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS))
		return raise(e, EMU_VEC_NM, false, 0);
	if (!xs)
		return EMU_NEED_XSTATE;
	if (xs->size < XS_MIN)
		return unhandled(e, "no XSAVE state to read FSW from");
	memcpy(&bv, xs->buf + XS_HEADER, 8);
	memcpy(&fsw, xs->buf + XS_FSW, 2);
	if (!(bv & XFEATURE_X87) || !(fsw & 0x80))
		return EMU_DONE;
	if (!(e->s->cr0 & CR0_NE))
		return unhandled(e, "a pending x87 exception reported through FERR# (CR0.NE=0)");
	return raise(e, EMU_VEC_MF, false, 0);
}

/*
 * Outside 64-bit mode XRSTOR reaches only XMM0-7 and their upper halves (SDM vol. 1 §13.13):
 * how many bytes of a component it restores.
 */
static uint32_t comp_bytes(struct emu *e, unsigned i, uint32_t size)
{
	if (e->mode64)
		return size;
	switch (i) {
	case 1:
	case 2:
	case 6:
		return size / 2;
	case 7:
		return 0;
	default:
		return size;
	}
}

/*
 * XRSTOR, standard form (SDM vol. 1 §13.8): RFBM = XCR0 & EDX:EAX; each component in RFBM is
 * loaded from memory when XSTATE_BV has it and set to its initial state otherwise; MXCSR is
 * loaded whenever RFBM has SSE or AVX. Components outside RFBM are left alone. In the buffer a
 * component of 2 and up in its initial state is zeros with its XSTATE_BV bit clear; x87 and SSE
 * are written out with their bits set, which KVM_SET_XSAVE takes as they are.
 */
static enum emu_result do_xrstor(struct emu *e, struct emu_xstate *xs)
{
	static const uint8_t x87_init[XS_MXCSR] = {0x7f, 0x03}; /* FCW 0x37f, the rest 0 */
	uint8_t img[XS_MAX];
	uint64_t ea = effective(e), la, rfbm, bv, cur_bv, hdr[3];
	uint32_t mxcsr, mask;
	enum emu_result rc;

	if (e->mod == 3)
		return unhandled(e, "0f ae /5 with a register operand");
	if (!(e->s->cr4 & CR4_OSXSAVE))
		return raise(e, EMU_VEC_UD, false, 0);
	if (e->s->cr0 & CR0_TS)
		return raise(e, EMU_VEC_NM, false, 0);
	if (!xs)
		return EMU_NEED_XSTATE;
	memset(img, 0, sizeof(img));
	if (xs->size < XS_MIN || xs->size > XS_MAX)
		return unhandled(e, "an XSAVE state of a size the fallback does not take");
	rc = linear(e, e->ea_seg, ea, XS_MIN, false, &la);
	if (rc)
		return rc;
	if (la & 63)
		return raise(e, EMU_VEC_GP, true, 0);
	rc = mem_read(e, e->ea_seg, ea + XS_HEADER, hdr, sizeof(hdr));
	if (rc)
		return rc;
	bv = hdr[0];
	if (hdr[1] >> 63)
		return unhandled(e, "XRSTOR of the compacted format");
	/* Standard form: XSTATE_BV within XCR0, bytes 23:8 of the header zero. */
	if ((bv & ~xs->xcr0) || hdr[1] || hdr[2])
		return raise(e, EMU_VEC_GP, true, 0);
	rfbm = xs->xcr0 & ((e->r.rdx & 0xffffffffULL) << 32 | (e->r.rax & 0xffffffffULL));
	for (unsigned i = 2; i < EMU_XFEATURES; i++) {
		if (!(rfbm & (1ULL << i)))
			continue;
		if (!xs->comp_size[i] || xs->comp_offset[i] < XS_MIN ||
		    xs->comp_offset[i] + (uint64_t)xs->comp_size[i] > xs->size)
			return unhandled(e, "an XSAVE component beyond the state KVM gives");
	}
	/* Read all that is needed before changing anything: a #PF leaves the state as it was. */
	if (rfbm & (XFEATURE_X87 | XFEATURE_SSE | XFEATURE_YMM)) {
		rc = mem_read(e, e->ea_seg, ea, img, XS_HEADER);
		if (rc)
			return rc;
	}
	for (unsigned i = 2; i < EMU_XFEATURES; i++) {
		uint32_t len = comp_bytes(e, i, xs->comp_size[i]);

		if (!(rfbm & bv & (1ULL << i)) || !len)
			continue;
		rc = mem_read(e, e->ea_seg, ea + xs->comp_offset[i], img + xs->comp_offset[i], len);
		if (rc)
			return rc;
	}
	memcpy(&mask, xs->buf + XS_MXCSR_MASK, 4);
	if (!mask)
		mask = 0xffbf; /* SDM vol. 1 §11.6.6: a zero MXCSR_MASK means this default */
	memcpy(&mxcsr, img + XS_MXCSR, 4);
	if ((rfbm & (XFEATURE_SSE | XFEATURE_YMM)) && (mxcsr & ~mask))
		return raise(e, EMU_VEC_GP, true, 0);

	memcpy(&cur_bv, xs->buf + XS_HEADER, 8);
	if (rfbm & XFEATURE_X87) {
		const uint8_t *src = (bv & XFEATURE_X87) ? img : x87_init;

		memcpy(xs->buf, src, XS_MXCSR);
		if (!(e->rex & 8)) {
			/* The 32-bit form's FIP and FDP: offsets only, no selectors (§13.8). */
			memset(xs->buf + 12, 0, 4);
			memset(xs->buf + 20, 0, 4);
		}
		if (bv & XFEATURE_X87)
			memcpy(xs->buf + XS_ST0, img + XS_ST0, XS_XMM0 - XS_ST0);
		else
			memset(xs->buf + XS_ST0, 0, XS_XMM0 - XS_ST0);
		cur_bv |= XFEATURE_X87;
	}
	if (rfbm & XFEATURE_SSE) {
		uint32_t len = comp_bytes(e, 1, 256);

		if (bv & XFEATURE_SSE)
			memcpy(xs->buf + XS_XMM0, img + XS_XMM0, len);
		else
			memset(xs->buf + XS_XMM0, 0, len);
		cur_bv |= XFEATURE_SSE;
	}
	if (rfbm & (XFEATURE_SSE | XFEATURE_YMM)) {
		memcpy(xs->buf + XS_MXCSR, &mxcsr, 4);
		cur_bv |= xs->xcr0 & XFEATURE_SSE;
	}
	for (unsigned i = 2; i < EMU_XFEATURES; i++) {
		uint64_t bit = 1ULL << i;
		uint32_t len = comp_bytes(e, i, xs->comp_size[i]);

		if (!(rfbm & bit))
			continue;
		if (bv & bit) {
			memcpy(xs->buf + xs->comp_offset[i], img + xs->comp_offset[i], len);
			cur_bv |= bit;
		} else {
			memset(xs->buf + xs->comp_offset[i], 0, len);
			/* Outside 64-bit mode the upper registers keep their values. */
			if (len == xs->comp_size[i])
				cur_bv &= ~bit;
		}
	}
	memcpy(xs->buf + XS_HEADER, &cur_bv, 8);
	xs->changed = true;
	return EMU_DONE;
}

/* Legacy prefixes and REX (SDM vol. 2 §2.1.1, §2.2.1). */
static enum emu_result decode_prefixes(struct emu *e, uint8_t *op)
{
	for (;;) {
		enum emu_result rc = fetch(e, op);

		if (rc)
			return rc;
		switch (*op) {
		case 0xf0:
			e->lock = true;
			break;
		case 0xf2:
		case 0xf3:
			e->rep = *op;
			break;
		case 0x66:
			e->opsize = true;
			break;
		case 0x67:
			e->adsize = true;
			break;
		case 0x26:
		case 0x2e:
		case 0x36:
		case 0x3e:
			/* In 64-bit mode ES, CS, SS and DS overrides are ignored. */
			if (!e->mode64)
				e->seg = (*op >> 3) & 3;
			break;
		case 0x64:
			e->seg = SEG_FS;
			break;
		case 0x65:
			e->seg = SEG_GS;
			break;
		default:
			if (e->mode64 && (*op & 0xf0) == 0x40) {
				/* REX counts only right before the opcode. */
				e->rex = *op;
				rc = fetch(e, op);
				if (rc)
					return rc;
				if ((*op & 0xf0) == 0x40 || *op == 0xf0 || *op == 0xf2 ||
				    *op == 0xf3 || *op == 0x66 || *op == 0x67 || *op == 0x64 ||
				    *op == 0x65 || *op == 0x26 || *op == 0x2e || *op == 0x36 ||
				    *op == 0x3e) {
					e->rex = 0;
					e->pos--;
					break;
				}
			}
			return EMU_DONE;
		}
	}
}

static enum emu_result decode_and_run(struct emu *e, struct emu_xstate *xs)
{
	struct emu_outcome *out = e->out;
	enum emu_result rc;
	uint8_t op, op2;

	rc = decode_prefixes(e, &op);
	if (rc)
		return rc;
	switch (op) {
	case 0xcc:
		out->insn = EMU_INT3;
		break;
	case 0x9b:
		out->insn = EMU_FWAIT;
		break;
	case 0x0f:
		rc = fetch(e, &op2);
		if (rc)
			return rc;
		if (op2 == 0x01) {
			uint8_t modrm;

			rc = fetch(e, &modrm);
			if (rc)
				return rc;
			if (modrm == 0xca)
				out->insn = EMU_CLAC;
			else if (modrm == 0xcb)
				out->insn = EMU_STAC;
			else
				return unhandled(e, "an instruction the fallback does not know");
			break;
		}
		if (op2 == 0xb8 && e->rep == 0xf3) {
			out->insn = EMU_POPCNT;
		} else if (op2 == 0xc7 || (op2 == 0xae && !e->rep && !e->opsize)) {
			rc = decode_modrm(e);
			if (rc)
				return rc;
			if (op2 == 0xc7 && (e->reg & 7) == 1)
				out->insn = (e->rex & 8) ? EMU_CMPXCHG16B : EMU_CMPXCHG8B;
			else if (op2 == 0xae && (e->reg & 7) == 5 && e->mod != 3)
				out->insn = EMU_XRSTOR;
			else
				return unhandled(e, "an instruction the fallback does not know");
			break;
		} else {
			return unhandled(e, "an instruction the fallback does not know");
		}
		rc = decode_modrm(e);
		if (rc)
			return rc;
		break;
	default:
		return unhandled(e, "an instruction the fallback does not know");
	}
	out->decoded = true;
	/* LOCK is for read-modify-write forms with a memory operand only (SDM vol. 2A LOCK). */
	if (e->lock && out->insn != EMU_CMPXCHG8B && out->insn != EMU_CMPXCHG16B)
		return raise(e, EMU_VEC_UD, false, 0);

	switch (out->insn) {
	case EMU_INT3:
		/* A trap: the exception's return address is the next instruction. */
		e->r.rip += e->pos;
		return raise(e, EMU_VEC_BP, false, 0);
	case EMU_CLAC:
	case EMU_STAC:
		if (e->cpl > 0)
			return raise(e, EMU_VEC_UD, false, 0);
		set_flags(e, FL_AC, out->insn == EMU_STAC ? FL_AC : 0);
		break;
	case EMU_FWAIT:
		rc = do_fwait(e, xs);
		break;
	case EMU_POPCNT:
		rc = do_popcnt(e);
		break;
	case EMU_CMPXCHG8B:
	case EMU_CMPXCHG16B:
		rc = do_cmpxchg(e);
		break;
	case EMU_XRSTOR:
		rc = do_xrstor(e, xs);
		break;
	default:
		return unhandled(e, "an instruction the fallback does not know");
	}
	if (rc)
		return rc;
	e->r.rip += e->pos;
	if (!e->mode64)
		e->r.rip &= 0xffffffffULL;
	return EMU_DONE;
}

enum emu_result emu_run(const struct guest_mem *m, const struct emu_mmio *mmio,
			struct kvm_regs *regs, const struct kvm_sregs *sregs, struct emu_xstate *xs,
			struct emu_outcome *out)
{
	struct emu e = {
	    .m = m,
	    .mmio = mmio,
	    .r = *regs,
	    .s = sregs,
	    .out = out,
	    .pg = {sregs->cr0, sregs->cr3, sregs->cr4, sregs->efer},
	    .cpl = sregs->ss.dpl & 3,
	    .seg = -1,
	};
	enum emu_result rc;

	memset(out, 0, sizeof(*out));
	if (!(sregs->cr0 & CR0_PE) || (regs->rflags & FL_VM))
		return unhandled(&e, "real or virtual-8086 mode");
	e.mode64 = (sregs->efer & EFER_LMA) && sregs->cs.l;
	if (!e.mode64 && !sregs->cs.db)
		return unhandled(&e, "16-bit code");
	rc = decode_and_run(&e, xs);
	if (rc == EMU_DONE || (rc == EMU_EXCEPTION && out->vector == EMU_VEC_BP))
		*regs = e.r;
	return rc;
}

const char *emu_insn_name(enum emu_insn insn)
{
	static const char *const names[EMU_NR_INSNS] = {
	    [EMU_INT3] = "int3",
	    [EMU_CLAC] = "clac",
	    [EMU_STAC] = "stac",
	    [EMU_FWAIT] = "fwait",
	    [EMU_POPCNT] = "popcnt",
	    [EMU_CMPXCHG8B] = "cmpxchg8b",
	    [EMU_CMPXCHG16B] = "cmpxchg16b",
	    [EMU_XRSTOR] = "xrstor",
	};

	return (unsigned)insn < EMU_NR_INSNS ? names[insn] : "unknown";
}
