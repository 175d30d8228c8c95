/* SPDX-License-Identifier: MIT */
/*
 * The virtio 1.x PCI transport (virtio 1.2 §4.1), modern only: one 64-bit memory BAR holding
 * the common configuration, ISR status, device configuration, notification area and the
 * MSI-X table and PBA. Queue notifications arrive through ioeventfds on the event loop;
 * interrupts leave through MSI-X vectors backed by irqfds (INTx when MSI-X is off).
 */
#ifndef YUN_DEVICES_VIRTIO_PCI_H
#define YUN_DEVICES_VIRTIO_PCI_H

#include "common/event_loop.h"
#include "devices/irq.h"
#include "devices/pci.h"
#include "devices/virtio/virtio.h"

struct virtio_pci;

int virtio_pci_create(struct pci_bus *bus, struct virtio_dev *vdev, struct irq_host *irq,
		      struct event_loop *loop, struct virtio_pci **out);
void virtio_pci_destroy(struct virtio_pci *vp);
/*
 * Snapshots (section "<id>.virtio", then the device's own): the negotiated features, status,
 * every queue's layout and positions, MSI-X. Save with the VM paused, on the event loop's
 * thread; the device finishes what it has in flight first. Load after the PCI bus (whose BARs
 * place the notification area), before the VM runs: the queues are validated and mapped
 * again, the device activated, and every live queue served once, for a notification that
 * arrived just before the snapshot.
 */
int virtio_pci_save(struct virtio_pci *vp, struct snap_writer *w);
int virtio_pci_load(struct virtio_pci *vp, const struct snap_reader *r);

/* Offsets in the BAR, for tests. */
#define VIRTIO_PCI_COMMON_OFF	     0x0000
#define VIRTIO_PCI_ISR_OFF	     0x1000
#define VIRTIO_PCI_DEVICE_OFF	     0x2000
#define VIRTIO_PCI_NOTIFY_OFF	     0x3000
#define VIRTIO_PCI_MSIX_OFF	     0x4000
#define VIRTIO_PCI_PBA_OFF	     0x5000
#define VIRTIO_PCI_BAR_SIZE	     0x8000
#define VIRTIO_PCI_BAR		     4
#define VIRTIO_PCI_NOTIFY_MULTIPLIER 4
#define VIRTIO_MSI_NO_VECTOR	     0xffff

#endif
