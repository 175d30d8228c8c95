// SPDX-License-Identifier: MIT
#include "devices/virtio/pci.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/snapshot_file.h"

/* virtio 1.2 §4.1.4: capability types. */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG	  3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG	  5

#define VIRTIO_PCI_VENDOR    0x1af4
#define VIRTIO_PCI_DEVICE_ID 0x1040 /* + the virtio device ID (§4.1.2.1) */
#define COMMON_CFG_SIZE	     0x38
#define MSIX_ENABLE	     0x8000
#define MSIX_FUNCTION_MASK   0x4000
#define MSIX_ENTRY_MASKED    1
#define ISR_QUEUE	     1
#define ISR_CONFIG	     2
#define MAX_VECTORS	     (VIRTIO_MAX_QUEUES + 1)

struct virtio_pci_cap {
	uint8_t cap_vndr;
	uint8_t cap_next;
	uint8_t cap_len;
	uint8_t cfg_type;
	uint8_t bar;
	uint8_t id;
	uint8_t padding[2];
	uint32_t offset;
	uint32_t length;
} __attribute__((packed));

struct msix_entry {
	uint32_t addr_lo, addr_hi, data, ctrl;
};

/* The KVM side of one vector: an eventfd wired to a GSI whose route carries the message. */
struct msix_vector {
	int fd;
	int gsi; /* -1 until first used */
	uint64_t addr;
	uint32_t data;
};

/* One queue's notification eventfd, as the event loop hands it back. */
struct vp_notifier {
	struct virtio_pci *vp;
	unsigned q;
	int fd;
};

struct virtio_pci {
	struct pci_dev pci;
	char name[32];
	struct virtio_dev *vdev;
	struct irq_host *irq;
	struct event_loop *loop;

	/* Common configuration state (under vdev->lock). */
	uint32_t device_feature_select;
	uint32_t driver_feature_select;
	uint16_t queue_select;
	uint16_t config_vector;

	/* Notifications: an eventfd per queue, on the loop, and an ioeventfd while mapped. */
	struct vp_notifier notifiers[VIRTIO_MAX_QUEUES];
	bool ioeventfd_on;
	uint64_t notify_addr;

	/* MSI-X and INTx (under msix_lock, taken after vdev->lock when both are held). */
	pthread_mutex_t msix_lock;
	unsigned nr_vectors;
	struct msix_entry table[MAX_VECTORS];
	uint64_t pba;
	struct msix_vector vec[MAX_VECTORS];
	bool msix_enabled, msix_masked;
	uint8_t isr;
	bool intx_level;
	unsigned msix_cap, cfg_cap;
};

/* Interrupts. */

static void fire_vector(struct virtio_pci *vp, unsigned v)
{
	struct msix_entry *e = &vp->table[v];
	struct msix_vector *mv = &vp->vec[v];
	uint64_t addr = (uint64_t)e->addr_hi << 32 | e->addr_lo, one = 1;
	bool fresh = mv->gsi < 0;

	if (fresh || mv->addr != addr || mv->data != e->data) {
		if (vp->irq->ops->msi_route(vp->irq->ctx, &mv->gsi, addr, e->data) ||
		    (fresh && vp->irq->ops->irqfd(vp->irq->ctx, (unsigned)mv->gsi, mv->fd, true))) {
			/* No route to spare: deliver this one message directly. */
			vp->irq->ops->send_msi(vp->irq->ctx, addr, e->data);
			return;
		}
		mv->addr = addr;
		mv->data = e->data;
	}
	if (write(mv->fd, &one, sizeof(one)) < 0)
		log_warn("%s: vector %u: eventfd write: %s", vp->name, v, strerror(errno));
}

static void signal_vector(struct virtio_pci *vp, uint16_t v)
{
	if (v >= vp->nr_vectors)
		return;
	if (vp->msix_masked || (vp->table[v].ctrl & MSIX_ENTRY_MASKED)) {
		vp->pba |= 1ULL << v;
		return;
	}
	fire_vector(vp, v);
}

static void raise_intx(struct virtio_pci *vp, uint8_t isr_bit)
{
	vp->isr |= isr_bit;
	if (!vp->intx_level) {
		vp->intx_level = true;
		vp->irq->ops->set_level(vp->irq->ctx, vp->pci.gsi, 1);
	}
}

static void vp_queue_interrupt(void *transport, unsigned q)
{
	struct virtio_pci *vp = transport;

	pthread_mutex_lock(&vp->msix_lock);
	if (vp->msix_enabled)
		signal_vector(vp, vp->vdev->vqs[q].msix_vector);
	else
		raise_intx(vp, ISR_QUEUE);
	pthread_mutex_unlock(&vp->msix_lock);
}

static void vp_config_interrupt(void *transport)
{
	struct virtio_pci *vp = transport;

	pthread_mutex_lock(&vp->msix_lock);
	vp->vdev->config_generation++;
	if (vp->msix_enabled) {
		vp->isr |= ISR_CONFIG;
		signal_vector(vp, vp->config_vector);
	} else {
		raise_intx(vp, ISR_CONFIG);
	}
	pthread_mutex_unlock(&vp->msix_lock);
}

static const struct virtio_transport_ops vp_transport_ops = {
    .queue_interrupt = vp_queue_interrupt,
    .config_interrupt = vp_config_interrupt,
};

/* Fire vectors that were held back while masked and no longer are. */
static void fire_pending(struct virtio_pci *vp)
{
	if (!vp->msix_enabled || vp->msix_masked)
		return;
	for (unsigned v = 0; v < vp->nr_vectors; v++) {
		if ((vp->pba & (1ULL << v)) && !(vp->table[v].ctrl & MSIX_ENTRY_MASKED)) {
			vp->pba &= ~(1ULL << v);
			fire_vector(vp, v);
		}
	}
}

/* Device reset (virtio 1.2 §2.4), under vdev->lock. */
static void vp_reset(struct virtio_pci *vp)
{
	struct virtio_dev *d = vp->vdev;

	if (d->ops->reset)
		d->ops->reset(d);
	for (unsigned q = 0; q < d->num_queues; q++)
		virtq_reset(&d->vqs[q]);
	d->status = 0;
	d->driver_features = 0;
	d->broken = false;
	vp->device_feature_select = vp->driver_feature_select = 0;
	vp->queue_select = 0;
	vp->config_vector = VIRTIO_MSI_NO_VECTOR;
	pthread_mutex_lock(&vp->msix_lock);
	vp->isr = 0;
	if (vp->intx_level) {
		vp->intx_level = false;
		vp->irq->ops->set_level(vp->irq->ctx, vp->pci.gsi, 0);
	}
	pthread_mutex_unlock(&vp->msix_lock);
}

static void set_status(struct virtio_pci *vp, uint8_t v)
{
	struct virtio_dev *d = vp->vdev;
	uint64_t offered = d->device_features | (1ULL << VIRTIO_F_VERSION_1);

	if (v == 0) {
		vp_reset(vp);
		return;
	}
	/* §3.1.1 step 5: FEATURES_OK sticks only for a subset of what was offered, which must
	 * include VERSION_1 (no legacy interface here). */
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(d->status & VIRTIO_STATUS_FEATURES_OK) &&
	    ((d->driver_features & ~offered) ||
	     !(d->driver_features & (1ULL << VIRTIO_F_VERSION_1))))
		v &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(d->status & VIRTIO_STATUS_DRIVER_OK)) {
		d->status = (uint8_t)(v | (d->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET));
		if (!(v & VIRTIO_STATUS_FEATURES_OK)) {
			virtio_dev_error(d, "DRIVER_OK without FEATURES_OK");
			return;
		}
		for (unsigned q = 0; q < d->num_queues; q++) {
			struct virtq *vq = &d->vqs[q];

			if (vq->enabled && virtq_activate(vq, d->mem, d->driver_features)) {
				virtio_dev_error(d,
						 "queue %u: invalid layout (size %u, desc %#llx, "
						 "avail %#llx, used %#llx)",
						 q, vq->size, (unsigned long long)vq->desc_gpa,
						 (unsigned long long)vq->avail_gpa,
						 (unsigned long long)vq->used_gpa);
				return;
			}
		}
		if (d->ops->activate && d->ops->activate(d))
			virtio_dev_error(d, "activation failed");
		return;
	}
	d->status = (uint8_t)(v | (d->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET));
}

/* Common configuration (§4.1.4.3), as a byte image for reads. */
static void common_image(struct virtio_pci *vp, uint8_t *img)
{
	struct virtio_dev *d = vp->vdev;
	uint64_t features = d->device_features | (1ULL << VIRTIO_F_VERSION_1);
	struct virtq *vq = vp->queue_select < d->num_queues ? &d->vqs[vp->queue_select] : NULL;

	memset(img, 0, COMMON_CFG_SIZE);
	pci_set(img + 0x00, 4, vp->device_feature_select);
	if (vp->device_feature_select < 2)
		pci_set(img + 0x04, 4, (uint32_t)(features >> (32 * vp->device_feature_select)));
	pci_set(img + 0x08, 4, vp->driver_feature_select);
	if (vp->driver_feature_select < 2)
		pci_set(img + 0x0c, 4,
			(uint32_t)(d->driver_features >> (32 * vp->driver_feature_select)));
	pci_set(img + 0x10, 2, vp->config_vector);
	pci_set(img + 0x12, 2, d->num_queues);
	img[0x14] = d->status;
	img[0x15] = (uint8_t)d->config_generation;
	pci_set(img + 0x16, 2, vp->queue_select);
	if (vq) {
		pci_set(img + 0x18, 2, vq->size);
		pci_set(img + 0x1a, 2, vq->msix_vector);
		pci_set(img + 0x1c, 2, vq->enabled);
		pci_set(img + 0x1e, 2, vp->queue_select); /* queue_notify_off */
		pci_set(img + 0x20, 4, (uint32_t)vq->desc_gpa);
		pci_set(img + 0x24, 4, (uint32_t)(vq->desc_gpa >> 32));
		pci_set(img + 0x28, 4, (uint32_t)vq->avail_gpa);
		pci_set(img + 0x2c, 4, (uint32_t)(vq->avail_gpa >> 32));
		pci_set(img + 0x30, 4, (uint32_t)vq->used_gpa);
		pci_set(img + 0x34, 4, (uint32_t)(vq->used_gpa >> 32));
	}
}

static void set_half(uint64_t *field, unsigned half, uint32_t v)
{
	unsigned shift = 32 * half;

	*field = (*field & ~(0xffffffffULL << shift)) | ((uint64_t)v << shift);
}

static void common_write(struct virtio_pci *vp, unsigned off, unsigned size, uint64_t v)
{
	struct virtio_dev *d = vp->vdev;
	struct virtq *vq = vp->queue_select < d->num_queues ? &d->vqs[vp->queue_select] : NULL;
	bool live = d->status & VIRTIO_STATUS_DRIVER_OK;

	/* The 64-bit queue addresses: whole, or a 32-bit half at a time. */
	if (off >= 0x20 && off < 0x38) {
		uint64_t *field;

		if (!vq || live || (size != 4 && size != 8) || off % size) {
			log_guest_error("%s: queue address write ignored (queue %u, offset %#x)",
					vp->name, vp->queue_select, off);
			return;
		}
		field = off < 0x28 ? &vq->desc_gpa : off < 0x30 ? &vq->avail_gpa : &vq->used_gpa;
		if (size == 8)
			*field = v;
		else
			set_half(field, (off / 4) & 1, (uint32_t)v);
		return;
	}
	switch (off) {
	case 0x00:
		vp->device_feature_select = (uint32_t)v;
		break;
	case 0x08:
		vp->driver_feature_select = (uint32_t)v;
		break;
	case 0x0c:
		if (vp->driver_feature_select < 2 && !(d->status & VIRTIO_STATUS_FEATURES_OK))
			set_half(&d->driver_features, vp->driver_feature_select, (uint32_t)v);
		break;
	case 0x10:
		vp->config_vector = v < vp->nr_vectors ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
		break;
	case 0x14:
		set_status(vp, (uint8_t)v);
		break;
	case 0x16:
		vp->queue_select = (uint16_t)v;
		break;
	case 0x18:
		if (!vq || live || v == 0 || v > vq->max_size || (v & (v - 1)))
			log_guest_error("%s: queue %u: size %llu refused", vp->name,
					vp->queue_select, (unsigned long long)v);
		else
			vq->size = (uint16_t)v;
		break;
	case 0x1a:
		if (vq)
			vq->msix_vector = v < vp->nr_vectors ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
		break;
	case 0x1c:
		/* §4.1.4.3.2: the driver never writes 0 to queue_enable. */
		if (vq && !live && v == 1)
			vq->enabled = true;
		break;
	default:
		log_guest_error("%s: write to read-only common configuration at %#x", vp->name,
				off);
		break;
	}
}

/* The BAR. */

static void notify_queue(struct virtio_pci *vp, unsigned q)
{
	if (q < vp->vdev->num_queues && vp->vdev->ops->queue_notify)
		vp->vdev->ops->queue_notify(vp->vdev, q);
}

static void bar_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct virtio_pci *vp = opaque;
	struct virtio_dev *d = vp->vdev;
	uint8_t img[COMMON_CFG_SIZE];
	uint64_t v = 0;

	if (off + size <= COMMON_CFG_SIZE) {
		pthread_mutex_lock(&d->lock);
		common_image(vp, img);
		pthread_mutex_unlock(&d->lock);
		memcpy(data, img + off, size);
		return;
	}
	if (off == VIRTIO_PCI_ISR_OFF) {
		/* §4.1.4.5: reading ISR clears it, and the INTx line with it. */
		pthread_mutex_lock(&vp->msix_lock);
		v = vp->isr;
		vp->isr = 0;
		if (vp->intx_level) {
			vp->intx_level = false;
			vp->irq->ops->set_level(vp->irq->ctx, vp->pci.gsi, 0);
		}
		pthread_mutex_unlock(&vp->msix_lock);
	} else if (off >= VIRTIO_PCI_DEVICE_OFF &&
		   off + size <= VIRTIO_PCI_DEVICE_OFF + d->config_size) {
		pthread_mutex_lock(&d->lock);
		d->ops->config_read(d, (uint32_t)(off - VIRTIO_PCI_DEVICE_OFF), data, size);
		pthread_mutex_unlock(&d->lock);
		return;
	} else if (off >= VIRTIO_PCI_MSIX_OFF &&
		   off + size <= VIRTIO_PCI_MSIX_OFF + 16 * vp->nr_vectors && size <= 4) {
		uint64_t rel = off - VIRTIO_PCI_MSIX_OFF;

		pthread_mutex_lock(&vp->msix_lock);
		memcpy(&v, (uint8_t *)&vp->table[rel / 16] + rel % 16, size);
		pthread_mutex_unlock(&vp->msix_lock);
	} else if (off >= VIRTIO_PCI_PBA_OFF && off + size <= VIRTIO_PCI_PBA_OFF + 8) {
		pthread_mutex_lock(&vp->msix_lock);
		v = vp->pba >> (8 * (off - VIRTIO_PCI_PBA_OFF));
		pthread_mutex_unlock(&vp->msix_lock);
	}
	memcpy(data, &v, size);
}

static void bar_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct virtio_pci *vp = opaque;
	struct virtio_dev *d = vp->vdev;
	uint64_t v = 0;

	memcpy(&v, data, size);
	if (off + size <= COMMON_CFG_SIZE) {
		pthread_mutex_lock(&d->lock);
		common_write(vp, (unsigned)off, size, v);
		pthread_mutex_unlock(&d->lock);
	} else if (off >= VIRTIO_PCI_DEVICE_OFF &&
		   off + size <= VIRTIO_PCI_DEVICE_OFF + d->config_size) {
		pthread_mutex_lock(&d->lock);
		d->ops->config_write(d, (uint32_t)(off - VIRTIO_PCI_DEVICE_OFF), data, size);
		pthread_mutex_unlock(&d->lock);
	} else if (off >= VIRTIO_PCI_NOTIFY_OFF &&
		   off < VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULTIPLIER * d->num_queues) {
		/* A notification that did not go through the ioeventfd. */
		notify_queue(vp, (unsigned)(off - VIRTIO_PCI_NOTIFY_OFF) /
				     VIRTIO_PCI_NOTIFY_MULTIPLIER);
	} else if (off >= VIRTIO_PCI_MSIX_OFF &&
		   off + size <= VIRTIO_PCI_MSIX_OFF + 16 * vp->nr_vectors && size == 4) {
		uint64_t rel = off - VIRTIO_PCI_MSIX_OFF;

		pthread_mutex_lock(&vp->msix_lock);
		memcpy((uint8_t *)&vp->table[rel / 16] + rel % 16, &v, 4);
		if (rel % 16 == 12)
			fire_pending(vp); /* the entry may have been unmasked */
		pthread_mutex_unlock(&vp->msix_lock);
	} else {
		log_guest_error("%s: BAR write at %#llx (%u bytes) ignored", vp->name,
				(unsigned long long)off, size);
	}
}

static const struct io_ops bar_ops = {.read = bar_read, .write = bar_write};

/* Configuration space hooks: MSI-X control, the PCI configuration access window. */

static void sync_msix_control(struct virtio_pci *vp)
{
	uint16_t ctl = (uint16_t)pci_get(vp->pci.cfg + vp->msix_cap + 2, 2);

	pthread_mutex_lock(&vp->msix_lock);
	vp->msix_enabled = ctl & MSIX_ENABLE;
	vp->msix_masked = ctl & MSIX_FUNCTION_MASK;
	fire_pending(vp);
	pthread_mutex_unlock(&vp->msix_lock);
}

/* §4.1.4.9: VIRTIO_PCI_CAP_PCI_CFG, a window into the BAR through configuration space. */
static bool cfg_window(struct virtio_pci *vp, uint32_t *off, unsigned *len)
{
	const uint8_t *c = vp->pci.cfg + vp->cfg_cap;

	*off = pci_get(c + 8, 4);
	*len = pci_get(c + 12, 4);
	return c[4] == VIRTIO_PCI_BAR && (*len == 1 || *len == 2 || *len == 4) &&
	       *off % *len == 0 && *off < VIRTIO_PCI_BAR_SIZE;
}

static void vp_config_written(struct pci_dev *pd, unsigned offset, unsigned size)
{
	struct virtio_pci *vp = pd->opaque;
	uint32_t off;
	unsigned len;

	if (offset < vp->msix_cap + 4 && offset + size > vp->msix_cap + 2)
		sync_msix_control(vp);
	if (offset < vp->cfg_cap + 20 && offset + size > vp->cfg_cap + 16 &&
	    cfg_window(vp, &off, &len))
		bar_write(vp, off, pd->cfg + vp->cfg_cap + 16, len);
}

static void vp_config_read(struct pci_dev *pd, unsigned offset, unsigned size)
{
	struct virtio_pci *vp = pd->opaque;
	uint32_t off;
	unsigned len;

	if (offset < vp->cfg_cap + 20 && offset + size > vp->cfg_cap + 16 &&
	    cfg_window(vp, &off, &len))
		bar_read(vp, off, pd->cfg + vp->cfg_cap + 16, len);
}

static void set_ioeventfds(struct virtio_pci *vp, bool assign)
{
	for (unsigned q = 0; q < vp->vdev->num_queues; q++) {
		uint64_t addr = vp->notify_addr + VIRTIO_PCI_NOTIFY_MULTIPLIER * q;

		/* Linux writes the queue index as 16 bits; other sizes take the MMIO path. */
		if (vp->irq->ops->ioeventfd(vp->irq->ctx, addr, 2, vp->notifiers[q].fd, false,
					    assign))
			log_warn("%s: queue %u: ioeventfd %s failed; notifications will exit",
				 vp->name, q, assign ? "assign" : "deassign");
	}
	vp->ioeventfd_on = assign;
}

static void vp_bar_moved(struct pci_dev *pd, unsigned bar, uint64_t addr, bool mapped)
{
	struct virtio_pci *vp = pd->opaque;

	if (vp->ioeventfd_on)
		set_ioeventfds(vp, false);
	if (mapped) {
		vp->notify_addr = addr + VIRTIO_PCI_NOTIFY_OFF;
		set_ioeventfds(vp, true);
	}
}

static const struct pci_dev_ops vp_pci_ops = {
    .config_written = vp_config_written,
    .config_read = vp_config_read,
    .bar_moved = vp_bar_moved,
};

static void on_notify(void *opaque, uint32_t events)
{
	struct vp_notifier *n = opaque;
	uint64_t count;

	if (read(n->fd, &count, sizeof(count)) == sizeof(count))
		notify_queue(n->vp, n->q);
}

static int add_caps(struct virtio_pci *vp)
{
	struct virtio_dev *d = vp->vdev;
	struct virtio_pci_cap common = {PCI_CAP_ID_VNDR,
					0,
					sizeof(common),
					VIRTIO_PCI_CAP_COMMON_CFG,
					VIRTIO_PCI_BAR,
					0,
					{0},
					VIRTIO_PCI_COMMON_OFF,
					COMMON_CFG_SIZE};
	struct virtio_pci_cap isr = {
	    PCI_CAP_ID_VNDR,	0, sizeof(isr), VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_BAR, 0, {0},
	    VIRTIO_PCI_ISR_OFF, 4};
	struct virtio_pci_cap dev = {PCI_CAP_ID_VNDR, 0, sizeof(dev), VIRTIO_PCI_CAP_DEVICE_CFG,
				     VIRTIO_PCI_BAR,  0, {0},	      VIRTIO_PCI_DEVICE_OFF,
				     d->config_size};
	struct {
		struct virtio_pci_cap cap;
		uint32_t multiplier;
	} __attribute__((packed)) notify = {
	    {PCI_CAP_ID_VNDR,
	     0,
	     sizeof(notify),
	     VIRTIO_PCI_CAP_NOTIFY_CFG,
	     VIRTIO_PCI_BAR,
	     0,
	     {0},
	     VIRTIO_PCI_NOTIFY_OFF,
	     VIRTIO_PCI_NOTIFY_MULTIPLIER * d->num_queues},
	    VIRTIO_PCI_NOTIFY_MULTIPLIER,
	};
	struct {
		struct virtio_pci_cap cap;
		uint8_t data[4];
	} __attribute__((packed)) cfg = {
	    {PCI_CAP_ID_VNDR, 0, sizeof(cfg), VIRTIO_PCI_CAP_PCI_CFG, 0, 0, {0}, 0, 0},
	    {0},
	};
	struct {
		uint8_t id, next;
		uint16_t control;
		uint32_t table, pba;
	} __attribute__((packed)) msix = {
	    PCI_CAP_ID_MSIX,
	    0,
	    (uint16_t)(vp->nr_vectors - 1),
	    VIRTIO_PCI_MSIX_OFF | VIRTIO_PCI_BAR,
	    VIRTIO_PCI_PBA_OFF | VIRTIO_PCI_BAR,
	};
	int at;

	if (pci_dev_add_cap(&vp->pci, &common, sizeof(common)) < 0 ||
	    pci_dev_add_cap(&vp->pci, &isr, sizeof(isr)) < 0 ||
	    /* A device without configuration (virtio-rng) has no device capability. */
	    (d->config_size && pci_dev_add_cap(&vp->pci, &dev, sizeof(dev)) < 0) ||
	    pci_dev_add_cap(&vp->pci, &notify, sizeof(notify)) < 0)
		return -ENOSPC;
	at = pci_dev_add_cap(&vp->pci, &cfg, sizeof(cfg));
	if (at < 0)
		return -ENOSPC;
	vp->cfg_cap = (unsigned)at;
	/* The window's bar, offset, length and data are the driver's to write. */
	vp->pci.wmask[at + 4] = 0xff;
	memset(vp->pci.wmask + at + 8, 0xff, 12);
	at = pci_dev_add_cap(&vp->pci, &msix, sizeof(msix));
	if (at < 0)
		return -ENOSPC;
	vp->msix_cap = (unsigned)at;
	pci_set(vp->pci.wmask + at + 2, 2, MSIX_ENABLE | MSIX_FUNCTION_MASK);
	return 0;
}

int virtio_pci_create(struct pci_bus *bus, struct virtio_dev *vdev, struct irq_host *irq,
		      struct event_loop *loop, struct virtio_pci **out)
{
	struct virtio_pci *vp = calloc(1, sizeof(*vp));
	int err = 0;

	if (!vp)
		return -ENOMEM;
	snprintf(vp->name, sizeof(vp->name), "%s", vdev->id);
	vp->vdev = vdev;
	vp->irq = irq;
	vp->loop = loop;
	vp->config_vector = VIRTIO_MSI_NO_VECTOR;
	vp->nr_vectors = vdev->num_queues + 1;
	pthread_mutex_init(&vp->msix_lock, NULL);
	for (unsigned v = 0; v < MAX_VECTORS; v++) {
		vp->vec[v].fd = -1;
		vp->vec[v].gsi = -1;
		vp->table[v].ctrl = MSIX_ENTRY_MASKED; /* PCI spec: entries start masked */
	}
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		vp->notifiers[q] = (struct vp_notifier){vp, q, -1};

	pci_dev_init(&vp->pci, vp->name, VIRTIO_PCI_VENDOR,
		     (uint16_t)(VIRTIO_PCI_DEVICE_ID + vdev->ops->device_id), vdev->ops->pci_class,
		     1, VIRTIO_PCI_VENDOR, 0x40);
	vp->pci.ops = &vp_pci_ops;
	vp->pci.opaque = vp;
	err = pci_dev_add_bar(&vp->pci, VIRTIO_PCI_BAR, VIRTIO_PCI_BAR_SIZE, true, &bar_ops, vp);
	if (!err)
		err = add_caps(vp);
	if (err)
		goto err;
	for (unsigned v = 0; v < vp->nr_vectors; v++) {
		vp->vec[v].fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vp->vec[v].fd < 0) {
			err = -errno;
			goto err;
		}
	}
	for (unsigned q = 0; q < vdev->num_queues; q++) {
		vp->notifiers[q].fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vp->notifiers[q].fd < 0) {
			err = -errno;
			goto err;
		}
		err = event_loop_add(loop, vp->notifiers[q].fd, EPOLLIN, on_notify,
				     &vp->notifiers[q]);
		if (err) {
			close(vp->notifiers[q].fd);
			vp->notifiers[q].fd = -1;
			goto err;
		}
	}
	vdev->transport_ops = &vp_transport_ops;
	vdev->transport = vp;
	err = pci_bus_add(bus, &vp->pci);
	if (err)
		goto err;
	*out = vp;
	return 0;
err:
	virtio_pci_destroy(vp);
	return err;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
	if (!vp)
		return;
	if (vp->pci.bus)
		pci_bus_remove(vp->pci.bus, &vp->pci);
	if (vp->ioeventfd_on)
		set_ioeventfds(vp, false);
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		if (vp->notifiers[q].fd < 0)
			continue;
		event_loop_del(vp->loop, vp->notifiers[q].fd);
		close(vp->notifiers[q].fd);
	}
	for (unsigned v = 0; v < MAX_VECTORS; v++) {
		if (vp->vec[v].gsi >= 0) {
			vp->irq->ops->irqfd(vp->irq->ctx, (unsigned)vp->vec[v].gsi, vp->vec[v].fd,
					    false);
			vp->irq->ops->msi_route_free(vp->irq->ctx, vp->vec[v].gsi);
		}
		if (vp->vec[v].fd >= 0)
			close(vp->vec[v].fd);
	}
	if (vp->vdev->transport == vp) {
		vp->vdev->transport_ops = NULL;
		vp->vdev->transport = NULL;
	}
	pthread_mutex_destroy(&vp->msix_lock);
	free(vp);
}

/* Snapshots. */

struct virtq_state {
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t size, msix_vector, last_avail_idx, used_idx, signalled_used;
	uint8_t enabled, ready, signalled_used_valid, pad[3];
};

struct virtio_pci_state {
	uint64_t driver_features;
	uint64_t config_generation;
	uint64_t pba;
	uint32_t device_feature_select, driver_feature_select;
	uint16_t queue_select, config_vector;
	uint8_t status, broken, msix_enabled, msix_masked, isr, intx_level, pad[2];
	struct msix_entry table[MAX_VECTORS];
	struct virtq_state queues[VIRTIO_MAX_QUEUES];
};

static void section_name(char *buf, size_t len, const struct virtio_pci *vp)
{
	snprintf(buf, len, "%s.virtio", vp->vdev->id);
}

int virtio_pci_save(struct virtio_pci *vp, struct snap_writer *w)
{
	struct virtio_dev *d = vp->vdev;
	struct virtio_pci_state st = {0};
	char name[SNAPSHOT_NAME_MAX];

	pthread_mutex_lock(&d->lock);
	if (d->ops->quiesce)
		d->ops->quiesce(d);
	st.driver_features = d->driver_features;
	st.config_generation = d->config_generation;
	st.device_feature_select = vp->device_feature_select;
	st.driver_feature_select = vp->driver_feature_select;
	st.queue_select = vp->queue_select;
	st.config_vector = vp->config_vector;
	st.status = d->status;
	st.broken = d->broken;
	for (unsigned q = 0; q < d->num_queues; q++) {
		const struct virtq *vq = &d->vqs[q];

		st.queues[q] = (struct virtq_state){
		    .desc_gpa = vq->desc_gpa,
		    .avail_gpa = vq->avail_gpa,
		    .used_gpa = vq->used_gpa,
		    .size = vq->size,
		    .msix_vector = vq->msix_vector,
		    .last_avail_idx = vq->last_avail_idx,
		    .used_idx = vq->used_idx,
		    .signalled_used = vq->signalled_used,
		    .enabled = vq->enabled,
		    .ready = vq->ready,
		    .signalled_used_valid = vq->signalled_used_valid,
		};
	}
	pthread_mutex_lock(&vp->msix_lock);
	st.pba = vp->pba;
	st.msix_enabled = vp->msix_enabled;
	st.msix_masked = vp->msix_masked;
	st.isr = vp->isr;
	st.intx_level = vp->intx_level;
	memcpy(st.table, vp->table, sizeof(st.table));
	pthread_mutex_unlock(&vp->msix_lock);
	section_name(name, sizeof(name), vp);
	snap_put(w, name, &st, sizeof(st));
	if (d->ops->save)
		d->ops->save(d, w);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

/* The queues as the snapshot left them: each ready one validated and mapped again. */
static int load_queues(struct virtio_pci *vp, const struct virtio_pci_state *st)
{
	struct virtio_dev *d = vp->vdev;

	for (unsigned q = 0; q < d->num_queues; q++) {
		const struct virtq_state *qs = &st->queues[q];
		struct virtq *vq = &d->vqs[q];

		vq->desc_gpa = qs->desc_gpa;
		vq->avail_gpa = qs->avail_gpa;
		vq->used_gpa = qs->used_gpa;
		vq->size = qs->size;
		vq->msix_vector = qs->msix_vector;
		vq->enabled = qs->enabled;
		if (!qs->ready)
			continue;
		if (virtq_activate(vq, d->mem, d->driver_features)) {
			log_error("%s: queue %u: the snapshot's layout is invalid", vp->name, q);
			return -EINVAL;
		}
		vq->last_avail_idx = qs->last_avail_idx;
		vq->used_idx = qs->used_idx;
		vq->signalled_used = qs->signalled_used;
		vq->signalled_used_valid = qs->signalled_used_valid;
	}
	return 0;
}

int virtio_pci_load(struct virtio_pci *vp, const struct snap_reader *r)
{
	struct virtio_dev *d = vp->vdev;
	uint64_t offered = d->device_features | (1ULL << VIRTIO_F_VERSION_1);
	struct virtio_pci_state st;
	char name[SNAPSHOT_NAME_MAX];
	bool live;
	int err;

	section_name(name, sizeof(name), vp);
	err = snap_get(r, name, &st, sizeof(st));
	if (err)
		return err;
	if (st.driver_features & ~offered) {
		log_error("%s: the snapshot's features %#llx are not all offered here (%#llx)",
			  vp->name, (unsigned long long)st.driver_features,
			  (unsigned long long)offered);
		return -EINVAL;
	}
	/* Interrupts first: a device may signal one as it comes back. */
	pthread_mutex_lock(&vp->msix_lock);
	memcpy(vp->table, st.table, sizeof(vp->table));
	vp->pba = st.pba & ((1ULL << vp->nr_vectors) - 1);
	vp->msix_enabled = st.msix_enabled;
	vp->msix_masked = st.msix_masked;
	vp->isr = st.isr;
	if (st.intx_level && !vp->msix_enabled)
		raise_intx(vp, 0);
	pthread_mutex_unlock(&vp->msix_lock);

	pthread_mutex_lock(&d->lock);
	d->driver_features = st.driver_features;
	d->config_generation = st.config_generation;
	d->status = st.status;
	d->broken = st.broken;
	vp->device_feature_select = st.device_feature_select;
	vp->driver_feature_select = st.driver_feature_select;
	vp->queue_select = st.queue_select;
	vp->config_vector = st.config_vector;
	err = load_queues(vp, &st);
	if (!err && d->ops->load)
		err = d->ops->load(d, r);
	live = !err && (d->status & VIRTIO_STATUS_DRIVER_OK) && !d->broken;
	if (live && d->ops->activate && d->ops->activate(d)) {
		log_error("%s: activation after restore failed", vp->name);
		err = -EIO;
	}
	pthread_mutex_unlock(&d->lock);
	if (err)
		return err;

	for (unsigned q = 0; live && q < d->num_queues; q++) {
		if (d->vqs[q].ready)
			notify_queue(vp, q);
	}
	return 0;
}
