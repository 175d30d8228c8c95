// SPDX-License-Identifier: MIT
/*
 * The test guest: checks a machine the way Linux would, one TAP line per check on COM1, then
 * powers off through ACPI. Ring 0 only sets up (IDT, TSS, LAPIC); the checks run in ring 3 with
 * IOPL 3, where port I/O and MMIO need no help from the hypervisor's instruction emulator, but
 * for one that needs it: a ring-0 popcnt of virtio registers (check_ring0_popcnt).
 *
 * The host passes what it expects on the command line (PVH start info):
 *   cpus=N mem=MiB disk_sectors=N disk_serial=ID rng=1 vcon=1|console vcon_in=LINE
 * A missing key skips the checks that need it. `bench` takes the shortest path to power-off
 * (only the ACPI tables it needs, no output); `bench=wait` first prints "ready" and waits for
 * a byte on COM1, so that the benchmark can measure the VMM's memory while the guest idles;
 * `bench=blk` and `bench=net-*` (net.c) measure a device path from ring 3 by polling.
 */
#include "guest.h"
#include "vq.h"

/* PVH start info (xen/include/public/arch-x86/hvm/start_info.h). */
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

#define HVM_START_MAGIC 0x336ec578
#define E820_RAM	1

#define LAPIC_BASE    0xfee00000ull
#define LAPIC_ID      0x020
#define LAPIC_EOI     0x0b0
#define LAPIC_SVR     0x0f0
#define LAPIC_ICR_LO  0x300
#define LAPIC_ICR_HI  0x310
#define TRAMPOLINE_PA 0x8000
#define MAX_CPUS      16

/* From head.S. */
extern char trampoline_start[], trampoline_end[];
extern uint64_t pml4[];
extern uint8_t gdt_tss[];
extern char ring0_stack_top[];
void load_tss(void);
void load_idt(const void *ptr);
void irq_stub_0x40(void);
void irq_stub_0x41(void);
void irq_stub_0xff(void);
void ring0_stub(void);
void exc_stub_0(void), exc_stub_1(void), exc_stub_2(void), exc_stub_3(void), exc_stub_4(void);
void exc_stub_5(void), exc_stub_6(void), exc_stub_7(void), exc_stub_8(void), exc_stub_9(void);
void exc_stub_10(void), exc_stub_11(void), exc_stub_12(void), exc_stub_13(void);
void exc_stub_14(void), exc_stub_15(void), exc_stub_16(void), exc_stub_17(void);
void exc_stub_18(void), exc_stub_19(void);

uint64_t guest_setup(uint32_t start_info);
void irq_handler(uint64_t vector);
void exception_handler(uint64_t vector, uint64_t error, uint64_t rip, uint64_t *frame);
uint64_t popcnt_probe(uint64_t addr);
void popcnt_probe_fixup(void);
void ap_main(void);
void user_main(uint32_t start_info);

/* ---- ring 0: descriptor tables, interrupts, APs ---- */

struct idt_entry {
	uint16_t off0, sel;
	uint8_t ist, type;
	uint16_t off1;
	uint32_t off2, zero;
} __attribute__((packed));

static struct idt_entry idt[256] __attribute__((aligned(16)));
static struct {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed)) idt_ptr;

static struct {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3, iomap;
} __attribute__((packed)) tss __attribute__((aligned(16)));

static void set_gate(unsigned vec, void (*fn)(void))
{
	uint64_t a = (uint64_t)fn;

	idt[vec] = (struct idt_entry){(uint16_t)a,	   0x18, 0, 0x8e, (uint16_t)(a >> 16),
				      (uint32_t)(a >> 32), 0};
}

/* The software interrupt through which ring-3 checks run a function in ring 0. */
#define VEC_RING0 0x80

volatile unsigned irq_count[256];
static volatile unsigned ap_count;
static volatile uint32_t ap_ids[MAX_CPUS];

/* Called once on the BSP in ring 0; returns where ring 3 starts. */
uint64_t guest_setup(uint32_t start_info)
{
	static void (*const exc[20])(void) = {
	    exc_stub_0,	 exc_stub_1,  exc_stub_2,  exc_stub_3,	exc_stub_4,
	    exc_stub_5,	 exc_stub_6,  exc_stub_7,  exc_stub_8,	exc_stub_9,
	    exc_stub_10, exc_stub_11, exc_stub_12, exc_stub_13, exc_stub_14,
	    exc_stub_15, exc_stub_16, exc_stub_17, exc_stub_18, exc_stub_19,
	};
	uint64_t t = (uint64_t)&tss;

	(void)start_info;
	for (unsigned i = 0; i < 20; i++)
		set_gate(i, exc[i]);
	set_gate(VEC_CONFIG, irq_stub_0x40);
	set_gate(VEC_QUEUE, irq_stub_0x41);
	set_gate(0xff, irq_stub_0xff); /* the LAPIC's spurious vector */
	set_gate(VEC_RING0, ring0_stub);
	idt[VEC_RING0].type = 0xee; /* DPL 3: ring 3 may use it */
	idt_ptr.limit = sizeof(idt) - 1;
	idt_ptr.base = (uint64_t)idt;
	load_idt(&idt_ptr);

	/* A 64-bit TSS: RSP0 for interrupts taken in ring 3; no I/O bitmap (IOPL 3 rules). */
	tss.rsp[0] = (uint64_t)ring0_stack_top;
	tss.iomap = sizeof(tss);
	uint64_t lo =
	    (sizeof(tss) - 1) | (t & 0xffffff) << 16 | 0x89ull << 40 | ((t >> 24) & 0xff) << 56;
	memcpy(gdt_tss, &lo, 8);
	uint64_t hi = t >> 32;
	memcpy(gdt_tss + 8, &hi, 8);
	load_tss();

	/* Mask both 8259s: firmware may have left the PIT ticking into vector 8. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);

	/* Software-enable the LAPIC with 0xff as the spurious vector. */
	mmio_write32(LAPIC_BASE + LAPIC_SVR, 0x1ff);

	/* The AP trampoline, where a SIPI with vector 0x08 starts. */
	memcpy((void *)TRAMPOLINE_PA, trampoline_start,
	       (size_t)(trampoline_end - trampoline_start));
	serial_init();
	return (uint64_t)user_main;
}

void irq_handler(uint64_t vector)
{
	irq_count[vector & 0xff]++;
	if (vector != 0xff)
		mmio_write32(LAPIC_BASE + LAPIC_EOI, 0);
}

/* A #PF a check provokes on purpose in popcnt_probe (armed), and what it saw. */
static volatile struct {
	bool armed, taken;
	uint64_t cr2, error;
} pf_probe;

void exception_handler(uint64_t vector, uint64_t error, uint64_t rip, uint64_t *frame)
{
	if (vector == 14 && pf_probe.armed && rip == (uint64_t)popcnt_probe) {
		uint64_t cr2;

		__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
		pf_probe.cr2 = cr2;
		pf_probe.error = error;
		pf_probe.taken = true;
		pf_probe.armed = false;
		frame[1] = (uint64_t)popcnt_probe_fixup;
		return;
	}
	print("not ok - exception %lu (error %#lx) at %#lx\n", vector, error, rip);
	print("Bail out! exception\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

void ap_main(void)
{
	uint32_t id = mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24;
	unsigned n = __atomic_fetch_add(&ap_count, 1, __ATOMIC_SEQ_CST);

	if (n < MAX_CPUS)
		ap_ids[n] = id;
}

/* ---- the command line ---- */

static const char *cmdline = "";

/* The value of key= on the command line, copied into buf; false when absent. */
bool arg(const char *key, char *buf, size_t size)
{
	size_t klen = strlen(key);

	for (const char *p = cmdline; *p;) {
		while (*p == ' ')
			p++;
		if (!memcmp(p, key, klen) && p[klen] == '=') {
			size_t n = 0;

			p += klen + 1;
			while (p[n] && p[n] != ' ' && n + 1 < size) {
				buf[n] = p[n];
				n++;
			}
			buf[n] = 0;
			return true;
		}
		while (*p && *p != ' ')
			p++;
	}
	return false;
}

bool arg_num(const char *key, uint64_t *v)
{
	char buf[24];

	if (!arg(key, buf, sizeof(buf)))
		return false;
	*v = 0;
	for (const char *p = buf; *p >= '0' && *p <= '9'; p++)
		*v = *v * 10 + (uint64_t)(*p - '0');
	return true;
}

/* ---- time: the ACPI PM timer (3.579545 MHz) ---- */

static uint16_t pm_tmr_port;
static bool pm_tmr_32;

void delay_us(uint64_t us)
{
	uint64_t ticks = us * 3579545 / 1000000 + 1, elapsed = 0;
	uint32_t mask = pm_tmr_32 ? 0xffffffffu : 0xffffffu;
	uint32_t last;

	if (!pm_tmr_port) {
		for (uint64_t i = 0; i < us * 100; i++)
			cpu_relax();
		return;
	}
	last = inl(pm_tmr_port) & mask;
	while (elapsed < ticks) {
		uint32_t now = inl(pm_tmr_port) & mask;

		elapsed += (now - last) & mask;
		last = now;
		cpu_relax();
	}
}

/* ---- high MMIO: BARs above 4 GiB get 2 MiB pages on demand ---- */

static uint64_t spare_pd[8][512] __attribute__((aligned(4096)));
static unsigned spare_used;

static bool map_mmio(uint64_t addr, uint64_t len)
{
	uint64_t *pdpt = (uint64_t *)(pml4[0] & ~0xfffull);

	if (addr + len <= (4ull << 30))
		return true; /* head.S maps the first 4 GiB */
	if (addr + len > (512ull << 30))
		return false;
	for (uint64_t a = addr & ~((1ull << 21) - 1); a < addr + len; a += 1ull << 21) {
		unsigned i = (unsigned)(a >> 30), j = (unsigned)(a >> 21) & 511;
		uint64_t *pd;

		if (!(pdpt[i] & 1)) {
			if (spare_used == 8)
				return false;
			pd = spare_pd[spare_used++];
			/* Not-present entries are never cached, so no flush is needed. */
			pdpt[i] = (uint64_t)pd | 0x7;
		}
		pd = (uint64_t *)(pdpt[i] & ~0xfffull);
		if (!(pd[j] & 1))
			pd[j] = a | 0x9f; /* P, RW, US, PWT, PCD, PS */
	}
	barrier();
	return true;
}

/* ---- checks: memory map ---- */

static struct hvm_start_info *si;

static void check_memory_map(void)
{
	struct hvm_memmap_entry *mm = (struct hvm_memmap_entry *)si->memmap_paddr;
	uint64_t ram = 0, mem_mib, self = (uint64_t)(uintptr_t)check_memory_map;
	bool low_ok = false, self_ok = false, holes_ok = true;

	if (si->version < 1 || !si->memmap_entries) {
		tap(false, "memory map: start info version %u has %u entries", si->version,
		    si->memmap_entries);
		return;
	}
	for (uint32_t i = 0; i < si->memmap_entries; i++) {
		uint64_t a = mm[i].addr, e = mm[i].addr + mm[i].size;

		print("# memmap %#016lx-%#016lx type %u\n", a, e - 1, mm[i].type);
		if (mm[i].type != E820_RAM)
			continue;
		ram += mm[i].size;
		if (a == 0 && e >= 0x80000)
			low_ok = true;
		if (a <= self && self < e)
			self_ok = true;
		/* RAM never covers the legacy hole, the IOAPIC or the LAPIC. */
		if ((a < 0x100000 && e > 0xa0000) || (a < 0x100000000ull && e > 0xfec00000ull))
			holes_ok = false;
	}
	tap(low_ok, "memory map: conventional memory from 0");
	tap(self_ok, "memory map: the guest image lies in RAM");
	tap(holes_ok, "memory map: no RAM in the legacy hole or over the APICs");
	if (arg_num("mem", &mem_mib))
		tap(ram <= mem_mib << 20 && ram + (2u << 20) >= mem_mib << 20,
		    "memory map: %lu KiB of RAM for mem=%lu MiB", ram >> 10, mem_mib);
	else
		tap_skip("memory map: total (no mem= given)");
}

/* ---- checks: ACPI ---- */

struct acpi_header {
	char sig[4];
	uint32_t length;
	uint8_t revision, checksum;
	char oem[6], oem_table[8];
	uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

static uint8_t sum(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint8_t s = 0;

	while (n--)
		s += *b++;
	return s;
}

static const struct acpi_header *fadt, *madt, *dsdt;

static const struct acpi_header *table_at(uint64_t pa)
{
	const struct acpi_header *h = (const void *)pa;

	if (!pa || pa >= (4ull << 30) || h->length < sizeof(*h) || h->length > (1u << 20))
		return NULL;
	return h;
}

static void check_acpi(void)
{
	const uint8_t *rsdp = (const uint8_t *)si->rsdp_paddr;
	const struct acpi_header *root;
	bool xsdt, sums_ok = true;
	unsigned entries;

	if (!rsdp) {
		/* The legacy search: the BIOS area, on 16-byte boundaries. */
		for (uint64_t a = 0xe0000; a < 0x100000; a += 16) {
			if (!memcmp((const void *)a, "RSD PTR ", 8) && !sum((const void *)a, 20)) {
				rsdp = (const uint8_t *)a;
				break;
			}
		}
	}
	tap(rsdp && !memcmp(rsdp, "RSD PTR ", 8) && !sum(rsdp, 20), "ACPI: RSDP found (%s)",
	    si->rsdp_paddr ? "start info" : "BIOS area search");
	if (!rsdp)
		return;
	xsdt = rsdp[15] >= 2;
	if (xsdt) {
		uint32_t len;
		uint64_t x;

		memcpy(&len, rsdp + 20, 4);
		memcpy(&x, rsdp + 24, 8);
		tap(len == 36 && !sum(rsdp, 36), "ACPI: RSDP revision %u, extended checksum",
		    rsdp[15]);
		root = table_at(x);
	} else {
		uint32_t r;

		memcpy(&r, rsdp + 16, 4);
		root = table_at(r);
	}
	tap(root && !memcmp(root->sig, xsdt ? "XSDT" : "RSDT", 4) && !sum(root, root->length),
	    "ACPI: RSDP -> %s, checksum", xsdt ? "XSDT" : "RSDT");
	if (!root)
		return;
	entries = (root->length - sizeof(*root)) / (xsdt ? 8 : 4);
	for (unsigned i = 0; i < entries; i++) {
		const uint8_t *p = (const uint8_t *)(root + 1) + i * (xsdt ? 8 : 4);
		uint64_t pa = 0;
		const struct acpi_header *h;

		memcpy(&pa, p, xsdt ? 8 : 4);
		h = table_at(pa);
		if (!h)
			continue;
		print("# %c%c%c%c at %#lx, %u bytes, revision %u\n", h->sig[0], h->sig[1],
		      h->sig[2], h->sig[3], pa, h->length, h->revision);
		if (sum(h, h->length))
			sums_ok = false;
		if (!memcmp(h->sig, "FACP", 4))
			fadt = h;
		else if (!memcmp(h->sig, "APIC", 4))
			madt = h;
	}
	tap(sums_ok, "ACPI: every table's checksum");
	tap(fadt != NULL, "ACPI: FADT present");
	tap(madt != NULL, "ACPI: MADT present");
	if (fadt) {
		const uint8_t *f = (const uint8_t *)fadt;
		uint32_t d32, tmr, flags = 0;
		uint64_t d64 = 0;

		memcpy(&d32, f + 40, 4);
		if (fadt->length >= 148)
			memcpy(&d64, f + 140, 8);
		dsdt = table_at(d64 ? d64 : d32);
		tap(dsdt && !memcmp(dsdt->sig, "DSDT", 4) && !sum(dsdt, dsdt->length),
		    "ACPI: FADT -> DSDT, checksum");
		memcpy(&tmr, f + 76, 4);
		if (fadt->length >= 116)
			memcpy(&flags, f + 112, 4);
		pm_tmr_port = (uint16_t)tmr;
		pm_tmr_32 = flags & (1u << 8);
	}
}

/* ---- checks: SMP ---- */

static void icr(uint32_t apic_id, uint32_t low)
{
	mmio_write32(LAPIC_BASE + LAPIC_ICR_HI, apic_id << 24);
	mmio_write32(LAPIC_BASE + LAPIC_ICR_LO, low);
	for (unsigned i = 0; i < 100000 && (mmio_read32(LAPIC_BASE + LAPIC_ICR_LO) & 0x1000); i++)
		cpu_relax();
}

static void check_smp(void)
{
	uint32_t ids[MAX_CPUS], bsp = mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24;
	unsigned n = 0, aps = 0;
	uint64_t want;

	if (!madt) {
		tap(false, "SMP: no MADT");
		return;
	}
	for (const uint8_t *p = (const uint8_t *)madt + 44;
	     p + 2 <= (const uint8_t *)madt + madt->length && p[1] >= 2; p += p[1]) {
		/* Type 0: processor local APIC; flags bit 0 enabled, bit 1 online-capable. */
		if (p[0] == 0 && p[1] >= 8 && (p[4] & 1) && n < MAX_CPUS)
			ids[n++] = p[3];
	}
	print("# MADT: %u enabled CPUs, BSP APIC ID %u\n", n, bsp);
	if (arg_num("cpus", &want))
		tap(n == want, "SMP: MADT lists %u CPUs for cpus=%lu", n, want);
	else
		tap(n >= 1, "SMP: MADT lists %u CPUs", n);

	/* INIT, then two SIPIs with the trampoline's page as the vector, for each AP. */
	for (unsigned i = 0; i < n; i++) {
		if (ids[i] == bsp)
			continue;
		aps++;
		icr(ids[i], 0x4500); /* INIT, level assert */
		delay_us(10000);
		icr(ids[i], 0x4600 | (TRAMPOLINE_PA >> 12)); /* STARTUP */
		delay_us(200);
		icr(ids[i], 0x4600 | (TRAMPOLINE_PA >> 12));
	}
	for (unsigned ms = 0; ms < 5000 && ap_count < aps; ms++)
		delay_us(1000);
	tap(ap_count == aps, "SMP: %u of %u APs started and reported in", ap_count, aps);
	for (unsigned i = 0; i < ap_count && i < MAX_CPUS; i++) {
		bool listed = false;

		for (unsigned j = 0; j < n; j++)
			listed |= ids[j] == ap_ids[i] && ids[j] != bsp;
		tap(listed, "SMP: AP with APIC ID %u is one the MADT lists", ap_ids[i]);
	}
}

/* ---- checks: PCI and virtio-blk ---- */

#define VIRTIO_BLK_T_IN	    0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_F_FLUSH  9

static uint64_t bar_addr(unsigned dev, unsigned bar)
{
	uint32_t lo = pci_read32(dev, 0x10 + 4 * bar);
	uint64_t a = lo & 0xfffffff0u;

	if (lo & 1)
		return 0; /* I/O BAR: not what virtio modern uses here */
	if ((lo & 6) == 4)
		a |= (uint64_t)pci_read32(dev, 0x14 + 4 * bar) << 32;
	return a;
}

/* Find the modern virtio device 1af4:(0x1040 + type) on bus 0; class_hi is its PCI class and
 * subclass as QEMU gives them. */
bool find_virtio(struct vpci *b, unsigned type, uint16_t class_hi)
{
	uint32_t want = (0x1040u + type) << 16 | 0x1af4;

	for (unsigned dev = 0; dev < 32; dev++) {
		uint32_t id = pci_read32(dev, 0);
		uint8_t rev;

		if ((id & 0xffff) == 0xffff)
			continue;
		print("# pci 00:%02x.0 %04x:%04x class %06x\n", dev, id & 0xffff, id >> 16,
		      pci_read32(dev, 8) >> 8);
		if (id != want)
			continue;
		rev = pci_read8(dev, 8);
		tap(pci_read32(dev, 8) >> 16 == class_hi, "PCI: %s class %06x", b->name,
		    pci_read32(dev, 8) >> 8);
		tap(rev >= 1, "PCI: %s at 00:%02x.0 is 1af4:%04x (revision %u, modern)", b->name,
		    dev, want >> 16, rev);
		tap(pci_read16(dev, 0x2e) >= 0x40 || pci_read16(dev, 0x2e) == type,
		    "PCI: %s subsystem ID %#x", b->name, pci_read16(dev, 0x2e));
		b->dev = dev;
		return true;
	}
	tap(false, "PCI: a %s (1af4:%04x) on bus 0", b->name, want >> 16);
	return false;
}

/* The capabilities a modern virtio device has; need_device: one for its configuration. */
bool read_caps(struct vpci *b, bool need_device)
{
	unsigned seen = 0, want = need_device ? 62 : 46;

	if (!(pci_read16(b->dev, 6) & 0x10)) {
		tap(false, "PCI: virtio-blk has a capability list");
		return false;
	}
	for (unsigned p = pci_read8(b->dev, 0x34) & 0xfc, n = 0; p && n < 48;
	     p = pci_read8(b->dev, p + 1) & 0xfc, n++) {
		uint8_t id = pci_read8(b->dev, p);

		if (id == 0x11) {
			uint32_t t = pci_read32(b->dev, p + 4);

			b->msix_cap = p;
			b->msix_table = bar_addr(b->dev, t & 7) + (t & ~7u);
			print("# msix cap at %#x: %u entries, table BAR%u+%#x\n", p,
			      (pci_read16(b->dev, p + 2) & 0x7ff) + 1, t & 7, t & ~7u);
		} else if (id == 0x09) {
			struct virtio_cap c = {
			    .bar = pci_read8(b->dev, p + 4),
			    .offset = pci_read32(b->dev, p + 8),
			    .length = pci_read32(b->dev, p + 12),
			};
			uint8_t type = pci_read8(b->dev, p + 3);

			c.addr = c.bar < 6 ? bar_addr(b->dev, c.bar) + c.offset : 0;
			print("# virtio cap type %u: BAR%u+%#x, %u bytes\n", type, c.bar, c.offset,
			      c.length);
			switch (type) {
			case 1:
				b->common = c, seen |= 2;
				break;
			case 2:
				b->notify = c, seen |= 4;
				b->notify_mult = pci_read32(b->dev, p + 16);
				break;
			case 3:
				b->isr = c, seen |= 8;
				break;
			case 4:
				b->device = c, seen |= 16;
				break;
			case 5:
				seen |= 32;
				break;
			}
		}
	}
	tap((seen & want) == want, "PCI: %s capabilities common, notify, ISR, PCI-cfg%s (%#x)",
	    b->name, need_device ? ", device" : "", seen);
	tap(b->msix_cap != 0, "PCI: MSI-X capability");
	tap(b->common.length >= 0x38 && b->isr.length >= 1 &&
		(!need_device || b->device.length >= 8),
	    "PCI: capability lengths (common %u, ISR %u, device %u)", b->common.length,
	    b->isr.length, b->device.length);
	if ((seen & want) != want || !b->msix_cap || !b->common.addr)
		return false;
	/* Memory decoding and bus mastering on, as a driver does (yun and firmware may have). */
	pci_write16(b->dev, 4, pci_read16(b->dev, 4) | 0x6);
	return map_mmio(b->common.addr, b->common.length) &&
	       map_mmio(b->notify.addr, b->notify.length) && map_mmio(b->isr.addr, b->isr.length) &&
	       (!need_device || map_mmio(b->device.addr, b->device.length)) &&
	       map_mmio(b->msix_table, 64);
}

static volatile uint8_t *cc;

static uint8_t cc8(unsigned o)
{
	return cc[o];
}
static uint16_t cc16(unsigned o)
{
	return *(volatile uint16_t *)(cc + o);
}
static void wcc8(unsigned o, uint8_t v)
{
	cc[o] = v;
}
static void wcc16(unsigned o, uint16_t v)
{
	*(volatile uint16_t *)(cc + o) = v;
}

/* The one queue of the device under test (this guest drives one at a time), in the image's
 * memory. */
VQ_DEFINE(devq, 128);

static struct {
	uint32_t type, reserved;
	uint64_t sector;
} req_hdr;
static uint8_t data[512] __attribute__((aligned(512)));
static volatile uint8_t req_status;

void msix_entry(uint64_t table, unsigned i, uint8_t vector, uint32_t apic)
{
	volatile uint32_t *e = (volatile uint32_t *)(table + 16 * i);

	e[0] = 0xfee00000u | apic << 12;
	e[1] = 0;
	e[2] = vector;
	e[3] = 0; /* unmasked */
}

/* The whole initialisation (virtio 1.2 §3.1.1) with the features in want, which the device
 * must offer; queue 0 on the guest's one ring, its interrupts on MSI-X. */
static bool virtio_init(struct vpci *b, uint64_t want)
{
	uint32_t apic = mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24;
	uint64_t features;
	uint16_t qsize;
	bool ok;

	cc = (volatile uint8_t *)b->common.addr;
	wcc8(CC_STATUS, 0);
	tap(cc8(CC_STATUS) == 0, "%s: reset (status reads 0)", b->name);
	wcc8(CC_STATUS, VIRTIO_STATUS_ACK);
	wcc8(CC_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
	features = cc_device_features(cc);
	print("# %s features %#lx\n", b->name, features);
	tap(features & (1ull << VIRTIO_F_VERSION_1), "%s: device offers VERSION_1", b->name);
	tap((features & want) == want, "%s: device offers %#lx", b->name, want);
	features &= want;
	cc_driver_features(cc, features);
	wcc8(CC_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	if (!(cc8(CC_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
		tap(false, "%s: FEATURES_OK accepted", b->name);
		return false;
	}
	tap(true, "%s: FEATURES_OK accepted with %#lx", b->name, features);

	/* MSI-X: the function enabled, entry 0 for configuration changes, 1 for the queue. */
	pci_write16(b->dev, b->msix_cap + 2,
		    (uint16_t)(pci_read16(b->dev, b->msix_cap + 2) | 0x8000));
	msix_entry(b->msix_table, 0, VEC_CONFIG, apic);
	msix_entry(b->msix_table, 1, VEC_QUEUE, apic);
	wcc16(CC_MSIX, 0);
	tap(cc16(CC_MSIX) == 0, "%s: config vector 0 accepted", b->name);
	tap(cc16(CC_NUMQ) >= 1, "%s: %u queue(s)", b->name, cc16(CC_NUMQ));
	ok = vq_setup(&devq, b, 0, 1, &qsize);
	tap(ok, "%s: queue 0 size %u, a power of 2", b->name, qsize);
	if (!ok)
		return false;
	tap(cc16(CC_QMSIX) == 1, "%s: queue vector 1 accepted", b->name);
	wcc8(CC_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
			    VIRTIO_STATUS_DRIVER_OK);
	tap(cc8(CC_STATUS) == 0xf, "%s: DRIVER_OK (status %#x)", b->name, cc8(CC_STATUS));
	return true;
}

/*
 * One request: header, optional data buffer, status byte. Returns the status, or 0xff when the
 * device did not complete it in time. *irq tells whether the queue's MSI-X vector fired.
 */
static uint8_t blk_request(uint32_t type, uint64_t sector, void *buf, uint32_t len, bool dev_writes,
			   bool *irq, uint32_t *used_len)
{
	unsigned before = irq_count[VEC_QUEUE], d = 0;
	struct vring_desc *desc = devq.desc;
	uint32_t id;

	req_hdr = (typeof(req_hdr)){type, 0, sector};
	req_status = 0xff;
	desc[d] = (struct vring_desc){(uint64_t)&req_hdr, sizeof(req_hdr), VRING_DESC_F_NEXT, 1};
	d++;
	if (len) {
		desc[d] = (struct vring_desc){
		    (uint64_t)buf, len,
		    (uint16_t)(VRING_DESC_F_NEXT | (dev_writes ? VRING_DESC_F_WRITE : 0)), 2};
		d++;
	}
	desc[d] = (struct vring_desc){(uint64_t)&req_status, 1, VRING_DESC_F_WRITE, 0};
	desc[d - 1].next = (uint16_t)d;
	vq_add(&devq, 0);
	vq_publish(&devq);
	vq_kick(&devq);
	if (!vq_wait(&devq, 5000, &id, used_len))
		return 0xff;
	/* The interrupt follows the used-ring update; give it a moment to land. */
	for (unsigned i = 0; i < 1000 && irq_count[VEC_QUEUE] == before; i++)
		delay_us(100);
	*irq = irq_count[VEC_QUEUE] != before;
	return req_status;
}

static void fill_pattern(char *buf, const char *prefix, unsigned n)
{
	/* "prefix%05u", repeated over the sector. */
	char one[32];
	size_t l = strlen(prefix);

	memcpy(one, prefix, l);
	for (int i = 4; i >= 0; i--, n /= 10)
		one[l + (size_t)i] = (char)('0' + n % 10);
	l += 5;
	for (size_t i = 0; i < 512; i++)
		buf[i] = one[i % l];
}

/* ---- ring 0 on demand: fn(arg) through int $0x80 ---- */

static uint64_t ring0_call(uint64_t (*fn)(uint64_t), uint64_t arg)
{
	uint64_t ret;

	__asm__ volatile("int $0x80"
			 : "=a"(ret), "+D"(fn), "+S"(arg)
			 :
			 : "rcx", "rdx", "r8", "r9", "r10", "r11", "memory", "cc");
	return ret;
}

#define PROBE_VA (512ull << 30) /* the first address PML4 entry 1 maps */

static uint64_t probe_pdpt[512] __attribute__((aligned(4096)));
static uint64_t probe_pd[512] __attribute__((aligned(4096)));
static uint64_t probe_pt[512] __attribute__((aligned(4096)));

static uint64_t popcnt64_r0(uint64_t addr)
{
	uint64_t v;

	__asm__ volatile("popcnt (%1), %0" : "=r"(v) : "r"(addr) : "cc", "memory");
	return v;
}

static uint64_t popcnt16_r0(uint64_t addr)
{
	uint16_t v;

	__asm__ volatile("popcntw (%1), %0" : "=r"(v) : "r"(addr) : "cc", "memory");
	return v;
}

static unsigned bits_set(uint64_t v)
{
	unsigned n = 0;

	for (; v; v &= v - 1)
		n++;
	return n;
}

/*
 * POPCNT of virtio registers from ring 0: an MMIO access with an instruction KVM's emulator
 * does not know (Linux 6.1's arch/x86/kvm/emulate.c has no 0F B8), so KVM gives up and
 * yun-vmm's fallback must carry it out with a real read of the register. QEMU (TCG) is the
 * oracle. Queue 0's descriptor address reads back what the driver wrote, its size likewise.
 */
static void check_ring0_popcnt(void)
{
	uint32_t eax = 1, ebx, ecx = 0, edx;
	uint64_t got;

	__asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
	if (!(ecx & (1u << 23))) {
		tap_skip("virtio-blk: popcnt of a register from ring 0 (no POPCNT in CPUID)");
		return;
	}
	got = ring0_call(popcnt64_r0, (uint64_t)(cc + CC_QDESC));
	tap(got == bits_set((uint64_t)devq.desc),
	    "virtio-blk: popcnt of queue_desc (%#lx) from ring 0 is %lu", (uint64_t)devq.desc, got);
	got = ring0_call(popcnt16_r0, (uint64_t)(cc + CC_QSIZE));
	tap(got == bits_set(devq.size), "virtio-blk: popcnt of queue_size (%u) from ring 0 is %lu",
	    devq.size, got);

	/*
	 * An operand from the BAR's page into a page that is not mapped: #PF on the second page,
	 * not present, a supervisor read (error code 0), CR2 its first byte. The BAR's page is
	 * mapped again at PROBE_VA, in tables of this check's own under PML4 entry 1.
	 */
	probe_pt[0] = ((uint64_t)cc & ~0xfffull) | 0x1b; /* P, RW, PWT, PCD */
	probe_pt[1] = 0;
	probe_pd[0] = (uint64_t)probe_pt | 0x3;
	probe_pdpt[0] = (uint64_t)probe_pd | 0x3;
	pml4[1] = (uint64_t)probe_pdpt | 0x3;
	barrier();
	pf_probe.armed = true;
	got = ring0_call(popcnt_probe, PROBE_VA + 0xffc);
	tap(pf_probe.taken && got == ~0ull && pf_probe.cr2 == PROBE_VA + 0x1000 &&
		pf_probe.error == 0,
	    "virtio-blk: popcnt from a BAR's page into an unmapped one from ring 0: #PF (error "
	    "%#lx, cr2 %#lx)",
	    pf_probe.error, pf_probe.cr2);
	pf_probe.armed = false;
}

static void check_virtio_blk(void)
{
	struct vpci b = {.name = "virtio-blk"};
	uint64_t capacity, want;
	char expect[512], serial[24];
	uint32_t ulen;
	bool irq;
	uint8_t st;

	if (!find_virtio(&b, 2, 0x0100) || !read_caps(&b, true) ||
	    !virtio_init(&b, 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_BLK_F_FLUSH))
		return;
	check_ring0_popcnt();
	memcpy(&capacity, (const void *)b.device.addr, 8);
	if (arg_num("disk_sectors", &want))
		tap(capacity == want, "virtio-blk: capacity %lu sectors", capacity);
	else
		tap(capacity > 0, "virtio-blk: capacity %lu sectors", capacity);

	st = blk_request(VIRTIO_BLK_T_IN, 1, data, 512, true, &irq, &ulen);
	fill_pattern(expect, "yun-sector-", 1);
	tap(st == 0 && !memcmp(data, expect, 512), "virtio-blk: read sector 1 (status %u)", st);
	tap(irq, "virtio-blk: completion signalled by MSI-X vector %#x", VEC_QUEUE);
	tap(ulen >= 513, "virtio-blk: used length %u covers data and status", ulen);

	fill_pattern((char *)data, "yun-written-", 2);
	st = blk_request(VIRTIO_BLK_T_OUT, 2, data, 512, false, &irq, &ulen);
	tap(st == 0, "virtio-blk: write sector 2 (status %u)", st);
	st = blk_request(VIRTIO_BLK_T_FLUSH, 0, NULL, 0, false, &irq, &ulen);
	tap(st == 0, "virtio-blk: flush (status %u)", st);
	memset(data, 0, 512);
	st = blk_request(VIRTIO_BLK_T_IN, 2, data, 512, true, &irq, &ulen);
	fill_pattern(expect, "yun-written-", 2);
	tap(st == 0 && !memcmp(data, expect, 512), "virtio-blk: sector 2 reads back");

	memset(data, 0, 512);
	st = blk_request(VIRTIO_BLK_T_GET_ID, 0, data, 20, true, &irq, &ulen);
	data[20] = 0;
	if (arg("disk_serial", serial, sizeof(serial)))
		tap(st == 0 && !memcmp(data, serial, strlen(serial) + 1),
		    "virtio-blk: GET_ID reads \"%s\"", (char *)data);
	else
		tap(st == 0, "virtio-blk: GET_ID (status %u)", st);

	st = blk_request(VIRTIO_BLK_T_IN, capacity, data, 512, true, &irq, &ulen);
	tap(st == 1, "virtio-blk: a read past the end gets IOERR (status %u)", st);
	st = blk_request(0x7f, 0, data, 512, true, &irq, &ulen);
	tap(st == 2, "virtio-blk: an unknown request type gets UNSUPP (status %u)", st);
	tap(!(cc8(CC_STATUS) & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)),
	    "virtio-blk: device still healthy (status %#x)", cc8(CC_STATUS));
	wcc8(CC_STATUS, 0);
	tap(cc8(CC_STATUS) == 0, "virtio-blk: reset after use (status reads 0)");
}

/* One device-writable buffer of len bytes; returns the used length, or -1 on a timeout. */
static int rng_request(uint8_t *buf, uint32_t len, bool *irq)
{
	unsigned before = irq_count[VEC_QUEUE];
	uint32_t id, used_len;

	vq_post(&devq, 0, buf, len, VRING_DESC_F_WRITE);
	vq_kick(&devq);
	if (!vq_wait(&devq, 5000, &id, &used_len))
		return -1;
	for (unsigned i = 0; i < 1000 && irq_count[VEC_QUEUE] == before; i++)
		delay_us(100);
	*irq = irq_count[VEC_QUEUE] != before;
	return (int)used_len;
}

static void check_virtio_rng(void)
{
	struct vpci r = {.name = "virtio-rng"};
	char want[4];
	uint8_t first[64];
	bool irq, nonzero = false;
	int n;

	if (!arg("rng", want, sizeof(want))) {
		tap_skip("virtio-rng: not asked for (rng=1)");
		return;
	}
	if (!find_virtio(&r, 4, 0x00ff) || !read_caps(&r, false) ||
	    !virtio_init(&r, 1ull << VIRTIO_F_VERSION_1))
		return;
	memset(data, 0, 64);
	n = rng_request(data, 64, &irq);
	for (unsigned i = 0; i < 64; i++)
		nonzero |= data[i] != 0;
	tap(n == 64 && nonzero, "virtio-rng: 64 random bytes (used length %d)", n);
	tap(irq, "virtio-rng: completion signalled by MSI-X vector %#x", VEC_QUEUE);
	memcpy(first, data, 64);
	n = rng_request(data, 64, &irq);
	tap(n == 64 && memcmp(first, data, 64), "virtio-rng: a second request gets other bytes");
	wcc8(CC_STATUS, 0);
	tap(cc8(CC_STATUS) == 0, "virtio-rng: reset after use (status reads 0)");
}

/*
 * ---- bench=snapshot: a guest to snapshot and restore ----
 * It sets up virtio-blk, prints "ready" and polls COM1 from ring 3. The host snapshots it
 * there, and restores it (as often as it likes), each time sending one byte: the restored guest
 * echoes it, writes a sector named after it and reads it back (its queue positions, its MSI-X
 * vector and the disk all as before the snapshot), then powers off.
 */
static void snapshot_guest(void)
{
	struct vpci b = {.name = "virtio-blk"};
	char expect[512];
	uint32_t ulen;
	bool irq;
	uint8_t st, c;

	if (!find_virtio(&b, 2, 0x0100) || !read_caps(&b, true) ||
	    !virtio_init(&b, 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_BLK_F_FLUSH)) {
		print("Bail out! no virtio-blk\n");
		return;
	}
	st = blk_request(VIRTIO_BLK_T_IN, 1, data, 512, true, &irq, &ulen);
	fill_pattern(expect, "yun-sector-", 1);
	tap(st == 0 && irq && !memcmp(data, expect, 512), "before: read sector 1 (status %u)", st);
	print("ready\n");
	while (!(inb(0x3f8 + 5) & 1)) /* LSR: data ready */
		cpu_relax();
	c = inb(0x3f8);
	print("# got byte %u\n", c);
	fill_pattern((char *)data, "yun-restored-", c);
	st = blk_request(VIRTIO_BLK_T_OUT, 3, data, 512, false, &irq, &ulen);
	tap(st == 0 && irq, "after: write sector 3 (status %u, MSI-X %s)", st,
	    irq ? "fired" : "silent");
	st = blk_request(VIRTIO_BLK_T_FLUSH, 0, NULL, 0, false, &irq, &ulen);
	tap(st == 0, "after: flush (status %u)", st);
	memset(data, 0, 512);
	st = blk_request(VIRTIO_BLK_T_IN, 3, data, 512, true, &irq, &ulen);
	fill_pattern(expect, "yun-restored-", c);
	tap(st == 0 && !memcmp(data, expect, 512), "after: sector 3 reads back");
	tap(!(cc8(CC_STATUS) & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)),
	    "after: virtio-blk healthy (status %#x)", cc8(CC_STATUS));
	print("1..%u\n", tap_count);
	print("# %u passed, %u failed\n", tap_passed, tap_failed);
}

/* ---- bench=blk: the block device path, driven from ring 3 by polling ---- */

#define BENCH_DEPTH 32

static struct {
	uint32_t type, reserved;
	uint64_t sector;
} bench_hdr[BENCH_DEPTH];
static volatile uint8_t bench_status[BENCH_DEPTH];
static uint8_t bench_buf[BENCH_DEPTH][4096] __attribute__((aligned(4096)));
static uint8_t bench_big[1 << 20] __attribute__((aligned(4096)));
static uint32_t bench_lat[4096]; /* per-request cycles at depth 1 */
static uint64_t tsc_khz, bench_rng = 88172645463325252ull;

static uint64_t xorshift(void)
{
	bench_rng ^= bench_rng << 13;
	bench_rng ^= bench_rng >> 7;
	bench_rng ^= bench_rng << 17;
	return bench_rng;
}

/* A request in slot `slot` (descriptors 3*slot..3*slot+2), made available; no kick. */
static void bench_post(unsigned slot, uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
	uint16_t d = (uint16_t)(3 * slot);
	struct vring_desc *desc = devq.desc;

	bench_hdr[slot].type = type;
	bench_hdr[slot].sector = sector;
	bench_status[slot] = 0xff;
	desc[d] = (struct vring_desc){(uint64_t)&bench_hdr[slot], 16, VRING_DESC_F_NEXT,
				      (uint16_t)(d + 1)};
	desc[d + 1] = (struct vring_desc){
	    (uint64_t)buf, len,
	    (uint16_t)(VRING_DESC_F_NEXT | (type == VIRTIO_BLK_T_IN ? VRING_DESC_F_WRITE : 0)),
	    (uint16_t)(d + 2)};
	desc[d + 2] = (struct vring_desc){(uint64_t)&bench_status[slot], 1, VRING_DESC_F_WRITE, 0};
	vq_add(&devq, d);
	vq_publish(&devq);
}

/* One benchmark run: what it asks for, and where it is. */
struct bench_job {
	uint32_t type, len;
	bool seq;
	uint64_t units, next; /* the disk in units of len; the next unit when sequential */
	unsigned posted;
	uint64_t started[BENCH_DEPTH]; /* TSC when each slot's request was posted */
};

/* Post the job's next request into `slot`: the next unit in order, or a random one. */
static void bench_post_next(struct bench_job *j, unsigned slot)
{
	uint64_t u = j->seq ? j->next++ % j->units : xorshift() % j->units;

	j->started[slot] = rdtsc();
	bench_post(slot, j->type, u * (j->len / 512), j->len > 4096 ? bench_big : bench_buf[slot],
		   j->len);
	j->posted++;
}

/*
 * n requests of len bytes at depth qd, random or sequential, each slot reposted as soon as it
 * completes; returns the TSC cycles taken, or 0 when a request failed or 10 s went by.
 */
static uint64_t bench_run(uint32_t type, unsigned qd, unsigned n, uint32_t len, bool seq,
			  uint64_t capacity)
{
	struct bench_job j = {
	    .type = type, .len = len, .seq = seq, .units = capacity / (len / 512)};
	uint64_t t0, limit = tsc_khz * 10000;
	unsigned done = 0;

	t0 = rdtsc();
	for (unsigned s = 0; s < qd && j.posted < n; s++)
		bench_post_next(&j, s);
	vq_kick(&devq);
	while (done < n) {
		uint32_t id, len;
		bool more = false;

		if (devq.used->idx == devq.last_used) {
			if (rdtsc() - t0 > limit)
				return 0;
			cpu_relax();
			continue;
		}
		while (vq_pop(&devq, &id, &len)) {
			unsigned slot = id / 3;

			if (id % 3 || slot >= qd || bench_status[slot] != 0)
				return 0;
			if (qd == 1 && done < sizeof(bench_lat) / sizeof(bench_lat[0]))
				bench_lat[done] = (uint32_t)(rdtsc() - j.started[slot]);
			done++;
			if (j.posted < n) {
				bench_post_next(&j, slot);
				more = true;
			}
		}
		if (more)
			vq_kick(&devq);
	}
	return rdtsc() - t0;
}

/* The p-th percentile of the first n depth-1 latencies, in microseconds. */
static uint64_t bench_percentile(unsigned n, unsigned p)
{
	if (n > sizeof(bench_lat) / sizeof(bench_lat[0]))
		n = sizeof(bench_lat) / sizeof(bench_lat[0]);
	for (unsigned i = 1; i < n; i++) /* insertion sort: n is small */
		for (unsigned j = i; j > 0 && bench_lat[j - 1] > bench_lat[j]; j--) {
			uint32_t t = bench_lat[j];

			bench_lat[j] = bench_lat[j - 1];
			bench_lat[j - 1] = t;
		}
	return (uint64_t)bench_lat[(uint64_t)(n - 1) * p / 100] * 1000 / tsc_khz;
}

static void bench_blk(void)
{
	struct vpci b = {.name = "virtio-blk"};
	uint64_t capacity, cycles, n1 = 2000, n32 = 8000, seq_mib = 64;

	quiet = true;
	if (!find_virtio(&b, 2, 0x0100) || !read_caps(&b, true) ||
	    !virtio_init(&b, 1ull << VIRTIO_F_VERSION_1)) {
		quiet = false;
		print("bench-blk error: no virtio-blk\n");
		return;
	}
	quiet = false;
	arg_num("bench_n1", &n1);
	arg_num("bench_n32", &n32);
	arg_num("bench_seq_mib", &seq_mib);
	memcpy(&capacity, (const void *)b.device.addr, 8);
	devq.avail->flags = VRING_AVAIL_F_NO_INTERRUPT; /* polled */
	cycles = rdtsc();
	delay_us(100000);
	tsc_khz = (rdtsc() - cycles) / 100;
	print("bench-blk tsc_khz=%lu capacity=%lu qsize=%u\n", tsc_khz, capacity, devq.size);
	if (devq.size < 3 * BENCH_DEPTH) {
		/* Each request takes three descriptors, and depth 32 keeps 32 in flight. */
		print("bench-blk error: a queue of %u descriptors; %u needed\n", devq.size,
		      3 * BENCH_DEPTH);
		return;
	}

	cycles = bench_run(VIRTIO_BLK_T_IN, 1, (unsigned)n1, 4096, false, capacity);
	if (cycles)
		print("bench-blk randread-4k-qd1 iops=%lu p50_us=%lu p99_us=%lu\n",
		      n1 * tsc_khz * 1000 / cycles, bench_percentile((unsigned)n1, 50),
		      bench_percentile((unsigned)n1, 99));
	cycles = bench_run(VIRTIO_BLK_T_IN, BENCH_DEPTH, (unsigned)n32, 4096, false, capacity);
	if (cycles)
		print("bench-blk randread-4k-qd32 iops=%lu\n", n32 * tsc_khz * 1000 / cycles);
	cycles = bench_run(VIRTIO_BLK_T_OUT, 1, (unsigned)n1, 4096, false, capacity);
	if (cycles)
		print("bench-blk randwrite-4k-qd1 iops=%lu\n", n1 * tsc_khz * 1000 / cycles);
	cycles = bench_run(VIRTIO_BLK_T_OUT, BENCH_DEPTH, (unsigned)n32, 4096, false, capacity);
	if (cycles)
		print("bench-blk randwrite-4k-qd32 iops=%lu\n", n32 * tsc_khz * 1000 / cycles);
	cycles = bench_run(VIRTIO_BLK_T_IN, 1, (unsigned)seq_mib, 1 << 20, true, capacity);
	if (cycles)
		print("bench-blk seqread-1m mbps=%lu\n",
		      seq_mib * tsc_khz * 1000 / cycles * 1048576 / 1000000);
	print("bench-blk done\n");
}

/* ---- power-off: FADT PM1a control with \_S5's SLP_TYPa ---- */

static bool s5_slp_typ(uint8_t *typ)
{
	const uint8_t *p, *end;

	if (!dsdt)
		return false;
	p = (const uint8_t *)(dsdt + 1);
	end = (const uint8_t *)dsdt + dsdt->length;
	/* NameOp "_S5_" PackageOp PkgLength NumElements, then the first element. */
	for (; p + 8 < end; p++) {
		const uint8_t *q;

		if (memcmp(p, "_S5_", 4) || p[4] != 0x12)
			continue;
		q = p + 5;
		q += 1 + (*q >> 6); /* PkgLength: its lead byte says how many follow */
		q++;		    /* NumElements */
		if (q >= end)
			return false;
		if (*q == 0x0a && q + 1 < end) /* BytePrefix */
			*typ = q[1];
		else if (*q == 0x00 || *q == 0x01) /* ZeroOp, OneOp */
			*typ = *q;
		else
			return false;
		return true;
	}
	return false;
}

static void power_off(void)
{
	uint8_t typ = 0;
	uint32_t pm1a = 0;

	if (fadt)
		memcpy(&pm1a, (const uint8_t *)fadt + 64, 4);
	if (!s5_slp_typ(&typ) || !pm1a) {
		print("# no \\_S5 or PM1a_CNT; cannot power off\n");
		return;
	}
	print("# power-off: PM1a_CNT %#x <- SLP_TYP %u | SLP_EN\n", pm1a, typ);
	outw((uint16_t)pm1a, (uint16_t)(typ << 10 | 1 << 13));
}

/* ---- ring 3 ---- */

void user_main(uint32_t start_info)
{
	char mode[16];

	si = (struct hvm_start_info *)(uint64_t)start_info;
	if (si->cmdline_paddr)
		cmdline = (const char *)si->cmdline_paddr;
	if (arg("bench", mode, sizeof(mode))) {
		quiet = true;
		check_acpi();
		if (!strcmp(mode, "blk"))
			bench_blk();
		if (!memcmp(mode, "net", 3))
			bench_net(mode);
		if (!strcmp(mode, "snapshot")) {
			quiet = false;
			snapshot_guest();
		}
		if (!strcmp(mode, "wait")) {
			quiet = false;
			print("ready\n");
			quiet = true;
			while (!(inb(0x3f8 + 5) & 1)) /* LSR: data ready */
				cpu_relax();
		}
		power_off();
		for (;;)
			cpu_relax();
	}
	print("# yun test guest\n");
	tap(si->magic == HVM_START_MAGIC, "PVH: start info magic %#x", si->magic);
	tap(true, "UART: this line reached the host through COM1");
	print("# command line: %s\n", cmdline);
	check_memory_map();
	check_acpi();
	check_smp();
	check_virtio_blk();
	check_virtio_rng();
	check_virtio_console();
	check_virtio_vsock();
	print("1..%u\n", tap_count);
	print("# %u passed, %u failed\n", tap_passed, tap_failed);
	virtio_console_relay();
	power_off();
	delay_us(1000000);
	print("Bail out! still running after power-off\n");
	for (;;)
		cpu_relax();
}
