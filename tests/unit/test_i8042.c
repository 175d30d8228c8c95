// SPDX-License-Identifier: MIT
/* The i8042 PS/2 controller at ports 0x60/0x64, driven through port accesses on an I/O bus. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "devices/bus.h"
#include "devices/i8042.h"
#include "fake_irq.h"
#include "vmm/layout.h"

#define DATA	PORT_I8042_DATA
#define CMD	PORT_I8042_CMD
#define KBD_IRQ 1

#define STS_OBF	   0x01
#define STS_SYSFLG 0x04
#define STS_CMD	   0x08

/* The command byte after power-on: keyboard interrupt, system flag, translation. */
#define CB_DEFAULT 0x45

struct fixture {
	struct io_bus pio;
	struct fake_irq irq;
	struct i8042 *k;
	unsigned resets;
};

static void on_reset(void *ctx)
{
	struct fixture *f = ctx;

	f->resets++;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(io_bus_init(&f->pio, "pio"), 0);
	fake_irq_init(&f->irq);
	assert_int_equal(i8042_create(&f->pio, &f->irq.host, on_reset, f, &f->k), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	i8042_destroy(f->k);
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

/* Issue a controller command and read its one-byte reply, as Linux's i8042_command() does. */
static uint8_t command_reply(struct fixture *f, uint8_t cmd)
{
	outb(f, CMD, cmd);
	assert_int_equal(inb(f, CMD) & STS_OBF, STS_OBF);
	return inb(f, DATA);
}

static void assert_empty(struct fixture *f)
{
	assert_int_equal(inb(f, CMD) & STS_OBF, 0);
}

static void test_status_after_reset(void **state)
{
	struct fixture *f = *state;

	/* POST passed, output buffer empty, nothing written yet. */
	assert_int_equal(inb(f, CMD), STS_SYSFLG);
	assert_int_equal(f->irq.level[KBD_IRQ], 0);
	/* Only the two ports. */
	uint8_t v;
	assert_false(io_bus_access(&f->pio, 0x61, &v, 1, false));
	assert_false(io_bus_access(&f->pio, 0x63, &v, 1, false));
	assert_false(io_bus_access(&f->pio, 0x65, &v, 1, false));
}

static void test_pulse_reset(void **state)
{
	struct fixture *f = *state;

	outb(f, CMD, 0xfe);
	assert_int_equal(f->resets, 1);
	/* Any pulse command with bit 0 (the reset line) low resets; 0xff pulses nothing. */
	outb(f, CMD, 0xf0);
	assert_int_equal(f->resets, 2);
	outb(f, CMD, 0xff);
	assert_int_equal(f->resets, 2);
	assert_empty(f);
}

static void test_output_port_reset(void **state)
{
	struct fixture *f = *state;

	/* Writing the output port with bit 0 set leaves the CPU running... */
	outb(f, CMD, 0xd1);
	outb(f, DATA, 0xdf);
	assert_int_equal(f->resets, 0);
	/* ...with it clear, resets it. */
	outb(f, CMD, 0xd1);
	outb(f, DATA, 0xde);
	assert_int_equal(f->resets, 1);
	/* The output port reads back A20 on, reset line high. */
	assert_int_equal(command_reply(f, 0xd0) & 0x03, 0x03);
}

static void test_read_empty_data(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < 4; i++) {
		(void)inb(f, DATA);
		assert_empty(f);
	}
	/* Wider accesses to the one-byte ports are not decoded. */
	uint32_t v = 0;
	assert_false(io_bus_access(&f->pio, DATA, &v, 4, false));
	assert_int_equal(v, 0xffffffffu);
	assert_int_equal(f->irq.level[KBD_IRQ], 0);
	assert_int_equal(f->resets, 0);
}

static void test_command_byte(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(command_reply(f, 0x20), CB_DEFAULT);
	assert_empty(f);
	/* 0x60 takes the next data byte as the command byte. */
	outb(f, CMD, 0x60);
	assert_int_equal(inb(f, CMD) & STS_CMD, STS_CMD);
	outb(f, DATA, 0x65);
	assert_int_equal(inb(f, CMD) & STS_CMD, 0);
	assert_empty(f); /* the byte went to the controller, not to the keyboard */
	assert_int_equal(command_reply(f, 0x20), 0x65);
	/* The data byte after it goes to the keyboard again (ACK). */
	outb(f, DATA, 0xf4);
	assert_int_equal(inb(f, DATA), 0xfa);
}

static void test_self_tests(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(command_reply(f, 0xaa), 0x55); /* controller self-test passed */
	assert_int_equal(command_reply(f, 0xab), 0x00); /* keyboard interface OK */
	assert_empty(f);
	assert_int_equal(f->resets, 0);
}

static void test_port_enable_disable(void **state)
{
	struct fixture *f = *state;

	outb(f, CMD, 0xa7); /* disable aux: command byte bit 5 */
	assert_empty(f);
	assert_int_equal(command_reply(f, 0x20), CB_DEFAULT | 0x20);
	outb(f, CMD, 0xa8);
	assert_int_equal(command_reply(f, 0x20), CB_DEFAULT);
	outb(f, CMD, 0xad); /* disable keyboard: bit 4 */
	assert_empty(f);
	assert_int_equal(command_reply(f, 0x20), CB_DEFAULT | 0x10);
	/* The host cannot type while the guest has the keyboard off. */
	assert_int_equal(i8042_send_ctrl_alt_del(f->k), -EAGAIN);
	outb(f, CMD, 0xae);
	assert_int_equal(command_reply(f, 0x20), CB_DEFAULT);
	assert_empty(f);
}

static void test_keyboard_commands(void **state)
{
	struct fixture *f = *state;

	outb(f, DATA, 0xff); /* reset: ACK, then BAT passed */
	assert_int_equal(inb(f, DATA), 0xfa);
	assert_int_equal(inb(f, CMD) & STS_OBF, STS_OBF);
	assert_int_equal(inb(f, DATA), 0xaa);
	assert_empty(f);
	outb(f, DATA, 0xf2); /* identify: ACK, MF2 */
	assert_int_equal(inb(f, DATA), 0xfa);
	assert_int_equal(inb(f, DATA), 0xab);
	assert_int_equal(inb(f, DATA), 0x83);
	assert_empty(f);
	outb(f, DATA, 0xee);
	assert_int_equal(inb(f, DATA), 0xee);
	assert_empty(f);
}

static void test_irq_follows_output_buffer(void **state)
{
	struct fixture *f = *state;

	outb(f, CMD, 0x20);
	assert_int_equal(f->irq.level[KBD_IRQ], 1);
	assert_int_equal(inb(f, DATA), CB_DEFAULT);
	assert_int_equal(f->irq.level[KBD_IRQ], 0);
	/* With the keyboard interrupt off in the command byte, replies are polled. */
	outb(f, CMD, 0x60);
	outb(f, DATA, CB_DEFAULT & ~0x01);
	outb(f, CMD, 0x20);
	assert_int_equal(inb(f, CMD) & STS_OBF, STS_OBF);
	assert_int_equal(f->irq.level[KBD_IRQ], 0);
	/* Turning it back on with a byte waiting raises the line. */
	outb(f, CMD, 0x60);
	outb(f, DATA, CB_DEFAULT);
	assert_int_equal(f->irq.level[KBD_IRQ], 1);
	assert_int_equal(inb(f, DATA), CB_DEFAULT & ~0x01);
	assert_int_equal(f->irq.level[KBD_IRQ], 0);
	for (unsigned g = 0; g < FAKE_IRQ_GSIS; g++) {
		if (g != KBD_IRQ)
			assert_int_equal(f->irq.calls[g], 0);
	}
}

/*
 * IRQ 1 is edge-triggered and Linux's i8042_interrupt() reads one byte per interrupt: every byte
 * of a multi-byte reply (FA AA after a keyboard reset, the bytes of i8042_send_ctrl_alt_del())
 * needs an edge of its own, so the line must drop when a byte is read and rise for the next.
 */
static void test_irq_edge_per_byte(void **state)
{
	struct fixture *f = *state;
	unsigned calls;

	outb(f, DATA, 0xff); /* reset: FA, AA */
	assert_int_equal(f->irq.level[KBD_IRQ], 1);
	calls = f->irq.calls[KBD_IRQ];
	assert_int_equal(inb(f, DATA), 0xfa);
	/* The line went low and high again: two more set_level calls, ending high. */
	assert_int_equal(f->irq.calls[KBD_IRQ], calls + 2);
	assert_int_equal(f->irq.level[KBD_IRQ], 1);
	assert_int_equal(inb(f, DATA), 0xaa);
	assert_int_equal(f->irq.level[KBD_IRQ], 0);
}

static void test_ctrl_alt_del(void **state)
{
	static const uint8_t seq[] = {0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d};
	struct fixture *f = *state;

	assert_int_equal(i8042_send_ctrl_alt_del(f->k), 0);
	assert_int_equal(f->irq.level[KBD_IRQ], 1);
	for (unsigned i = 0; i < sizeof(seq); i++)
		assert_int_equal(inb(f, DATA), seq[i]);
	assert_empty(f);
	assert_int_equal(f->irq.level[KBD_IRQ], 0);
	/* The queue holds 32 bytes: four sequences fit, a fifth does not. */
	for (int i = 0; i < 4; i++)
		assert_int_equal(i8042_send_ctrl_alt_del(f->k), 0);
	assert_int_equal(i8042_send_ctrl_alt_del(f->k), -EBUSY);
	for (int i = 0; i < 32; i++)
		assert_int_equal(inb(f, DATA), seq[i % sizeof(seq)]);
	assert_empty(f);
}

static void test_unknown_commands(void **state)
{
	/* Commands i8042.c does not implement, some of them undefined on any controller. */
	static const uint8_t cmds[] = {0x00, 0x1f, 0x40, 0x5f, 0x90, 0xa0, 0xa1, 0xc0,
				       0xc1, 0xca, 0xe0, 0xe9, 0xf1, 0xfd, 0xff};
	struct fixture *f = *state;
	int n;

	for (unsigned i = 0; i < sizeof(cmds); i++) {
		outb(f, CMD, cmds[i]);
		assert_int_equal(inb(f, CMD) & STS_CMD, STS_CMD);
	}
	assert_int_equal(f->resets, 0);
	/* Whatever they replied, the output buffer drains. */
	for (n = 0; n < 64 && (inb(f, CMD) & STS_OBF); n++)
		(void)inb(f, DATA);
	assert_true(n < 64);
	/* The controller still works afterwards. */
	assert_int_equal(command_reply(f, 0xaa), 0x55);
	assert_int_equal(command_reply(f, 0x20), CB_DEFAULT);
	/* Aux commands with no mouse fitted swallow their data byte. */
	outb(f, CMD, 0xd4);
	outb(f, DATA, 0xff);
	outb(f, CMD, 0xd3);
	outb(f, DATA, 0x12);
	assert_empty(f);
	/* 0xd2 echoes its data byte as if the keyboard had sent it. */
	outb(f, CMD, 0xd2);
	outb(f, DATA, 0x1c);
	assert_int_equal(inb(f, DATA), 0x1c);
	assert_empty(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_status_after_reset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pulse_reset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_output_port_reset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_empty_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_command_byte, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_self_tests, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_port_enable_disable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_keyboard_commands, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_irq_follows_output_buffer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_irq_edge_per_byte, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ctrl_alt_del, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_commands, setup, teardown),
	};

	return cmocka_run_group_tests_name("i8042", tests, NULL, NULL);
}
