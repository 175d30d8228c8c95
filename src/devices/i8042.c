// SPDX-License-Identifier: MIT
#include "devices/i8042.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/snapshot_file.h"
#include "vmm/layout.h"

#define KBD_IRQ 1
#define QUEUE	32

/* Status register bits. */
#define STS_OBF	   0x01 /* output buffer full */
#define STS_SYSFLG 0x04 /* system flag: POST passed */
#define STS_CMD	   0x08 /* last write was to the command port */
#define STS_AUX	   0x20 /* output buffer holds mouse data */

/* Command byte bits. */
#define CB_KBD_INT   0x01
#define CB_SYS	     0x04
#define CB_KBD_OFF   0x10
#define CB_AUX_OFF   0x20
#define CB_TRANSLATE 0x40

struct i8042 {
	pthread_mutex_t lock;
	struct io_bus *pio;
	struct irq_host *ih;
	void (*reset)(void *ctx);
	void *ctx;
	uint8_t cmd_byte;
	uint8_t status;
	uint8_t pending_cmd; /* a controller command waiting for its data byte, or 0 */
	uint8_t out[QUEUE];  /* bytes for the output buffer, oldest first */
	unsigned out_head, out_count;
	int line;
};

static void update_irq(struct i8042 *k)
{
	int level = (k->status & STS_OBF) && !(k->status & STS_AUX) && (k->cmd_byte & CB_KBD_INT);

	if (level != k->line) {
		k->line = level;
		k->ih->ops->set_level(k->ih->ctx, KBD_IRQ, level);
	}
}

/* Move the next queued byte into the output buffer if it is free. */
static void refill(struct i8042 *k)
{
	if (!(k->status & STS_OBF) && k->out_count)
		k->status |= STS_OBF;
	update_irq(k);
}

static void queue_byte(struct i8042 *k, uint8_t b)
{
	if (k->out_count == QUEUE)
		return;
	k->out[(k->out_head + k->out_count) % QUEUE] = b;
	k->out_count++;
	refill(k);
}

static uint8_t read_data(struct i8042 *k)
{
	uint8_t b = 0;

	if (k->out_count) {
		b = k->out[k->out_head];
		k->out_head = (k->out_head + 1) % QUEUE;
		k->out_count--;
	}
	/* IRQ 1 is edge-triggered and Linux reads one byte per interrupt: the line drops as the
	 * byte is taken and rises again for the next one, as on a real 8042. */
	k->status &= ~STS_OBF;
	update_irq(k);
	refill(k);
	return b;
}

/* A byte written to port 0x60 with no controller command pending goes to the keyboard. */
static void keyboard_command(struct i8042 *k, uint8_t b)
{
	switch (b) {
	case 0xff: /* reset: ACK, then self-test passed */
		queue_byte(k, 0xfa);
		queue_byte(k, 0xaa);
		break;
	case 0xf2: /* identify: ACK, MF2 keyboard */
		queue_byte(k, 0xfa);
		queue_byte(k, 0xab);
		queue_byte(k, 0x83);
		break;
	case 0xee: /* echo */
		queue_byte(k, 0xee);
		break;
	default: /* set LEDs, rate, scan set, enable, ...: acknowledged */
		queue_byte(k, 0xfa);
		break;
	}
}

static void controller_command(struct i8042 *k, uint8_t c)
{
	switch (c) {
	case 0x20: /* read command byte */
		queue_byte(k, k->cmd_byte);
		break;
	case 0x60: /* write command byte: data follows */
	case 0xd1: /* write output port: data follows */
	case 0xd2: /* write keyboard output buffer */
	case 0xd3: /* write aux output buffer */
	case 0xd4: /* write to aux device */
		k->pending_cmd = c;
		break;
	case 0xa7:
		k->cmd_byte |= CB_AUX_OFF;
		break;
	case 0xa8:
		k->cmd_byte &= ~CB_AUX_OFF;
		break;
	case 0xa9: /* aux interface test: no mouse is fitted, report a clock line stuck low */
		queue_byte(k, 0x01);
		break;
	case 0xaa: /* controller self-test */
		queue_byte(k, 0x55);
		break;
	case 0xab: /* keyboard interface test */
		queue_byte(k, 0x00);
		break;
	case 0xad:
		k->cmd_byte |= CB_KBD_OFF;
		break;
	case 0xae:
		k->cmd_byte &= ~CB_KBD_OFF;
		break;
	case 0xd0: /* read output port: A20 on, reset line high */
		queue_byte(k, 0x03);
		break;
	case 0xfe: /* pulse the reset line */
		log_info("i8042: guest reset");
		k->reset(k->ctx);
		break;
	default:
		if ((c & 0xf0) == 0xf0 && !(c & 1)) {
			k->reset(k->ctx); /* pulse output lines with bit 0 (reset) low */
			break;
		}
		log_debug("i8042: command %#x ignored", c);
		break;
	}
}

static void write_data(struct i8042 *k, uint8_t b)
{
	uint8_t c = k->pending_cmd;

	k->pending_cmd = 0;
	switch (c) {
	case 0x60:
		k->cmd_byte = b;
		update_irq(k);
		break;
	case 0xd1:
		if (!(b & 1)) /* bit 0 of the output port is the reset line, active low */
			k->reset(k->ctx);
		break;
	case 0xd2:
		queue_byte(k, b);
		break;
	case 0xd3:
	case 0xd4:
		break; /* no mouse */
	default:
		keyboard_command(k, b);
		break;
	}
}

static void data_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct i8042 *k = opaque;

	memset(data, 0xff, size);
	pthread_mutex_lock(&k->lock);
	*(uint8_t *)data = read_data(k);
	pthread_mutex_unlock(&k->lock);
}

static void data_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
	struct i8042 *k = opaque;

	pthread_mutex_lock(&k->lock);
	k->status &= ~STS_CMD;
	write_data(k, *(const uint8_t *)data);
	pthread_mutex_unlock(&k->lock);
}

static void status_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct i8042 *k = opaque;

	memset(data, 0xff, size);
	pthread_mutex_lock(&k->lock);
	*(uint8_t *)data = k->status;
	pthread_mutex_unlock(&k->lock);
}

static void command_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
	struct i8042 *k = opaque;

	pthread_mutex_lock(&k->lock);
	k->status |= STS_CMD;
	controller_command(k, *(const uint8_t *)data);
	pthread_mutex_unlock(&k->lock);
}

static const struct io_ops data_ops = {.read = data_read, .write = data_write};
static const struct io_ops command_ops = {.read = status_read, .write = command_write};

int i8042_send_ctrl_alt_del(struct i8042 *k)
{
	/* Set 1 make and break codes: Ctrl (0x1d), Alt (0x38), Delete (0xe0 0x53). */
	static const uint8_t seq[] = {0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d};
	int ret = 0;

	pthread_mutex_lock(&k->lock);
	if (k->cmd_byte & CB_KBD_OFF)
		ret = -EAGAIN; /* the guest has the keyboard interface off */
	else if (QUEUE - k->out_count < sizeof(seq))
		ret = -EBUSY;
	else
		for (unsigned i = 0; i < sizeof(seq); i++)
			queue_byte(k, seq[i]);
	pthread_mutex_unlock(&k->lock);
	return ret;
}

int i8042_create(struct io_bus *pio, struct irq_host *ih, void (*reset)(void *ctx), void *ctx,
		 struct i8042 **out)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	int err;

	if (!k)
		return -ENOMEM;
	pthread_mutex_init(&k->lock, NULL);
	k->pio = pio;
	k->ih = ih;
	k->reset = reset;
	k->ctx = ctx;
	k->cmd_byte = CB_KBD_INT | CB_SYS | CB_TRANSLATE;
	k->status = STS_SYSFLG;
	err = io_bus_register(pio, PORT_I8042_DATA, 1, &data_ops, k, "i8042 data");
	if (!err) {
		err = io_bus_register(pio, PORT_I8042_CMD, 1, &command_ops, k, "i8042 command");
		if (err)
			io_bus_unregister(pio, PORT_I8042_DATA, k);
	}
	if (err) {
		pthread_mutex_destroy(&k->lock);
		free(k);
		return err;
	}
	*out = k;
	return 0;
}

void i8042_destroy(struct i8042 *k)
{
	if (!k)
		return;
	io_bus_unregister(k->pio, PORT_I8042_DATA, k);
	io_bus_unregister(k->pio, PORT_I8042_CMD, k);
	pthread_mutex_destroy(&k->lock);
	free(k);
}

/* Snapshots: the command byte, the status, a command half given, the output queue. */
struct i8042_state {
	uint8_t cmd_byte, status, pending_cmd, pad;
	uint8_t out[QUEUE];
	uint32_t out_head, out_count;
};

void i8042_save(struct i8042 *k, struct snap_writer *w)
{
	struct i8042_state st = {0};

	pthread_mutex_lock(&k->lock);
	st.cmd_byte = k->cmd_byte;
	st.status = k->status;
	st.pending_cmd = k->pending_cmd;
	memcpy(st.out, k->out, sizeof(st.out));
	st.out_head = k->out_head;
	st.out_count = k->out_count;
	pthread_mutex_unlock(&k->lock);
	snap_put(w, "i8042", &st, sizeof(st));
}

int i8042_load(struct i8042 *k, const struct snap_reader *r)
{
	struct i8042_state st;
	int err = snap_get(r, "i8042", &st, sizeof(st));

	if (err)
		return err;
	if (st.out_head >= QUEUE || st.out_count > QUEUE)
		return -EINVAL;
	pthread_mutex_lock(&k->lock);
	k->cmd_byte = st.cmd_byte;
	k->status = st.status;
	k->pending_cmd = st.pending_cmd;
	memcpy(k->out, st.out, sizeof(k->out));
	k->out_head = st.out_head;
	k->out_count = st.out_count;
	k->line = 0;
	update_irq(k);
	pthread_mutex_unlock(&k->lock);
	return 0;
}
