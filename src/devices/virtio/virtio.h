/* SPDX-License-Identifier: MIT */
/*
 * A virtio device, independent of its transport. A device is a table of operations plus its
 * state; the transport (virtio/pci.c) owns feature negotiation, status, the queues' registers
 * and interrupts, and calls the device through these operations. Devices are listed explicitly
 * by the VMM (no constructors), and each gets its own configuration.
 */
#ifndef YUN_DEVICES_VIRTIO_VIRTIO_H
#define YUN_DEVICES_VIRTIO_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio/queue.h"
#include "vmm/memory.h"

/* virtio 1.2 §2.1 device status */
#define VIRTIO_STATUS_ACKNOWLEDGE	 1
#define VIRTIO_STATUS_DRIVER		 2
#define VIRTIO_STATUS_DRIVER_OK		 4
#define VIRTIO_STATUS_FEATURES_OK	 8
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED		 128

/* §6 reserved feature bits */
#define VIRTIO_F_INDIRECT_DESC	   28
#define VIRTIO_F_EVENT_IDX	   29
#define VIRTIO_F_VERSION_1	   32
#define VIRTIO_F_ACCESS_PLATFORM   33
#define VIRTIO_F_RING_PACKED	   34
#define VIRTIO_F_IN_ORDER	   35
#define VIRTIO_F_ORDER_PLATFORM	   36
#define VIRTIO_F_SR_IOV		   37
#define VIRTIO_F_NOTIFICATION_DATA 38

/* §5 device IDs */
#define VIRTIO_ID_NET	  1
#define VIRTIO_ID_BLOCK	  2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG	  4
#define VIRTIO_ID_VSOCK	  19

#define VIRTIO_MAX_QUEUES 17 /* virtio-net: 8 queue pairs and the control queue */

struct virtio_dev;
struct snap_writer;
struct snap_reader;

struct virtio_dev_ops {
	const char *name;     /* "virtio-blk" */
	uint16_t device_id;   /* VIRTIO_ID_* */
	uint8_t pci_class[3]; /* class, subclass, prog-if for the PCI transport */
	/* Device-specific configuration space (§4.1.4.6); the transport checks bounds. */
	void (*config_read)(struct virtio_dev *d, uint32_t offset, void *data, unsigned size);
	void (*config_write)(struct virtio_dev *d, uint32_t offset, const void *data,
			     unsigned size);
	/* The driver set DRIVER_OK and every enabled queue validated: start serving. */
	int (*activate)(struct virtio_dev *d);
	/* The driver kicked queue q (ioeventfd). Runs on the event loop thread. */
	void (*queue_notify)(struct virtio_dev *d, unsigned q);
	/* Device reset (§2.4): forget requests in flight, back to the initial state. */
	void (*reset)(struct virtio_dev *d);
	/*
	 * Snapshots (optional), under the lock. quiesce: finish what is in flight, so that the
	 * queues' positions say everything. save: the device's own state beyond the transport's,
	 * in sections named after d->id. load: that state back, after the transport restored the
	 * queues and before the device is activated again.
	 */
	void (*quiesce)(struct virtio_dev *d);
	void (*save)(struct virtio_dev *d, struct snap_writer *w);
	int (*load)(struct virtio_dev *d, const struct snap_reader *r);
};

/* What the transport does for the device. */
struct virtio_transport_ops {
	void (*queue_interrupt)(void *transport, unsigned q);
	void (*config_interrupt)(void *transport);
};

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	void *priv;	/* the device's own state */
	const char *id; /* "disk0": names the device in messages */
	const struct guest_mem *mem;

	/* Fixed at creation by the device. */
	uint64_t device_features; /* VIRTIO_F_VERSION_1 is added by the transport */
	uint32_t config_size;
	unsigned num_queues;
	struct virtq vqs[VIRTIO_MAX_QUEUES];

	/* Negotiated with the driver, owned by the transport. */
	uint64_t driver_features;
	uint8_t status;
	bool broken; /* the driver broke a rule; nothing is served until reset */
	uint64_t config_generation;

	/* Held by the transport around register accesses, and by devices around queue work. */
	pthread_mutex_t lock;

	const struct virtio_transport_ops *transport_ops;
	void *transport;

	/* Counters for metrics. */
	uint64_t stat_notifications;
	uint64_t stat_interrupts;
};

/* Zero the common state; a device calls this, then sets features, queues and config size. */
void virtio_dev_init(struct virtio_dev *d, const struct virtio_dev_ops *ops, void *priv,
		     const char *id, const struct guest_mem *mem, unsigned num_queues,
		     uint16_t queue_max_size);
/* Whether the driver accepted feature bit `bit`. */
bool virtio_has_feature(const struct virtio_dev *d, unsigned bit);
/* Whether queue q may be served: the driver is ready, set the queue up, and broke no rule. */
bool virtio_queue_live(const struct virtio_dev *d, unsigned q);
/* Tell the driver that queue q has used buffers, if it wants to be told. */
void virtio_queue_notify_driver(struct virtio_dev *d, unsigned q);
/*
 * The driver broke a rule (virtio 1.2 §2.1.2): log it (rate-limited), set DEVICE_NEEDS_RESET,
 * stop serving, raise a configuration interrupt. The VMM goes on.
 */
void virtio_dev_error(struct virtio_dev *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
