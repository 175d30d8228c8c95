// SPDX-License-Identifier: MIT
/*
 * The ACPI tables: RSDP -> XSDT -> FADT/MADT -> DSDT/FACS walked and checksummed, the DSDT's
 * names, bad configurations and short buffers, and a round trip through iasl's disassembler.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmm/boot/acpi.h"
#include "vmm/layout.h"

#define BUF_SIZE   LAYOUT_ACPI_SIZE
#define BASE	   LAYOUT_ACPI_START
#define MMIO64	   (5 * GiB)
#define HDR_LEN	   36
#define IASL	   "/usr/bin/iasl"
#define MAX_TABLES 8

/* Little-endian reads at any alignment. */
static uint64_t rd(const uint8_t *p, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint8_t sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

static struct acpi_config typical(unsigned ncpus)
{
	return (struct acpi_config){
	    .ncpus = ncpus,
	    .pci_mmio32_base = LAYOUT_PCI_MMIO32_BASE,
	    .pci_mmio32_size = LAYOUT_PCI_MMIO32_SIZE,
	    .pci_mmio64_base = MMIO64,
	    .pci_mmio64_size = LAYOUT_PCI_MMIO64_SIZE,
	    .pci_io_base = PORT_PCI_IO_BASE,
	    .pci_io_size = PORT_PCI_IO_SIZE,
	    .pci_slots = 32,
	    .com1 = true,
	};
}

/* The buffer offset of guest-physical `gpa`, checked to leave `len` bytes inside `used`. */
static size_t off_of(uint64_t gpa, size_t len, size_t used)
{
	assert_true(gpa >= BASE);
	assert_true(gpa - BASE <= used);
	assert_true(len <= used - (gpa - BASE));
	return (size_t)(gpa - BASE);
}

/* A description table at `gpa`: its header in bounds, its length in bounds, checksum zero. */
static const uint8_t *table_at(const uint8_t *buf, size_t used, uint64_t gpa, const char *sig)
{
	size_t off = off_of(gpa, HDR_LEN, used);
	const uint8_t *t = buf + off;
	uint32_t len = (uint32_t)rd(t + 4, 4);

	if (sig)
		assert_memory_equal(t, sig, 4);
	assert_true(len >= HDR_LEN);
	off_of(gpa, len, used);
	assert_int_equal(sum(t, len), 0);
	return t;
}

struct tables {
	const uint8_t *rsdp, *xsdt, *fadt, *madt, *dsdt, *facs;
	const uint8_t *listed[MAX_TABLES];
	unsigned nr_listed;
};

/* Walk from the RSDP, checking every pointer and checksum on the way. */
static void walk(const uint8_t *buf, size_t used, struct tables *t)
{
	uint32_t xlen;

	memset(t, 0, sizeof(*t));
	assert_true(used >= 36);
	t->rsdp = buf;
	assert_memory_equal(buf, "RSD PTR ", 8);
	assert_int_equal(buf[15], 2); /* revision */
	assert_int_equal(sum(buf, 20), 0);
	assert_int_equal(rd(buf + 20, 4), 36); /* length */
	assert_int_equal(sum(buf, 36), 0);

	t->xsdt = table_at(buf, used, rd(buf + 24, 8), "XSDT");
	xlen = (uint32_t)rd(t->xsdt + 4, 4);
	assert_int_equal((xlen - HDR_LEN) % 8, 0);
	t->nr_listed = (xlen - HDR_LEN) / 8;
	assert_true(t->nr_listed >= 2 && t->nr_listed <= MAX_TABLES);
	for (unsigned i = 0; i < t->nr_listed; i++) {
		const uint8_t *tab = table_at(buf, used, rd(t->xsdt + HDR_LEN + 8 * i, 8), NULL);

		t->listed[i] = tab;
		if (!memcmp(tab, "FACP", 4)) {
			assert_null(t->fadt);
			t->fadt = tab;
		} else if (!memcmp(tab, "APIC", 4)) {
			assert_null(t->madt);
			t->madt = tab;
		}
	}
	assert_non_null(t->fadt);
	assert_non_null(t->madt);

	/* FADT: X_DSDT at 140 (and the 32-bit DSDT at 40); the FACS, below 4 GiB, only in
	 * FIRMWARE_CTRL at 36: X_FIRMWARE_CTRL at 132 must then be zero (ACPI 6.4 §5.2.9). */
	assert_true(rd(t->fadt + 4, 4) >= 148);
	assert_int_equal(rd(t->fadt + 40, 4), rd(t->fadt + 140, 8));
	t->dsdt = table_at(buf, used, rd(t->fadt + 140, 8), "DSDT");
	uint64_t facs = rd(t->fadt + 36, 4);

	assert_int_equal(rd(t->fadt + 132, 8), 0);
	assert_int_equal(facs % 64, 0);
	t->facs = buf + off_of(facs, 64, used);
	assert_memory_equal(t->facs, "FACS", 4);
	assert_int_equal(rd(t->facs + 4, 4), 64);
}

static void check_madt(const uint8_t *madt, unsigned ncpus)
{
	uint32_t len = (uint32_t)rd(madt + 4, 4);
	unsigned nr_lapic = 0, nr_ioapic = 0, nr_irq0 = 0;
	uint8_t seen[256] = {0};

	assert_int_equal(rd(madt + 36, 4), LAYOUT_LAPIC_BASE);
	for (uint32_t off = HDR_LEN + 8; off < len;) {
		const uint8_t *e = madt + off;

		assert_true(len - off >= 2);
		assert_true(e[1] >= 2 && e[1] <= len - off);
		switch (e[0]) {
		case 0: /* Processor Local APIC */
			assert_int_equal(e[1], 8);
			assert_int_equal(rd(e + 4, 4) & 1, 1); /* enabled */
			assert_true(e[3] < ncpus);
			assert_int_equal(seen[e[3]], 0);
			seen[e[3]] = 1;
			nr_lapic++;
			break;
		case 1: /* I/O APIC */
			assert_int_equal(e[1], 12);
			assert_int_equal(rd(e + 4, 4), LAYOUT_IOAPIC_BASE);
			assert_int_equal(rd(e + 8, 4), 0); /* GSI base */
			nr_ioapic++;
			break;
		case 2: /* Interrupt Source Override */
			assert_int_equal(e[1], 10);
			if (e[2] == 0 && e[3] == 0) {
				assert_int_equal(rd(e + 4, 4), 2);
				nr_irq0++;
			}
			break;
		default:
			break;
		}
		off += e[1];
	}
	assert_int_equal(nr_lapic, ncpus);
	assert_int_equal(nr_ioapic, 1);
	assert_int_equal(nr_irq0, 1);
}

static void test_walk_tables(void **state)
{
	static const unsigned counts[] = {1, 2, 8, 255};

	(void)state;
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		struct acpi_config cfg = typical(counts[i]);
		uint8_t *buf = malloc(BUF_SIZE);
		struct tables t;
		int used;

		assert_non_null(buf);
		used = acpi_build(&cfg, BASE, buf, BUF_SIZE);
		assert_true(used > 0);
		assert_true((size_t)used <= BUF_SIZE);
		walk(buf, (size_t)used, &t);
		check_madt(t.madt, counts[i]);
		free(buf);
	}
}

static const uint8_t *find(const uint8_t *hay, size_t len, const void *needle, size_t n)
{
	for (size_t i = 0; i + n <= len; i++)
		if (!memcmp(hay + i, needle, n))
			return hay + i;
	return NULL;
}

static void test_dsdt_names(void **state)
{
	struct acpi_config cfg = typical(2);
	uint8_t *buf = malloc(BUF_SIZE);
	/* EISA IDs compressed: PNP0A03 and PNP0501, as the DWords in _HID. */
	static const uint8_t pnp0a03[] = {0x41, 0xd0, 0x0a, 0x03};
	static const uint8_t pnp0501[] = {0x41, 0xd0, 0x05, 0x01};
	const char *names[] = {"_S5_", "_SB_", "PCI0", "_HID", "_CRS", "_PRT", "COM1"};
	struct tables t;
	int used;
	uint32_t len;

	(void)state;
	assert_non_null(buf);
	used = acpi_build(&cfg, BASE, buf, BUF_SIZE);
	assert_true(used > 0);
	walk(buf, (size_t)used, &t);
	len = (uint32_t)rd(t.dsdt + 4, 4);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_non_null(find(t.dsdt + HDR_LEN, len - HDR_LEN, names[i], 4));
	assert_non_null(find(t.dsdt, len, pnp0a03, 4));
	assert_non_null(find(t.dsdt, len, pnp0501, 4));

	/* Without COM1 the UART's device is gone. */
	cfg.com1 = false;
	used = acpi_build(&cfg, BASE, buf, BUF_SIZE);
	assert_true(used > 0);
	walk(buf, (size_t)used, &t);
	len = (uint32_t)rd(t.dsdt + 4, 4);
	assert_null(find(t.dsdt, len, "COM1", 4));
	assert_null(find(t.dsdt, len, pnp0501, 4));
	assert_non_null(find(t.dsdt, len, "_S5_", 4));
	free(buf);
}

static void test_bad_config(void **state)
{
	struct acpi_config cfg = typical(0);
	uint8_t *buf = malloc(BUF_SIZE);

	(void)state;
	assert_non_null(buf);
	assert_int_equal(acpi_build(&cfg, BASE, buf, BUF_SIZE), -EINVAL);
	cfg.ncpus = 256;
	assert_int_equal(acpi_build(&cfg, BASE, buf, BUF_SIZE), -EINVAL);
	cfg.ncpus = 1;
	assert_int_equal(acpi_build(NULL, BASE, buf, BUF_SIZE), -EINVAL);
	assert_int_equal(acpi_build(&cfg, BASE + 8, buf, BUF_SIZE), -EINVAL); /* unaligned */
	cfg.pci_slots = 33;
	assert_int_equal(acpi_build(&cfg, BASE, buf, BUF_SIZE), -EINVAL);
	free(buf);
}

/* Build into exactly `size` malloc'd bytes, so ASan sees any write past them. */
static int build_sized(const struct acpi_config *cfg, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	int ret;

	assert_non_null(buf);
	ret = acpi_build(cfg, BASE, buf, size);
	free(buf);
	return ret;
}

static void test_short_buffer(void **state)
{
	static const unsigned counts[] = {1, 2, 255};

	(void)state;
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		struct acpi_config cfg = typical(counts[i]);
		int full = build_sized(&cfg, BUF_SIZE);

		assert_true(full > 0);
		assert_int_equal(build_sized(&cfg, (size_t)full), full);
		assert_int_equal(build_sized(&cfg, (size_t)full - 1), -ENOSPC);
		assert_int_equal(build_sized(&cfg, 0), -ENOSPC);
		assert_int_equal(build_sized(&cfg, 16), -ENOSPC);
		assert_int_equal(build_sized(&cfg, 64), -ENOSPC);
		/* Every size short of the whole, so each table's own check is hit. */
		for (size_t size = 1; size < (size_t)full; size += 7)
			assert_int_equal(build_sized(&cfg, size), -ENOSPC);
	}
}

/* Read a whole small file into a NUL-terminated string (caller frees). */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *s;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	s = calloc(1, (size_t)n + 1);
	if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
		free(s);
		s = NULL;
	}
	fclose(f);
	return s;
}

static void write_file(const char *path, const void *p, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Disassemble dir/name.dat with iasl; returns the .dsl text (caller frees). */
static char *disassemble(const char *dir, const char *name, const void *p, size_t len)
{
	char dat[512], dsl[512], log[512], cmd[2048];
	char *out, *text;
	int st;

	snprintf(dat, sizeof(dat), "%s/%s.dat", dir, name);
	snprintf(dsl, sizeof(dsl), "%s/%s.dsl", dir, name);
	snprintf(log, sizeof(log), "%s/%s.log", dir, name);
	write_file(dat, p, len);
	snprintf(cmd, sizeof(cmd), "cd '%s' && " IASL " -d '%s.dat' >'%s' 2>&1", dir, name, log);
	st = system(cmd);
	out = slurp(log);
	assert_non_null(out);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || strstr(out, "Error"))
		fail_msg("iasl -d %s.dat (status %d):\n%s", name, st, out);
	free(out);
	text = slurp(dsl);
	if (!text)
		fail_msg("iasl produced no %s", dsl);
	return text;
}

/* The temporary directory of the iasl test, removed by its teardown even when a check fails. */
static char iasl_dir[64];

static int iasl_teardown(void **state)
{
	char cmd[128];

	(void)state;
	if (iasl_dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", iasl_dir);
		if (system(cmd))
			return -1;
		iasl_dir[0] = 0;
	}
	return 0;
}

static void test_iasl_round_trip(void **state)
{
	struct acpi_config cfg = typical(4);
	char cmd[512];
	uint8_t *buf;
	struct tables t;
	char *dsl;
	int used, st;

	(void)state;
	if (access(IASL, X_OK))
		skip();
	buf = malloc(BUF_SIZE);
	assert_non_null(buf);
	used = acpi_build(&cfg, BASE, buf, BUF_SIZE);
	assert_true(used > 0);
	walk(buf, (size_t)used, &t);
	snprintf(iasl_dir, sizeof(iasl_dir), "/tmp/yun-acpi-XXXXXX");
	if (!mkdtemp(iasl_dir)) {
		iasl_dir[0] = 0;
		fail_msg("mkdtemp: %s", strerror(errno));
	}

	dsl = disassemble(iasl_dir, "dsdt", t.dsdt, rd(t.dsdt + 4, 4));
	assert_non_null(strstr(dsl, "_S5"));
	assert_non_null(strstr(dsl, "PNP0A03"));
	assert_non_null(strstr(dsl, "PNP0501"));
	assert_non_null(strstr(dsl, "Device (COM1)"));
	assert_non_null(strstr(dsl, "Device (PCI0)"));
	free(dsl);

	/* The disassembly compiles back without errors (warnings are allowed). */
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && " IASL " -p recompiled dsdt.dsl >recompile.log 2>&1 && "
		 "grep -q ' 0 Errors' recompile.log",
		 iasl_dir);
	st = system(cmd);
	assert_true(st != -1 && WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);

	dsl = disassemble(iasl_dir, "apic", t.madt, rd(t.madt + 4, 4));
	assert_non_null(strstr(dsl, "Multiple APIC Description Table"));
	assert_non_null(strstr(dsl, "FEC00000"));
	free(dsl);

	dsl = disassemble(iasl_dir, "facp", t.fadt, rd(t.fadt + 4, 4));
	assert_non_null(strstr(dsl, "Fixed ACPI Description Table"));
	free(dsl);

	free(disassemble(iasl_dir, "xsdt", t.xsdt, rd(t.xsdt + 4, 4)));
	free(disassemble(iasl_dir, "facs", t.facs, 64));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_walk_tables),
	    cmocka_unit_test(test_dsdt_names),
	    cmocka_unit_test(test_bad_config),
	    cmocka_unit_test(test_short_buffer),
	    cmocka_unit_test_teardown(test_iasl_round_trip, iasl_teardown),
	};
	return cmocka_run_group_tests_name("acpi", tests, NULL, NULL);
}
