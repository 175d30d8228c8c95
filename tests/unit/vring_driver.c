// SPDX-License-Identifier: MIT
#include "vring_driver.h"

#include <string.h>

void vd_init(struct vring_driver *vd, uint8_t *ram, uint16_t size)
{
	vd_init_at(vd, ram, 0, size);
}

void vd_init_at(struct vring_driver *vd, uint8_t *ram, uint64_t base, uint16_t size)
{
	ram += base;
	vd->ram = ram;
	vd->base = base;
	vd->size = size;
	vd->avail_idx = 0;
	memset(ram + VD_DESC_GPA, 0, virtq_desc_bytes(size));
	memset(ram + VD_AVAIL_GPA, 0, virtq_avail_bytes(size));
	memset(ram + VD_USED_GPA, 0, virtq_used_bytes(size));
}

void vd_setup_queue(const struct vring_driver *vd, struct virtq *q)
{
	q->size = vd->size;
	q->desc_gpa = vd->base + VD_DESC_GPA;
	q->avail_gpa = vd->base + VD_AVAIL_GPA;
	q->used_gpa = vd->base + VD_USED_GPA;
	q->enabled = true;
}

void vd_desc(struct vring_driver *vd, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
	     uint16_t next)
{
	struct virtq_desc d = {addr, len, flags, next};

	memcpy(vd->ram + VD_DESC_GPA + 16u * i, &d, sizeof(d));
}

void vd_publish(struct vring_driver *vd, uint16_t head)
{
	struct virtq_avail *a = (struct virtq_avail *)(vd->ram + VD_AVAIL_GPA);

	a->ring[vd->avail_idx % vd->size] = head;
	vd->avail_idx++;
	a->idx = vd->avail_idx;
}

uint16_t vd_used_idx(const struct vring_driver *vd)
{
	return ((const struct virtq_used *)(vd->ram + VD_USED_GPA))->idx;
}

struct virtq_used_elem vd_used(const struct vring_driver *vd, uint16_t i)
{
	return ((const struct virtq_used *)(vd->ram + VD_USED_GPA))->ring[i % vd->size];
}
