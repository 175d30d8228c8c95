/* SPDX-License-Identifier: MIT */
/*
 * A 16550A UART (TI PC16550D datasheet), the model Linux's 8250 driver and its early console
 * expect: 16-byte FIFOs, the interrupt priorities of the IIR, loopback, and the PC's OUT2 gate
 * on the interrupt line.
 */
#ifndef YUN_DEVICES_SERIAL_H
#define YUN_DEVICES_SERIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/bus.h"
#include "devices/irq.h"

struct snap_writer;
struct snap_reader;

struct serial;

/* out_fd < 0 discards the output. */
int serial_create(struct io_bus *pio, uint16_t base, unsigned irq, struct irq_host *ih, int out_fd,
		  struct serial **out);
void serial_destroy(struct serial *s);
/* Host input into the receive FIFO; returns how many bytes it took (the FIFO holds 16). */
size_t serial_input(struct serial *s, const uint8_t *buf, size_t len);
/* Whether the receive FIFO has room. */
bool serial_wants_input(struct serial *s);

/* Snapshots (section "serial"). */
void serial_save(struct serial *s, struct snap_writer *w);
int serial_load(struct serial *s, const struct snap_reader *r);

#endif
