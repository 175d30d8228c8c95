/* SPDX-License-Identifier: MIT */
/* What the test guest's virtio drivers share: modern PCI transport, split rings, and the
 * helpers main.c has for finding a device, reading the command line and waiting. */
#ifndef YUN_GUEST_TEST_VIRTIO_H
#define YUN_GUEST_TEST_VIRTIO_H

#include "guest.h"

struct virtio_cap {
	unsigned bar;
	uint32_t offset, length;
	uint64_t addr;
};

struct vpci {
	const char *name;
	unsigned dev;
	struct virtio_cap common, notify, isr, device;
	uint32_t notify_mult;
	unsigned msix_cap;
	uint64_t msix_table;
	volatile uint8_t *cfg;
};

#define VIRTIO_STATUS_ACK	  1
#define VIRTIO_STATUS_DRIVER	  2
#define VIRTIO_STATUS_DRIVER_OK	  4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED	  128

#define VIRTIO_F_VERSION_1 32

/* Common configuration (virtio 1.2 §4.1.4.3). */
#define CC_DFSELECT   0x00
#define CC_DF	      0x04
#define CC_GFSELECT   0x08
#define CC_GF	      0x0c
#define CC_MSIX	      0x10
#define CC_NUMQ	      0x12
#define CC_STATUS     0x14
#define CC_QSELECT    0x16
#define CC_QSIZE      0x18
#define CC_QMSIX      0x1a
#define CC_QENABLE    0x1c
#define CC_QNOTIFY    0x1e
#define CC_QDESC      0x20
#define CC_QDRIVER    0x28
#define CC_QDEVICE    0x30
#define VIRTIO_NO_MSI 0xffff

/* A register of the common configuration at cc (a device's common.addr). */
#define CC8(cc, o)  (*(volatile uint8_t *)((cc) + (o)))
#define CC16(cc, o) (*(volatile uint16_t *)((cc) + (o)))
#define CC32(cc, o) (*(volatile uint32_t *)((cc) + (o)))

/* The 64 feature bits the device offers, and those the driver takes: two 32-bit windows each
 * (§4.1.4.3). */
static inline uint64_t cc_device_features(volatile uint8_t *cc)
{
	uint64_t f;

	CC32(cc, CC_DFSELECT) = 0;
	f = CC32(cc, CC_DF);
	CC32(cc, CC_DFSELECT) = 1;
	return f | (uint64_t)CC32(cc, CC_DF) << 32;
}

static inline void cc_driver_features(volatile uint8_t *cc, uint64_t f)
{
	CC32(cc, CC_GFSELECT) = 0;
	CC32(cc, CC_GF) = (uint32_t)f;
	CC32(cc, CC_GFSELECT) = 1;
	CC32(cc, CC_GF) = (uint32_t)(f >> 32);
}

/* Split virtqueues (virtio 1.2 §2.7). */
struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};
#define VRING_DESC_F_NEXT	   1
#define VRING_DESC_F_WRITE	   2
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY	   1

/* Find the modern virtio device 1af4:(0x1040 + type) on bus 0; class_hi is its PCI class and
 * subclass as QEMU gives them. */
bool find_virtio(struct vpci *b, unsigned type, uint16_t class_hi);
/* The capabilities a modern virtio device has; need_device: one for its configuration. */
bool read_caps(struct vpci *b, bool need_device);

/* The value of key= on the command line, copied into buf; false when absent. */
bool arg(const char *key, char *buf, size_t size);
bool arg_num(const char *key, uint64_t *v);
/* Busy-wait on the ACPI PM timer (check_acpi() finds it). */
void delay_us(uint64_t us);

/* MSI-X: the vectors main.c's IDT serves, the count of each taken, and table entry i set to
 * deliver vector to the LAPIC apic. */
#define VEC_CONFIG 0x40
#define VEC_QUEUE  0x41
extern volatile unsigned irq_count[256];
void msix_entry(uint64_t table, unsigned i, uint8_t vector, uint32_t apic);

/* virtio-console (console.c): its checks; vcon=console then relays this run's output. */
void check_virtio_console(void);
void virtio_console_relay(void);

/* virtio-vsock (vsock.c): its checks, with vsock_cid= and vsock_port=. */
void check_virtio_vsock(void);

/* bench=net-*: the network device path (net.c). */
void bench_net(const char *mode);

#endif
