/* SPDX-License-Identifier: MIT */
/*
 * The PS/2 controller (Intel 8042) at ports 0x60/0x64, as much as Linux's i8042 driver probes
 * and the PC's reset path uses: self-tests, the command byte, a keyboard port with its output
 * buffer and IRQ 1, and command 0xFE, which pulses the CPU reset line.
 */
#ifndef YUN_DEVICES_I8042_H
#define YUN_DEVICES_I8042_H

#include "devices/bus.h"
#include "devices/irq.h"

struct snap_writer;
struct snap_reader;

struct i8042;

int i8042_create(struct io_bus *pio, struct irq_host *ih, void (*reset)(void *ctx), void *ctx,
		 struct i8042 **out);
void i8042_destroy(struct i8042 *k);
/* Press and release Ctrl-Alt-Del on the keyboard (scan code set 1), for guests without ACPI. */
int i8042_send_ctrl_alt_del(struct i8042 *k);

/* Snapshots (section "i8042"). */
void i8042_save(struct i8042 *k, struct snap_writer *w);
int i8042_load(struct i8042 *k, const struct snap_reader *r);

#endif
