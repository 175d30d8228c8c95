// SPDX-License-Identifier: MIT
#include "vmm/boot/acpi.h"

#include <errno.h>
#include <string.h>

#include "vmm/boot/aml.h"
#include "vmm/layout.h"

#define OEM_ID	     "YUN   "
#define OEM_TABLE_ID "YUNVMM  "
#define CREATOR_ID   "YUN "

/* ACPI 6.4 §5.2.6: the header every description table starts with. */
struct acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

/* §5.2.3.2: Generic Address Structure. */
struct acpi_gas {
	uint8_t space_id; /* 1: system I/O */
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size; /* 1 byte, 2 word, 3 dword */
	uint64_t address;
} __attribute__((packed));

struct acpi_rsdp {
	char signature[8];
	uint8_t checksum;
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t extended_checksum;
	uint8_t reserved[3];
} __attribute__((packed));

/* §5.2.9, revision 6. */
struct acpi_fadt {
	struct acpi_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
	uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk, pm2_cnt_blk, pm_tmr_blk;
	uint32_t gpe0_blk, gpe1_blk;
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len;
	uint8_t gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;
	uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
	uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk;
	struct acpi_gas sleep_control_reg, sleep_status_reg;
	uint64_t hypervisor_vendor_id;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT revision 6 is 276 bytes");

/* FADT flags (§5.2.9, Table 5.10). */
#define FADT_WBINVD	   (1u << 0)
#define FADT_PROC_C1	   (1u << 2)
#define FADT_SLP_BUTTON	   (1u << 5)
#define FADT_RESET_REG_SUP (1u << 10)
/* IAPC_BOOT_ARCH (Table 5.11). */
#define BOOT_ARCH_8042	 (1u << 1)
#define BOOT_ARCH_NO_VGA (1u << 2)

struct acpi_facs {
	char signature[4];
	uint32_t length;
	uint32_t hardware_signature;
	uint32_t firmware_waking_vector;
	uint32_t global_lock;
	uint32_t flags;
	uint64_t x_firmware_waking_vector;
	uint8_t version;
	uint8_t reserved[3];
	uint32_t ospm_flags;
	uint8_t reserved2[24];
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_facs) == 64, "FACS is 64 bytes");

/* MADT (§5.2.12) entries. */
struct madt_lapic {
	uint8_t type, length, processor_uid, apic_id;
	uint32_t flags;
} __attribute__((packed));

struct madt_ioapic {
	uint8_t type, length, ioapic_id, reserved;
	uint32_t address;
	uint32_t gsi_base;
} __attribute__((packed));

struct madt_iso {
	uint8_t type, length, bus, source;
	uint32_t gsi;
	uint16_t flags;
} __attribute__((packed));

struct madt_lapic_nmi {
	uint8_t type, length, processor_uid;
	uint16_t flags;
	uint8_t lint;
} __attribute__((packed));

/* MPS INTI flags: polarity bits 0-1, trigger mode bits 2-3. */
#define INTI_ACTIVE_HIGH 0x1
#define INTI_EDGE	 0x4
#define INTI_LEVEL	 0xc

static uint8_t checksum(const void *p, size_t len)
{
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + ((const uint8_t *)p)[i]);
	return (uint8_t)(0 - sum);
}

struct builder {
	uint8_t *buf;
	size_t size, used;
	uint64_t base;
};

/* Reserve `len` bytes aligned to `align`; NULL when it does not fit. */
static void *reserve(struct builder *b, size_t len, size_t align, uint64_t *gpa)
{
	size_t at = (b->used + align - 1) & ~(align - 1);
	void *p;

	if (at > b->size || len > b->size - at)
		return NULL;
	p = b->buf + at;
	memset(p, 0, len);
	b->used = at + len;
	*gpa = b->base + at;
	return p;
}

static void fill_header(struct acpi_header *h, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, OEM_ID, 6);
	memcpy(h->oem_table_id, OEM_TABLE_ID, 8);
	h->oem_revision = 1;
	memcpy(h->creator_id, CREATOR_ID, 4);
	h->creator_revision = 1;
	h->checksum = 0;
	h->checksum = checksum(h, len);
}

static struct acpi_gas io_gas(uint16_t port, uint8_t bytes, uint8_t access)
{
	return (struct acpi_gas){1, (uint8_t)(8 * bytes), 0, access, port};
}

static void build_pci_host_bridge(struct aml *a, const struct acpi_config *cfg)
{
	size_t dev, crs, prt;

	dev = aml_open_device(a, "PCI0");
	aml_name_decl(a, "_HID");
	aml_eisaid(a, "PNP0A03"); /* conventional PCI: configuration mechanism #1, no ECAM */
	aml_name_decl(a, "_ADR");
	aml_integer(a, 0);
	aml_name_decl(a, "_UID");
	aml_integer(a, 0);
	aml_name_decl(a, "_SEG");
	aml_integer(a, 0);
	aml_name_decl(a, "_BBN");
	aml_integer(a, 0);

	aml_name_decl(a, "_CRS");
	crs = aml_open_buffer(a);
	aml_res_bus_number(a, 0, 0xff);
	aml_res_io(a, 0xcf8, 8);
	aml_res_word_io(a, 0x0000, 0x0cf7);
	aml_res_word_io(a, cfg->pci_io_base, (uint16_t)(cfg->pci_io_base + cfg->pci_io_size - 1));
	aml_res_dword_memory(a, (uint32_t)cfg->pci_mmio32_base,
			     (uint32_t)(cfg->pci_mmio32_base + cfg->pci_mmio32_size - 1));
	if (cfg->pci_mmio64_size)
		aml_res_qword_memory(a, cfg->pci_mmio64_base,
				     cfg->pci_mmio64_base + cfg->pci_mmio64_size - 1);
	aml_close_buffer(a, crs);

	/* _PRT (§6.2.13): INTA-D of each slot to IOAPIC GSIs 16-23, no link devices. */
	aml_name_decl(a, "_PRT");
	prt = aml_open_package(a, (uint8_t)(cfg->pci_slots * 4));
	for (unsigned slot = 0; slot < cfg->pci_slots; slot++) {
		for (unsigned pin = 0; pin < 4; pin++) {
			size_t e = aml_open_package(a, 4);

			aml_integer(a, (uint64_t)slot << 16 | 0xffff);
			aml_integer(a, pin);
			aml_integer(a, 0);
			aml_integer(a, GSI_PCI_INTX_BASE + (slot + pin) % 8);
			aml_close(a, e);
		}
	}
	aml_close(a, prt);
	aml_close(a, dev);
}

static void build_com1(struct aml *a)
{
	size_t dev = aml_open_device(a, "COM1"), crs;

	aml_name_decl(a, "_HID");
	aml_eisaid(a, "PNP0501");
	aml_name_decl(a, "_UID");
	aml_integer(a, 1);
	aml_name_decl(a, "_STA");
	aml_integer(a, 0x0f);
	aml_name_decl(a, "_CRS");
	crs = aml_open_buffer(a);
	aml_res_io(a, PORT_COM1, 8);
	aml_res_irq(a, PORT_COM1_IRQ);
	aml_close_buffer(a, crs);
	aml_close(a, dev);
}

static int build_dsdt(struct builder *b, const struct acpi_config *cfg, uint64_t *gpa)
{
	size_t start = (b->used + 15) & ~(size_t)15, sb, s5;
	struct acpi_header *h;
	struct aml a;

	if (start > b->size || sizeof(*h) > b->size - start)
		return -ENOSPC;
	h = (struct acpi_header *)(b->buf + start);
	memset(h, 0, sizeof(*h));
	aml_init(&a, b->buf + start + sizeof(*h), b->size - start - sizeof(*h));

	sb = aml_open_scope(&a, "\\_SB_");
	build_pci_host_bridge(&a, cfg);
	if (cfg->com1)
		build_com1(&a);
	aml_close(&a, sb);

	/* \_S5: the sleep type values for PM1a and PM1b control (§7.4.2). */
	aml_name_decl(&a, "\\_S5_");
	s5 = aml_open_package(&a, 4);
	aml_integer(&a, ACPI_S5_SLP_TYP);
	aml_integer(&a, ACPI_S5_SLP_TYP);
	aml_integer(&a, 0);
	aml_integer(&a, 0);
	aml_close(&a, s5);
	if (a.overflow)
		return -ENOSPC;

	b->used = start + sizeof(*h) + a.len;
	/* Revision 2: integers are 64 bits wide. */
	fill_header(h, "DSDT", (uint32_t)(sizeof(*h) + a.len), 2);
	*gpa = b->base + start;
	return 0;
}

static int build_madt(struct builder *b, const struct acpi_config *cfg, uint64_t *gpa)
{
	size_t len = sizeof(struct acpi_header) + 8 + cfg->ncpus * sizeof(struct madt_lapic) +
		     sizeof(struct madt_ioapic) + 2 * sizeof(struct madt_iso) +
		     sizeof(struct madt_lapic_nmi);
	uint8_t *t = reserve(b, len, 16, gpa), *p;
	uint32_t lapic = (uint32_t)LAYOUT_LAPIC_BASE, flags = 1; /* PCAT_COMPAT: 8259s present */

	if (!t)
		return -ENOSPC;
	p = t + sizeof(struct acpi_header);
	memcpy(p, &lapic, 4);
	memcpy(p + 4, &flags, 4);
	p += 8;
	for (unsigned i = 0; i < cfg->ncpus; i++) {
		struct madt_lapic e = {0, sizeof(e), (uint8_t)i, (uint8_t)i, 1 /* enabled */};

		memcpy(p, &e, sizeof(e));
		p += sizeof(e);
	}
	struct madt_ioapic io = {
	    1, sizeof(io), (uint8_t)cfg->ncpus, 0, (uint32_t)LAYOUT_IOAPIC_BASE, 0};
	memcpy(p, &io, sizeof(io));
	p += sizeof(io);
	/* The PIT's IRQ 0 arrives on IOAPIC pin 2, as on PCs (and as the VMM routes GSI 0). */
	struct madt_iso timer = {2, sizeof(timer), 0, 0, 2, INTI_EDGE | INTI_ACTIVE_HIGH};
	struct madt_iso sci = {
	    2, sizeof(sci), 0, ACPI_SCI_IRQ, ACPI_SCI_IRQ, INTI_LEVEL | INTI_ACTIVE_HIGH};
	memcpy(p, &timer, sizeof(timer));
	p += sizeof(timer);
	memcpy(p, &sci, sizeof(sci));
	p += sizeof(sci);
	struct madt_lapic_nmi nmi = {4, sizeof(nmi), 0xff /* all processors */,
				     INTI_EDGE | INTI_ACTIVE_HIGH, 1 /* LINT1 */};
	memcpy(p, &nmi, sizeof(nmi));
	fill_header((struct acpi_header *)t, "APIC", (uint32_t)len, 5);
	return 0;
}

static int build_fadt(struct builder *b, uint64_t facs, uint64_t dsdt, uint64_t *gpa)
{
	struct acpi_fadt *f = reserve(b, sizeof(*f), 16, gpa);

	if (!f)
		return -ENOSPC;
	/* ACPI 6.4 §5.2.9: exactly one of FIRMWARE_CTRL and X_FIRMWARE_CTRL is set. */
	if (facs < LAYOUT_4G)
		f->firmware_ctrl = (uint32_t)facs;
	else
		f->x_firmware_ctrl = facs;
	f->dsdt = (uint32_t)dsdt;
	f->x_dsdt = dsdt;
	f->sci_int = ACPI_SCI_IRQ;
	f->smi_cmd = 0; /* no SMM: ACPI mode is always on (SCI_EN set at reset) */
	f->pm1a_evt_blk = PORT_ACPI_PM1_EVT;
	f->pm1a_cnt_blk = PORT_ACPI_PM1_CNT;
	f->pm_tmr_blk = PORT_ACPI_PM_TMR;
	f->pm1_evt_len = 4;
	f->pm1_cnt_len = 2;
	f->pm_tmr_len = 4;
	f->x_pm1a_evt_blk = io_gas(PORT_ACPI_PM1_EVT, 4, 2);
	f->x_pm1a_cnt_blk = io_gas(PORT_ACPI_PM1_CNT, 2, 2);
	f->x_pm_tmr_blk = io_gas(PORT_ACPI_PM_TMR, 4, 3);
	/* No C2 or C3 (latencies above 100 and 1000 µs mean "not supported"). */
	f->p_lvl2_lat = 0x0fff;
	f->p_lvl3_lat = 0x0fff;
	f->century = 0x32;
	f->iapc_boot_arch = BOOT_ARCH_8042 | BOOT_ARCH_NO_VGA;
	f->flags = FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_RESET_REG_SUP;
	/* Reset through the i8042's "pulse reset line" command. */
	f->reset_reg = io_gas(PORT_I8042_CMD, 1, 1);
	f->reset_value = 0xfe;
	f->minor_version = 4;
	fill_header(&f->h, "FACP", sizeof(*f), 6);
	return 0;
}

int acpi_build(const struct acpi_config *cfg, uint64_t base, void *buf, size_t size)
{
	struct builder b = {buf, size, 0, base};
	struct acpi_rsdp *rsdp;
	struct acpi_facs *facs;
	struct acpi_header *xsdt;
	uint64_t rsdp_gpa, facs_gpa, dsdt_gpa, fadt_gpa, madt_gpa, xsdt_gpa, entries[2];
	int err;

	if (!cfg || cfg->ncpus == 0 || cfg->ncpus > 255 || cfg->pci_slots > 32 || (base & 15))
		return -EINVAL;
	rsdp = reserve(&b, sizeof(*rsdp), 16, &rsdp_gpa);
	/* The FACS must be 64-byte aligned (§5.2.10). */
	facs = reserve(&b, sizeof(*facs), 64, &facs_gpa);
	if (!rsdp || !facs)
		return -ENOSPC;
	memcpy(facs->signature, "FACS", 4);
	facs->length = sizeof(*facs);
	facs->version = 2;

	err = build_madt(&b, cfg, &madt_gpa);
	if (!err)
		err = build_fadt(&b, facs_gpa, 0, &fadt_gpa);
	if (err)
		return err;
	xsdt = reserve(&b, sizeof(*xsdt) + sizeof(entries), 16, &xsdt_gpa);
	if (!xsdt)
		return -ENOSPC;
	err = build_dsdt(&b, cfg, &dsdt_gpa);
	if (err)
		return err;

	/* The FADT was built before the DSDT's address was known: point it there now. */
	struct acpi_fadt *fadt = (struct acpi_fadt *)(b.buf + (fadt_gpa - base));
	fadt->dsdt = (uint32_t)dsdt_gpa;
	fadt->x_dsdt = dsdt_gpa;
	fill_header(&fadt->h, "FACP", sizeof(*fadt), 6);

	entries[0] = fadt_gpa;
	entries[1] = madt_gpa;
	memcpy(xsdt + 1, entries, sizeof(entries));
	fill_header(xsdt, "XSDT", sizeof(*xsdt) + sizeof(entries), 1);

	memcpy(rsdp->signature, "RSD PTR ", 8);
	memcpy(rsdp->oem_id, OEM_ID, 6);
	rsdp->revision = 2;
	rsdp->length = sizeof(*rsdp);
	rsdp->xsdt_address = xsdt_gpa;
	rsdp->checksum = checksum(rsdp, 20);
	rsdp->extended_checksum = checksum(rsdp, sizeof(*rsdp));
	return (int)b.used;
}
