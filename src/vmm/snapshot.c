// SPDX-License-Identifier: MIT
#include "vmm/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/snapshot_file.h"
#include "devices/acpi_pm.h"
#include "devices/i8042.h"
#include "devices/pci.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "devices/virtio/pci.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

/* What KVM keeps for the VM as a whole: the two 8259s, the IOAPIC, the PIT, kvmclock. */
struct kvm_vm_state {
	uint32_t nr_vcpus, pad;
	uint64_t ram_size;
	struct kvm_irqchip chips[3]; /* KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE, _IOAPIC */
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
};

static int save_kvm_vm(struct vm *vm, struct snap_writer *w)
{
	struct kvm_vm_state st = {.nr_vcpus = vm->nr_vcpus, .ram_size = vm->mem.ram_size};

	for (uint32_t i = 0; i < 3; i++) {
		st.chips[i].chip_id = i;
		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &st.chips[i]) < 0)
			goto err;
	}
	if (ioctl(vm->vm_fd, KVM_GET_PIT2, &st.pit) < 0 ||
	    ioctl(vm->vm_fd, KVM_GET_CLOCK, &st.clock) < 0)
		goto err;
	snap_put(w, "kvm", &st, sizeof(st));
	return 0;
err:
	log_error("snapshot: reading KVM's VM state: %s", strerror(errno));
	return -errno;
}

static int load_kvm_vm(struct vm *vm, const struct snap_reader *r)
{
	struct kvm_vm_state st;
	struct kvm_clock_data clock = {0};
	int err = snap_get(r, "kvm", &st, sizeof(st));

	if (err)
		return err;
	if (st.nr_vcpus != vm->nr_vcpus || st.ram_size != vm->mem.ram_size) {
		log_error("%s: %u vCPUs and %llu MiB in the snapshot, %u and %llu configured",
			  r->path, st.nr_vcpus, (unsigned long long)(st.ram_size >> 20),
			  vm->nr_vcpus, (unsigned long long)(vm->mem.ram_size >> 20));
		return -EINVAL;
	}
	for (uint32_t i = 0; i < 3; i++) {
		st.chips[i].chip_id = i;
		if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &st.chips[i]) < 0)
			goto err;
	}
	/* KVM_SET_CLOCK takes the time and no flags of KVM_GET_CLOCK's but REALTIME's. */
	clock.clock = st.clock.clock;
	if (ioctl(vm->vm_fd, KVM_SET_PIT2, &st.pit) < 0 ||
	    ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock) < 0)
		goto err;
	return 0;
err:
	err = -errno;
	log_error("%s: KVM refused the VM's state: %s", r->path, strerror(errno));
	return err;
}

/* The virtio transports, in the order vm.c creates them. */
static unsigned virtio_transports(struct vm *vm, struct virtio_pci **out)
{
	unsigned n = 0;

	for (unsigned i = 0; i < VM_MAX_DISKS; i++) {
		if (vm->blk_pci[i])
			out[n++] = vm->blk_pci[i];
	}
	if (vm->net_pci)
		out[n++] = vm->net_pci;
	if (vm->rng_pci)
		out[n++] = vm->rng_pci;
	if (vm->vconsole_pci)
		out[n++] = vm->vconsole_pci;
	if (vm->vsock_pci)
		out[n++] = vm->vsock_pci;
	return n;
}

#define MAX_TRANSPORTS (VM_MAX_DISKS + 4)

static int save_config(const struct vm *vm, int dirfd)
{
	json_t *o = vm_config_to_json(vm->cfg);
	char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	size_t len = text ? strlen(text) : 0;
	ssize_t n;
	int fd, err = 0;

	json_decref(o);
	if (!text)
		return -ENOMEM;
	text[len++] = '\n'; /* over the terminator: the file ends its line */
	fd = openat(dirfd, "config.json", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		err = -errno;
	else if ((n = write(fd, text, len)) != (ssize_t)len)
		err = n < 0 ? -errno : -ENOSPC; /* a few hundred bytes short: the disk is full */
	else if (fsync(fd) < 0)
		err = -errno;
	if (fd >= 0)
		close(fd);
	free(text);
	return err;
}

static int save_memory(const struct vm *vm, int dirfd)
{
	int fd = openat(dirfd, "memory", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int err;

	if (fd < 0)
		return -errno;
	err = gm_save(&vm->mem, fd);
	if (!err && fsync(fd) < 0)
		err = -errno;
	close(fd);
	return err;
}

static int save_state(struct vm *vm, int dirfd)
{
	struct virtio_pci *vps[MAX_TRANSPORTS];
	unsigned nr = virtio_transports(vm, vps);
	struct snap_writer w;
	int err;

	snap_writer_init(&w);
	err = save_kvm_vm(vm, &w);
	for (unsigned i = 0; !err && i < vm->nr_vcpus; i++)
		err = vcpu_save(vm->vcpus[i], &w);
	/* Devices with requests in flight finish them first, writing guest memory: so the
	 * devices go before the memory file. */
	for (unsigned i = 0; !err && i < nr; i++)
		err = virtio_pci_save(vps[i], &w);
	if (!err) {
		serial_save(vm->serial, &w);
		i8042_save(vm->i8042, &w);
		rtc_save(vm->rtc, &w);
		acpi_pm_save(vm->pm, &w);
		err = pci_bus_save(vm->pci, &w);
	}
	if (err) {
		snap_writer_free(&w);
		return err;
	}
	/* The state file last: a directory with one holds a whole snapshot. */
	err = save_config(vm, dirfd);
	if (!err)
		err = save_memory(vm, dirfd);
	if (!err)
		err = snap_writer_finish(&w, dirfd, "state");
	else
		snap_writer_free(&w);
	return err;
}

int vm_snapshot_save(struct vm *vm, const char *dir)
{
	int dirfd, err;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		err = -errno;
		log_error("snapshot %s: %s", dir, strerror(errno));
		return err;
	}
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		err = -errno;
		log_error("snapshot %s: %s", dir, strerror(errno));
		return err;
	}
	/* A snapshot half written over an older one must not pass for either. */
	if (unlinkat(dirfd, "state", 0) < 0 && errno != ENOENT) {
		err = -errno;
		log_error("snapshot %s: %s", dir, strerror(errno));
		close(dirfd);
		return err;
	}
	err = save_state(vm, dirfd);
	if (err)
		log_error("snapshot %s: %s", dir, strerror(-err));
	close(dirfd);
	return err;
}

int vm_snapshot_open_memory(const char *dir, int *fd)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/memory", dir);
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0) {
		int err = -errno;

		log_error("%s: %s", path, strerror(errno));
		return err;
	}
	return 0;
}

int vm_snapshot_load(struct vm *vm, const char *dir)
{
	struct virtio_pci *vps[MAX_TRANSPORTS];
	unsigned nr = virtio_transports(vm, vps);
	struct snap_reader r;
	char path[4096];
	int dirfd, err;

	snprintf(path, sizeof(path), "%s/state", dir);
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		err = -errno;
		log_error("%s: %s", dir, strerror(errno));
		return err;
	}
	err = snap_reader_open(&r, dirfd, "state", path);
	close(dirfd);
	if (err)
		return err;
	err = load_kvm_vm(vm, &r);
	for (unsigned i = 0; !err && i < vm->nr_vcpus; i++)
		err = vcpu_load(vm->vcpus[i], &r);
	if (!err)
		err = serial_load(vm->serial, &r);
	if (!err)
		err = i8042_load(vm->i8042, &r);
	if (!err)
		err = rtc_load(vm->rtc, &r);
	if (!err)
		err = acpi_pm_load(vm->pm, &r);
	/* The bus first: the BARs place each transport's notification area. */
	if (!err)
		err = pci_bus_load(vm->pci, &r);
	for (unsigned i = 0; !err && i < nr; i++)
		err = virtio_pci_load(vps[i], &r);
	if (err == -EINVAL || err == -EPROTO)
		log_error("%s: cannot restore this snapshot", path);
	snap_reader_close(&r);
	return err;
}
