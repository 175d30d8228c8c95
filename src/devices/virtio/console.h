/* SPDX-License-Identifier: MIT */
/*
 * virtio-console (virtio 1.2 §5.3): the guest's console as hvc0, one port, no MULTIPORT, so
 * two queues: receiveq (host to guest) and transmitq (guest to host). Transmitted bytes go to an
 * fd (the console's output); host input waits in a bounded buffer of the device until the guest
 * posts receive buffers. Emergency write (VIRTIO_CONSOLE_F_EMERG_WRITE) is offered: a byte
 * written to emerg_wr in the configuration space goes to the output at once.
 */
#ifndef YUN_DEVICES_VIRTIO_CONSOLE_H
#define YUN_DEVICES_VIRTIO_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

#include "devices/virtio/virtio.h"

/* Host input the device holds for the guest, at most. */
#define VIRTIO_CONSOLE_RX_BUF (4 * 1024)
/* Bytes written out for one transmit chain, at most; the rest counts as dropped. */
#define VIRTIO_CONSOLE_MAX_TX (1024 * 1024)

struct virtio_console_stats {
	uint64_t rx_requests, rx_bytes;		    /* host to guest: chains used, bytes */
	uint64_t tx_requests, tx_bytes, tx_dropped; /* guest to host: chains, bytes out, lost */
	uint64_t emerg_writes;			    /* bytes through emerg_wr */
};

struct virtio_console;

/* out_fd (not owned) takes the guest's output; -1 discards it. */
int virtio_console_create(const char *id, const struct guest_mem *mem, int out_fd,
			  struct virtio_console **out);
struct virtio_dev *virtio_console_dev(struct virtio_console *vc);
/*
 * Host input for the guest: takes what fits in the device's buffer and passes it on to the
 * guest's receive buffers as they come. Returns how many bytes it took (0 when full).
 */
size_t virtio_console_input(struct virtio_console *vc, const uint8_t *buf, size_t len);
void virtio_console_stats(struct virtio_console *vc, struct virtio_console_stats *out);
void virtio_console_destroy(struct virtio_console *vc);

#endif
