// SPDX-License-Identifier: MIT
#include "vmm/vmm.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/clock.h"
#include "common/log.h"
#include "devices/acpi_pm.h"
#include "devices/i8042.h"
#include "vmm/snapshot.h"
#include "vmm/vcpu.h"

static const char *const state_names[] = {
    [VMM_NOT_STARTED] = "NotStarted",	  [VMM_RUNNING] = "Running", [VMM_PAUSED] = "Paused",
    [VMM_SHUTTING_DOWN] = "ShuttingDown", [VMM_STOPPED] = "Stopped",
};

const char *vmm_state_name(enum vmm_state s)
{
	return s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "?";
}

void vmm_init(struct vmm *m, struct vm_config *cfg, struct console *console)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	m->cfg = cfg;
	m->console = console;
	m->state = VMM_NOT_STARTED;
}

void vmm_destroy(struct vmm *m)
{
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
}

/* Record why a call failed (the lock held); returns err. */
__attribute__((format(printf, 3, 4))) static int fail(struct vmm *m, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->error, sizeof(m->error), fmt, ap);
	va_end(ap);
	return err;
}

const char *vmm_error(struct vmm *m)
{
	return m->error;
}

enum vmm_state vmm_state(struct vmm *m)
{
	enum vmm_state s;

	pthread_mutex_lock(&m->lock);
	s = m->state;
	pthread_mutex_unlock(&m->lock);
	return s;
}

static void set_state(struct vmm *m, enum vmm_state s)
{
	m->state = s;
	pthread_cond_broadcast(&m->cond);
}

enum vm_exit vmm_run(struct vmm *m)
{
	enum vm_exit why = VM_EXIT_ERROR;

	for (;;) {
		struct vm *vm;

		/* A restore builds the first VM only: a guest reset boots the kernel. */
		const char *restore = m->boots == 0 ? m->cfg->restore : NULL;
		uint64_t t0 = monotonic_ns();

		if (vm_create(m->cfg, m->console, restore, &vm)) {
			why = VM_EXIT_ERROR;
			break;
		}
		vm->build_started_ns = t0;
		vm->restored = restore != NULL;
		pthread_mutex_lock(&m->lock);
		m->vm = vm;
		m->boots++;
		/* A stop asked for while the VM was being built (or rebuilt) takes effect now. */
		if (m->state == VMM_STOPPED)
			vm_request_stop(vm, VM_EXIT_SIGNAL);
		else
			set_state(m, VMM_RUNNING);
		pthread_mutex_unlock(&m->lock);

		why = vm_run(vm);

		pthread_mutex_lock(&m->lock);
		m->exit_signal = vm->signal;
		m->vm = NULL;
		pthread_mutex_unlock(&m->lock);
		vm_destroy(vm);
		if (why != VM_EXIT_RESET || m->cfg->no_reboot)
			break;
		log_info("guest reset: starting it again");
	}
	pthread_mutex_lock(&m->lock);
	m->exit = why;
	set_state(m, VMM_STOPPED);
	pthread_mutex_unlock(&m->lock);
	return why;
}

int vmm_start(struct vmm *m)
{
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	if (m->state != VMM_NOT_STARTED)
		ret = fail(m, -EBUSY, "the VM was started already (state %s)",
			   vmm_state_name(m->state));
	else if (vm_config_validate_msg(m->cfg, m->error, sizeof(m->error)))
		ret = -EINVAL;
	else
		set_state(m, VMM_RUNNING);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* The VM exists and is in one of the states the mask allows; the lock held. */
static int need_vm(struct vmm *m, unsigned states, const char *what)
{
	if (!m->vm || !(states & (1u << m->state)))
		return fail(m, -EBUSY, "cannot %s a VM in state %s", what,
			    vmm_state_name(m->state));
	return 0;
}

#define STATE(s) (1u << (s))

int vmm_pause(struct vmm *m)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = need_vm(m, STATE(VMM_RUNNING) | STATE(VMM_SHUTTING_DOWN), "pause");
	if (!ret) {
		ret = vm_pause(m->vm);
		if (ret)
			fail(m, ret, "the VM stopped while pausing");
		else
			set_state(m, VMM_PAUSED);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int vmm_resume(struct vmm *m)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = need_vm(m, STATE(VMM_PAUSED), "resume");
	if (!ret) {
		vm_resume(m->vm);
		set_state(m, VMM_RUNNING);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int vmm_power_button(struct vmm *m)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = need_vm(m, STATE(VMM_RUNNING) | STATE(VMM_SHUTTING_DOWN), "shut down");
	if (!ret) {
		acpi_pm_power_button(m->vm->pm);
		set_state(m, VMM_SHUTTING_DOWN);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int vmm_ctrl_alt_del(struct vmm *m)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = need_vm(m, STATE(VMM_RUNNING) | STATE(VMM_SHUTTING_DOWN), "send Ctrl-Alt-Del to");
	if (!ret) {
		ret = i8042_send_ctrl_alt_del(m->vm->i8042);
		if (ret)
			fail(m, ret, "the keyboard controller's buffer is full");
		else
			set_state(m, VMM_SHUTTING_DOWN);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int vmm_stop(struct vmm *m)
{
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	if (m->state == VMM_STOPPED) {
		ret = fail(m, -EBUSY, "the VM is stopped already");
	} else {
		if (m->vm) {
			m->vm->signal = 0;
			vm_request_stop(m->vm, VM_EXIT_SIGNAL);
		}
		set_state(m, VMM_STOPPED);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/*
 * Replace the configuration with one given as JSON and checked for `check` (VM_CHECK_*), or
 * change nothing; the lock held, the VM not started.
 */
static int configure(struct vmm *m, const char *json, size_t len, unsigned check)
{
	struct vm_config next;
	int ret;

	/* What the process was started with stays: the console, the socket, the sandbox. */
	vm_config_defaults(&next);
	next.console = m->cfg->console;
	next.console_path = m->cfg->console_path;
	next.api_socket = m->cfg->api_socket;
	next.verbose = m->cfg->verbose;
	next.no_sandbox = m->cfg->no_sandbox;
	ret = vm_config_parse_json(&next, json, len, m->error, sizeof(m->error));
	if (!ret && (next.console != m->cfg->console || next.console_path != m->cfg->console_path))
		ret = fail(m, -EINVAL, "console: give it on the command line (it is open already)");
	if (!ret && check && vm_config_check_msg(&next, check, m->error, sizeof(m->error)))
		ret = -EINVAL;
	if (ret) {
		vm_config_free_strings(&next);
		return ret;
	}
	vm_config_free_strings(m->cfg);
	*m->cfg = next;
	return 0;
}

static int not_started(struct vmm *m)
{
	if (m->state != VMM_NOT_STARTED)
		return fail(m, -EBUSY, "the configuration cannot change once the VM has started");
	return 0;
}

int vmm_configure(struct vmm *m, const char *json, size_t len)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = not_started(m);
	if (!ret)
		ret = configure(m, json, len, 0);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int vmm_edit_config(struct vmm *m, vmm_config_edit_fn edit, void *arg, unsigned check)
{
	json_t *cfg = NULL;
	char *text = NULL;
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = not_started(m);
	if (ret)
		goto out;
	cfg = vm_config_to_json(m->cfg);
	if (!cfg) {
		ret = fail(m, -ENOMEM, "out of memory");
		goto out;
	}
	ret = edit(cfg, arg, m->error, sizeof(m->error));
	if (ret)
		goto out;
	text = json_dumps(cfg, JSON_COMPACT);
	if (!text) {
		ret = fail(m, -ENOMEM, "out of memory");
		goto out;
	}
	ret = configure(m, text, strlen(text), check);
out:
	pthread_mutex_unlock(&m->lock);
	json_decref(cfg);
	free(text);
	return ret;
}

void vmm_with_config(struct vmm *m, void (*fn)(const struct vm_config *cfg, void *arg), void *arg)
{
	pthread_mutex_lock(&m->lock);
	fn(m->cfg, arg);
	pthread_mutex_unlock(&m->lock);
}

struct metrics_call {
	struct vm *vm;
	struct vmm_metrics *out;
};

/* On the event loop's thread: device counters are the loop's to change. */
static void collect_device_metrics(void *arg)
{
	struct metrics_call *c = arg;
	struct vm *vm = c->vm;
	struct vmm_metrics *out = c->out;

	for (unsigned i = 0; i < VM_MAX_DISKS; i++) {
		if (vm->blk[i])
			virtio_blk_stats(vm->blk[i], &out->disks[out->nr_disks++]);
	}
	if (vm->net) {
		out->has_net = true;
		virtio_net_stats(vm->net, &out->net);
	}
	if (vm->rng) {
		out->has_rng = true;
		virtio_rng_stats(vm->rng, &out->rng);
	}
	if (vm->vconsole) {
		out->has_vconsole = true;
		virtio_console_stats(vm->vconsole, &out->vconsole);
	}
}

int vmm_metrics(struct vmm *m, struct vmm_metrics *out)
{
	struct metrics_call c = {.out = out};
	int ret = 0;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&m->lock);
	if (!m->vm) {
		ret = fail(m, -EBUSY, "no VM is running (state %s)", vmm_state_name(m->state));
		goto out;
	}
	c.vm = m->vm;
	out->nr_vcpus = m->vm->nr_vcpus;
	/* Each counter is one aligned word its vCPU thread alone writes. */
	for (unsigned i = 0; i < out->nr_vcpus; i++) {
		for (unsigned r = 0; r < 64; r++)
			out->exits[i][r] =
			    __atomic_load_n(&m->vm->vcpus[i]->exits[r], __ATOMIC_RELAXED);
		for (unsigned e = 0; e < EMU_NR_INSNS; e++)
			out->emulated[i][e] =
			    __atomic_load_n(&m->vm->vcpus[i]->emulated[e], __ATOMIC_RELAXED);
	}
	event_loop_call(&m->vm->loop, collect_device_metrics, &c);
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* A paused VM's vCPU `id`; the lock held. */
static int paused_vcpu(struct vmm *m, unsigned id, struct vcpu **out)
{
	if (!m->vm || m->state != VMM_PAUSED)
		return fail(m, -EBUSY, "the VM is %s: pause it to read its vCPUs",
			    vmm_state_name(m->state));
	if (id >= m->vm->nr_vcpus)
		return fail(m, -ENOENT, "no vCPU %u: the VM has %u", id, m->vm->nr_vcpus);
	*out = m->vm->vcpus[id];
	return 0;
}

int vmm_vcpu_registers(struct vmm *m, unsigned id, struct kvm_regs *regs, struct kvm_sregs *sregs)
{
	struct vcpu *v;
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = paused_vcpu(m, id, &v);
	if (!ret &&
	    (ioctl(v->fd, KVM_GET_REGS, regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, sregs) < 0))
		ret = fail(m, -errno, "vcpu%u: registers: %s", id, strerror(errno));
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int vmm_translate(struct vmm *m, unsigned id, uint64_t gva, struct gm_translation *t)
{
	struct kvm_sregs sregs;
	struct vcpu *v;
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = paused_vcpu(m, id, &v);
	if (!ret && ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		ret = fail(m, -errno, "vcpu%u: registers: %s", id, strerror(errno));
	if (!ret) {
		struct gm_paging p = {sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer};

		/* A read at supervisor level: what the guest's kernel could see. */
		ret = gm_translate(&m->vm->mem, &p, gva, 0, t);
		if (ret)
			fail(m, ret, "vcpu%u: its paging mode makes no sense", id);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int vmm_read_virtual(struct vmm *m, unsigned id, uint64_t gva, void *buf, uint64_t len,
		     struct vmm_page *pages, unsigned *nr_pages)
{
	struct kvm_sregs sregs;
	uint8_t *out = buf;
	struct vcpu *v;
	uint64_t done = 0;
	int ret;

	*nr_pages = 0;
	pthread_mutex_lock(&m->lock);
	ret = paused_vcpu(m, id, &v);
	if (!ret && (len == 0 || len > VMM_MAX_READ))
		ret = fail(m, -EINVAL, "length %llu: want 1 to %d bytes", (unsigned long long)len,
			   VMM_MAX_READ);
	if (!ret && ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		ret = fail(m, -errno, "vcpu%u: registers: %s", id, strerror(errno));
	/* Page by page: virtually contiguous pages may lie anywhere in guest-physical memory. */
	while (!ret && done < len) {
		struct gm_paging p = {sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer};
		uint64_t at = gva + done, page = 4096, n;
		struct gm_translation t;

		ret = gm_translate(&m->vm->mem, &p, at, 0, &t);
		if (ret) {
			fail(m, ret, "vcpu%u: its paging mode makes no sense", id);
			break;
		}
		if (t.page_size)
			page = t.page_size;
		n = page - (at & (page - 1));
		if (n > len - done)
			n = len - done;
		if (t.result == GM_WALK_PAGE_FAULT) {
			ret = fail(m, -EFAULT, "gva %#llx: page fault (error code %#x)",
				   (unsigned long long)at, t.error_code);
		} else if (t.result == GM_WALK_BAD_TABLE) {
			ret = fail(m, -EFAULT, "gva %#llx: a page table is outside guest RAM",
				   (unsigned long long)at);
		} else if (t.result != GM_WALK_OK || gm_read(&m->vm->mem, t.gpa, out + done, n)) {
			ret = fail(m, -EFAULT, "gva %#llx: gpa %#llx is not guest RAM",
				   (unsigned long long)at, (unsigned long long)t.gpa);
		} else {
			pages[(*nr_pages)++] = (struct vmm_page){at, t.gpa, n};
			done += n;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int vmm_read_memory(struct vmm *m, uint64_t gpa, void *buf, uint64_t len)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = need_vm(m, STATE(VMM_RUNNING) | STATE(VMM_PAUSED) | STATE(VMM_SHUTTING_DOWN),
		      "read the memory of");
	if (!ret && (len == 0 || len > VMM_MAX_READ))
		ret = fail(m, -EINVAL, "length %llu: want 1 to %d bytes", (unsigned long long)len,
			   VMM_MAX_READ);
	if (!ret && gm_read(&m->vm->mem, gpa, buf, len))
		ret = fail(m, -EFAULT, "%#llx+%llu is not guest RAM", (unsigned long long)gpa,
			   (unsigned long long)len);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

struct snapshot_call {
	struct vm *vm;
	const char *dir;
	int ret;
};

static void snapshot_on_loop(void *arg)
{
	struct snapshot_call *c = arg;

	c->ret = vm_snapshot_save(c->vm, c->dir);
}

int vmm_snapshot(struct vmm *m, const char *dir)
{
	struct snapshot_call c = {.dir = dir};
	uint64_t t0 = monotonic_ns();
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = need_vm(m, STATE(VMM_PAUSED), "snapshot");
	if (!ret && !m->cfg->kernel)
		ret = fail(m, -EINVAL, "cannot snapshot a VM without a kernel to reboot");
	if (!ret) {
		c.vm = m->vm;
		event_loop_call(&m->vm->loop, snapshot_on_loop, &c);
		ret = c.ret;
		if (ret)
			fail(m, ret, "snapshot %s: %s", dir, strerror(-ret));
		else
			log_info("snapshot %s written in %.1f ms", dir,
				 (double)(monotonic_ns() - t0) / 1e6);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* The whole of a small file, NUL-terminated, or NULL with errno set. */
static char *read_small_file(const char *path, size_t max, size_t *len)
{
	FILE *f = fopen(path, "re");
	char *buf;

	if (!f)
		return NULL;
	buf = malloc(max + 1);
	*len = buf ? fread(buf, 1, max + 1, f) : 0;
	fclose(f);
	if (buf && *len > max) {
		free(buf);
		errno = EFBIG;
		return NULL;
	}
	if (buf)
		buf[*len] = '\0';
	return buf;
}

int vmm_load_snapshot(struct vmm *m, const char *dir)
{
	char path[4096 + 16];
	char *text;
	size_t len;
	int ret;

	pthread_mutex_lock(&m->lock);
	if (m->state != VMM_NOT_STARTED) {
		ret = fail(m, -EBUSY, "a snapshot is loaded before start (state %s)",
			   vmm_state_name(m->state));
		goto out;
	}
	if (strlen(dir) >= sizeof(m->restore)) {
		ret = fail(m, -EINVAL, "path: over %zu bytes", sizeof(m->restore) - 1);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/config.json", dir);
	text = read_small_file(path, 1 << 20, &len);
	if (!text) {
		ret = fail(m, errno == ENOENT ? -ENOENT : -EINVAL, "%s: %s", path, strerror(errno));
		goto out;
	}
	ret = configure(m, text, len, VM_CHECK_ALL);
	free(text);
	if (ret)
		goto out;
	snprintf(m->restore, sizeof(m->restore), "%s", dir);
	m->cfg->restore = m->restore;
	set_state(m, VMM_RUNNING);
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}
