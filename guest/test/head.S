/* SPDX-License-Identifier: MIT */
/*
 * The test guest's entry points: the PVH entry (32-bit protected mode, paging off, EBX = the
 * hvm_start_info), the switch to long mode on identity-mapped page tables, the drop to ring 3
 * with IOPL 3, interrupt and exception stubs, and the real-mode trampoline that brings an AP
 * from its SIPI to long mode.
 */
#define CODE32   0x08
#define DATA     0x10
#define CODE64   0x18
#define UDATA    0x20
#define UCODE64  0x28
#define TSS_SEL  0x30

#define TRAMPOLINE 0x8000

	/* XEN_ELFNOTE_PHYS32_ENTRY (18): where a PVH loader enters. */
	.section .note.Xen, "a", @note
	.p2align 2
	.long 4, 4, 18
	.asciz "Xen"
	.long pvh_start

	.section .text.boot, "ax"
	.code32
	.globl pvh_start
pvh_start:
	cli
	cld
	/* A '!' on COM1 first of all: bench/boot.py times the guest's first instruction by it. */
	movw $0x3f8, %dx
	movb $'!', %al
	outb %al, %dx
	movl %ebx, start_info_pa
	lgdt gdt_ptr
	ljmp $CODE32, $1f
1:	movw $DATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movl $boot_stack_top, %esp
	call enter_long_mode
	ljmp $CODE64, $bsp64

/* PAE, the page tables, EFER.LME, paging: the caller far-jumps to 64-bit code after. */
enter_long_mode:
	movl %cr4, %eax
	orl $0x20, %eax			/* PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx		/* EFER */
	rdmsr
	orl $0x100, %eax		/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG, PE */
	andl $0x9fffffff, %eax		/* caches on: CD, NW clear */
	movl %eax, %cr0
	ret

	.code64
bsp64:
	movw $DATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movq $boot_stack_top, %rsp
	movl start_info_pa, %edi
	call guest_setup		/* IDT, TSS, LAPIC: returns the ring-3 entry in %rax */
	movq %rax, %rsi
	movl start_info_pa, %edi
	/* iretq to ring 3: SS, RSP, RFLAGS (IF, IOPL 3), CS, RIP. */
	pushq $(UDATA | 3)
	pushq $(user_stack_top - 8)	/* as if called: RSP+8 16-byte aligned */
	pushq $0x3202
	pushq $(UCODE64 | 3)
	pushq %rsi
	iretq

	.globl load_tss
load_tss:
	movw $TSS_SEL, %ax
	ltr %ax
	ret

	.globl load_idt
load_idt:
	lidt (%rdi)
	ret

/*
 * int $0x80 from ring 3 (a DPL-3 gate): call the ring-0 function in %rdi with the argument in
 * %rsi and return its result in %rax; the caller's asm names the registers the C ABI clobbers.
 * The CPU pushed 5 quadwords on the 16-byte aligned RSP0: one more aligns the call.
 */
	.globl ring0_stub
ring0_stub:
	movq %rdi, %rax
	movq %rsi, %rdi
	subq $8, %rsp
	cld
	call *%rax
	addq $8, %rsp
	iretq

/*
 * popcnt_probe(addr): POPCNT of the quadword at addr (ring 0, through ring0_stub); a #PF there
 * comes back through popcnt_probe_fixup as ~0.
 */
	.globl popcnt_probe, popcnt_probe_fixup
popcnt_probe:
	popcntq (%rdi), %rax
	ret
popcnt_probe_fixup:
	movq $-1, %rax
	ret

/* Interrupts (MSI-X vectors): save what the C ABI clobbers, call irq_handler(vector). */
	.macro IRQ_STUB vec
	.globl irq_stub_\vec
irq_stub_\vec:
	pushq %rdi
	movq $\vec, %rdi
	jmp irq_common
	.endm
	IRQ_STUB 0x40
	IRQ_STUB 0x41
	IRQ_STUB 0xff

irq_common:
	pushq %rax
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	cld
	call irq_handler
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rax
	popq %rdi
	iretq

/*
 * Exceptions: exception_handler(vector, error code, RIP, frame) reports and stops, or returns
 * when the fault was one a check expected and it moved the frame's RIP to a fix-up. The frame
 * (error code, then the CPU's 5 quadwords) leaves RSP 16-byte aligned for the call.
 */
	.macro EXC_STUB vec, has_error
	.globl exc_stub_\vec
exc_stub_\vec:
	.if \has_error == 0
	pushq $0
	.endif
	movq $\vec, %rdi
	movq (%rsp), %rsi		/* error code */
	movq 8(%rsp), %rdx		/* RIP */
	movq %rsp, %rcx
	cld
	call exception_handler
	addq $8, %rsp
	iretq
	.endm
	EXC_STUB 0, 0
	EXC_STUB 1, 0
	EXC_STUB 2, 0
	EXC_STUB 3, 0
	EXC_STUB 4, 0
	EXC_STUB 5, 0
	EXC_STUB 6, 0
	EXC_STUB 7, 0
	EXC_STUB 8, 1
	EXC_STUB 9, 0
	EXC_STUB 10, 1
	EXC_STUB 11, 1
	EXC_STUB 12, 1
	EXC_STUB 13, 1
	EXC_STUB 14, 1
	EXC_STUB 15, 0
	EXC_STUB 16, 0
	EXC_STUB 17, 1
	EXC_STUB 18, 0
	EXC_STUB 19, 0

/*
 * The AP trampoline, copied to TRAMPOLINE (a SIPI vector of 0x08): real mode with CS = 0x0800,
 * then the shared GDT, 32-bit protected mode, long mode, and ap_main on a stack of its own.
 */
	.globl trampoline_start, trampoline_end
	.code16
trampoline_start:
	cli
	cld
	movw %cs, %ax
	movw %ax, %ds
	lgdtl (tramp_gdt_ptr - trampoline_start)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $CODE32, $ap32
	.p2align 2
tramp_gdt_ptr:
	.word gdt_end - gdt - 1
	.long gdt
trampoline_end:

	.code32
	.section .text
ap32:
	movw $DATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	/* A stack of one page per AP, claimed with a locked add. */
	movl $0x1000, %eax
	lock xaddl %eax, ap_stack_next
	addl $0x1000, %eax
	movl %eax, %esp
	call enter_long_mode
	ljmp $CODE64, $ap64

	.code64
ap64:
	movw $DATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	call ap_main
1:	cli
	hlt
	jmp 1b

	.data
	.p2align 3
	.globl gdt
gdt:
	.quad 0
	.quad 0x00cf9b000000ffff	/* 0x08 code32 */
	.quad 0x00cf93000000ffff	/* 0x10 data */
	.quad 0x00af9b000000ffff	/* 0x18 code64 */
	.quad 0x00cff3000000ffff	/* 0x20 user data */
	.quad 0x00affb000000ffff	/* 0x28 user code64 */
	.globl gdt_tss
gdt_tss:
	.quad 0				/* 0x30 TSS, filled in by guest_setup */
	.quad 0
gdt_end:

gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

	.globl start_info_pa
start_info_pa:
	.long 0
	.globl ap_stack_next
ap_stack_next:
	.long ap_stacks

	/* Identity map of the first 4 GiB in 2 MiB pages, usable from ring 3 (U set); the
	 * last GiB (PCI hole, IOAPIC, LAPIC) uncached. */
	.p2align 12
	.globl pml4
pml4:
	.quad pdpt + 0x7
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x7
	.quad pd + 0x1000 + 0x7
	.quad pd + 0x2000 + 0x7
	.quad pd + 0x3000 + 0x7
	.fill 508, 8, 0
pd:
	.set i, 0
	.rept 2048
	.if i >= 1536
	.quad (i << 21) + 0x9f		/* P, RW, US, PWT, PCD, PS */
	.else
	.quad (i << 21) + 0x87		/* P, RW, US, PS */
	.endif
	.set i, i + 1
	.endr

	.bss
	.p2align 12
boot_stack:
	.skip 16384
	.globl boot_stack_top
boot_stack_top:
	.globl ring0_stack_top
	.skip 16384
ring0_stack_top:
	.skip 65536
	.globl user_stack_top
user_stack_top:
ap_stacks:
	.skip 0x1000 * 16
	.section .note.GNU-stack, "", @progbits
