/* SPDX-License-Identifier: MIT */
/*
 * One virtual machine: the KVM VM, its memory, its vCPUs, its buses and devices, and the
 * reason it stopped. main() creates a vm from a checked vm_config, runs it, and destroys it;
 * a guest reset is a new vm from the same config.
 */
#ifndef YUN_VMM_VM_H
#define YUN_VMM_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/event_loop.h"
#include "devices/bus.h"
#include "devices/irq.h"
#include "vmm/config.h"
#include "vmm/memory.h"

struct vcpu;
struct serial;
struct i8042;
struct rtc;
struct acpi_pm;
struct pci_bus;
struct virtio_blk;
struct virtio_pci;
struct virtio_net;
struct virtio_rng;
struct virtio_console;
struct virtio_vsock;
struct console;

/* Why the VM stopped; the process's exit status follows from it (see main.c). */
enum vm_exit {
	VM_RUNNING = 0,
	VM_EXIT_POWEROFF, /* the guest powered off (ACPI S5) */
	VM_EXIT_RESET,	  /* the guest asked for a reset (i8042, ACPI reset register) */
	VM_EXIT_CRASH,	  /* triple fault, or an instruction KVM could not run */
	VM_EXIT_ERROR,	  /* the VMM or KVM failed */
	VM_EXIT_SIGNAL,	  /* stopped from outside (SIGINT/SIGTERM, console escape) */
};

#define VM_MAX_GSI_ROUTES 1024

struct vm {
	const struct vm_config *cfg;
	int kvm_fd;
	int vm_fd;
	int vcpu_mmap_size;
	struct guest_mem mem;
	uint64_t mmio64_base; /* start of the 64-bit PCI window, above RAM */

	struct io_bus pio;
	struct io_bus mmio;
	struct event_loop loop;
	bool loop_ready;
	int signal_fd; /* SIGINT, SIGTERM, SIGHUP while running */
	struct irq_host irq;

	/* GSI routing: the default irqchip routes, then one route per MSI vector in use. */
	pthread_mutex_t routes_lock;
	struct kvm_irq_routing *routes;
	uint32_t next_msi_gsi;

	unsigned nr_vcpus;
	struct vcpu **vcpus;

	struct console *console;
	struct serial *serial;
	struct i8042 *i8042;
	struct rtc *rtc;
	struct acpi_pm *pm;
	struct pci_bus *pci;
	struct virtio_blk *blk[VM_MAX_DISKS];
	struct virtio_pci *blk_pci[VM_MAX_DISKS];
	struct virtio_net *net;
	struct virtio_pci *net_pci;
	struct virtio_rng *rng;
	struct virtio_pci *rng_pci;
	struct virtio_console *vconsole; /* with --console-device virtio */
	struct virtio_pci *vconsole_pci;
	struct virtio_vsock *vsock;
	struct virtio_pci *vsock_pci;

	/* Set once, by the first vm_request_stop(). */
	pthread_mutex_t exit_lock;
	enum vm_exit exit;
	int signal; /* for VM_EXIT_SIGNAL */

	/* Pausing: vCPU threads park outside KVM_RUN while `paused`; written under exit_lock,
	 * read without it first (vm_park_vcpu()). */
	pthread_cond_t park_cond;
	bool paused;
	unsigned parked; /* vCPU threads parked now */

	/* When vmm_run() began building this VM (CLOCK_MONOTONIC ns), so that vCPU 0 can say how
	 * long it took until it runs; restored tells a restore from a boot. */
	uint64_t build_started_ns;
	bool restored;
};

/*
 * Build the machine described by cfg (already validated), its console (COM1 or a
 * virtio-console, as cfg says) connected to `console`: booting cfg's kernel, or, with
 * `restore`, going on from the snapshot in that directory (snapshot.h). Logs and returns
 * -errno on failure.
 */
int vm_create(const struct vm_config *cfg, struct console *console, const char *restore,
	      struct vm **out);
/*
 * Block SIGINT, SIGTERM and SIGHUP, the signals that stop a VM, in the calling thread (and the
 * threads it starts), and give their set: vm_run() takes them through a signalfd.
 */
void vm_block_stop_signals(sigset_t *set);
/* Start the vCPUs and serve devices until the VM stops; returns why it stopped. */
enum vm_exit vm_run(struct vm *vm);
void vm_destroy(struct vm *vm);
/* Stop the VM for this reason (first caller wins); callable from any thread or device. */
void vm_request_stop(struct vm *vm, enum vm_exit why);
enum vm_exit vm_exit_reason(struct vm *vm);
/*
 * Park every vCPU outside KVM_RUN and return once all are parked (or the VM stopped: -ESHUTDOWN).
 * Devices go on finishing what the guest already asked for; the guest asks nothing new.
 */
int vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
/* For vCPU threads: whether a pause is asked for (cheap: every exit asks), and wait here
 * while the VM is paused. */
bool vm_pause_requested(struct vm *vm);
void vm_park_vcpu(struct vm *vm);

#endif
