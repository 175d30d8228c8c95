/* SPDX-License-Identifier: MIT */
/*
 * Split virtqueues (virtio 1.2 §2.7) for the test guest's drivers: rings in the image's memory,
 * a queue's set-up on the modern PCI transport (vq.c), and the driver's side of the available
 * and used rings, inline for the benchmark's loops.
 */
#ifndef YUN_GUEST_TEST_VQ_H
#define YUN_GUEST_TEST_VQ_H

#include "virtio.h"

struct vring_avail {
	uint16_t flags, idx, ring[]; /* then used_event */
};

struct vring_used_elem {
	uint32_t id, len;
};

struct vring_used {
	volatile uint16_t flags, idx;
	struct vring_used_elem ring[]; /* then avail_event */
};

/* One queue: its rings (room for num entries), size of them in use, and where the driver is. */
struct vq {
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
	uint16_t num, index, size, last_used, next_avail;
	volatile uint16_t *notify;
	uint64_t kicks;
};

/*
 * A file-static struct vq `name` with rings of n entries (a power of 2) of its own, laid out as
 * §2.7 asks (descriptors 16-byte, available ring 2-byte, used ring 4-byte aligned) in one
 * page-aligned block.
 */
#define VQ_DEFINE(name, n)                                                           \
	static struct {                                                              \
		struct vring_desc desc[n];                                           \
		struct {                                                             \
			uint16_t flags, idx, ring[n], used_event;                    \
		} avail;                                                             \
		struct {                                                             \
			uint16_t flags, idx;                                         \
			struct vring_used_elem ring[n];                              \
			uint16_t avail_event;                                        \
		} used __attribute__((aligned(4)));                                  \
	} name##_rings __attribute__((aligned(4096)));                               \
	_Static_assert((n) > 0 && !((n) & ((n)-1)), #name ": a power of 2 entries"); \
	static struct vq name = {                                                    \
	    .desc = name##_rings.desc,                                               \
	    .avail = (struct vring_avail *)&name##_rings.avail,                      \
	    .used = (struct vring_used *)&name##_rings.used,                         \
	    .num = (n),                                                              \
	}

/*
 * Queue index of device b on q, at most q->num entries, its interrupts on MSI-X table entry
 * vector (VIRTIO_NO_MSI: none): rings cleared, addresses given, queue enabled. *max is the
 * device's queue size and q->size the one in use; false, the queue left alone, when *max is
 * not a power of 2. queue_select is left on index.
 */
bool vq_setup(struct vq *q, const struct vpci *b, uint16_t index, uint16_t vector, uint16_t *max);

/* Descriptor head in the next available slot; vq_publish() makes it visible. */
static inline void vq_add(struct vq *q, uint16_t head)
{
	q->avail->ring[q->next_avail++ & (q->size - 1)] = head;
}

static inline void vq_publish(struct vq *q)
{
	barrier();
	q->avail->idx = q->next_avail;
}

/* §4.1.5.2: without NOTIFICATION_DATA the driver writes the queue's index. */
static inline void vq_kick(struct vq *q)
{
	barrier();
	*q->notify = q->index;
	q->kicks++;
}

/* vq_publish(), then a kick unless the used ring's flags say the device will look anyway
 * (§2.7.10). */
static inline void vq_publish_kick(struct vq *q)
{
	vq_publish(q);
	barrier();
	if (!(q->used->flags & VRING_USED_F_NO_NOTIFY)) {
		*q->notify = q->index;
		q->kicks++;
	}
}

/* One buffer as descriptor d, made available at once (no kick). */
static inline void vq_post(struct vq *q, uint16_t d, const void *buf, uint32_t len, uint16_t flags)
{
	q->desc[d] = (struct vring_desc){(uint64_t)buf, len, flags, 0};
	vq_add(q, d);
	vq_publish(q);
}

/* The next used element, if there is one. */
static inline bool vq_pop(struct vq *q, uint32_t *id, uint32_t *len)
{
	uint16_t slot;

	if (q->used->idx == q->last_used)
		return false;
	compiler_barrier();
	slot = q->last_used++ & (q->size - 1);
	*id = q->used->ring[slot].id;
	*len = q->used->ring[slot].len;
	return true;
}

/* The next used element's descriptor id (its length in *len): -1 when there is none, -2 when
 * the id is none of q's. */
static inline int vq_next(struct vq *q, uint32_t *len)
{
	uint32_t id;

	if (!vq_pop(q, &id, len))
		return -1;
	return id < q->size ? (int)id : -2;
}

/* vq_pop(), waiting up to ms for the element. */
bool vq_wait(struct vq *q, unsigned ms, uint32_t *id, uint32_t *len);

#endif
