// SPDX-License-Identifier: MIT
/*
 * Snapshots: the state file's format (round trip, and every way a file can be bad), and the
 * platform devices' state carried from one instance to a fresh one, as a restore does: what the
 * guest reads afterwards is what it read before.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/snapshot_file.h"
#include "devices/bus.h"
#include "devices/i8042.h"
#include "devices/pci.h"
#include "devices/serial.h"
#include "fake_irq.h"
#include "vmm/layout.h"

/* A state file written and read back in memory: what snap_writer_finish() would write. */
static int reparse(struct snap_writer *w, struct snap_reader *r, uint8_t **copy, size_t *len)
{
	*len = w->len;
	*copy = malloc(w->len);
	assert_non_null(*copy);
	memcpy(*copy, w->buf, w->len);
	snap_writer_free(w);
	return snap_reader_parse(r, *copy, *len, "test-state");
}

static void test_round_trip(void **state)
{
	const uint64_t a = 0x1122334455667788ULL;
	const char b[5] = "abcde";
	struct snap_writer w;
	struct snap_reader r;
	uint64_t a2 = 0;
	char b2[5];
	uint8_t *buf;
	size_t len;

	snap_writer_init(&w);
	snap_put(&w, "first", &a, sizeof(a));
	snap_put(&w, "second", b, sizeof(b)); /* odd length: padded */
	snap_put(&w, "empty", NULL, 0);
	assert_int_equal(w.err, 0);
	assert_int_equal(reparse(&w, &r, &buf, &len), 0);
	assert_int_equal(r.nr, 3);
	assert_int_equal(snap_get(&r, "first", &a2, sizeof(a2)), 0);
	assert_true(a2 == a);
	assert_int_equal(snap_get(&r, "second", b2, sizeof(b2)), 0);
	assert_memory_equal(b2, b, sizeof(b));
	assert_non_null(snap_find(&r, "empty"));
	assert_int_equal(snap_find(&r, "empty")->len, 0);
	/* A missing section, and one of another size (another build's layout). */
	assert_int_equal(snap_get(&r, "third", &a2, sizeof(a2)), -ENOENT);
	assert_int_equal(snap_get(&r, "first", &a2, 4), -EPROTO);
	assert_int_equal(snap_get(&r, "second", b2, 4), -EPROTO);
	snap_reader_close(&r);
	free(buf);
}

static void test_file(void **state)
{
	char dir[] = "/tmp/yun-snap-XXXXXX";
	const uint32_t v = 42;
	struct snap_writer w;
	struct snap_reader r;
	uint32_t v2 = 0;
	struct stat st;
	int dirfd;

	assert_non_null(mkdtemp(dir));
	dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(dirfd >= 0);
	snap_writer_init(&w);
	snap_put(&w, "v", &v, sizeof(v));
	assert_int_equal(snap_writer_finish(&w, dirfd, "state"), 0);
	assert_null(w.buf);
	assert_int_equal(fstatat(dirfd, "state", &st, 0), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(snap_reader_open(&r, dirfd, "state", "state"), 0);
	assert_int_equal(snap_get(&r, "v", &v2, sizeof(v2)), 0);
	assert_int_equal(v2, 42);
	snap_reader_close(&r);
	assert_int_equal(snap_reader_open(&r, dirfd, "missing", "missing"), -ENOENT);
	unlinkat(dirfd, "state", 0);
	close(dirfd);
	rmdir(dir);
}

static void test_bad_files(void **state)
{
	const uint64_t a = 7;
	struct snap_writer w;
	struct snap_reader r;
	uint8_t *good, *bad;
	size_t len;
	char long_name[SNAPSHOT_NAME_MAX + 1];

	snap_writer_init(&w);
	snap_put(&w, "a", &a, sizeof(a));
	assert_int_equal(reparse(&w, &r, &good, &len), 0);
	snap_reader_close(&r);
	bad = malloc(len);
	assert_non_null(bad);

	/* Not a snapshot at all; an empty file. */
	memcpy(bad, good, len);
	bad[0] = 'X';
	assert_int_equal(snap_reader_parse(&r, bad, len, "t"), -EINVAL);
	assert_int_equal(snap_reader_parse(&r, bad, 0, "t"), -EINVAL);
	/* Another format version. */
	memcpy(bad, good, len);
	bad[8] = SNAPSHOT_VERSION + 1;
	assert_int_equal(snap_reader_parse(&r, bad, len, "t"), -EPROTO);
	/* Cut inside the section header, and inside its data. */
	memcpy(bad, good, len);
	assert_int_equal(snap_reader_parse(&r, bad, 16 + 10, "t"), -EINVAL);
	assert_int_equal(snap_reader_parse(&r, bad, len - 4, "t"), -EINVAL);
	/* A length past the end of the file, a huge one, a name without its terminator. */
	memcpy(bad, good, len);
	bad[16 + SNAPSHOT_NAME_MAX] = 9;
	assert_int_equal(snap_reader_parse(&r, bad, len, "t"), -EINVAL);
	memcpy(bad, good, len);
	memset(bad + 16 + SNAPSHOT_NAME_MAX, 0xff, 8);
	assert_int_equal(snap_reader_parse(&r, bad, len, "t"), -EINVAL);
	memcpy(bad, good, len);
	memset(bad + 16, 'n', SNAPSHOT_NAME_MAX);
	assert_int_equal(snap_reader_parse(&r, bad, len, "t"), -EINVAL);
	/* The good one still parses: the reader never wrote into it. */
	assert_int_equal(snap_reader_parse(&r, good, len, "t"), 0);
	snap_reader_close(&r);

	/* A name too long for the format is the writer's bug, reported at the end. */
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = 0;
	snap_writer_init(&w);
	snap_put(&w, long_name, &a, sizeof(a));
	assert_int_equal(w.err, -ENAMETOOLONG);
	snap_writer_free(&w);
	free(good);
	free(bad);
}

/* The UART: registers, divisor, FIFO contents and interrupt line survive into a new one. */
static void test_serial_state(void **state)
{
	struct io_bus pio1, pio2;
	struct fake_irq irq1, irq2;
	struct serial *s1, *s2;
	struct snap_writer w;
	struct snap_reader r;
	uint8_t *buf, v;
	size_t len;
	const unsigned base = PORT_COM1, gsi = PORT_COM1_IRQ;

	io_bus_init(&pio1, "pio");
	io_bus_init(&pio2, "pio");
	fake_irq_init(&irq1);
	fake_irq_init(&irq2);
	assert_int_equal(serial_create(&pio1, base, gsi, &irq1.host, -1, &s1), 0);
	assert_int_equal(serial_create(&pio2, base, gsi, &irq2.host, -1, &s2), 0);
	/* 8N1 at 115200 (divisor 1), FIFOs on, OUT2, receive interrupts; two bytes waiting. */
	v = 0x80;
	io_bus_access(&pio1, base + 3, &v, 1, true);
	v = 1;
	io_bus_access(&pio1, base + 0, &v, 1, true);
	v = 0x03;
	io_bus_access(&pio1, base + 3, &v, 1, true);
	v = 0x01;
	io_bus_access(&pio1, base + 2, &v, 1, true);
	v = 0x08;
	io_bus_access(&pio1, base + 4, &v, 1, true);
	v = 0x01;
	io_bus_access(&pio1, base + 1, &v, 1, true);
	assert_int_equal(serial_input(s1, (const uint8_t *)"hi", 2), 2);
	assert_int_equal(irq1.level[gsi], 1);

	snap_writer_init(&w);
	serial_save(s1, &w);
	assert_int_equal(reparse(&w, &r, &buf, &len), 0);
	assert_int_equal(serial_load(s2, &r), 0);
	snap_reader_close(&r);
	free(buf);

	/* The new UART raised its line at once, and reads back the same. */
	assert_int_equal(irq2.level[gsi], 1);
	io_bus_access(&pio2, base + 3, &v, 1, false);
	assert_int_equal(v, 0x03);
	io_bus_access(&pio2, base + 0, &v, 1, false);
	assert_int_equal(v, 'h');
	io_bus_access(&pio2, base + 0, &v, 1, false);
	assert_int_equal(v, 'i');
	io_bus_access(&pio2, base + 5, &v, 1, false);
	assert_int_equal(v & 1, 0);
	assert_int_equal(irq2.level[gsi], 0);
	serial_destroy(s1);
	serial_destroy(s2);
	io_bus_destroy(&pio1);
	io_bus_destroy(&pio2);
}

/* A section of the wrong size, or values out of range, are refused and change nothing. */
static void test_serial_bad_state(void **state)
{
	struct io_bus pio;
	struct fake_irq irq;
	struct serial *s;
	struct snap_writer w;
	struct snap_reader r;
	uint8_t junk[64], *buf;
	size_t len;

	io_bus_init(&pio, "pio");
	fake_irq_init(&irq);
	assert_int_equal(serial_create(&pio, PORT_COM1, PORT_COM1_IRQ, &irq.host, -1, &s), 0);
	memset(junk, 0xff, sizeof(junk));
	snap_writer_init(&w);
	snap_put(&w, "serial", junk, sizeof(junk));
	assert_int_equal(reparse(&w, &r, &buf, &len), 0);
	assert_int_equal(serial_load(s, &r), -EPROTO);
	snap_reader_close(&r);
	free(buf);
	/* The right size, but a FIFO index past the FIFO. */
	snap_writer_init(&w);
	serial_save(s, &w);
	assert_int_equal(reparse(&w, &r, &buf, &len), 0);
	memset((uint8_t *)r.sections[0].data + r.sections[0].len - 8, 0xff, 8);
	assert_int_equal(serial_load(s, &r), -EINVAL);
	snap_reader_close(&r);
	free(buf);
	assert_int_equal(irq.calls[PORT_COM1_IRQ], 0);
	serial_destroy(s);
	io_bus_destroy(&pio);
}

/* The i8042: a queued Ctrl-Alt-Del is still there to read after a restore. */
static void test_i8042_state(void **state)
{
	struct io_bus pio1, pio2;
	struct fake_irq irq1, irq2;
	struct i8042 *k1, *k2;
	struct snap_writer w;
	struct snap_reader r;
	uint8_t *buf, v1, v2;
	size_t len;

	io_bus_init(&pio1, "pio");
	io_bus_init(&pio2, "pio");
	fake_irq_init(&irq1);
	fake_irq_init(&irq2);
	assert_int_equal(i8042_create(&pio1, &irq1.host, NULL, NULL, &k1), 0);
	assert_int_equal(i8042_create(&pio2, &irq2.host, NULL, NULL, &k2), 0);
	assert_int_equal(i8042_send_ctrl_alt_del(k1), 0);
	snap_writer_init(&w);
	i8042_save(k1, &w);
	assert_int_equal(reparse(&w, &r, &buf, &len), 0);
	assert_int_equal(i8042_load(k2, &r), 0);
	snap_reader_close(&r);
	free(buf);
	for (int i = 0; i < 6; i++) {
		io_bus_access(&pio1, 0x64, &v1, 1, false);
		io_bus_access(&pio2, 0x64, &v2, 1, false);
		assert_int_equal(v1, v2);
		io_bus_access(&pio1, 0x60, &v1, 1, false);
		io_bus_access(&pio2, 0x60, &v2, 1, false);
		assert_int_equal(v1, v2);
		assert_int_equal(irq1.level[1], irq2.level[1]);
	}
	i8042_destroy(k1);
	i8042_destroy(k2);
	io_bus_destroy(&pio1);
	io_bus_destroy(&pio2);
}

static void nop_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	memset(data, 0xab, size);
}

static void nop_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
}

static const struct io_ops bar_ops = {.read = nop_read, .write = nop_write};

struct pci_fixture {
	struct io_bus pio, mmio;
	struct pci_bus *bus;
	struct pci_dev dev;
};

static void pci_fixture_init(struct pci_fixture *f)
{
	static const uint8_t cls[3] = {0xff, 0, 0};

	io_bus_init(&f->pio, "pio");
	io_bus_init(&f->mmio, "mmio");
	assert_int_equal(pci_bus_create(&f->pio, &f->mmio, 1ULL << 36, 1ULL << 30, &f->bus), 0);
	pci_dev_init(&f->dev, "dev", 0x1234, 0x5678, cls, 1, 0x1234, 1);
	assert_int_equal(pci_dev_add_bar(&f->dev, 0, 0x1000, false, &bar_ops, NULL), 0);
	assert_int_equal(pci_bus_add(f->bus, &f->dev), 0);
	pci_bus_assign_bars(f->bus);
}

static void pci_fixture_destroy(struct pci_fixture *f)
{
	pci_bus_remove(f->bus, &f->dev);
	pci_bus_destroy(f->bus);
	io_bus_destroy(&f->mmio);
	io_bus_destroy(&f->pio);
}

/* A BAR the guest moved is mapped where the guest put it; IDs are the device's, not the file's. */
static void test_pci_state(void **state)
{
	struct pci_fixture a, b;
	struct snap_writer w;
	struct snap_reader r;
	const unsigned devfn = 1 << 3;
	const uint32_t moved = 0xd0000000;
	uint8_t *buf;
	size_t len;
	uint32_t v;

	pci_fixture_init(&a);
	pci_fixture_init(&b);
	pci_config_write(a.bus, devfn, PCI_BAR0, 4, moved);
	pci_config_write(a.bus, devfn, PCI_INTERRUPT_LINE, 1, 11);
	snap_writer_init(&w);
	assert_int_equal(pci_bus_save(a.bus, &w), 0);
	assert_int_equal(reparse(&w, &r, &buf, &len), 0);
	/* A forged vendor ID in the file does not become the device's. */
	((uint8_t *)snap_find(&r, "pci")->data)[8 + 256 * 1 + 0] = 0x99;
	assert_int_equal(pci_bus_load(b.bus, &r), 0);
	snap_reader_close(&r);
	free(buf);
	assert_int_equal(pci_config_read(b.bus, devfn, PCI_BAR0, 4) & ~0xfu, moved);
	assert_int_equal(pci_config_read(b.bus, devfn, PCI_INTERRUPT_LINE, 1), 11);
	assert_int_equal(pci_config_read(b.bus, devfn, PCI_VENDOR_ID, 2), 0x1234);
	v = 0;
	assert_true(io_bus_access(&b.mmio, moved + 8, &v, 4, false));
	assert_int_equal(v, 0xabababab);
	pci_fixture_destroy(&a);
	pci_fixture_destroy(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),	     cmocka_unit_test(test_file),
	    cmocka_unit_test(test_bad_files),	     cmocka_unit_test(test_serial_state),
	    cmocka_unit_test(test_serial_bad_state), cmocka_unit_test(test_i8042_state),
	    cmocka_unit_test(test_pci_state),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
