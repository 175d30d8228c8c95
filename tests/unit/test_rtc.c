// SPDX-License-Identifier: MIT
/* The CMOS RTC at ports 0x70/0x71, driven through port accesses on an I/O bus. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "devices/bus.h"
#include "devices/rtc.h"
#include "vmm/layout.h"

#define INDEX PORT_RTC
#define DATA  (PORT_RTC + 1)

#define SECONDS 0x00
#define MINUTES 0x02
#define HOURS	0x04
#define WEEKDAY 0x06
#define DAY	0x07
#define MONTH	0x08
#define YEAR	0x09
#define REG_A	0x0a
#define REG_B	0x0b
#define REG_C	0x0c
#define REG_D	0x0d
#define CENTURY 0x32

#define B_24H	 0x02
#define B_BINARY 0x04

/* 2024-02-29 13:45:56 UTC, a Thursday. */
#define T_LEAP_DAY 1709214356
/* 2099-12-31 00:07:09 UTC, a Thursday. */
#define T_MIDNIGHT 4102358829LL
/* 2000-01-02 23:59:59 UTC, a Sunday. */
#define T_SUNDAY 946857599

static int64_t fake_time;

static int64_t fake_now(void)
{
	return fake_time;
}

struct fixture {
	struct io_bus pio;
	struct rtc *r;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(io_bus_init(&f->pio, "pio"), 0);
	assert_int_equal(rtc_create(&f->pio, &f->r), 0);
	fake_time = T_LEAP_DAY;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	rtc_destroy(f->r);
	io_bus_destroy(&f->pio);
	free(f);
	return 0;
}

static void outb(struct fixture *f, uint16_t port, uint8_t v)
{
	assert_true(io_bus_access(&f->pio, port, &v, 1, true));
}

static uint8_t inb(struct fixture *f, uint16_t port)
{
	uint8_t v = 0;

	assert_true(io_bus_access(&f->pio, port, &v, 1, false));
	return v;
}

static uint8_t cmos_read(struct fixture *f, uint8_t idx)
{
	outb(f, INDEX, idx);
	return inb(f, DATA);
}

static void cmos_write(struct fixture *f, uint8_t idx, uint8_t v)
{
	outb(f, INDEX, idx);
	outb(f, DATA, v);
}

static bool valid_bcd(uint8_t v, unsigned max)
{
	return (v & 0x0f) <= 9 && (v >> 4) <= 9 && (unsigned)((v >> 4) * 10 + (v & 0x0f)) <= max;
}

static void test_host_clock_bcd(void **state)
{
	struct fixture *f = *state;
	uint8_t sec, min, hour, day, mon, wday;

	/* The default clock is the host's, in BCD and 24-hour form. */
	sec = cmos_read(f, SECONDS);
	min = cmos_read(f, MINUTES);
	hour = cmos_read(f, HOURS);
	day = cmos_read(f, DAY);
	mon = cmos_read(f, MONTH);
	wday = cmos_read(f, WEEKDAY);
	assert_true(valid_bcd(sec, 59));
	assert_true(valid_bcd(min, 59));
	assert_true(valid_bcd(hour, 23));
	assert_true(valid_bcd(day, 31) && day != 0);
	assert_true(valid_bcd(mon, 12) && mon != 0);
	assert_true(wday >= 1 && wday <= 7);
	assert_true(valid_bcd(cmos_read(f, YEAR), 99));
	assert_int_equal(cmos_read(f, CENTURY), 0x20);
	assert_int_equal(cmos_read(f, REG_B) & (B_24H | B_BINARY), B_24H);
}

static void test_fixed_clock_bcd(void **state)
{
	struct fixture *f = *state;

	rtc_set_clock(f->r, fake_now);
	assert_int_equal(cmos_read(f, SECONDS), 0x56);
	assert_int_equal(cmos_read(f, MINUTES), 0x45);
	assert_int_equal(cmos_read(f, HOURS), 0x13);
	assert_int_equal(cmos_read(f, WEEKDAY), 5); /* Sunday is 1 */
	assert_int_equal(cmos_read(f, DAY), 0x29);
	assert_int_equal(cmos_read(f, MONTH), 0x02);
	assert_int_equal(cmos_read(f, YEAR), 0x24);
	assert_int_equal(cmos_read(f, CENTURY), 0x20);
	fake_time = T_SUNDAY;
	assert_int_equal(cmos_read(f, WEEKDAY), 1);
	assert_int_equal(cmos_read(f, HOURS), 0x23);
	assert_int_equal(cmos_read(f, YEAR), 0x00);
	/* The clock follows time. */
	fake_time++;
	assert_int_equal(cmos_read(f, SECONDS), 0x00);
	assert_int_equal(cmos_read(f, HOURS), 0x00);
	assert_int_equal(cmos_read(f, DAY), 0x03);
	/* Back to the host's clock. */
	rtc_set_clock(f->r, NULL);
	assert_int_equal(cmos_read(f, CENTURY), 0x20);
}

static void test_binary_mode(void **state)
{
	struct fixture *f = *state;

	rtc_set_clock(f->r, fake_now);
	cmos_write(f, REG_B, B_24H | B_BINARY);
	assert_int_equal(cmos_read(f, REG_B), B_24H | B_BINARY);
	assert_int_equal(cmos_read(f, SECONDS), 56);
	assert_int_equal(cmos_read(f, MINUTES), 45);
	assert_int_equal(cmos_read(f, HOURS), 13);
	assert_int_equal(cmos_read(f, DAY), 29);
	assert_int_equal(cmos_read(f, MONTH), 2);
	assert_int_equal(cmos_read(f, YEAR), 24);
	assert_int_equal(cmos_read(f, CENTURY), 20);
	/* And back to BCD. */
	cmos_write(f, REG_B, B_24H);
	assert_int_equal(cmos_read(f, SECONDS), 0x56);
}

static void test_12_hour_mode(void **state)
{
	struct fixture *f = *state;

	rtc_set_clock(f->r, fake_now);
	cmos_write(f, REG_B, 0);		     /* BCD, 12-hour */
	assert_int_equal(cmos_read(f, HOURS), 0x81); /* 1 PM */
	cmos_write(f, REG_B, B_BINARY);
	assert_int_equal(cmos_read(f, HOURS), 0x80 | 1);
	fake_time = T_MIDNIGHT;
	assert_int_equal(cmos_read(f, HOURS), 12); /* 12 AM */
	cmos_write(f, REG_B, 0);
	assert_int_equal(cmos_read(f, HOURS), 0x12);
	assert_int_equal(cmos_read(f, MINUTES), 0x07);
	assert_int_equal(cmos_read(f, SECONDS), 0x09);
	assert_int_equal(cmos_read(f, YEAR), 0x99);
	assert_int_equal(cmos_read(f, CENTURY), 0x20);
	fake_time = T_SUNDAY; /* 23:59:59 is 11 PM */
	assert_int_equal(cmos_read(f, HOURS), 0x91);
}

static void test_time_writes_dropped(void **state)
{
	struct fixture *f = *state;

	/* The guest may not set the host's clock. */
	rtc_set_clock(f->r, fake_now);
	cmos_write(f, SECONDS, 0x11);
	cmos_write(f, HOURS, 0x02);
	cmos_write(f, YEAR, 0x70);
	cmos_write(f, CENTURY, 0x19);
	assert_int_equal(cmos_read(f, SECONDS), 0x56);
	assert_int_equal(cmos_read(f, HOURS), 0x13);
	assert_int_equal(cmos_read(f, YEAR), 0x24);
	assert_int_equal(cmos_read(f, CENTURY), 0x20);
}

static void test_register_a(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(cmos_read(f, REG_A), 0x26);
	/* UIP (bit 7) is never set: the clock is read atomically. */
	for (int i = 0; i < 1000; i++)
		assert_int_equal(cmos_read(f, REG_A) & 0x80, 0);
	/* ...and it is read-only. */
	cmos_write(f, REG_A, 0xa6);
	assert_int_equal(cmos_read(f, REG_A), 0x26);
	cmos_write(f, REG_A, 0x20);
	assert_int_equal(cmos_read(f, REG_A), 0x20);
}

static void test_registers_c_d(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(cmos_read(f, REG_D), 0x80); /* valid RAM and time */
	cmos_write(f, REG_D, 0x00);
	assert_int_equal(cmos_read(f, REG_D) & 0x80, 0x80);
	/* No interrupt flags are ever raised. */
	assert_int_equal(cmos_read(f, REG_C), 0);
	cmos_write(f, REG_C, 0xf0);
	assert_int_equal(cmos_read(f, REG_C), 0);
}

static void test_cmos_ram(void **state)
{
	struct fixture *f = *state;

	cmos_write(f, 0x40, 0xa5);
	cmos_write(f, 0x41, 0x5a);
	cmos_write(f, 0x0e, 0x12); /* diagnostic status */
	cmos_write(f, 0x7f, 0x77);
	assert_int_equal(cmos_read(f, 0x40), 0xa5);
	assert_int_equal(cmos_read(f, 0x41), 0x5a);
	assert_int_equal(cmos_read(f, 0x0e), 0x12);
	assert_int_equal(cmos_read(f, 0x7f), 0x77);
	/* Alarm registers are plain RAM. */
	cmos_write(f, 0x01, 0x30);
	assert_int_equal(cmos_read(f, 0x01), 0x30);
	/* Reading twice does not change the index. */
	outb(f, INDEX, 0x40);
	assert_int_equal(inb(f, DATA), 0xa5);
	assert_int_equal(inb(f, DATA), 0xa5);
}

static void test_nmi_bit_masked(void **state)
{
	struct fixture *f = *state;

	cmos_write(f, 0x40, 0x3c);
	/* Bit 7 of the index disables NMIs; it does not select a register. */
	assert_int_equal(cmos_read(f, 0x80 | 0x40), 0x3c);
	cmos_write(f, 0x80 | 0x41, 0xc3);
	assert_int_equal(cmos_read(f, 0x41), 0xc3);
	assert_int_equal(cmos_read(f, 0x80 | REG_D), 0x80);
	rtc_set_clock(f->r, fake_now);
	assert_int_equal(cmos_read(f, 0x80 | SECONDS), 0x56);
}

static void test_out_of_range(void **state)
{
	struct fixture *f = *state;
	uint8_t v;
	uint16_t w = 0;

	/* Index 0xff is 0x7f with NMIs off: the last RAM byte. */
	cmos_write(f, 0xff, 0x99);
	assert_int_equal(cmos_read(f, 0x7f), 0x99);
	for (unsigned i = 0; i < 256; i++)
		(void)cmos_read(f, (uint8_t)i);
	/* Ports past 0x71 are not the RTC's. */
	assert_false(io_bus_access(&f->pio, PORT_RTC + 2, &v, 1, false));
	assert_false(io_bus_access(&f->pio, PORT_RTC - 1, &v, 1, true));
	/* A word access to both ports does not crash. */
	assert_true(io_bus_access(&f->pio, PORT_RTC, &w, 2, false));
	assert_true(io_bus_access(&f->pio, PORT_RTC, &w, 2, true));
	assert_int_equal(cmos_read(f, REG_D), 0x80);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_host_clock_bcd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fixed_clock_bcd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_binary_mode, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_12_hour_mode, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_time_writes_dropped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_register_a, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_registers_c_d, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cmos_ram, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_nmi_bit_masked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_out_of_range, setup, teardown),
	};

	return cmocka_run_group_tests_name("rtc", tests, NULL, NULL);
}
