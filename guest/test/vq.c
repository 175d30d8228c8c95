// SPDX-License-Identifier: MIT
/* Split virtqueues on the modern PCI transport (virtio 1.2 §4.1.5.1.3): a queue's set-up and
 * the wait for its used ring. */
#include "vq.h"

static void cc_write64(volatile uint8_t *cc, unsigned o, uint64_t v)
{
	CC32(cc, o) = (uint32_t)v;
	CC32(cc, o + 4) = (uint32_t)(v >> 32);
}

bool vq_setup(struct vq *q, const struct vpci *b, uint16_t index, uint16_t vector, uint16_t *max)
{
	volatile uint8_t *cc = (volatile uint8_t *)b->common.addr;

	CC16(cc, CC_QSELECT) = index;
	*max = CC16(cc, CC_QSIZE);
	q->size = *max < q->num ? *max : q->num;
	if (!*max || (*max & (*max - 1)))
		return false;
	memset(q->desc, 0, sizeof(*q->desc) * q->num);
	memset(q->avail, 0, sizeof(*q->avail) + sizeof(q->avail->ring[0]) * q->num + 2);
	memset((void *)q->used, 0, sizeof(*q->used) + sizeof(q->used->ring[0]) * q->num + 2);
	q->index = index;
	q->last_used = q->next_avail = 0;
	q->kicks = 0;
	CC16(cc, CC_QSIZE) = q->size;
	CC16(cc, CC_QMSIX) = vector;
	cc_write64(cc, CC_QDESC, (uint64_t)q->desc);
	cc_write64(cc, CC_QDRIVER, (uint64_t)q->avail);
	cc_write64(cc, CC_QDEVICE, (uint64_t)q->used);
	CC16(cc, CC_QENABLE) = 1;
	q->notify =
	    (volatile uint16_t *)(b->notify.addr + (uint64_t)CC16(cc, CC_QNOTIFY) * b->notify_mult);
	return true;
}

bool vq_wait(struct vq *q, unsigned ms, uint32_t *id, uint32_t *len)
{
	for (unsigned i = 0; i < ms * 10 && q->used->idx == q->last_used; i++)
		delay_us(100);
	return vq_pop(q, id, len);
}
