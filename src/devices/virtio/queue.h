/* SPDX-License-Identifier: MIT */
/*
 * Split virtqueues (virtio 1.2 §2.7). The transport fills in the addresses the driver wrote;
 * virtq_activate() validates the whole layout once, at DRIVER_OK (sizes, alignment, every ring
 * wholly in guest RAM); after that devices pop validated chains: arrays of host pointers with
 * lengths, device-readable buffers first, device-writable after. Devices never see a raw
 * descriptor.
 *
 * Every chain is checked: head and next indices below the queue size, at most queue-size hops
 * (so no loops), every buffer wholly inside guest RAM, no readable buffer after a writable one,
 * indirect tables (VIRTIO_F_INDIRECT_DESC) in RAM, a multiple of 16 bytes, not nested. A chain
 * that breaks a rule is an error of the driver: virtq_pop() returns -EINVAL and the device is
 * expected to mark itself broken (virtio_dev_error()).
 */
#ifndef YUN_DEVICES_VIRTIO_QUEUE_H
#define YUN_DEVICES_VIRTIO_QUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmm/memory.h"

#define VIRTQ_MAX_SIZE 1024 /* virtio 1.2 §2.7: at most 32768; we offer up to this */

/* virtio 1.2 §2.7.5 */
#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4
/* §2.7.6, §2.7.8 */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY	   1

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[]; /* then used_event */
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[]; /* then avail_event */
};

struct virtq {
	/* Written by the driver through the transport, before DRIVER_OK. */
	uint16_t size; /* a power of 2, at most max_size (§2.7: split queues) */
	uint16_t max_size;
	bool enabled; /* queue_enable */
	uint64_t desc_gpa;
	uint64_t avail_gpa;
	uint64_t used_gpa;
	uint16_t msix_vector; /* VIRTIO_MSI_NO_VECTOR (0xffff) when none */

	/* Set by virtq_activate(). */
	bool ready;
	bool event_idx; /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;	/* VIRTIO_F_INDIRECT_DESC negotiated */
	const struct guest_mem *mem;
	volatile struct virtq_desc *desc;
	volatile struct virtq_avail *avail;
	volatile struct virtq_used *used;

	/* Device-side positions: part of the device's state for snapshots. */
	uint16_t last_avail_idx;
	uint16_t used_idx;
	uint16_t signalled_used; /* used_idx at the last interrupt, for EVENT_IDX */
	bool signalled_used_valid;
};

/* One request: out[] are device-readable buffers, in[] device-writable, in chain order. */
struct virtq_chain {
	uint16_t head;
	unsigned nr_out;
	unsigned nr_in;
	uint64_t out_len; /* total bytes in out[] */
	uint64_t in_len;  /* total bytes in in[] */
	struct iovec out[VIRTQ_MAX_SIZE];
	struct iovec in[VIRTQ_MAX_SIZE];
};

/* Forget everything the driver set (device reset, §2.4). max_size is kept. */
void virtq_reset(struct virtq *q);
/*
 * Validate the layout the driver wrote and map the rings: size a power of 2 within max_size,
 * rings aligned as §2.7 requires (desc 16, avail 2, used 4) and wholly in guest RAM.
 * Returns 0, or -EINVAL with nothing mapped. features are the negotiated feature bits.
 */
int virtq_activate(struct virtq *q, const struct guest_mem *mem, uint64_t features);
/*
 * Take the next available chain. Returns 1 with *chain filled, 0 when the ring is empty,
 * -EINVAL when the driver broke a rule (the queue must not be used again until reset).
 */
int virtq_pop(struct virtq *q, struct virtq_chain *chain);
/*
 * virtq_pop(), but before reporting an empty ring it asks the driver for a notification and
 * looks once more, for a chain made available meanwhile (§2.7.10).
 */
int virtq_pop_or_arm(struct virtq *q, struct virtq_chain *chain);
/* Give a chain back with len bytes written into its device-writable buffers. */
void virtq_push(struct virtq *q, uint16_t head, uint32_t len);
/* Whether the driver wants an interrupt now, per NO_INTERRUPT or used_event (§2.7.10). */
bool virtq_should_notify(struct virtq *q);
/* Suppress or allow driver notifications (§2.7.10: NO_NOTIFY or avail_event). */
void virtq_set_notification(struct virtq *q, bool enable);
/* Bytes of guest memory one ring takes, for the layout check and for the transport. */
uint64_t virtq_desc_bytes(uint16_t size);
uint64_t virtq_avail_bytes(uint16_t size);
uint64_t virtq_used_bytes(uint16_t size);

/* Copy helpers over iovecs: they stop at the end of the iovec and return bytes copied. */
uint64_t iov_to_buf(const struct iovec *iov, unsigned nr, uint64_t offset, void *buf, uint64_t len);
uint64_t iov_from_buf(const struct iovec *iov, unsigned nr, uint64_t offset, const void *buf,
		      uint64_t len);

#endif
