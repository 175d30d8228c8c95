// SPDX-License-Identifier: MIT
#include "vmm/vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/snapshot_file.h"
#include "vmm/cpuid.h"
#include "vmm/layout.h"
#include "vmm/sandbox.h"
#include "vmm/vm.h"

/* The signal that kicks a vCPU thread out of KVM_RUN; its handler does nothing. */
#define SIG_VCPU_KICK SIGUSR1

/* MSR numbers (Intel SDM vol. 4). */
#define MSR_IA32_SYSENTER_CS  0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE  0x1a0
#define MSR_MTRR_DEF_TYPE     0x2ff
#define MSR_STAR	      0xc0000081
#define MSR_LSTAR	      0xc0000082
#define MSR_CSTAR	      0xc0000083
#define MSR_SYSCALL_MASK      0xc0000084
#define MSR_KERNEL_GS_BASE    0xc0000102
#define MSR_IA32_TSC	      0x10

/* APIC register offsets and LVT delivery modes (SDM vol. 3A §10.5.1). */
#define APIC_LVT0	 0x350
#define APIC_LVT1	 0x360
#define APIC_MODE_NMI	 0x4
#define APIC_MODE_EXTINT 0x7

static int set_msrs(struct vcpu *v)
{
	static const struct {
		uint32_t index;
		uint64_t data;
	} init[] = {
	    {MSR_IA32_SYSENTER_CS, 0},
	    {MSR_IA32_SYSENTER_ESP, 0},
	    {MSR_IA32_SYSENTER_EIP, 0},
	    {MSR_STAR, 0},
	    {MSR_CSTAR, 0},
	    {MSR_KERNEL_GS_BASE, 0},
	    {MSR_SYSCALL_MASK, 0},
	    {MSR_LSTAR, 0},
	    {MSR_IA32_TSC, 0},
	    /* Fast strings, as firmware leaves it. */
	    {MSR_IA32_MISC_ENABLE, 1},
	    /* MTRRs enabled, default type write-back: no firmware will program them. */
	    {MSR_MTRR_DEF_TYPE, (1u << 11) | 6},
	};
	const unsigned n = sizeof(init) / sizeof(init[0]);
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + n * sizeof(msrs->entries[0]));
	int ret;

	if (!msrs)
		return -ENOMEM;
	msrs->nmsrs = n;
	for (unsigned i = 0; i < n; i++) {
		msrs->entries[i].index = init[i].index;
		msrs->entries[i].data = init[i].data;
	}
	ret = ioctl(v->fd, KVM_SET_MSRS, msrs);
	free(msrs);
	if (ret < 0)
		return -errno;
	/* KVM_SET_MSRS returns how many it set; a short count names the first refused one. */
	if ((unsigned)ret != n) {
		log_error("vcpu%u: KVM refused MSR %#x", v->id, init[ret].index);
		return -EINVAL;
	}
	return 0;
}

/* LINT0 takes the 8259's ExtINT, LINT1 NMI, as firmware sets them (MP spec §5.1). */
static int set_lapic(struct vcpu *v)
{
	struct kvm_lapic_state lapic;
	uint32_t lvt;

	if (ioctl(v->fd, KVM_GET_LAPIC, &lapic) < 0)
		return -errno;
	memcpy(&lvt, &lapic.regs[APIC_LVT0], 4);
	lvt = (lvt & ~0x700u) | (APIC_MODE_EXTINT << 8);
	memcpy(&lapic.regs[APIC_LVT0], &lvt, 4);
	memcpy(&lvt, &lapic.regs[APIC_LVT1], 4);
	lvt = (lvt & ~0x700u) | (APIC_MODE_NMI << 8);
	memcpy(&lapic.regs[APIC_LVT1], &lvt, 4);
	if (ioctl(v->fd, KVM_SET_LAPIC, &lapic) < 0)
		return -errno;
	return 0;
}

static int set_fpu(struct vcpu *v)
{
	struct kvm_fpu fpu = {
	    .fcw = 0x37f,    /* x87 reset state (FNINIT) */
	    .mxcsr = 0x1f80, /* SSE reset state */
	};

	return ioctl(v->fd, KVM_SET_FPU, &fpu) < 0 ? -errno : 0;
}

/*
 * Where the guest's CPUID leaf 0xD puts each XSAVE component (SDM vol. 1 §13.2: sub-leaf n >= 2
 * gives component n's size in EAX, its offset in EBX), for the fallback's XRSTOR.
 */
static int read_xsave_layout(struct vcpu *v)
{
	const unsigned max = 256;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + max * sizeof(c->entries[0]));

	if (!c)
		return -ENOMEM;
	c->nent = max;
	if (ioctl(v->fd, KVM_GET_CPUID2, c) < 0) {
		int err = -errno;

		free(c);
		return err;
	}
	for (unsigned i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == 0xd && e->index >= 2 && e->index < EMU_XFEATURES) {
			v->xsave_layout.size[e->index] = e->eax;
			v->xsave_layout.offset[e->index] = e->ebx;
		}
	}
	free(c);
	return 0;
}

int vcpu_create(struct vm *vm, unsigned id, struct vcpu **out)
{
	struct vcpu *v = calloc(1, sizeof(*v));
	int err;

	if (!v)
		return -ENOMEM;
	v->vm = vm;
	v->id = id;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (v->fd < 0) {
		err = -errno;
		log_error("vcpu%u: KVM_CREATE_VCPU: %s", id, strerror(errno));
		free(v);
		return err;
	}
	v->run = mmap(NULL, vm->vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		err = -errno;
		goto err_close;
	}
	err = cpuid_setup(vm->kvm_fd, v->fd, id, vm->nr_vcpus);
	if (!err)
		err = read_xsave_layout(v);
	if (!err)
		err = set_msrs(v);
	if (!err)
		err = set_lapic(v);
	if (!err)
		err = set_fpu(v);
	if (err) {
		log_error("vcpu%u: set-up failed: %s", id, strerror(-err));
		munmap(v->run, vm->vcpu_mmap_size);
		goto err_close;
	}
	*out = v;
	return 0;

err_close:
	close(v->fd);
	free(v);
	return err;
}

void vcpu_destroy(struct vcpu *v)
{
	if (!v)
		return;
	munmap(v->run, v->vm->vcpu_mmap_size);
	close(v->fd);
	free(v);
}

static void set_segment(struct kvm_segment *s, uint16_t selector, uint8_t type, bool code64,
			bool db)
{
	*s = (struct kvm_segment){
	    .base = 0,
	    .limit = 0xffffffff,
	    .selector = selector,
	    .type = type,
	    .present = 1,
	    .dpl = 0,
	    .db = db,
	    .s = 1,
	    .l = code64,
	    .g = 1,
	};
}

/*
 * PVH (xen/include/public/arch-x86/hvm/start_info.h, "Boot ABI"): 32-bit protected mode,
 * paging off, flat 4 GiB code (read/execute) and data (read/write) segments, a 32-bit TSS,
 * EBX = physical address of the start info, all other registers undefined but zero here.
 */
int vcpu_set_boot_pvh(struct vcpu *v, uint64_t entry, uint64_t start_info)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs = {
	    .rip = entry,
	    .rbx = start_info,
	    .rflags = 0x2,
	};

	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	set_segment(&sregs.cs, 0x10, 0xb, false, true); /* execute/read, accessed */
	set_segment(&sregs.ds, 0x18, 0x3, false, true); /* read/write, accessed */
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.tr = (struct kvm_segment){
	    .limit = 0x67, .selector = 0x20, .type = 0xb, .present = 1, .s = 0};
	sregs.cr0 = 0x11; /* PE, ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}

/*
 * Linux boot protocol, "64-bit Boot Protocol": long mode with paging on, the loaded kernel,
 * zero page and command line identity-mapped, a GDT with __BOOT_CS (0x10) flat 64-bit code and
 * __BOOT_DS (0x18) flat data, interrupts off, RSI = zero page.
 */
int vcpu_set_boot_linux64(struct vcpu *v, uint64_t entry, uint64_t zero_page, uint64_t pml4,
			  uint64_t gdt)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs = {
	    .rip = entry,
	    .rsi = zero_page,
	    .rflags = 0x2,
	};

	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	set_segment(&sregs.cs, 0x10, 0xb, true, false);
	set_segment(&sregs.ds, 0x18, 0x3, false, true);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.gdt.base = gdt;
	sregs.gdt.limit = 4 * 8 - 1;
	sregs.cr3 = pml4;
	sregs.cr4 = 0x20;	/* PAE */
	sregs.cr0 = 0x80000011; /* PG, ET, PE */
	sregs.efer = 0x500;	/* LME, LMA */
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}

/* An exit the guest cannot survive: say where it happened and what the bytes there were. */
static void report_crash(struct vcpu *v, const char *what)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct gm_translation t;
	char bytes[3 * 16 + 1] = "";

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) {
		log_error("vcpu%u: %s (registers unreadable)", v->id, what);
		return;
	}
	if (regs.rip == 0xfff0 && sregs.cs.selector == 0xf000 && !(sregs.cr0 & 1)) {
		/* KVM on AMD re-INITs a vCPU on a shutdown intercept (the VMCB is undefined
		 * after one): where the guest was is lost. */
		log_error("vcpu%u: %s (KVM reset the vCPU, so its registers at the fault are lost)",
			  v->id, what);
		return;
	}
	struct gm_paging p = {sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer};
	uint64_t linear = regs.rip + ((sregs.efer & 0x400) ? 0 : sregs.cs.base);

	if (gm_translate(&v->vm->mem, &p, linear, GM_ACCESS_FETCH, &t) == 0 &&
	    t.result == GM_WALK_OK) {
		for (unsigned i = 0; i < 16; i++) {
			uint8_t b;

			/* Bytes past the page may live elsewhere: read them through the walk too. */
			struct gm_translation ti;

			if (gm_translate(&v->vm->mem, &p, linear + i, GM_ACCESS_FETCH, &ti) ||
			    ti.result != GM_WALK_OK)
				break;
			b = *(uint8_t *)ti.hva;
			snprintf(bytes + 3 * i, sizeof(bytes) - 3 * i, " %02x", b);
		}
	}
	log_error("vcpu%u: %s at rip %#llx (cs %#x, cr0 %#llx, efer %#llx); instruction bytes:%s",
		  v->id, what, (unsigned long long)regs.rip, sregs.cs.selector,
		  (unsigned long long)sregs.cr0, (unsigned long long)sregs.efer,
		  bytes[0] ? bytes : " (unreadable)");
}

static void handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool write = run->io.direction == KVM_EXIT_IO_OUT;

	/* String I/O arrives as `count` accesses in a row in the shared page. */
	for (uint32_t i = 0; i < run->io.count; i++) {
		io_bus_access(&v->vm->pio, run->io.port, data, run->io.size, write);
		data += run->io.size;
	}
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	if (run->mmio.len == 0 || run->mmio.len > 8) {
		memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
		return;
	}
	io_bus_access(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
		      run->mmio.is_write);
}

static void handle_system_event(struct vcpu *v)
{
	switch (v->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_request_stop(v->vm, VM_EXIT_POWEROFF);
		break;
	case KVM_SYSTEM_EVENT_RESET:
		vm_request_stop(v->vm, VM_EXIT_RESET);
		break;
	default:
		log_error("vcpu%u: system event %u", v->id, v->run->system_event.type);
		vm_request_stop(v->vm, VM_EXIT_CRASH);
		break;
	}
}

static void emu_mmio_read(void *opaque, uint64_t gpa, void *data, unsigned size)
{
	struct vcpu *v = opaque;

	io_bus_access(&v->vm->mmio, gpa, data, size, false);
}

static void emu_mmio_write(void *opaque, uint64_t gpa, const void *data, unsigned size)
{
	struct vcpu *v = opaque;
	uint8_t buf[8];

	memcpy(buf, data, size);
	io_bus_access(&v->vm->mmio, gpa, buf, size, true);
}

/* The in-kernel LAPIC and IOAPIC (layout.h): their registers are not on the MMIO bus. */
static bool emu_mmio_in_kernel(void *opaque, uint64_t gpa, uint64_t len)
{
	static const uint64_t base[] = {LAYOUT_LAPIC_BASE, LAYOUT_IOAPIC_BASE};

	for (unsigned i = 0; i < 2; i++) {
		if (gpa < base[i] + 4096 && gpa + len > base[i])
			return true;
	}
	return false;
}

/*
 * Inject what the instruction raised. Without KVM_CAP_EXCEPTION_PAYLOAD an exception set
 * through KVM_SET_VCPU_EVENTS is one being injected (api.rst, KVM_GET_VCPU_EVENTS), and a #PF's
 * CR2 must already be in place. #BP is a software exception: KVM advances RIP past the int3 as
 * it injects it (svm_update_soft_interrupt_rip() decodes it again), so RIP stays on the int3.
 */
static int inject_exception(struct vcpu *v, struct kvm_sregs *sregs, const struct emu_outcome *out)
{
	struct kvm_vcpu_events ev;

	if (out->vector == EMU_VEC_PF) {
		sregs->cr2 = out->cr2;
		if (ioctl(v->fd, KVM_SET_SREGS, sregs) < 0)
			return -errno;
	}
	if (ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
		return -errno;
	ev.exception.injected = 1;
	ev.exception.nr = out->vector;
	ev.exception.has_error_code = out->has_error_code;
	ev.exception.error_code = out->error_code;
	if (ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
		return -errno;
	return 0;
}

/* The XSAVE state emu_run() asked for: KVM_GET_XSAVE's region, XCR0, the CPUID layout. */
static int read_xstate(struct vcpu *v, struct kvm_xsave *xsave, struct emu_xstate *xs)
{
	struct kvm_xcrs xcrs;

	if (ioctl(v->fd, KVM_GET_XSAVE, xsave) < 0 || ioctl(v->fd, KVM_GET_XCRS, &xcrs) < 0)
		return -errno;
	*xs = (struct emu_xstate){.buf = (uint8_t *)xsave->region, .size = sizeof(xsave->region)};
	for (uint32_t i = 0; i < xcrs.nr_xcrs && i < KVM_MAX_XCRS; i++) {
		if (xcrs.xcrs[i].xcr == 0)
			xs->xcr0 = xcrs.xcrs[i].value;
	}
	/* Without XSAVE in the guest there are no XCRs: x87 (and SSE) state only. */
	if (!xcrs.nr_xcrs)
		xs->xcr0 = 0x3;
	memcpy(xs->comp_offset, v->xsave_layout.offset, sizeof(xs->comp_offset));
	memcpy(xs->comp_size, v->xsave_layout.size, sizeof(xs->comp_size));
	return 0;
}

/*
 * KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION: KVM's emulator does not know the
 * instruction at RIP (at CPL 0; at CPL 3 KVM injects #UD itself) and has not executed it.
 * Carry it out here, or inject what it raises, and resume; false when the VM must stop.
 */
static bool emulate_instruction(struct vcpu *v)
{
	struct emu_mmio mmio = {emu_mmio_read, emu_mmio_write, emu_mmio_in_kernel, v};
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xsave xsave;
	struct emu_xstate xs = {0};
	struct emu_outcome out;
	enum emu_result rc;
	char bytes[3 * 15 + 1] = "";
	int err = 0;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) {
		log_error("vcpu%u: KVM could not emulate an instruction (registers unreadable: %s)",
			  v->id, strerror(errno));
		return false;
	}
	rc = emu_run(&v->vm->mem, &mmio, &regs, &sregs, NULL, &out);
	if (rc == EMU_NEED_XSTATE) {
		err = read_xstate(v, &xsave, &xs);
		if (!err)
			rc = emu_run(&v->vm->mem, &mmio, &regs, &sregs, &xs, &out);
	}
	if (!err && rc == EMU_DONE) {
		if (xs.changed && ioctl(v->fd, KVM_SET_XSAVE, &xsave) < 0)
			err = -errno;
		else if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
			err = -errno;
	} else if (!err && rc == EMU_EXCEPTION) {
		err = inject_exception(v, &sregs, &out);
	}
	if (err) {
		log_error("vcpu%u: emulating %s at rip %#llx: %s", v->id,
			  out.decoded ? emu_insn_name(out.insn) : "an instruction",
			  (unsigned long long)regs.rip, strerror(-err));
		return false;
	}
	if (rc == EMU_DONE || rc == EMU_EXCEPTION) {
		if (out.decoded)
			__atomic_store_n(&v->emulated[out.insn], v->emulated[out.insn] + 1,
					 __ATOMIC_RELAXED);
		return true;
	}
	for (unsigned i = 0; i < out.nr_bytes; i++)
		snprintf(bytes + 3 * i, sizeof(bytes) - 3 * i, " %02x", out.bytes[i]);
	log_error("vcpu%u: KVM could not emulate the instruction at rip %#llx (cs %#x, cpl %u, "
		  "cr0 %#llx, efer %#llx), nor can yun-vmm: %s; instruction bytes:%s",
		  v->id, (unsigned long long)regs.rip, sregs.cs.selector, sregs.ss.dpl,
		  (unsigned long long)sregs.cr0, (unsigned long long)sregs.efer,
		  out.why ? out.why : "?", bytes[0] ? bytes : " (unreadable)");
	return false;
}

/* One exit KVM_RUN returned (0): count it and serve it. */
static void handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;

	if (run->exit_reason < 64)
		v->exits[run->exit_reason]++;
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(v);
		break;
	case KVM_EXIT_MMIO:
		handle_mmio(v);
		break;
	case KVM_EXIT_INTR:
		break;
	case KVM_EXIT_HLT:
		/* Only without an in-kernel LAPIC; a halted vCPU with interrupts off. */
		log_error("vcpu%u: halted for good", v->id);
		vm_request_stop(v->vm, VM_EXIT_CRASH);
		break;
	case KVM_EXIT_SHUTDOWN:
		/* A triple fault: a PC resets, but it means the guest crashed. */
		report_crash(v, "triple fault");
		vm_request_stop(v->vm, VM_EXIT_CRASH);
		break;
	case KVM_EXIT_SYSTEM_EVENT:
		handle_system_event(v);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) {
			if (!emulate_instruction(v))
				vm_request_stop(v->vm, VM_EXIT_CRASH);
			break;
		}
		report_crash(v, "KVM internal error");
		vm_request_stop(v->vm, VM_EXIT_CRASH);
		break;
	case KVM_EXIT_FAIL_ENTRY:
		log_error("vcpu%u: VM entry failed, hardware reason %#llx", v->id,
			  (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		vm_request_stop(v->vm, VM_EXIT_ERROR);
		break;
	default:
		log_error("vcpu%u: unexpected exit reason %u", v->id, run->exit_reason);
		vm_request_stop(v->vm, VM_EXIT_ERROR);
		break;
	}
}

/*
 * KVM finishes the instruction of an I/O or MMIO exit (an IN's register, rip past it) only
 * when KVM_RUN is entered again (api.rst, KVM_EXIT_IO: "complete (and guest state is
 * consistent) only after userspace has re-entered the kernel with KVM_RUN"). Before parking,
 * enter it with immediate_exit set: the instruction completes, the guest does not run, and a
 * paused vCPU's state, which the API shows and a snapshot saves, is whole: a restored guest
 * does not execute that IN again.
 */
static void finish_exit(struct vcpu *v)
{
	v->run->immediate_exit = 1;
	/* A string instruction may need more exits to finish; each is served as usual. */
	while (ioctl(v->fd, KVM_RUN, 0) == 0 && vm_exit_reason(v->vm) == VM_RUNNING) {
		handle_exit(v);
		v->run->immediate_exit = 1;
	}
	v->run->immediate_exit = 0;
}

/* What the fallback did for this vCPU, once, as it stops: "vcpu0: emulated popcnt 1, ...". */
static void log_emulated(struct vcpu *v)
{
	char line[256] = "";
	size_t len = 0;

	for (unsigned i = 0; i < EMU_NR_INSNS && len < sizeof(line); i++) {
		if (v->emulated[i])
			len += (size_t)snprintf(line + len, sizeof(line) - len, "%s %s %llu",
						len ? "," : "", emu_insn_name(i),
						(unsigned long long)v->emulated[i]);
	}
	if (len)
		log_info("vcpu%u: instructions KVM could not emulate, emulated by yun-vmm:%s",
			 v->id, line);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	char name[16];
	sigset_t set;

	snprintf(name, sizeof(name), "vcpu %u", v->id);
	prctl(PR_SET_NAME, name);
	/* The kick signal is blocked everywhere but here, inside KVM_RUN's window. */
	sigemptyset(&set);
	sigaddset(&set, SIG_VCPU_KICK);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	if (sandbox_enter(SANDBOX_VCPU)) {
		vm_request_stop(v->vm, VM_EXIT_ERROR);
		return NULL;
	}
	if (v->id == 0 && v->vm->build_started_ns) {
		double ms = (double)(monotonic_ns() - v->vm->build_started_ns) / 1e6;

		if (v->vm->restored)
			log_info("restored: vCPU 0 runs %.2f ms after the restore began", ms);
		else
			log_debug("booting: vCPU 0 runs %.2f ms after the VM's build began", ms);
	}

	while (vm_exit_reason(v->vm) == VM_RUNNING) {
		if (vm_pause_requested(v->vm)) {
			finish_exit(v);
			vm_park_vcpu(v->vm);
		}
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				v->run->immediate_exit = 0;
				continue;
			}
			log_error("vcpu%u: KVM_RUN: %s", v->id, strerror(errno));
			vm_request_stop(v->vm, VM_EXIT_ERROR);
			break;
		}
		handle_exit(v);
	}
	log_emulated(v);
	return NULL;
}

static void kick_handler(int sig)
{
	(void)sig;
}

static void install_kick_handler(void)
{
	struct sigaction sa = {.sa_handler = kick_handler};

	sigemptyset(&sa.sa_mask);
	sigaction(SIG_VCPU_KICK, &sa, NULL);
}

int vcpu_start(struct vcpu *v)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	sigset_t set, old;
	int err;

	pthread_once(&once, install_kick_handler);
	/* Threads inherit the mask: block the kick signal until the vCPU thread unblocks it. */
	sigemptyset(&set);
	sigaddset(&set, SIG_VCPU_KICK);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	err = -pthread_create(&v->thread, NULL, vcpu_thread, v);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		return err;
	v->started = true;
	return 0;
}

void vcpu_kick(struct vcpu *v)
{
	if (!v->started)
		return;
	/* immediate_exit covers a kick that lands before the thread enters KVM_RUN. */
	v->run->immediate_exit = 1;
	pthread_kill(v->thread, SIG_VCPU_KICK);
}

void vcpu_join(struct vcpu *v)
{
	if (v->started) {
		pthread_join(v->thread, NULL);
		v->started = false;
	}
}

/*
 * Snapshots: everything KVM keeps of a vCPU. The MSRs are those KVM lists as worth saving
 * (KVM_GET_MSR_INDEX_LIST, which includes the ones it emulates: kvmclock, the TSC deadline,
 * MTRRs, ...); any it will not read back on this host is left out.
 */
#define VCPU_MAX_MSRS 512

struct vcpu_state {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint32_t xsave[1024]; /* struct kvm_xsave, whose flexible tail KVM_GET_XSAVE leaves out */
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_mp_state mp_state;
	struct kvm_vcpu_events events;
	struct kvm_debugregs debugregs;
	uint32_t nmsrs, pad;
	struct kvm_msr_entry msrs[VCPU_MAX_MSRS];
};

struct state_part {
	const char *name;
	unsigned long request;
	void *data;
};

/*
 * The parts of the state one ioctl each gets or sets, in the order they are set (Firecracker's):
 * the LAPIC after the special registers, which hold its base; the MSRs (apart) after the LAPIC,
 * whose TSC deadline is one; pending events last, also apart.
 */
static const struct state_part *state_parts(struct vcpu_state *st, bool set)
{
	static __thread struct state_part parts[8];
	unsigned i = 0;

#define PART(get, put, field) \
	parts[i++] = (struct state_part){set ? #put : #get, set ? put : get, &st->field}
	PART(KVM_GET_MP_STATE, KVM_SET_MP_STATE, mp_state);
	PART(KVM_GET_REGS, KVM_SET_REGS, regs);
	PART(KVM_GET_SREGS, KVM_SET_SREGS, sregs);
	PART(KVM_GET_XSAVE, KVM_SET_XSAVE, xsave[0]);
	PART(KVM_GET_XCRS, KVM_SET_XCRS, xcrs);
	PART(KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, debugregs);
	PART(KVM_GET_LAPIC, KVM_SET_LAPIC, lapic);
#undef PART
	parts[i] = (struct state_part){NULL, 0, NULL};
	return parts;
}

_Static_assert(sizeof(((struct vcpu_state *)0)->xsave) == sizeof(struct kvm_xsave),
	       "KVM_GET_XSAVE fills struct kvm_xsave");

/* The MSRs KVM says a VMM should save, read into st. */
static int save_msrs(struct vcpu *v, struct vcpu_state *st)
{
	struct kvm_msr_list *list = calloc(1, sizeof(*list) + VCPU_MAX_MSRS * sizeof(uint32_t));
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + VCPU_MAX_MSRS * sizeof(msrs->entries[0]));
	uint32_t done = 0;
	int err = 0;

	if (!list || !msrs) {
		err = -ENOMEM;
		goto out;
	}
	list->nmsrs = VCPU_MAX_MSRS;
	if (ioctl(v->vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		err = -errno;
		log_error("KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
		goto out;
	}
	/* KVM_GET_MSRS stops at the first MSR it cannot read: skip that one, go on after it. */
	for (uint32_t i = 0; i < list->nmsrs;) {
		int n;

		msrs->nmsrs = list->nmsrs - i;
		for (uint32_t j = 0; j < msrs->nmsrs; j++)
			msrs->entries[j] = (struct kvm_msr_entry){.index = list->indices[i + j]};
		n = ioctl(v->fd, KVM_GET_MSRS, msrs);
		if (n < 0) {
			err = -errno;
			log_error("vcpu%u: KVM_GET_MSRS: %s", v->id, strerror(errno));
			goto out;
		}
		memcpy(&st->msrs[done], msrs->entries, (size_t)n * sizeof(msrs->entries[0]));
		done += (uint32_t)n;
		i += (uint32_t)n + 1;
	}
	st->nmsrs = done;
out:
	free(list);
	free(msrs);
	return err;
}

int vcpu_save(struct vcpu *v, struct snap_writer *w)
{
	struct vcpu_state *st = calloc(1, sizeof(*st));
	char name[SNAPSHOT_NAME_MAX];
	int err = 0;

	if (!st)
		return -ENOMEM;
	for (const struct state_part *part = state_parts(st, false); !err && part->name; part++) {
		if (ioctl(v->fd, part->request, part->data) < 0) {
			err = -errno;
			log_error("vcpu%u: %s: %s", v->id, part->name, strerror(errno));
		}
	}
	if (!err && ioctl(v->fd, KVM_GET_VCPU_EVENTS, &st->events) < 0) {
		err = -errno;
		log_error("vcpu%u: KVM_GET_VCPU_EVENTS: %s", v->id, strerror(errno));
	}
	if (!err)
		err = save_msrs(v, st);
	if (!err) {
		snprintf(name, sizeof(name), "vcpu%u", v->id);
		snap_put(w, name, st, sizeof(*st));
	}
	free(st);
	return err;
}

/* Set the saved MSRs; one KVM will not take on this host is named and left out. */
static int load_msrs(struct vcpu *v, const struct vcpu_state *st)
{
	struct kvm_msrs *msrs;
	uint32_t n = st->nmsrs;

	if (n > VCPU_MAX_MSRS)
		return -EINVAL;
	msrs = calloc(1, sizeof(*msrs) + n * sizeof(msrs->entries[0]));
	if (!msrs)
		return -ENOMEM;
	for (uint32_t i = 0; i < n;) {
		int set;

		msrs->nmsrs = n - i;
		memcpy(msrs->entries, &st->msrs[i], msrs->nmsrs * sizeof(msrs->entries[0]));
		set = ioctl(v->fd, KVM_SET_MSRS, msrs);
		if (set < 0) {
			int err = -errno;

			log_error("vcpu%u: KVM_SET_MSRS: %s", v->id, strerror(errno));
			free(msrs);
			return err;
		}
		if ((uint32_t)set < msrs->nmsrs)
			log_warn("vcpu%u: KVM refused MSR %#x = %#llx from the snapshot", v->id,
				 msrs->entries[set].index,
				 (unsigned long long)msrs->entries[set].data);
		i += (uint32_t)set + 1;
	}
	free(msrs);
	return 0;
}

int vcpu_load(struct vcpu *v, const struct snap_reader *r)
{
	struct vcpu_state *st = malloc(sizeof(*st));
	char name[SNAPSHOT_NAME_MAX];
	int err;

	if (!st)
		return -ENOMEM;
	snprintf(name, sizeof(name), "vcpu%u", v->id);
	err = snap_get(r, name, st, sizeof(*st));
	if (err)
		goto out;
	for (const struct state_part *part = state_parts(st, true); part->name; part++) {
		/* A host without XSAVE reports no XCRs and refuses to set any. */
		if (part->data == &st->xcrs && st->xcrs.nr_xcrs == 0)
			continue;
		if (ioctl(v->fd, part->request, part->data) < 0) {
			err = -errno;
			log_error("%s: %s: %s: %s", r->path, name, part->name, strerror(errno));
			goto out;
		}
	}
	err = load_msrs(v, st);
	if (!err && ioctl(v->fd, KVM_SET_VCPU_EVENTS, &st->events) < 0) {
		err = -errno;
		log_error("%s: %s: KVM_SET_VCPU_EVENTS: %s", r->path, name, strerror(errno));
	}
out:
	free(st);
	return err;
}
