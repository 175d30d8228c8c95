/* SPDX-License-Identifier: MIT */
/*
 * virtio-rng (virtio 1.2 §5.4): an entropy source for the guest, filled from the host's
 * getrandom(2). One request queue; each request is device-writable buffers to fill.
 */
#ifndef YUN_DEVICES_VIRTIO_RNG_H
#define YUN_DEVICES_VIRTIO_RNG_H

#include <stdint.h>

#include "devices/virtio/virtio.h"

/* At most this many bytes are given for one request; the used length says how many. */
#define VIRTIO_RNG_MAX_REQUEST (64 * 1024)

struct rng_stats {
	uint64_t requests, bytes;
};

struct virtio_rng;

int virtio_rng_create(const char *id, const struct guest_mem *mem, struct virtio_rng **out);
struct virtio_dev *virtio_rng_dev(struct virtio_rng *r);
void virtio_rng_stats(struct virtio_rng *r, struct rng_stats *out);
void virtio_rng_destroy(struct virtio_rng *r);

#endif
