// SPDX-License-Identifier: MIT
#include "vmm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "devices/acpi_pm.h"
#include "devices/i8042.h"
#include "devices/pci.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/console.h"
#include "devices/virtio/net.h"
#include "devices/virtio/pci.h"
#include "devices/virtio/rng.h"
#include "devices/virtio/vsock.h"
#include "vmm/boot/acpi.h"
#include "vmm/boot/boot.h"
#include "vmm/console.h"
#include "vmm/cpuid.h"
#include "vmm/layout.h"
#include "vmm/snapshot.h"
#include "vmm/vcpu.h"

/* Addresses KVM needs for Intel's real-mode emulation; they sit in the top of the PCI hole. */
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ULL
#define KVM_TSS_ADDR	      0xfffbd000ULL
#define NR_IRQCHIP_GSIS	      IOAPIC_NUM_PINS

/* Interrupt plumbing for devices, backed by KVM. */

static int kvm_set_level(void *ctx, unsigned gsi, int level)
{
	struct vm *vm = ctx;
	struct kvm_irq_level irq = {.irq = gsi, .level = level};

	return ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq) < 0 ? -errno : 0;
}

static int kvm_send_msi(void *ctx, uint64_t addr, uint32_t data)
{
	struct vm *vm = ctx;
	struct kvm_msi msi = {
	    .address_lo = (uint32_t)addr,
	    .address_hi = (uint32_t)(addr >> 32),
	    .data = data,
	};

	return ioctl(vm->vm_fd, KVM_SIGNAL_MSI, &msi) < 0 ? -errno : 0;
}

static int commit_routes(struct vm *vm)
{
	if (ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, vm->routes) < 0) {
		log_error("KVM_SET_GSI_ROUTING: %s", strerror(errno));
		return -errno;
	}
	return 0;
}

static struct kvm_irq_routing_entry *find_route(struct vm *vm, uint32_t gsi, uint32_t type)
{
	for (uint32_t i = 0; i < vm->routes->nr; i++) {
		if (vm->routes->entries[i].gsi == gsi && vm->routes->entries[i].type == type)
			return &vm->routes->entries[i];
	}
	return NULL;
}

static int kvm_msi_route(void *ctx, int *gsi, uint64_t addr, uint32_t data)
{
	struct vm *vm = ctx;
	struct kvm_irq_routing_entry *e;
	int ret;

	pthread_mutex_lock(&vm->routes_lock);
	if (*gsi < 0) {
		/* The lowest GSI above the irqchip's that no route uses. */
		uint32_t g = NR_IRQCHIP_GSIS;

		while (g < VM_MAX_GSI_ROUTES && find_route(vm, g, KVM_IRQ_ROUTING_MSI))
			g++;
		if (g == VM_MAX_GSI_ROUTES || vm->routes->nr == VM_MAX_GSI_ROUTES) {
			pthread_mutex_unlock(&vm->routes_lock);
			return -ENOSPC;
		}
		e = &vm->routes->entries[vm->routes->nr++];
		*e = (struct kvm_irq_routing_entry){.gsi = g, .type = KVM_IRQ_ROUTING_MSI};
		*gsi = (int)g;
	} else {
		e = find_route(vm, (uint32_t)*gsi, KVM_IRQ_ROUTING_MSI);
		if (!e) {
			pthread_mutex_unlock(&vm->routes_lock);
			return -ENOENT;
		}
	}
	e->u.msi.address_lo = (uint32_t)addr;
	e->u.msi.address_hi = (uint32_t)(addr >> 32);
	e->u.msi.data = data;
	ret = commit_routes(vm);
	pthread_mutex_unlock(&vm->routes_lock);
	return ret;
}

static int kvm_msi_route_free(void *ctx, int gsi)
{
	struct vm *vm = ctx;
	struct kvm_irq_routing_entry *e;
	int ret;

	pthread_mutex_lock(&vm->routes_lock);
	e = gsi >= 0 ? find_route(vm, (uint32_t)gsi, KVM_IRQ_ROUTING_MSI) : NULL;
	if (!e) {
		pthread_mutex_unlock(&vm->routes_lock);
		return -ENOENT;
	}
	*e = vm->routes->entries[--vm->routes->nr];
	ret = commit_routes(vm);
	pthread_mutex_unlock(&vm->routes_lock);
	return ret;
}

static int kvm_irqfd(void *ctx, unsigned gsi, int fd, bool assign)
{
	struct vm *vm = ctx;
	struct kvm_irqfd irqfd = {
	    .fd = (uint32_t)fd,
	    .gsi = gsi,
	    .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN,
	};

	return ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0 ? -errno : 0;
}

static int kvm_ioeventfd(void *ctx, uint64_t addr, unsigned len, int fd, bool pio, bool assign)
{
	struct vm *vm = ctx;
	struct kvm_ioeventfd ioev = {
	    .addr = addr,
	    .len = len,
	    .fd = fd,
	    .flags =
		(pio ? KVM_IOEVENTFD_FLAG_PIO : 0) | (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
	};

	return ioctl(vm->vm_fd, KVM_IOEVENTFD, &ioev) < 0 ? -errno : 0;
}

static const struct irq_host_ops kvm_irq_ops = {
    .set_level = kvm_set_level,
    .send_msi = kvm_send_msi,
    .msi_route = kvm_msi_route,
    .msi_route_free = kvm_msi_route_free,
    .irqfd = kvm_irqfd,
    .ioeventfd = kvm_ioeventfd,
};

/*
 * The irqchip routes, as QEMU sets them: ISA IRQs 0-15 to the two 8259s (not the cascade,
 * IRQ 2), and GSIs 0-23 to the IOAPIC's pins with GSI 0 on pin 2, where the MADT's interrupt
 * source override sends the timer (KVM's in-kernel PIT raises GSI 0).
 */
static int setup_routes(struct vm *vm)
{
	struct kvm_irq_routing_entry *e;

	vm->routes = calloc(1, sizeof(*vm->routes) + VM_MAX_GSI_ROUTES * sizeof(*e));
	if (!vm->routes)
		return -ENOMEM;
	e = vm->routes->entries;
	for (uint32_t i = 0; i < 16; i++) {
		if (i == 2)
			continue;
		*e++ = (struct kvm_irq_routing_entry){
		    .gsi = i,
		    .type = KVM_IRQ_ROUTING_IRQCHIP,
		    .u.irqchip = {i < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, i % 8},
		};
	}
	for (uint32_t i = 0; i < NR_IRQCHIP_GSIS; i++) {
		if (i == 2)
			continue;
		*e++ = (struct kvm_irq_routing_entry){
		    .gsi = i,
		    .type = KVM_IRQ_ROUTING_IRQCHIP,
		    .u.irqchip = {KVM_IRQCHIP_IOAPIC, i == 0 ? 2 : i},
		};
	}
	vm->routes->nr = (uint32_t)(e - vm->routes->entries);
	return commit_routes(vm);
}

static int check_kvm(struct vm *vm)
{
	static const struct {
		long cap;
		const char *name;
	} needed[] = {
	    {KVM_CAP_IRQCHIP, "in-kernel irqchip"}, {KVM_CAP_USER_MEMORY, "user memory"},
	    {KVM_CAP_IRQ_ROUTING, "irq routing"},   {KVM_CAP_IRQFD, "irqfd"},
	    {KVM_CAP_IOEVENTFD, "ioeventfd"},	    {KVM_CAP_SIGNAL_MSI, "MSI injection"},
	    {KVM_CAP_PIT2, "in-kernel PIT"},	    {KVM_CAP_IMMEDIATE_EXIT, "immediate exit"},
	};
	int max_vcpus;

	if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		log_error("/dev/kvm: unsupported KVM API version");
		return -ENOTSUP;
	}
	for (unsigned i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, needed[i].cap) <= 0) {
			log_error("/dev/kvm: no %s (KVM capability %ld)", needed[i].name,
				  needed[i].cap);
			return -ENOTSUP;
		}
	}
	max_vcpus = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (max_vcpus <= 0)
		max_vcpus = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (max_vcpus > 0 && vm->cfg->cpus > (unsigned)max_vcpus) {
		log_error("--cpus %u: this host's KVM allows at most %d vCPUs", vm->cfg->cpus,
			  max_vcpus);
		return -EINVAL;
	}
	vm->vcpu_mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->vcpu_mmap_size <= 0) {
		log_error("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
		return -EIO;
	}
	return 0;
}

static int create_kvm_vm(struct vm *vm)
{
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	uint64_t identity = KVM_IDENTITY_MAP_ADDR;
	int err;

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		err = -errno;
		log_error("cannot open /dev/kvm: %s", strerror(errno));
		return err;
	}
	err = check_kvm(vm);
	if (err)
		return err;
	do {
		vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	} while (vm->vm_fd < 0 && errno == EINTR);
	if (vm->vm_fd < 0) {
		err = -errno;
		log_error("KVM_CREATE_VM: %s", strerror(errno));
		return err;
	}
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0 ||
	    ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0 ||
	    ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0 ||
	    ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
		err = -errno;
		log_error("KVM VM set-up: %s", strerror(errno));
		return err;
	}
	return 0;
}

/* Fresh RAM, or a snapshot's memory file mapped copy-on-write. */
static int map_memory(struct vm *vm, const char *restore)
{
	uint64_t top;
	int fd, err;

	if (restore) {
		err = vm_snapshot_open_memory(restore, &fd);
		if (!err)
			err = gm_init_file(&vm->mem, vm->cfg->mem_mib * MiB, fd);
		if (err == -EINVAL)
			log_error("%s/memory: not %llu MiB of guest memory", restore,
				  (unsigned long long)vm->cfg->mem_mib);
	} else {
		err = gm_init(&vm->mem, vm->cfg->mem_mib * MiB);
	}
	if (err) {
		log_error("guest memory: %llu MiB: %s", (unsigned long long)vm->cfg->mem_mib,
			  strerror(-err));
		return err;
	}
	for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
		const struct gm_region *r = &vm->mem.regions[i];
		struct kvm_userspace_memory_region region = {
		    .slot = i,
		    .guest_phys_addr = r->gpa,
		    .memory_size = r->size,
		    .userspace_addr = (uint64_t)(uintptr_t)r->hva,
		};

		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
			err = -errno;
			log_error("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
			return err;
		}
	}
	/* The 64-bit PCI window starts at the first 1 GiB boundary above RAM and 4 GiB. */
	top = LAYOUT_4G;
	for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
		uint64_t end = vm->mem.regions[i].gpa + vm->mem.regions[i].size;

		if (end > top)
			top = end;
	}
	vm->mmio64_base = (top + GiB - 1) & ~(GiB - 1);
	return 0;
}

static void on_poweroff(void *ctx)
{
	vm_request_stop(ctx, VM_EXIT_POWEROFF);
}

static void on_reset(void *ctx)
{
	vm_request_stop(ctx, VM_EXIT_RESET);
}

static int create_devices(struct vm *vm, struct console *console)
{
	const struct vm_config *cfg = vm->cfg;
	bool hvc = cfg->console_device == CONSOLE_DEVICE_VIRTIO;
	int err;

	/* COM1 is there either way (Linux probes it); with a virtio-console its output goes
	 * nowhere. */
	err = serial_create(&vm->pio, PORT_COM1, PORT_COM1_IRQ, &vm->irq,
			    hvc ? -1 : console_output_fd(console), &vm->serial);
	if (!err)
		err = i8042_create(&vm->pio, &vm->irq, on_reset, vm, &vm->i8042);
	if (!err)
		err = rtc_create(&vm->pio, &vm->rtc);
	if (!err)
		err = acpi_pm_create(&vm->pio, &vm->irq, on_poweroff, vm, &vm->pm);
	if (!err)
		err = pci_bus_create(&vm->pio, &vm->mmio, vm->mmio64_base, LAYOUT_PCI_MMIO64_SIZE,
				     &vm->pci);
	if (err) {
		log_error("platform devices: %s", strerror(-err));
		return err;
	}
	for (unsigned i = 0; i < cfg->nr_disks; i++) {
		char id[16];

		snprintf(id, sizeof(id), "disk%u", i);
		err = virtio_blk_create(&cfg->disks[i], id, &vm->mem, &vm->loop, &vm->blk[i]);
		if (err)
			return err;
		err = virtio_pci_create(vm->pci, virtio_blk_dev(vm->blk[i]), &vm->irq, &vm->loop,
					&vm->blk_pci[i]);
		if (err) {
			log_error("%s: PCI transport: %s", id, strerror(-err));
			return err;
		}
	}
	if (cfg->has_net) {
		err = virtio_net_create(&cfg->net, "net0", &vm->mem, &vm->loop, &vm->net);
		if (!err)
			err = virtio_pci_create(vm->pci, virtio_net_dev(vm->net), &vm->irq,
						&vm->loop, &vm->net_pci);
		if (err) {
			log_error("net0: %s", strerror(-err));
			return err;
		}
	}
	if (cfg->rng) {
		err = virtio_rng_create("rng0", &vm->mem, &vm->rng);
		if (!err)
			err = virtio_pci_create(vm->pci, virtio_rng_dev(vm->rng), &vm->irq,
						&vm->loop, &vm->rng_pci);
		if (err) {
			log_error("rng0: %s", strerror(-err));
			return err;
		}
	}
	if (hvc) {
		err = virtio_console_create("console0", &vm->mem, console_output_fd(console),
					    &vm->vconsole);
		if (!err)
			err = virtio_pci_create(vm->pci, virtio_console_dev(vm->vconsole), &vm->irq,
						&vm->loop, &vm->vconsole_pci);
		if (err) {
			log_error("console0: %s", strerror(-err));
			return err;
		}
	}
	if (cfg->has_vsock) {
		err = virtio_vsock_create(&cfg->vsock, "vsock0", &vm->mem, &vm->loop, &vm->vsock);
		if (!err)
			err = virtio_pci_create(vm->pci, virtio_vsock_dev(vm->vsock), &vm->irq,
						&vm->loop, &vm->vsock_pci);
		if (err) {
			log_error("vsock0: %s", strerror(-err));
			return err;
		}
	}
	pci_bus_assign_bars(vm->pci);
	return 0;
}

static int build_acpi(struct vm *vm)
{
	struct acpi_config acfg = {
	    .ncpus = vm->cfg->cpus,
	    .pci_mmio32_base = LAYOUT_PCI_MMIO32_BASE,
	    .pci_mmio32_size = LAYOUT_PCI_MMIO32_SIZE,
	    .pci_mmio64_base = vm->mmio64_base,
	    .pci_mmio64_size = LAYOUT_PCI_MMIO64_SIZE,
	    .pci_io_base = PORT_PCI_IO_BASE,
	    .pci_io_size = PORT_PCI_IO_SIZE,
	    .pci_slots = 32,
	    .com1 = true,
	};
	void *buf = gm_slice(&vm->mem, LAYOUT_ACPI_START, LAYOUT_ACPI_SIZE);
	int ret;

	if (!buf)
		return -EFAULT;
	ret = acpi_build(&acfg, LAYOUT_ACPI_START, buf, LAYOUT_ACPI_SIZE);
	if (ret < 0) {
		log_error("ACPI tables: %s", strerror(-ret));
		return ret;
	}
	return 0;
}

/*
 * On a host that shows guests its own CPUID (cpuid.h), the command line with Linux's
 * clearcpuid= for what the VM does not offer, unless the user gave one. Takes cmdline.
 */
static char *hide_host_features(struct vm *vm, char *cmdline)
{
	static bool said;
	struct kvm_cpuid2 *c;
	char arg[160], *s = NULL;
	unsigned left_out;
	int n;

	if (!cmdline || !cpuid_host_shows_through() || cmdline_has(cmdline, "clearcpuid="))
		return cmdline;
	c = cpuid_for_vcpu(vm->kvm_fd, 0, vm->nr_vcpus);
	if (!c)
		return cmdline;
	n = cpuid_clearcpuid(c, cpuid_host, arg, sizeof(arg), &left_out);
	free(c);
	if (n < 0)
		log_warn("%u host features do not fit in clearcpuid=; the guest may use them",
			 left_out);
	if (!arg[0])
		return cmdline;
	if (!said) {
		log_info(
		    "this host's KVM is kvm_pvm, whose guests see the host's CPUID: the kernel "
		    "command line gets %s",
		    arg);
		said = true;
	}
	if (asprintf(&s, "%s %s", cmdline, arg) < 0)
		s = NULL;
	free(cmdline);
	return s;
}

/* Read the kernel and open the initrd, load them, and point the boot vCPU at the entry. */
static int load_kernel(struct vm *vm)
{
	const struct vm_config *cfg = vm->cfg;
	char *cmdline = hide_host_features(vm, vm_config_boot_cmdline(cfg));
	struct boot_files f = {
	    .initrd_fd = -1,
	    .cmdline = cmdline,
	    .rsdp = LAYOUT_ACPI_START,
	};
	struct boot_entry entry;
	struct stat st;
	void *map = MAP_FAILED;
	int fd = -1, err = -ENOMEM;

	if (!cmdline)
		goto out;
	fd = open(cfg->kernel, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0) {
		err = fd < 0 ? -errno : -ENOEXEC;
		log_error("kernel %s: %s", cfg->kernel, fd < 0 ? strerror(errno) : "empty file");
		goto out;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		err = -errno;
		log_error("kernel %s: %s", cfg->kernel, strerror(errno));
		goto out;
	}
	f.kernel = map;
	f.kernel_size = (size_t)st.st_size;
	if (cfg->initrd) {
		f.initrd_fd = open(cfg->initrd, O_RDONLY | O_CLOEXEC);
		if (f.initrd_fd < 0 || fstat(f.initrd_fd, &st) < 0) {
			err = -errno;
			log_error("initrd %s: %s", cfg->initrd, strerror(errno));
			goto out;
		}
		f.initrd_size = (uint64_t)st.st_size;
	}
	err = boot_load(&vm->mem, &f, &entry);
	if (err)
		goto out;
	if (entry.kind == BOOT_PVH)
		err = vcpu_set_boot_pvh(vm->vcpus[0], entry.entry, entry.arg);
	else
		err = vcpu_set_boot_linux64(vm->vcpus[0], entry.entry, entry.arg, BOOT_PML4_ADDR,
					    BOOT_GDT_ADDR);
	if (err)
		log_error("boot vCPU registers: %s", strerror(-err));
out:
	if (map != MAP_FAILED)
		munmap(map, f.kernel_size);
	if (f.initrd_fd >= 0)
		close(f.initrd_fd);
	if (fd >= 0)
		close(fd);
	free(cmdline);
	return err;
}

int vm_create(const struct vm_config *cfg, struct console *console, const char *restore,
	      struct vm **out)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	int err;

	if (!vm)
		return -ENOMEM;
	vm->cfg = cfg;
	vm->kvm_fd = vm->vm_fd = vm->signal_fd = -1;
	vm->mem.memfd = -1;
	vm->console = console;
	vm->nr_vcpus = cfg->cpus;
	vm->irq = (struct irq_host){&kvm_irq_ops, vm};
	pthread_mutex_init(&vm->routes_lock, NULL);
	pthread_mutex_init(&vm->exit_lock, NULL);
	pthread_cond_init(&vm->park_cond, NULL);
	io_bus_init(&vm->pio, "pio");
	io_bus_init(&vm->mmio, "mmio");
	err = event_loop_init(&vm->loop);
	if (err) {
		vm_destroy(vm);
		return err;
	}
	vm->loop_ready = true;

	/* Where the build's time goes, for -v: each step's end. */
	uint64_t t[6];

	t[0] = monotonic_ns();
	err = create_kvm_vm(vm);
	t[1] = monotonic_ns();
	if (!err)
		err = map_memory(vm, restore);
	if (!err)
		err = setup_routes(vm);
	if (err)
		goto err;
	vm->vcpus = calloc(cfg->cpus, sizeof(vm->vcpus[0]));
	if (!vm->vcpus) {
		err = -ENOMEM;
		goto err;
	}
	t[2] = monotonic_ns();
	for (unsigned i = 0; i < cfg->cpus; i++) {
		err = vcpu_create(vm, i, &vm->vcpus[i]);
		if (err)
			goto err;
	}
	t[3] = monotonic_ns();
	err = create_devices(vm, console);
	if (err)
		goto err;
	t[4] = monotonic_ns();
	if (restore) {
		err = vm_snapshot_load(vm, restore);
	} else {
		err = build_acpi(vm);
		if (!err)
			err = load_kernel(vm);
	}
	if (err)
		goto err;
	t[5] = monotonic_ns();
	log_debug(
	    "built in %.2f ms: KVM VM %.2f, memory and routes %.2f, vCPUs %.2f, devices %.2f, "
	    "%s %.2f",
	    (double)(t[5] - t[0]) / 1e6, (double)(t[1] - t[0]) / 1e6, (double)(t[2] - t[1]) / 1e6,
	    (double)(t[3] - t[2]) / 1e6, (double)(t[4] - t[3]) / 1e6,
	    restore ? "state" : "firmware tables and kernel", (double)(t[5] - t[4]) / 1e6);
	*out = vm;
	return 0;
err:
	vm_destroy(vm);
	return err;
}

void vm_request_stop(struct vm *vm, enum vm_exit why)
{
	pthread_mutex_lock(&vm->exit_lock);
	if (vm->exit == VM_RUNNING)
		vm->exit = why;
	pthread_cond_broadcast(&vm->park_cond);
	pthread_mutex_unlock(&vm->exit_lock);
	event_loop_stop(&vm->loop);
}

int vm_pause(struct vm *vm)
{
	int ret = 0;

	pthread_mutex_lock(&vm->exit_lock);
	__atomic_store_n(&vm->paused, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&vm->exit_lock);
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vcpu_kick(vm->vcpus[i]);
	pthread_mutex_lock(&vm->exit_lock);
	while (vm->parked < vm->nr_vcpus && vm->exit == VM_RUNNING)
		pthread_cond_wait(&vm->park_cond, &vm->exit_lock);
	if (vm->exit != VM_RUNNING)
		ret = -ESHUTDOWN;
	pthread_mutex_unlock(&vm->exit_lock);
	return ret;
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->exit_lock);
	__atomic_store_n(&vm->paused, false, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&vm->park_cond);
	pthread_mutex_unlock(&vm->exit_lock);
}

bool vm_pause_requested(struct vm *vm)
{
	return __atomic_load_n(&vm->paused, __ATOMIC_ACQUIRE);
}

void vm_park_vcpu(struct vm *vm)
{
	/* Every exit passes here: no lock unless a pause is asked for. A pause set after this
	 * load still stops the vCPU: its kick makes the next KVM_RUN return at once. */
	if (!__atomic_load_n(&vm->paused, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&vm->exit_lock);
	if (vm->paused && vm->exit == VM_RUNNING) {
		vm->parked++;
		pthread_cond_broadcast(&vm->park_cond);
		while (vm->paused && vm->exit == VM_RUNNING)
			pthread_cond_wait(&vm->park_cond, &vm->exit_lock);
		vm->parked--;
	}
	pthread_mutex_unlock(&vm->exit_lock);
}

enum vm_exit vm_exit_reason(struct vm *vm)
{
	enum vm_exit e;

	pthread_mutex_lock(&vm->exit_lock);
	e = vm->exit;
	pthread_mutex_unlock(&vm->exit_lock);
	return e;
}

static void on_signal(void *opaque, uint32_t events)
{
	struct vm *vm = opaque;
	struct signalfd_siginfo si;

	if (read(vm->signal_fd, &si, sizeof(si)) != sizeof(si))
		return;
	log_info("stopping on signal %u", si.ssi_signo);
	vm->signal = (int)si.ssi_signo;
	vm_request_stop(vm, VM_EXIT_SIGNAL);
}

static void on_console_quit(void *ctx)
{
	vm_request_stop(ctx, VM_EXIT_SIGNAL);
}

/* Host input goes to whichever device carries the console. */
static size_t serial_sink(void *ctx, const uint8_t *buf, size_t len)
{
	return serial_input(ctx, buf, len);
}

static size_t virtio_console_sink(void *ctx, const uint8_t *buf, size_t len)
{
	return virtio_console_input(ctx, buf, len);
}

static int attach_console(struct vm *vm)
{
	if (vm->vconsole)
		return console_attach(vm->console, &vm->loop, virtio_console_sink, vm->vconsole,
				      on_console_quit, vm);
	return console_attach(vm->console, &vm->loop, serial_sink, vm->serial, on_console_quit, vm);
}

void vm_block_stop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set, NULL);
}

enum vm_exit vm_run(struct vm *vm)
{
	sigset_t stop_signals;
	unsigned started = 0;
	int err;

	/* The stop signals become events of the loop: the VM stops cleanly. */
	vm_block_stop_signals(&stop_signals);
	vm->signal_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
	err = vm->signal_fd < 0 ? -errno : 0;
	if (!err)
		err = event_loop_add(&vm->loop, vm->signal_fd, EPOLLIN, on_signal, vm);
	if (!err)
		err = attach_console(vm);
	if (err) {
		log_error("event loop set-up: %s", strerror(-err));
		return VM_EXIT_ERROR;
	}
	for (; started < vm->nr_vcpus; started++) {
		err = vcpu_start(vm->vcpus[started]);
		if (err) {
			log_error("vcpu%u: thread: %s", started, strerror(-err));
			vm_request_stop(vm, VM_EXIT_ERROR);
			break;
		}
	}
	if (vm_exit_reason(vm) == VM_RUNNING && event_loop_run(&vm->loop) < 0)
		vm_request_stop(vm, VM_EXIT_ERROR);
	for (unsigned i = 0; i < started; i++)
		vcpu_kick(vm->vcpus[i]);
	for (unsigned i = 0; i < started; i++)
		vcpu_join(vm->vcpus[i]);
	console_detach(vm->console);
	return vm_exit_reason(vm);
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	for (unsigned i = 0; i < VM_MAX_DISKS; i++) {
		if (vm->blk_pci[i])
			virtio_pci_destroy(vm->blk_pci[i]);
		if (vm->blk[i])
			virtio_blk_destroy(vm->blk[i]);
	}
	if (vm->net_pci)
		virtio_pci_destroy(vm->net_pci);
	virtio_net_destroy(vm->net);
	if (vm->rng_pci)
		virtio_pci_destroy(vm->rng_pci);
	virtio_rng_destroy(vm->rng);
	if (vm->vconsole_pci)
		virtio_pci_destroy(vm->vconsole_pci);
	virtio_console_destroy(vm->vconsole);
	if (vm->vsock_pci)
		virtio_pci_destroy(vm->vsock_pci);
	virtio_vsock_destroy(vm->vsock);
	if (vm->pci)
		pci_bus_destroy(vm->pci);
	if (vm->pm)
		acpi_pm_destroy(vm->pm);
	if (vm->rtc)
		rtc_destroy(vm->rtc);
	if (vm->i8042)
		i8042_destroy(vm->i8042);
	if (vm->serial)
		serial_destroy(vm->serial);
	if (vm->vcpus) {
		for (unsigned i = 0; i < vm->nr_vcpus; i++)
			vcpu_destroy(vm->vcpus[i]);
		free(vm->vcpus);
	}
	free(vm->routes);
	gm_destroy(&vm->mem);
	if (vm->signal_fd >= 0)
		close(vm->signal_fd);
	if (vm->loop_ready)
		event_loop_destroy(&vm->loop);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	io_bus_destroy(&vm->mmio);
	io_bus_destroy(&vm->pio);
	pthread_mutex_destroy(&vm->routes_lock);
	pthread_cond_destroy(&vm->park_cond);
	pthread_mutex_destroy(&vm->exit_lock);
	free(vm);
}
