/* SPDX-License-Identifier: MIT */
/*
 * The driver side of a split virtqueue, for unit tests: lays out rings in a test's RAM, writes
 * descriptors and publishes chains exactly as a guest would (and as a hostile guest might).
 */
#ifndef YUN_TESTS_UNIT_VRING_DRIVER_H
#define YUN_TESTS_UNIT_VRING_DRIVER_H

#include <stdint.h>

#include "devices/virtio/queue.h"

/* Ring addresses in the test RAM: descriptors, available ring, used ring. */
#define VD_DESC_GPA  0x1000u
#define VD_AVAIL_GPA 0x5000u
#define VD_USED_GPA  0x6000u
#define VD_DATA_GPA  0x10000u /* buffers from here */

struct vring_driver {
	uint8_t *ram;  /* where the rings' layout starts: guest-physical `base` */
	uint64_t base; /* added to every VD_*_GPA ring address (0 but for a second queue) */
	uint16_t size;
	uint16_t avail_idx;
};

void vd_init(struct vring_driver *vd, uint8_t *ram, uint16_t size);
/* The same with the rings `base` bytes up, so that two queues of a device can share the RAM. */
void vd_init_at(struct vring_driver *vd, uint8_t *ram, uint64_t base, uint16_t size);
/* Fill the driver's fields of q so that virtq_activate() can map them. */
void vd_setup_queue(const struct vring_driver *vd, struct virtq *q);
void vd_desc(struct vring_driver *vd, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
	     uint16_t next);
/* Make the chain starting at head available (and bump avail->idx). */
void vd_publish(struct vring_driver *vd, uint16_t head);
/* Used ring index, and element i of it. */
uint16_t vd_used_idx(const struct vring_driver *vd);
struct virtq_used_elem vd_used(const struct vring_driver *vd, uint16_t i);

#endif
