// SPDX-License-Identifier: MIT
#include "devices/serial.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/snapshot_file.h"

#define FIFO_SIZE 16

/* Register offsets (PC16550D, Table II). */
enum {
	UART_RBR_THR = 0, /* DLL when DLAB */
	UART_IER = 1,	  /* DLM when DLAB */
	UART_IIR_FCR = 2,
	UART_LCR = 3,
	UART_MCR = 4,
	UART_LSR = 5,
	UART_MSR = 6,
	UART_SCR = 7,
};

#define IER_ERBFI 0x01 /* received data available */
#define IER_ETBEI 0x02 /* transmitter holding register empty */
#define IER_ELSI  0x04 /* receiver line status */
#define IER_EDSSI 0x08 /* modem status */

#define IIR_NO_INT  0x01
#define IIR_RLS	    0x06
#define IIR_RDA	    0x04
#define IIR_CTI	    0x0c
#define IIR_THRE    0x02
#define IIR_MSI	    0x00
#define IIR_FIFO_ON 0xc0

#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04

#define LCR_DLAB 0x80

#define MCR_DTR	 0x01
#define MCR_RTS	 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

#define LSR_DR	 0x01
#define LSR_OE	 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS	 0x10
#define MSR_DSR	 0x20
#define MSR_RI	 0x40
#define MSR_DCD	 0x80

struct serial {
	pthread_mutex_t lock;
	struct io_bus *pio;
	uint16_t base;
	unsigned irq;
	struct irq_host *ih;
	int out_fd;
	int line; /* the level last driven on the IRQ line */

	uint8_t ier, lcr, mcr, lsr, msr, scr, fcr;
	uint8_t dll, dlm;
	bool thr_interrupt; /* THRE interrupt pending (cleared by IIR read or THR write) */
	bool timeout_interrupt;
	uint8_t rx[FIFO_SIZE];
	unsigned rx_head, rx_count;
	uint64_t dropped; /* output bytes the host could not take */
};

static unsigned rx_trigger(const struct serial *s)
{
	static const unsigned levels[4] = {1, 4, 8, 14};

	return (s->fcr & FCR_ENABLE) ? levels[s->fcr >> 6] : 1;
}

/* The highest-priority pending interrupt, as IIR reports it (PC16550D Table IV). */
static uint8_t pending_iir(const struct serial *s)
{
	if ((s->ier & IER_ELSI) && (s->lsr & LSR_OE))
		return IIR_RLS;
	if ((s->ier & IER_ERBFI) && s->rx_count >= rx_trigger(s))
		return IIR_RDA;
	if ((s->ier & IER_ERBFI) && s->timeout_interrupt && s->rx_count)
		return IIR_CTI;
	if ((s->ier & IER_ETBEI) && s->thr_interrupt)
		return IIR_THRE;
	if ((s->ier & IER_EDSSI) && (s->msr & (MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD)))
		return IIR_MSI;
	return IIR_NO_INT;
}

/* Drive the IRQ line; on a PC the UART's interrupt reaches the PIC only when OUT2 is set. */
static void update_irq(struct serial *s)
{
	int level = pending_iir(s) != IIR_NO_INT && (s->mcr & MCR_OUT2);

	if (level != s->line) {
		s->line = level;
		s->ih->ops->set_level(s->ih->ctx, s->irq, level);
	}
}

static void rx_push(struct serial *s, uint8_t b)
{
	unsigned cap = (s->fcr & FCR_ENABLE) ? FIFO_SIZE : 1;

	if (s->rx_count == cap) {
		s->lsr |= LSR_OE;
		return;
	}
	s->rx[(s->rx_head + s->rx_count) % FIFO_SIZE] = b;
	s->rx_count++;
	s->lsr |= LSR_DR;
	/* The character timeout fires when data sits below the trigger level; the VMM has no
	 * bit clock, so data that arrives is considered to have waited long enough. */
	s->timeout_interrupt = true;
}

static uint8_t rx_pop(struct serial *s)
{
	uint8_t b;

	if (!s->rx_count)
		return 0;
	b = s->rx[s->rx_head];
	s->rx_head = (s->rx_head + 1) % FIFO_SIZE;
	if (--s->rx_count == 0) {
		s->lsr &= ~LSR_DR;
		s->timeout_interrupt = false;
	}
	return b;
}

static void transmit(struct serial *s, uint8_t b)
{
	if (s->mcr & MCR_LOOP) {
		rx_push(s, b);
	} else if (s->out_fd >= 0) {
		ssize_t n;

		do {
			n = write(s->out_fd, &b, 1);
		} while (n < 0 && errno == EINTR);
		if (n != 1)
			s->dropped++;
	}
	/* The byte leaves at once: THR and the shift register are empty again. */
	s->lsr |= LSR_THRE | LSR_TEMT;
	s->thr_interrupt = true;
}

/* In loopback, the modem inputs follow the outputs: CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2. */
static uint8_t loopback_msr(uint8_t mcr)
{
	return (uint8_t)(((mcr & MCR_RTS) ? MSR_CTS : 0) | ((mcr & MCR_DTR) ? MSR_DSR : 0) |
			 ((mcr & MCR_OUT1) ? MSR_RI : 0) | ((mcr & MCR_OUT2) ? MSR_DCD : 0));
}

static void set_mcr(struct serial *s, uint8_t v)
{
	uint8_t old_in = s->msr & 0xf0, in;

	s->mcr = v & 0x1f;
	/* Outside loopback a console line is always ready: DCD, DSR and CTS asserted. */
	in = (s->mcr & MCR_LOOP) ? loopback_msr(s->mcr) : (MSR_DCD | MSR_DSR | MSR_CTS);
	if ((in ^ old_in) & MSR_CTS)
		s->msr |= MSR_DCTS;
	if ((in ^ old_in) & MSR_DSR)
		s->msr |= MSR_DDSR;
	if ((old_in & MSR_RI) && !(in & MSR_RI))
		s->msr |= MSR_TERI;
	if ((in ^ old_in) & MSR_DCD)
		s->msr |= MSR_DDCD;
	s->msr = (uint8_t)((s->msr & 0x0f) | in);
}

static uint8_t serial_read_reg(struct serial *s, unsigned reg)
{
	uint8_t v;

	switch (reg) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB)
			return s->dll;
		return rx_pop(s);
	case UART_IER:
		return (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
	case UART_IIR_FCR:
		v = pending_iir(s);
		/* Reading IIR while THRE is the reported source clears it (PC16550D). */
		if (v == IIR_THRE)
			s->thr_interrupt = false;
		return v | ((s->fcr & FCR_ENABLE) ? IIR_FIFO_ON : 0);
	case UART_LCR:
		return s->lcr;
	case UART_MCR:
		return s->mcr;
	case UART_LSR:
		v = s->lsr;
		s->lsr &= ~LSR_OE; /* error bits clear on read */
		return v;
	case UART_MSR:
		v = s->msr;
		s->msr &= 0xf0; /* delta bits clear on read */
		return v;
	default:
		return s->scr;
	}
}

static void serial_write_reg(struct serial *s, unsigned reg, uint8_t v)
{
	switch (reg) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
			break;
		}
		s->thr_interrupt = false;
		transmit(s, v);
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
			break;
		}
		/* ETBEI going 0→1 with THR empty raises THRE at once (Linux relies on it). */
		if (!(s->ier & IER_ETBEI) && (v & IER_ETBEI) && (s->lsr & LSR_THRE))
			s->thr_interrupt = true;
		s->ier = v & 0x0f;
		break;
	case UART_IIR_FCR:
		if (v & FCR_CLEAR_RX) {
			s->rx_count = 0;
			s->lsr &= ~LSR_DR;
			s->timeout_interrupt = false;
		}
		/* Toggling the FIFO enable clears the FIFOs too. */
		if ((v ^ s->fcr) & FCR_ENABLE) {
			s->rx_count = 0;
			s->lsr &= ~LSR_DR;
		}
		s->fcr = v & 0xc9;
		break;
	case UART_LCR:
		s->lcr = v;
		break;
	case UART_MCR:
		set_mcr(s, v);
		break;
	case UART_LSR:
	case UART_MSR:
		break; /* read-only (factory test writes are ignored) */
	default:
		s->scr = v;
		break;
	}
}

static void serial_io_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct serial *s = opaque;

	memset(data, 0xff, size);
	pthread_mutex_lock(&s->lock);
	*(uint8_t *)data = serial_read_reg(s, (unsigned)offset);
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static void serial_io_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
	struct serial *s = opaque;

	pthread_mutex_lock(&s->lock);
	serial_write_reg(s, (unsigned)offset, *(const uint8_t *)data);
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
}

static const struct io_ops serial_ops = {
    .read = serial_io_read,
    .write = serial_io_write,
};

size_t serial_input(struct serial *s, const uint8_t *buf, size_t len)
{
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	/* In loopback the receiver hears only the transmitter. */
	if (!(s->mcr & MCR_LOOP)) {
		unsigned cap = (s->fcr & FCR_ENABLE) ? FIFO_SIZE : 1;

		while (n < len && s->rx_count < cap)
			rx_push(s, buf[n++]);
		update_irq(s);
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}

bool serial_wants_input(struct serial *s)
{
	bool room;

	pthread_mutex_lock(&s->lock);
	room = !(s->mcr & MCR_LOOP) && s->rx_count < ((s->fcr & FCR_ENABLE) ? FIFO_SIZE : 1);
	pthread_mutex_unlock(&s->lock);
	return room;
}

int serial_create(struct io_bus *pio, uint16_t base, unsigned irq, struct irq_host *ih, int out_fd,
		  struct serial **out)
{
	struct serial *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	s->pio = pio;
	s->base = base;
	s->irq = irq;
	s->ih = ih;
	s->out_fd = out_fd;
	s->lsr = LSR_THRE | LSR_TEMT;
	s->dll = 12; /* 9600 baud, as after a BIOS */
	set_mcr(s, 0);
	s->msr &= 0xf0;
	err = io_bus_register(pio, base, 8, &serial_ops, s, "serial");
	if (err) {
		pthread_mutex_destroy(&s->lock);
		free(s);
		return err;
	}
	*out = s;
	return 0;
}

void serial_destroy(struct serial *s)
{
	if (!s)
		return;
	io_bus_unregister(s->pio, s->base, s);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Snapshots: the registers, the receive FIFO and the pending interrupts. */
struct serial_state {
	uint8_t ier, lcr, mcr, lsr, msr, scr, fcr, dll, dlm;
	uint8_t thr_interrupt, timeout_interrupt;
	uint8_t rx[FIFO_SIZE];
	uint32_t rx_head, rx_count;
};

void serial_save(struct serial *s, struct snap_writer *w)
{
	struct serial_state st = {0};

	pthread_mutex_lock(&s->lock);
	st = (struct serial_state){s->ier,
				   s->lcr,
				   s->mcr,
				   s->lsr,
				   s->msr,
				   s->scr,
				   s->fcr,
				   s->dll,
				   s->dlm,
				   s->thr_interrupt,
				   s->timeout_interrupt};
	memcpy(st.rx, s->rx, sizeof(st.rx));
	st.rx_head = s->rx_head;
	st.rx_count = s->rx_count;
	pthread_mutex_unlock(&s->lock);
	snap_put(w, "serial", &st, sizeof(st));
}

int serial_load(struct serial *s, const struct snap_reader *r)
{
	struct serial_state st;
	int err = snap_get(r, "serial", &st, sizeof(st));

	if (err)
		return err;
	if (st.rx_head >= FIFO_SIZE || st.rx_count > FIFO_SIZE)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	s->ier = st.ier;
	s->lcr = st.lcr;
	s->mcr = st.mcr;
	s->lsr = st.lsr;
	s->msr = st.msr;
	s->scr = st.scr;
	s->fcr = st.fcr;
	s->dll = st.dll;
	s->dlm = st.dlm;
	s->thr_interrupt = st.thr_interrupt;
	s->timeout_interrupt = st.timeout_interrupt;
	memcpy(s->rx, st.rx, sizeof(s->rx));
	s->rx_head = st.rx_head;
	s->rx_count = st.rx_count;
	/* KVM's irqchip came back with the pins' state; drive the line from low again. */
	s->line = 0;
	update_irq(s);
	pthread_mutex_unlock(&s->lock);
	return 0;
}
