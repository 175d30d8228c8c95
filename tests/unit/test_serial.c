// SPDX-License-Identifier: MIT
/* The 16550A UART, driven through port accesses on an I/O bus as a vCPU's exits would. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "devices/bus.h"
#include "devices/serial.h"
#include "fake_irq.h"
#include "vmm/layout.h"

#define BASE PORT_COM1
#define IRQ  PORT_COM1_IRQ

/* Register offsets and bits (PC16550D). */
#define RBR 0
#define THR 0
#define DLL 0
#define IER 1
#define DLM 1
#define IIR 2
#define FCR 2
#define LCR 3
#define MCR 4
#define LSR 5
#define MSR 6
#define SCR 7

#define LSR_DR	 0x01
#define LSR_OE	 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

struct fixture {
	struct io_bus pio;
	struct fake_irq irq;
	struct serial *s;
	int pipe[2]; /* the UART writes to pipe[1]; tests read pipe[0] (non-blocking) */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(io_bus_init(&f->pio, "pio"), 0);
	fake_irq_init(&f->irq);
	assert_int_equal(pipe2(f->pipe, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(serial_create(&f->pio, BASE, IRQ, &f->irq.host, f->pipe[1], &f->s), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	serial_destroy(f->s);
	io_bus_destroy(&f->pio);
	close(f->pipe[0]);
	close(f->pipe[1]);
	free(f);
	return 0;
}

static void outb(struct fixture *f, unsigned reg, uint8_t v)
{
	assert_true(io_bus_access(&f->pio, BASE + reg, &v, 1, true));
}

static uint8_t inb(struct fixture *f, unsigned reg)
{
	uint8_t v = 0;

	assert_true(io_bus_access(&f->pio, BASE + reg, &v, 1, false));
	return v;
}

/* Everything the UART has written to its output so far. */
static ssize_t drain(struct fixture *f, uint8_t *buf, size_t len)
{
	ssize_t n = read(f->pipe[0], buf, len);

	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		return 0;
	}
	return n;
}

static void test_thr_reaches_output(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[16];

	assert_int_equal(inb(f, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
	outb(f, THR, 'h');
	outb(f, THR, 'i');
	outb(f, THR, '\n');
	assert_int_equal(drain(f, buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "hi\n", 3);
	/* The byte leaves at once: THR and the transmitter are empty again. */
	assert_int_equal(inb(f, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
	assert_int_equal(inb(f, LSR) & LSR_DR, 0);
	/* No interrupt was asked for. */
	assert_int_equal(f->irq.level[IRQ], 0);
}

static void test_divisor_latch(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[4];

	outb(f, LCR, 0x83); /* DLAB, 8N1 */
	assert_int_equal(inb(f, LCR), 0x83);
	assert_int_equal(inb(f, DLL), 12); /* 9600 baud, as after a BIOS */
	assert_int_equal(inb(f, DLM), 0);
	outb(f, DLL, 0x01); /* 115200 baud */
	outb(f, DLM, 0x02);
	assert_int_equal(inb(f, DLL), 0x01);
	assert_int_equal(inb(f, DLM), 0x02);
	/* Latch writes are not transmitted. */
	assert_int_equal(drain(f, buf, sizeof(buf)), 0);

	outb(f, LCR, 0x03); /* DLAB clear: RBR/THR and IER again */
	assert_int_equal(inb(f, IER), 0);
	outb(f, IER, 0x05);
	assert_int_equal(inb(f, IER), 0x05);
	assert_int_equal(inb(f, RBR), 0); /* empty receiver, not the latch */
	outb(f, THR, 'z');
	assert_int_equal(drain(f, buf, sizeof(buf)), 1);
	assert_int_equal(buf[0], 'z');

	/* The latch kept its value through the IER and THR writes. */
	outb(f, LCR, 0x83);
	assert_int_equal(inb(f, DLL), 0x01);
	assert_int_equal(inb(f, DLM), 0x02);
	outb(f, LCR, 0x03);
	assert_int_equal(inb(f, IER), 0x05);
}

static void test_fifo_enable_shows_in_iir(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(inb(f, IIR), 0x01); /* no interrupt, no FIFO */
	outb(f, FCR, 0x07);		     /* enable, clear both FIFOs */
	assert_int_equal(inb(f, IIR), 0xc1);
	outb(f, FCR, 0x00);
	assert_int_equal(inb(f, IIR) & 0xc0, 0);
}

static void test_receive_fifo(void **state)
{
	struct fixture *f = *state;
	uint8_t in[20];

	for (unsigned i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)('a' + i);
	outb(f, FCR, 0x07);
	assert_true(serial_wants_input(f->s));
	assert_int_equal(inb(f, LSR) & LSR_DR, 0);
	assert_int_equal(serial_input(f->s, in, sizeof(in)), 16);
	assert_false(serial_wants_input(f->s));
	assert_int_equal(serial_input(f->s, in + 16, 4), 0);
	/* A refused byte is not an overrun: the host keeps it. */
	assert_int_equal(inb(f, LSR) & (LSR_DR | LSR_OE), LSR_DR);
	for (unsigned i = 0; i < 16; i++) {
		assert_int_equal(inb(f, LSR) & LSR_DR, LSR_DR);
		assert_int_equal(inb(f, RBR), in[i]);
	}
	assert_int_equal(inb(f, LSR) & LSR_DR, 0);
	assert_true(serial_wants_input(f->s));
	/* The rest goes in after the guest has made room, still in order. */
	assert_int_equal(serial_input(f->s, in + 16, 4), 4);
	for (unsigned i = 16; i < 20; i++)
		assert_int_equal(inb(f, RBR), in[i]);
	assert_int_equal(inb(f, LSR) & LSR_DR, 0);
	/* No interrupt: IER is zero. */
	assert_int_equal(f->irq.calls[IRQ], 0);
}

static void test_receive_without_fifo(void **state)
{
	struct fixture *f = *state;
	const uint8_t in[3] = {'x', 'y', 'z'};

	/* The 16450 mode holds one character. */
	assert_int_equal(serial_input(f->s, in, sizeof(in)), 1);
	assert_int_equal(inb(f, RBR), 'x');
	assert_int_equal(serial_input(f->s, in + 1, 2), 1);
	assert_int_equal(inb(f, RBR), 'y');
}

static void test_fcr_clears_receive_fifo(void **state)
{
	struct fixture *f = *state;
	const uint8_t in[4] = {1, 2, 3, 4};

	outb(f, FCR, 0x01);
	assert_int_equal(serial_input(f->s, in, sizeof(in)), 4);
	outb(f, FCR, 0x03); /* clear RX */
	assert_int_equal(inb(f, LSR) & LSR_DR, 0);
	assert_int_equal(serial_input(f->s, in, 2), 2);
	assert_int_equal(inb(f, RBR), 1);
	assert_int_equal(inb(f, RBR), 2);
}

static void test_receive_interrupt_gated_by_out2(void **state)
{
	struct fixture *f = *state;
	const uint8_t in[2] = {'k', 'l'};

	outb(f, FCR, 0x01); /* FIFO on, trigger level 1 */
	outb(f, IER, 0x01); /* received data available */
	assert_int_equal(serial_input(f->s, in, 1), 1);
	/* Pending in IIR, but OUT2 is clear so the line stays low. */
	assert_int_equal(inb(f, IIR) & 0x0f, 0x04);
	assert_int_equal(f->irq.level[IRQ], 0);
	outb(f, MCR, 0x08); /* OUT2 */
	assert_int_equal(f->irq.level[IRQ], 1);
	assert_int_equal(inb(f, IIR) & 0x0f, 0x04);
	assert_int_equal(f->irq.level[IRQ], 1); /* reading IIR does not clear RDA */
	assert_int_equal(inb(f, RBR), 'k');
	assert_int_equal(f->irq.level[IRQ], 0);
	assert_int_equal(inb(f, IIR) & 0x0f, 0x01);

	/* With OUT2 already set, input raises the line at once. */
	assert_int_equal(serial_input(f->s, in + 1, 1), 1);
	assert_int_equal(f->irq.level[IRQ], 1);
	/* Clearing OUT2 lowers it; setting it again raises it. */
	outb(f, MCR, 0x00);
	assert_int_equal(f->irq.level[IRQ], 0);
	outb(f, MCR, 0x08);
	assert_int_equal(f->irq.level[IRQ], 1);
	/* Disabling the interrupt in IER lowers it too. */
	outb(f, IER, 0x00);
	assert_int_equal(f->irq.level[IRQ], 0);
	outb(f, IER, 0x01);
	assert_int_equal(f->irq.level[IRQ], 1);
	assert_int_equal(inb(f, RBR), 'l');
	assert_int_equal(f->irq.level[IRQ], 0);
	/* Only IRQ 4 was ever driven. */
	for (unsigned g = 0; g < FAKE_IRQ_GSIS; g++) {
		if (g != IRQ)
			assert_int_equal(f->irq.calls[g], 0);
	}
	assert_int_equal(f->irq.bad_gsi, 0);
}

static void test_thre_interrupt(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[4];

	outb(f, MCR, 0x0b); /* DTR, RTS, OUT2 */
	assert_int_equal(f->irq.level[IRQ], 0);
	/* Enabling THRI with the holding register empty raises the interrupt at once. */
	outb(f, IER, 0x02);
	assert_int_equal(f->irq.level[IRQ], 1);
	/* Reading IIR with THRE as the source clears it. */
	assert_int_equal(inb(f, IIR), 0x02);
	assert_int_equal(f->irq.level[IRQ], 0);
	assert_int_equal(inb(f, IIR), 0x01);

	/* Each transmitted byte empties THR again and raises THRE. */
	outb(f, THR, '!');
	assert_int_equal(f->irq.level[IRQ], 1);
	assert_int_equal(inb(f, IIR) & 0x0f, 0x02);
	assert_int_equal(f->irq.level[IRQ], 0);
	assert_int_equal(drain(f, buf, sizeof(buf)), 1);

	/* Re-enabling THRI (0→1) raises it again, as Linux's 8250 driver expects. */
	outb(f, IER, 0x00);
	outb(f, IER, 0x02);
	assert_int_equal(f->irq.level[IRQ], 1);
	outb(f, IER, 0x00);
	assert_int_equal(f->irq.level[IRQ], 0);
}

static void test_rda_has_priority_over_thre(void **state)
{
	struct fixture *f = *state;
	const uint8_t c = 'q';

	outb(f, FCR, 0x01);
	outb(f, MCR, 0x08);
	outb(f, IER, 0x03);
	assert_int_equal(serial_input(f->s, &c, 1), 1);
	assert_int_equal(inb(f, IIR) & 0x0f, 0x04);
	assert_int_equal(inb(f, RBR), 'q');
	/* THRE is still pending: reading IIR now reports and clears it. */
	assert_int_equal(f->irq.level[IRQ], 1);
	assert_int_equal(inb(f, IIR) & 0x0f, 0x02);
	assert_int_equal(f->irq.level[IRQ], 0);
}

static void test_loopback(void **state)
{
	struct fixture *f = *state;
	uint8_t buf[4];
	const uint8_t c = 'n';

	outb(f, FCR, 0x01);
	outb(f, MCR, 0x10); /* loopback */
	outb(f, THR, 'L');
	outb(f, THR, 'B');
	/* Nothing reached the output... */
	assert_int_equal(drain(f, buf, sizeof(buf)), 0);
	/* ...it came back to the receiver instead. */
	assert_int_equal(inb(f, LSR) & (LSR_DR | LSR_THRE), LSR_DR | LSR_THRE);
	assert_int_equal(inb(f, RBR), 'L');
	assert_int_equal(inb(f, RBR), 'B');
	assert_int_equal(inb(f, LSR) & LSR_DR, 0);
	/* In loopback the receiver hears only the transmitter. */
	assert_false(serial_wants_input(f->s));
	assert_int_equal(serial_input(f->s, &c, 1), 0);
	/* The modem inputs follow the outputs: CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2. */
	outb(f, MCR, 0x13); /* loop, RTS, DTR */
	assert_int_equal(inb(f, MSR) & 0xf0, 0x30);
	outb(f, MCR, 0x1c); /* loop, OUT1, OUT2 */
	assert_int_equal(inb(f, MSR) & 0xf0, 0xc0);
	/* Out of loopback, output flows again and the line looks ready. */
	outb(f, MCR, 0x03);
	assert_int_equal(inb(f, MSR) & 0xf0, 0xb0);
	outb(f, THR, 'o');
	assert_int_equal(drain(f, buf, sizeof(buf)), 1);
	assert_int_equal(buf[0], 'o');
	assert_int_equal(inb(f, LSR) & LSR_DR, 0);
}

static void test_loopback_overrun(void **state)
{
	struct fixture *f = *state;

	/* Without the FIFO the receiver holds one byte; a second one is an overrun. */
	outb(f, MCR, 0x10);
	outb(f, THR, 1);
	assert_int_equal(inb(f, LSR) & (LSR_DR | LSR_OE), LSR_DR);
	outb(f, THR, 2);
	assert_int_equal(inb(f, LSR) & (LSR_DR | LSR_OE), LSR_DR | LSR_OE);
	/* OE clears when LSR is read. */
	assert_int_equal(inb(f, LSR) & (LSR_DR | LSR_OE), LSR_DR);
	inb(f, RBR);
	assert_int_equal(inb(f, LSR) & LSR_DR, 0);
}

static void test_scratch(void **state)
{
	struct fixture *f = *state;

	outb(f, SCR, 0x5a);
	assert_int_equal(inb(f, SCR), 0x5a);
	outb(f, SCR, 0xa5);
	assert_int_equal(inb(f, SCR), 0xa5);
	/* LSR and MSR are read-only. */
	outb(f, LSR, 0x00);
	assert_int_equal(inb(f, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
	assert_int_equal(inb(f, SCR), 0xa5);
}

static void test_bus_range(void **state)
{
	struct fixture *f = *state;
	uint8_t v = 0;

	/* Eight ports and no more. */
	assert_true(io_bus_access(&f->pio, BASE + 7, &v, 1, false));
	assert_false(io_bus_access(&f->pio, BASE + 8, &v, 1, false));
	assert_int_equal(v, 0xff);
	assert_false(io_bus_access(&f->pio, BASE - 1, &v, 1, false));
	/* A second UART on the same ports is refused. */
	struct serial *s2;
	assert_int_equal(serial_create(&f->pio, BASE, IRQ, &f->irq.host, -1, &s2), -EEXIST);
}

static void test_discarded_output(void **state)
{
	struct io_bus pio;
	struct fake_irq irq;
	struct serial *s;
	uint8_t v = 'd';

	(void)state;
	assert_int_equal(io_bus_init(&pio, "pio"), 0);
	fake_irq_init(&irq);
	assert_int_equal(serial_create(&pio, 0x2f8, 3, &irq.host, -1, &s), 0);
	assert_true(io_bus_access(&pio, 0x2f8, &v, 1, true));
	assert_true(io_bus_access(&pio, 0x2f8 + LSR, &v, 1, false));
	assert_int_equal(v & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
	serial_destroy(s);
	io_bus_destroy(&pio);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_thr_reaches_output, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_divisor_latch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fifo_enable_shows_in_iir, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_fifo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_without_fifo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fcr_clears_receive_fifo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_receive_interrupt_gated_by_out2, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_thre_interrupt, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rda_has_priority_over_thre, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_loopback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_loopback_overrun, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scratch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bus_range, setup, teardown),
	    cmocka_unit_test(test_discarded_output),
	};

	return cmocka_run_group_tests_name("serial", tests, NULL, NULL);
}
