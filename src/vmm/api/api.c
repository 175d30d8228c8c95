// SPDX-License-Identifier: MIT
/*
 * The control API's HTTP side: libmicrohttpd serves a Unix socket from one thread of its own;
 * each request's body is gathered (up to API_MAX_BODY), then routed to one handler, which
 * checks the input, calls the vmm, and answers JSON. Every error is a 4xx or 5xx with
 * {"error": "..."}; nothing a client sends reaches the VM unchecked.
 */
#include "vmm/api/api.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/api/firecracker.h"
#include "vmm/sandbox.h"
#include "vmm/vmm.h"

#define API_MAX_BODY (64 * 1024)

struct api_server {
	struct MHD_Daemon *daemon;
	struct vmm *vmm;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int fd;
};

/* One request as it arrives. */
struct request {
	char *body;
	size_t len;
	bool too_large;
};

/* What a handler answers: a status and a JSON body (or none for 204). */
struct reply {
	unsigned status;
	json_t *body;
};

static struct reply json_reply(unsigned status, json_t *body)
{
	return (struct reply){status, body};
}

static struct reply error_reply(unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct reply error_reply(unsigned status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_reply(status, json_pack("{s:s}", "error", msg));
}

/* A vmm call's failure: the state was wrong (409), a thing was missing (404), or bad (400). */
static struct reply vmm_failure(struct vmm *m, int err)
{
	unsigned status = 400;

	if (err == -EBUSY || err == -ESHUTDOWN)
		status = 409;
	else if (err == -ENOENT)
		status = 404;
	else if (err != -EINVAL && err != -EFAULT)
		status = 500;
	return error_reply(status, "%s", vmm_error(m));
}

static struct reply no_content(void)
{
	return json_reply(204, NULL);
}

/* The request body as a JSON object, or an error reply. */
static json_t *body_object(const struct request *r, struct reply *err)
{
	json_error_t jerr;
	json_t *root;

	if (!r->len) {
		*err = error_reply(400, "a JSON object is required as the body");
		return NULL;
	}
	root = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		*err = error_reply(400, "malformed JSON: line %d, column %d: %s", jerr.line,
				   jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		*err = error_reply(400, "the body must be a JSON object");
		return NULL;
	}
	return root;
}

/* A number from the query string: decimal or 0x-hex, the whole string. */
static int query_u64(struct MHD_Connection *c, const char *name, bool required, uint64_t *out)
{
	const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
	char *end;

	if (!s)
		return required ? -ENOENT : 0;
	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno || *end ? -EINVAL : 0;
}

/* GET /vm: state and configuration. */

static void describe_config(const struct vm_config *cfg, void *arg)
{
	*(json_t **)arg = vm_config_to_json(cfg);
}

static const char *exit_name(enum vm_exit e)
{
	switch (e) {
	case VM_EXIT_POWEROFF:
		return "poweroff";
	case VM_EXIT_RESET:
		return "reset";
	case VM_EXIT_CRASH:
		return "crash";
	case VM_EXIT_ERROR:
		return "error";
	case VM_EXIT_SIGNAL:
		return "stopped";
	default:
		return NULL;
	}
}

static struct reply get_vm(struct vmm *m, struct MHD_Connection *c, const struct request *r)
{
	enum vmm_state state = vmm_state(m);
	json_t *cfg = NULL;
	json_t *o;

	vmm_with_config(m, describe_config, &cfg);
	o = json_pack("{s:s, s:o}", "state", vmm_state_name(state), "config", cfg);
	if (o && state == VMM_STOPPED)
		json_object_set_new(o, "exit", json_string(exit_name(m->exit)));
	return json_reply(200, o);
}

/* PUT /vm/config: the whole configuration, before start. */
static struct reply put_config(struct vmm *m, struct MHD_Connection *c, const struct request *r)
{
	struct reply err;
	json_t *root = body_object(r, &err);
	int ret;

	if (!root)
		return err;
	json_decref(root);
	ret = vmm_configure(m, r->body, r->len);
	return ret ? vmm_failure(m, ret) : no_content();
}

/* PUT /actions {"action_type": ...}, as Firecracker names them. */
static const struct {
	const char *name;
	int (*fn)(struct vmm *m);
} actions[] = {
    {"InstanceStart", vmm_start},
    {"Pause", vmm_pause},
    {"Resume", vmm_resume},
    {"PowerButton", vmm_power_button},
    {"SendCtrlAltDel", vmm_ctrl_alt_del},
    {"Stop", vmm_stop},
};

static struct reply run_action(struct vmm *m, const char *name)
{
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
		if (!strcmp(name, actions[i].name)) {
			int ret = actions[i].fn(m);

			return ret ? vmm_failure(m, ret) : no_content();
		}
	}
	return error_reply(400,
			   "action_type \"%s\": want InstanceStart, Pause, Resume, PowerButton, "
			   "SendCtrlAltDel or Stop",
			   name);
}

static struct reply put_actions(struct vmm *m, struct MHD_Connection *c, const struct request *r)
{
	struct reply err;
	json_t *root = body_object(r, &err);
	json_error_t jerr;
	const char *name;
	struct reply rep;

	if (!root)
		return err;
	if (json_unpack_ex(root, &jerr, JSON_STRICT, "{s:s}", "action_type", &name))
		rep = error_reply(400, "%s", jerr.text);
	else
		rep = run_action(m, name);
	json_decref(root);
	return rep;
}

/* PATCH /vm {"state": "Paused" | "Resumed"}: Firecracker's spelling of pause and resume. */
static struct reply patch_vm(struct vmm *m, struct MHD_Connection *c, const struct request *r)
{
	struct reply err;
	json_t *root = body_object(r, &err);
	json_error_t jerr;
	const char *state;
	struct reply rep;

	if (!root)
		return err;
	if (json_unpack_ex(root, &jerr, JSON_STRICT, "{s:s}", "state", &state))
		rep = error_reply(400, "%s", jerr.text);
	else if (!strcmp(state, "Paused"))
		rep = run_action(m, "Pause");
	else if (!strcmp(state, "Resumed"))
		rep = run_action(m, "Resume");
	else
		rep = error_reply(400, "state \"%s\": want Paused or Resumed", state);
	json_decref(root);
	return rep;
}

/* A {"path": DIR} body, given to fn (vmm_snapshot or vmm_load_snapshot). */
static struct reply snapshot_call(struct vmm *m, const struct request *r,
				  int (*fn)(struct vmm *m, const char *dir))
{
	struct reply err;
	json_t *root = body_object(r, &err);
	json_error_t jerr;
	const char *path;
	struct reply rep;
	int ret;

	if (!root)
		return err;
	if (json_unpack_ex(root, &jerr, JSON_STRICT, "{s:s}", "path", &path))
		rep = error_reply(400, "%s", jerr.text);
	else if (!*path)
		rep = error_reply(400, "path: want a directory");
	else if ((ret = fn(m, path)))
		rep = vmm_failure(m, ret);
	else
		rep = no_content();
	json_decref(root);
	return rep;
}

/* PUT /snapshot/create {"path": DIR}: a snapshot of the paused VM (vmm/snapshot.h). */
static struct reply put_snapshot(struct vmm *m, struct MHD_Connection *c, const struct request *r)
{
	return snapshot_call(m, r, vmm_snapshot);
}

/* PUT /snapshot/load {"path": DIR}: before start, start from a snapshot (--restore DIR). */
static struct reply put_snapshot_load(struct vmm *m, struct MHD_Connection *c,
				      const struct request *r)
{
	return snapshot_call(m, r, vmm_load_snapshot);
}

/*
 * Firecracker's pre-boot endpoints (firecracker.h), each a change to the configuration. Their
 * errors carry Firecracker's "fault_message" beside our "error", for its clients.
 */
static const struct fc_route {
	const char *method;
	const char *path; /* ending in '/' when an id follows */
	vmm_config_edit_fn edit;
	unsigned check; /* VM_CHECK_*: the files the change names */
	bool patch;
} fc_routes[] = {
    {"PUT", "/boot-source", fc_boot_source, VM_CHECK_BOOT, false},
    {"PUT", "/machine-config", fc_machine_config, 0, false},
    {"PATCH", "/machine-config", fc_machine_config, 0, true},
    {"GET", "/machine-config", NULL, 0, false},
    {"PUT", "/drives/", fc_drive, VM_CHECK_DISKS, false},
    {"PUT", "/network-interfaces/", fc_network_interface, 0, false},
    {"PUT", "/vsock", fc_vsock, VM_CHECK_VSOCK, false},
};

static struct reply fc_reply(struct reply rep)
{
	json_t *msg = rep.body ? json_object_get(rep.body, "error") : NULL;

	if (msg)
		json_object_set(rep.body, "fault_message", msg);
	return rep;
}

static void describe_machine(const struct vm_config *cfg, void *arg)
{
	*(json_t **)arg = fc_machine_config_json(cfg);
}

static struct reply fc_call(struct vmm *m, const struct fc_route *fr, const char *id,
			    const struct request *r)
{
	struct fc_request req = {.id = id, .patch = fr->patch};
	json_t *body, *o = NULL;
	struct reply rep;
	int ret;

	if (!fr->edit) {
		vmm_with_config(m, describe_machine, &o);
		return json_reply(200, o);
	}
	body = body_object(r, &rep);
	if (!body)
		return rep;
	req.body = body;
	ret = vmm_edit_config(m, fr->edit, &req, fr->check);
	json_decref(body);
	return ret ? vmm_failure(m, ret) : no_content();
}

/* A Firecracker path: its reply, or false. */
static bool firecracker_route(struct vmm *m, const char *method, const char *url,
			      const struct request *r, struct reply *rep)
{
	bool path_known = false;

	for (size_t i = 0; i < sizeof(fc_routes) / sizeof(fc_routes[0]); i++) {
		const struct fc_route *fr = &fc_routes[i];
		size_t len = strlen(fr->path);
		bool with_id = fr->path[len - 1] == '/';

		if (with_id ? strncmp(url, fr->path, len) : strcmp(url, fr->path))
			continue;
		path_known = true;
		if (!strcmp(method, fr->method)) {
			*rep = fc_reply(fc_call(m, fr, with_id ? url + len : NULL, r));
			return true;
		}
	}
	if (path_known)
		*rep = fc_reply(error_reply(405, "%s %s: method not allowed", method, url));
	return path_known;
}

/* GET /metrics */

static const char *const exit_reasons[] = {
    [KVM_EXIT_UNKNOWN] = "unknown",
    [KVM_EXIT_EXCEPTION] = "exception",
    [KVM_EXIT_IO] = "io",
    [KVM_EXIT_HYPERCALL] = "hypercall",
    [KVM_EXIT_DEBUG] = "debug",
    [KVM_EXIT_HLT] = "hlt",
    [KVM_EXIT_MMIO] = "mmio",
    [KVM_EXIT_IRQ_WINDOW_OPEN] = "irq_window_open",
    [KVM_EXIT_SHUTDOWN] = "shutdown",
    [KVM_EXIT_FAIL_ENTRY] = "fail_entry",
    [KVM_EXIT_INTR] = "intr",
    [KVM_EXIT_SET_TPR] = "set_tpr",
    [KVM_EXIT_TPR_ACCESS] = "tpr_access",
    [KVM_EXIT_NMI] = "nmi",
    [KVM_EXIT_INTERNAL_ERROR] = "internal_error",
    [KVM_EXIT_SYSTEM_EVENT] = "system_event",
    [KVM_EXIT_IOAPIC_EOI] = "ioapic_eoi",
    [KVM_EXIT_HYPERV] = "hyperv",
    [KVM_EXIT_X86_RDMSR] = "x86_rdmsr",
    [KVM_EXIT_X86_WRMSR] = "x86_wrmsr",
    [KVM_EXIT_X86_BUS_LOCK] = "x86_bus_lock",
};

static json_t *exits_json(const uint64_t *exits)
{
	json_t *o = json_object();

	for (unsigned r = 0; r < 64; r++) {
		char name[24];

		if (!exits[r])
			continue;
		if (r < sizeof(exit_reasons) / sizeof(exit_reasons[0]) && exit_reasons[r])
			snprintf(name, sizeof(name), "%s", exit_reasons[r]);
		else
			snprintf(name, sizeof(name), "reason_%u", r);
		json_object_set_new(o, name, json_integer((json_int_t)exits[r]));
	}
	return o;
}

/* Instructions the emulation fallback carried out, by name: {"popcnt": 1}. */
static json_t *emulated_json(const uint64_t *emulated)
{
	json_t *o = json_object();

	for (unsigned i = 0; i < EMU_NR_INSNS; i++) {
		if (emulated[i])
			json_object_set_new(o, emu_insn_name(i),
					    json_integer((json_int_t)emulated[i]));
	}
	return o;
}

#define J(v) ((json_int_t)(v))

static json_t *blk_json(const struct blk_stats *s)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "reads", J(s->reads),
			 "writes", J(s->writes), "flushes", J(s->flushes), "discards",
			 J(s->discards), "write_zeroes", J(s->write_zeroes), "errors", J(s->errors),
			 "bytes_read", J(s->bytes_read), "bytes_written", J(s->bytes_written),
			 "throttled", J(s->throttled), "throttled_ms",
			 J(s->throttled_ns / 1000000));
}

static json_t *net_json(const struct net_stats *s)
{
	return json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "rx_packets", J(s->rx_packets),
	    "rx_bytes", J(s->rx_bytes), "rx_dropped", J(s->rx_dropped), "tx_packets",
	    J(s->tx_packets), "tx_bytes", J(s->tx_bytes), "tx_dropped", J(s->tx_dropped),
	    "rx_throttled", J(s->rx_throttled), "rx_throttled_ms", J(s->rx_throttled_ns / 1000000),
	    "tx_throttled", J(s->tx_throttled), "tx_throttled_ms", J(s->tx_throttled_ns / 1000000));
}

static struct reply get_metrics(struct vmm *m, struct MHD_Connection *c, const struct request *r)
{
	struct vmm_metrics *mt = malloc(sizeof(*mt));
	json_t *vcpus, *devices, *total;
	uint64_t sum[64] = {0}, emulated[EMU_NR_INSNS] = {0};
	int ret;

	if (!mt)
		return error_reply(500, "out of memory");
	ret = vmm_metrics(m, mt);
	if (ret) {
		free(mt);
		return vmm_failure(m, ret);
	}
	vcpus = json_array();
	for (unsigned i = 0; i < mt->nr_vcpus; i++) {
		json_array_append_new(vcpus, json_pack("{s:i, s:o, s:o}", "id", (int)i, "exits",
						       exits_json(mt->exits[i]), "emulated",
						       emulated_json(mt->emulated[i])));
		for (unsigned e = 0; e < 64; e++)
			sum[e] += mt->exits[i][e];
		for (unsigned e = 0; e < EMU_NR_INSNS; e++)
			emulated[e] += mt->emulated[i][e];
	}
	total = exits_json(sum);
	devices = json_object();
	for (unsigned i = 0; i < mt->nr_disks; i++) {
		char id[16];

		snprintf(id, sizeof(id), "disk%u", i);
		json_object_set_new(devices, id, blk_json(&mt->disks[i]));
	}
	if (mt->has_net)
		json_object_set_new(devices, "net0", net_json(&mt->net));
	if (mt->has_rng)
		json_object_set_new(devices, "rng0",
				    json_pack("{s:I, s:I}", "requests", J(mt->rng.requests),
					      "bytes", J(mt->rng.bytes)));
	if (mt->has_vconsole)
		json_object_set_new(
		    devices, "console0",
		    json_pack("{s:I, s:I, s:I, s:I, s:I}", "rx_requests",
			      J(mt->vconsole.rx_requests), "rx_bytes", J(mt->vconsole.rx_bytes),
			      "tx_requests", J(mt->vconsole.tx_requests), "tx_bytes",
			      J(mt->vconsole.tx_bytes), "tx_dropped", J(mt->vconsole.tx_dropped)));
	free(mt);
	return json_reply(200,
			  json_pack("{s:o, s:o, s:o, s:o}", "exits", total, "emulated",
				    emulated_json(emulated), "vcpus", vcpus, "devices", devices));
}

/* Introspection: /vcpus/N/registers, /vcpus/N/translate?gva=, /memory?gpa=&len= */

static json_t *hex(uint64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "0x%" PRIx64, v);
	return json_string(s);
}

static json_t *segment_json(const struct kvm_segment *s)
{
	return json_pack("{s:o, s:o, s:o, s:i, s:i, s:i, s:i, s:i}", "selector", hex(s->selector),
			 "base", hex(s->base), "limit", hex(s->limit), "type", s->type, "dpl",
			 s->dpl, "present", s->present, "l", s->l, "db", s->db);
}

static struct reply get_registers(struct vmm *m, unsigned id)
{
	struct kvm_regs g;
	struct kvm_sregs s;
	int ret = vmm_vcpu_registers(m, id, &g, &s);
	json_t *regs;

	if (ret)
		return vmm_failure(m, ret);
	regs = json_object();
	const struct {
		const char *name;
		uint64_t v;
	} gprs[] = {
	    {"rax", g.rax},
	    {"rbx", g.rbx},
	    {"rcx", g.rcx},
	    {"rdx", g.rdx},
	    {"rsi", g.rsi},
	    {"rdi", g.rdi},
	    {"rsp", g.rsp},
	    {"rbp", g.rbp},
	    {"r8", g.r8},
	    {"r9", g.r9},
	    {"r10", g.r10},
	    {"r11", g.r11},
	    {"r12", g.r12},
	    {"r13", g.r13},
	    {"r14", g.r14},
	    {"r15", g.r15},
	    {"rip", g.rip},
	    {"rflags", g.rflags},
	    {"cr0", s.cr0},
	    {"cr2", s.cr2},
	    {"cr3", s.cr3},
	    {"cr4", s.cr4},
	    {"cr8", s.cr8},
	    {"efer", s.efer},
	    {"apic_base", s.apic_base},
	};

	for (size_t i = 0; i < sizeof(gprs) / sizeof(gprs[0]); i++)
		json_object_set_new(regs, gprs[i].name, hex(gprs[i].v));
	json_object_set_new(regs, "cs", segment_json(&s.cs));
	json_object_set_new(regs, "ds", segment_json(&s.ds));
	json_object_set_new(regs, "es", segment_json(&s.es));
	json_object_set_new(regs, "fs", segment_json(&s.fs));
	json_object_set_new(regs, "gs", segment_json(&s.gs));
	json_object_set_new(regs, "ss", segment_json(&s.ss));
	json_object_set_new(regs, "tr", segment_json(&s.tr));
	json_object_set_new(regs, "gdt",
			    json_pack("{s:o, s:i}", "base", hex(s.gdt.base), "limit", s.gdt.limit));
	json_object_set_new(regs, "idt",
			    json_pack("{s:o, s:i}", "base", hex(s.idt.base), "limit", s.idt.limit));
	return json_reply(200, json_pack("{s:i, s:o}", "vcpu", (int)id, "registers", regs));
}

static const char *walk_result(enum gm_walk_result r)
{
	switch (r) {
	case GM_WALK_OK:
		return "ok";
	case GM_WALK_PAGE_FAULT:
		return "page_fault";
	case GM_WALK_BAD_TABLE:
		return "table_outside_ram";
	case GM_WALK_NOT_IN_RAM:
		return "not_ram";
	}
	return "?";
}

static const char *const level_names[] = {"", "PT", "PD", "PDPT", "PML4", "PML5"};

static struct reply get_translate(struct vmm *m, struct MHD_Connection *c, unsigned id)
{
	struct gm_translation t;
	uint64_t gva = 0;
	json_t *steps, *o;
	int ret = query_u64(c, "gva", true, &gva);

	if (ret)
		return error_reply(400, "gva=ADDRESS (decimal or 0x-hex) is required");
	ret = vmm_translate(m, id, gva, &t);
	if (ret)
		return vmm_failure(m, ret);
	steps = json_array();
	for (unsigned i = 0; i < t.nr_steps; i++) {
		const struct gm_walk_step *st = &t.steps[i];

		json_array_append_new(steps, json_pack("{s:s, s:o, s:o}", "table",
						       st->level < 6 ? level_names[st->level] : "?",
						       "entry_gpa", hex(st->entry_gpa), "entry",
						       hex(st->entry)));
	}
	o = json_pack("{s:i, s:o, s:s, s:o}", "vcpu", (int)id, "gva", hex(gva), "result",
		      walk_result(t.result), "steps", steps);
	if (t.result == GM_WALK_OK || t.result == GM_WALK_NOT_IN_RAM) {
		json_object_set_new(o, "gpa", hex(t.gpa));
		json_object_set_new(o, "page_size", json_integer((json_int_t)t.page_size));
	}
	if (t.hva)
		json_object_set_new(o, "hva", hex((uint64_t)(uintptr_t)t.hva));
	if (t.result == GM_WALK_PAGE_FAULT)
		json_object_set_new(o, "error_code", hex(t.error_code));
	return json_reply(200, o);
}

/* Bytes as one JSON string of hex digits (NULL without memory: json_pack() then fails). */
static json_t *hex_bytes(const uint8_t *buf, uint64_t len)
{
	char *text = malloc(2 * len + 1);
	json_t *str;

	if (!text)
		return NULL;
	for (uint64_t i = 0; i < len; i++)
		snprintf(text + 2 * i, 3, "%02x", buf[i]);
	str = json_string(text);
	free(text);
	return str;
}

/* GET /memory?gva=&vcpu=&len=: through a paused vCPU's page tables, page by page. */
static struct reply get_memory_gva(struct vmm *m, struct MHD_Connection *c)
{
	struct vmm_page pages[VMM_MAX_READ / 4096 + 1];
	uint64_t gva = 0, len = 0, vcpu = 0;
	unsigned nr_pages;
	json_t *o, *where;
	uint8_t *buf;
	int ret;

	if (MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "gpa"))
		return error_reply(400, "give gpa= or gva=, not both");
	if (query_u64(c, "gva", true, &gva) || query_u64(c, "len", true, &len) ||
	    query_u64(c, "vcpu", false, &vcpu) || vcpu > UINT32_MAX)
		return error_reply(400, "gva=ADDRESS and len=BYTES (decimal or 0x-hex) are "
					"required, vcpu=N is optional (default 0)");
	if (len == 0 || len > VMM_MAX_READ)
		return error_reply(400, "len=%" PRIu64 ": want 1 to %d bytes", len, VMM_MAX_READ);
	buf = malloc(len);
	if (!buf)
		return error_reply(500, "out of memory");
	ret = vmm_read_virtual(m, (unsigned)vcpu, gva, buf, len, pages, &nr_pages);
	if (ret) {
		free(buf);
		return vmm_failure(m, ret);
	}
	where = json_array();
	for (unsigned i = 0; i < nr_pages; i++)
		json_array_append_new(where, json_pack("{s:o, s:o, s:I}", "gva", hex(pages[i].gva),
						       "gpa", hex(pages[i].gpa), "len",
						       (json_int_t)pages[i].len));
	o = json_pack("{s:i, s:o, s:I, s:o, s:o}", "vcpu", (int)vcpu, "gva", hex(gva), "len",
		      (json_int_t)len, "hex", hex_bytes(buf, len), "pages", where);
	free(buf);
	return json_reply(200, o);
}

static struct reply get_memory(struct vmm *m, struct MHD_Connection *c, const struct request *r)
{
	uint64_t gpa = 0, len = 0;
	uint8_t *buf;
	json_t *o;
	int ret;

	if (MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "gva"))
		return get_memory_gva(m, c);
	if (query_u64(c, "gpa", true, &gpa) || query_u64(c, "len", true, &len))
		return error_reply(400, "gpa=ADDRESS and len=BYTES (decimal or 0x-hex) are "
					"required");
	if (len == 0 || len > VMM_MAX_READ)
		return error_reply(400, "len=%" PRIu64 ": want 1 to %d bytes", len, VMM_MAX_READ);
	buf = malloc(len);
	if (!buf)
		return error_reply(500, "out of memory");
	ret = vmm_read_memory(m, gpa, buf, len);
	if (ret) {
		free(buf);
		return vmm_failure(m, ret);
	}
	o = json_pack("{s:o, s:I, s:o}", "gpa", hex(gpa), "len", (json_int_t)len, "hex",
		      hex_bytes(buf, len));
	free(buf);
	return json_reply(200, o);
}

/* /vcpus/N/WHAT */
static struct reply vcpu_route(struct vmm *m, struct MHD_Connection *c, const char *method,
			       const char *rest)
{
	char what[16];
	unsigned id;
	int n = 0;

	if (sscanf(rest, "%3u/%15[a-z]%n", &id, what, &n) != 2 || rest[n] || !isdigit(rest[0]))
		return error_reply(404, "no such resource: /vcpus/%s", rest);
	if (strcmp(what, "registers") && strcmp(what, "translate"))
		return error_reply(404, "no such resource: /vcpus/%u/%s", id, what);
	if (strcmp(method, "GET"))
		return error_reply(405, "/vcpus/%u/%s: use GET", id, what);
	return !strcmp(what, "registers") ? get_registers(m, id) : get_translate(m, c, id);
}

typedef struct reply (*handler_fn)(struct vmm *m, struct MHD_Connection *c,
				   const struct request *r);

static const struct route {
	const char *method;
	const char *path;
	handler_fn fn;
} routes[] = {
    {"GET", "/vm", get_vm},
    {"PATCH", "/vm", patch_vm},
    {"PUT", "/vm/config", put_config},
    {"PUT", "/actions", put_actions},
    {"PUT", "/snapshot/create", put_snapshot},
    {"PUT", "/snapshot/load", put_snapshot_load},
    {"GET", "/metrics", get_metrics},
    {"GET", "/memory", get_memory},
};

static struct reply route(struct vmm *m, struct MHD_Connection *c, const char *method,
			  const char *url, const struct request *r)
{
	bool path_known = false;

	if (r->too_large)
		return error_reply(413, "the body is over %d bytes", API_MAX_BODY);
	if (!strncmp(url, "/vcpus/", 7))
		return vcpu_route(m, c, method, url + 7);
	struct reply fc;
	if (firecracker_route(m, method, url, r, &fc))
		return fc;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(url, routes[i].path))
			continue;
		path_known = true;
		if (!strcmp(method, routes[i].method))
			return routes[i].fn(m, c, r);
	}
	if (path_known)
		return error_reply(405, "%s %s: method not allowed", method, url);
	return error_reply(404, "no such resource: %s", url);
}

static enum MHD_Result send_reply(struct MHD_Connection *c, struct reply rep)
{
	struct MHD_Response *resp;
	char *text = NULL;
	enum MHD_Result ret;

	if (rep.status != 204 && !rep.body) {
		/* A json_pack() above ran out of memory. */
		rep = error_reply(500, "out of memory");
	}
	if (rep.body) {
		text = json_dumps(rep.body, JSON_COMPACT);
		json_decref(rep.body);
	}
	if (text) {
		resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
		if (resp)
			MHD_add_response_header(resp, "Content-Type", "application/json");
	} else {
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	}
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, rep.status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct api_server *s = cls;
	struct request *r = *con_cls;

	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		*con_cls = r;
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;

		if (!r->too_large && r->len + n <= API_MAX_BODY) {
			char *body = realloc(r->body, r->len + n + 1);

			if (!body)
				return MHD_NO;
			memcpy(body + r->len, upload_data, n);
			r->body = body;
			r->len += n;
			r->body[r->len] = '\0';
		} else {
			r->too_large = true;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	return send_reply(c, route(s->vmm, c, method, url, r));
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode code)
{
	struct request *r = *con_cls;

	if (r) {
		free(r->body);
		free(r);
		*con_cls = NULL;
	}
}

/* In a thread of its own: sandboxed as the API, then start the HTTP daemon's thread. */
static void *start_daemon(void *arg)
{
	struct api_server *s = arg;

	if (sandbox_enter(SANDBOX_API))
		return NULL;
	s->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
				     on_request, s, MHD_OPTION_LISTEN_SOCKET, s->fd,
				     MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
				     MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_END);
	return NULL;
}

int api_server_start(const char *path, struct vmm *m, struct api_server **out)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct api_server *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	s->vmm = m;
	snprintf(s->path, sizeof(s->path), "%s", path);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->fd < 0)
		goto err_errno;
	/* A socket file left by a process that is gone is replaced; anything else is not. */
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			errno = EEXIST;
			goto err_errno;
		}
		unlink(path);
	}
	if (bind(s->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(s->fd, 16) < 0)
		goto err_errno;
	/* The daemon's thread inherits the filter of the thread that starts it. */
	pthread_t starter;

	if (pthread_create(&starter, NULL, start_daemon, s) == 0)
		pthread_join(starter, NULL);
	if (!s->daemon) {
		log_error("--api-socket %s: the HTTP server did not start", path);
		unlink(path);
		close(s->fd);
		free(s);
		return -EIO;
	}
	*out = s;
	return 0;
err_errno:
	err = -errno;
	log_error("--api-socket %s: %s", path, strerror(errno));
	if (s->fd >= 0)
		close(s->fd);
	free(s);
	return err;
}

void api_server_stop(struct api_server *s)
{
	if (!s)
		return;
	MHD_stop_daemon(s->daemon);
	close(s->fd);
	unlink(s->path);
	free(s);
}
