// SPDX-License-Identifier: MIT
/* Split virtqueues, device side (virtio 1.2 §2.7), with every guest value checked. */
#include "devices/virtio/queue.h"

#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "devices/virtio/virtio.h"

/* An indirect table holds at most this many descriptors (§2.7.5.3.1 bounds it by the
 * queue size for the driver; the device needs its own bound for the walk). */
#define VIRTQ_MAX_INDIRECT VIRTQ_MAX_SIZE

uint64_t virtq_desc_bytes(uint16_t size)
{
	return 16ULL * size;
}

/* flags, idx, ring[size], used_event */
uint64_t virtq_avail_bytes(uint16_t size)
{
	return 6 + 2ULL * size;
}

/* flags, idx, ring[size] of 8-byte elements, avail_event */
uint64_t virtq_used_bytes(uint16_t size)
{
	return 6 + 8ULL * size;
}

void virtq_reset(struct virtq *q)
{
	uint16_t max = q->max_size;

	memset(q, 0, sizeof(*q));
	q->max_size = max;
	q->size = max;
	q->msix_vector = 0xffff;
}

int virtq_activate(struct virtq *q, const struct guest_mem *mem, uint64_t features)
{
	q->ready = false;
	if (q->size == 0 || q->size > q->max_size || (q->size & (q->size - 1)))
		return -EINVAL;
	/* §2.7: descriptor table 16-byte, available ring 2-byte, used ring 4-byte aligned. */
	if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3))
		return -EINVAL;
	q->desc = gm_slice(mem, q->desc_gpa, virtq_desc_bytes(q->size));
	q->avail = gm_slice(mem, q->avail_gpa, virtq_avail_bytes(q->size));
	q->used = gm_slice(mem, q->used_gpa, virtq_used_bytes(q->size));
	if (!q->desc || !q->avail || !q->used) {
		q->desc = NULL;
		q->avail = NULL;
		q->used = NULL;
		return -EINVAL;
	}
	q->mem = mem;
	q->event_idx = features & (1ULL << VIRTIO_F_EVENT_IDX);
	q->indirect = features & (1ULL << VIRTIO_F_INDIRECT_DESC);
	q->last_avail_idx = 0;
	q->used_idx = 0;
	q->signalled_used_valid = false;
	q->ready = true;
	return 0;
}

static int chain_add(struct virtq_chain *c, const struct virtq_desc *d, const struct virtq *q)
{
	bool writable = d->flags & VIRTQ_DESC_F_WRITE;
	void *p;

	/* §2.7.4.2: device-writable buffers come after all device-readable ones. */
	if (!writable && c->nr_in)
		return -EINVAL;
	if (c->nr_out + c->nr_in == VIRTQ_MAX_SIZE)
		return -EINVAL;
	if ((writable ? c->in_len : c->out_len) + d->len > UINT32_MAX)
		return -EINVAL;
	/* An empty buffer is allowed and needs no mapping. */
	if (d->len == 0)
		return 0;
	p = gm_slice(q->mem, d->addr, d->len);
	if (!p)
		return -EINVAL;
	if (writable) {
		c->in[c->nr_in++] = (struct iovec){p, d->len};
		c->in_len += d->len;
	} else {
		c->out[c->nr_out++] = (struct iovec){p, d->len};
		c->out_len += d->len;
	}
	return 0;
}

static void read_desc(volatile const struct virtq_desc *src, struct virtq_desc *d)
{
	d->addr = src->addr;
	d->len = src->len;
	d->flags = src->flags;
	d->next = src->next;
}

/* §2.7.5.3: an indirect table, walked with at most as many hops as it has entries. */
static int walk_indirect(struct virtq *q, const struct virtq_desc *d, struct virtq_chain *c)
{
	const volatile struct virtq_desc *table;
	unsigned n = d->len / 16, i = 0;

	if (!q->indirect || d->len == 0 || d->len % 16 || n > VIRTQ_MAX_INDIRECT ||
	    (d->flags & VIRTQ_DESC_F_NEXT))
		return -EINVAL;
	table = gm_slice(q->mem, d->addr, d->len);
	if (!table)
		return -EINVAL;
	for (unsigned hops = 0; hops < n; hops++) {
		struct virtq_desc e;

		read_desc(&table[i], &e);
		/* §2.7.5.3.1: no indirect descriptor inside an indirect table. */
		if (e.flags & VIRTQ_DESC_F_INDIRECT)
			return -EINVAL;
		if (chain_add(c, &e, q))
			return -EINVAL;
		if (!(e.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (e.next >= n)
			return -EINVAL;
		i = e.next;
	}
	return -EINVAL; /* more hops than entries: a loop */
}

int virtq_pop(struct virtq *q, struct virtq_chain *c)
{
	uint16_t avail_idx, head, i;

	if (!q->ready)
		return 0;
	avail_idx = q->avail->idx;
	/* Read the ring entry only after seeing the index that covers it. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	if (avail_idx == q->last_avail_idx)
		return 0;
	/* The driver cannot have made more than `size` buffers available. */
	if ((uint16_t)(avail_idx - q->last_avail_idx) > q->size)
		return -EINVAL;
	head = q->avail->ring[q->last_avail_idx & (q->size - 1)];
	if (head >= q->size)
		return -EINVAL;
	q->last_avail_idx++;

	c->head = head;
	c->nr_out = c->nr_in = 0;
	c->out_len = c->in_len = 0;
	i = head;
	for (unsigned hops = 0; hops < q->size; hops++) {
		struct virtq_desc d;

		read_desc(&q->desc[i], &d);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			/* An indirect descriptor is the whole chain (§2.7.5.3.1: no NEXT with it). */
			return walk_indirect(q, &d, c) ? -EINVAL : 1;
		}
		if (chain_add(c, &d, q))
			return -EINVAL;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 1;
		if (d.next >= q->size)
			return -EINVAL;
		i = d.next;
	}
	return -EINVAL; /* more hops than descriptors: a loop */
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t len)
{
	volatile struct virtq_used_elem *e = &q->used->ring[q->used_idx & (q->size - 1)];

	e->id = head;
	e->len = len;
	/* The element must be visible before the index that publishes it. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	q->used_idx++;
	q->used->idx = q->used_idx;
}

/* §2.7.10.2: vring_need_event(). */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

bool virtq_should_notify(struct virtq *q)
{
	uint16_t old = q->signalled_used, event;
	bool valid = q->signalled_used_valid;

	if (!q->ready)
		return false;
	/* The used index must be visible before we read the driver's wishes. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!q->event_idx)
		return !(q->avail->flags & VIRTQ_AVAIL_F_NO_INTERRUPT);
	q->signalled_used = q->used_idx;
	q->signalled_used_valid = true;
	event = q->avail->ring[q->size]; /* used_event */
	return !valid || need_event(event, q->used_idx, old);
}

int virtq_pop_or_arm(struct virtq *q, struct virtq_chain *chain)
{
	int r = virtq_pop(q, chain);

	if (r == 0) {
		virtq_set_notification(q, true);
		r = virtq_pop(q, chain);
	}
	return r;
}

void virtq_set_notification(struct virtq *q, bool enable)
{
	if (!q->ready)
		return;
	if (q->event_idx && !enable)
		return; /* §2.7.10: avail_event left behind asks for no notification */
	if (q->event_idx) {
		/* avail_event, after the used ring: "notify me after this index". */
		volatile uint16_t *avail_event = (volatile uint16_t *)&q->used->ring[q->size];

		*avail_event = q->last_avail_idx;
	} else if (enable) {
		q->used->flags = q->used->flags & ~VIRTQ_USED_F_NO_NOTIFY;
	} else {
		q->used->flags = q->used->flags | VIRTQ_USED_F_NO_NOTIFY;
	}
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

uint64_t iov_to_buf(const struct iovec *iov, unsigned nr, uint64_t offset, void *buf, uint64_t len)
{
	uint64_t done = 0;

	for (unsigned i = 0; i < nr && done < len; i++) {
		uint64_t n;

		if (offset >= iov[i].iov_len) {
			offset -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - offset;
		if (n > len - done)
			n = len - done;
		memcpy((uint8_t *)buf + done, (uint8_t *)iov[i].iov_base + offset, n);
		done += n;
		offset = 0;
	}
	return done;
}

uint64_t iov_from_buf(const struct iovec *iov, unsigned nr, uint64_t offset, const void *buf,
		      uint64_t len)
{
	uint64_t done = 0;

	for (unsigned i = 0; i < nr && done < len; i++) {
		uint64_t n;

		if (offset >= iov[i].iov_len) {
			offset -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - offset;
		if (n > len - done)
			n = len - done;
		memcpy((uint8_t *)iov[i].iov_base + offset, (const uint8_t *)buf + done, n);
		done += n;
		offset = 0;
	}
	return done;
}
