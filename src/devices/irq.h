/* SPDX-License-Identifier: MIT */
/*
 * What devices may ask of the machine's interrupt and notification plumbing. The VMM backs it
 * with KVM (KVM_IRQ_LINE, GSI routes for MSI, irqfd, ioeventfd); unit tests back it with a
 * recorder. Devices never include KVM headers.
 */
#ifndef YUN_DEVICES_IRQ_H
#define YUN_DEVICES_IRQ_H

#include <stdbool.h>
#include <stdint.h>

struct irq_host_ops {
	/* Drive a GSI (legacy ISA IRQ or IOAPIC pin) to level 0 or 1. */
	int (*set_level)(void *ctx, unsigned gsi, int level);
	/* Deliver one MSI message now. */
	int (*send_msi)(void *ctx, uint64_t addr, uint32_t data);
	/*
	 * Route an MSI message to a GSI that an irqfd can trigger. *gsi < 0 allocates a new GSI;
	 * otherwise the route of *gsi is updated in place.
	 */
	int (*msi_route)(void *ctx, int *gsi, uint64_t addr, uint32_t data);
	int (*msi_route_free)(void *ctx, int gsi);
	/* Attach (assign) or detach an eventfd that raises gsi when written. */
	int (*irqfd)(void *ctx, unsigned gsi, int fd, bool assign);
	/*
	 * Attach or detach an eventfd that KVM signals when the guest writes len bytes at addr
	 * (port I/O when pio), instead of exiting to user space.
	 */
	int (*ioeventfd)(void *ctx, uint64_t addr, unsigned len, int fd, bool pio, bool assign);
};

struct irq_host {
	const struct irq_host_ops *ops;
	void *ctx;
};

#endif
