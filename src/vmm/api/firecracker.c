// SPDX-License-Identifier: MIT
/*
 * Firecracker's pre-boot configuration (its swagger definitions BootSource,
 * MachineConfiguration, Drive, NetworkInterface, Vsock, RateLimiter and TokenBucket) mapped
 * onto yun-vmm's options:
 *
 *   boot-source         kernel_image_path, initrd_path, boot_args → kernel, initrd, cmdline
 *   machine-config      vcpu_count, mem_size_mib                  → cpus, memory
 *   drives/ID           path_on_host, is_read_only, io_engine     → disk path, readonly, engine
 *                       drive_id                                  → disk serial (GET_ID)
 *                       is_root_device                            → disk root=on, first
 *   network-interfaces  host_dev_name, guest_mac, iface_id        → net tap, mac, id
 *   vsock               guest_cid, uds_path                       → vsock cid, uds
 *   rate limiters       bandwidth, ops: size tokens each refill_time ms → bw=, ops= a second
 *
 * What yun-vmm cannot do is refused by name (400), never dropped silently.
 */
#include "vmm/api/firecracker.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum fc_type { FC_STRING, FC_UINT, FC_BOOL, FC_OBJECT };

struct fc_field {
	const char *name;
	enum fc_type type;
	bool required;
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
						      ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool has_type(const json_t *v, enum fc_type type)
{
	switch (type) {
	case FC_STRING:
		return json_is_string(v);
	case FC_UINT:
		return json_is_integer(v) && json_integer_value(v) >= 0;
	case FC_BOOL:
		return json_is_boolean(v);
	case FC_OBJECT:
		return json_is_object(v);
	}
	return false;
}

static const char *const type_names[] = {
    [FC_STRING] = "a string",
    [FC_UINT] = "a whole number from 0",
    [FC_BOOL] = "true or false",
    [FC_OBJECT] = "an object",
};

/* Every field of o known and of its type, and the required ones there (unless patch). */
static int check_fields(const char *what, const json_t *o, const struct fc_field *f, size_t n,
			bool patch, char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)o, key, v)
	{
		size_t i = 0;

		while (i < n && strcmp(f[i].name, key))
			i++;
		if (i == n)
			return fail(err, errlen, "%s: unknown field \"%s\"", what, key);
		if (!has_type(v, f[i].type))
			return fail(err, errlen, "%s: %s: want %s", what, key,
				    type_names[f[i].type]);
	}
	for (size_t i = 0; i < n && !patch; i++) {
		if (f[i].required && !json_object_get(o, f[i].name))
			return fail(err, errlen, "%s: %s is required", what, f[i].name);
	}
	return 0;
}

static const char *str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static bool is_true(const json_t *o, const char *key)
{
	return json_is_true(json_object_get(o, key));
}

/* A string field that may hold only `allowed` (the one value yun-vmm implements). */
static int only_value(const char *what, const json_t *o, const char *key, const char *allowed,
		      const char *why, char *err, size_t errlen)
{
	const char *v = str(o, key);

	if (v && strcmp(v, allowed))
		return fail(err, errlen, "%s: %s \"%s\": only \"%s\" (%s)", what, key, v, allowed,
			    why);
	return 0;
}

/* The id in the path: the body's own must be the same, and it must name a device for us. */
static int check_id(const char *what, const char *field, const struct fc_request *r, size_t max,
		    char *err, size_t errlen)
{
	const char *body_id = str(r->body, field);
	size_t len = strspn(r->id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				   "0123456789_-");

	if (!len || len > max || r->id[len])
		return fail(err, errlen, "%s: %s \"%s\": want 1 to %zu letters, digits, '_' or '-'",
			    what, field, r->id, max);
	if (strcmp(body_id, r->id))
		return fail(err, errlen, "%s: %s \"%s\" in the body is not \"%s\" of the path",
			    what, field, body_id, r->id);
	return 0;
}

/* PUT /boot-source: the whole boot source; fields left out go back to their defaults. */
int fc_boot_source(json_t *cfg, void *req, char *err, size_t errlen)
{
	static const struct fc_field fields[] = {
	    {"kernel_image_path", FC_STRING, true},
	    {"initrd_path", FC_STRING, false},
	    {"boot_args", FC_STRING, false},
	};
	const struct fc_request *r = req;
	const char *initrd = str(r->body, "initrd_path"), *args = str(r->body, "boot_args");
	int ret = check_fields("boot-source", r->body, fields, N(fields), false, err, errlen);

	if (ret)
		return ret;
	json_object_set_new(cfg, "kernel", json_string(str(r->body, "kernel_image_path")));
	if (initrd)
		json_object_set_new(cfg, "initrd", json_string(initrd));
	else
		json_object_del(cfg, "initrd");
	if (args)
		json_object_set_new(cfg, "cmdline", json_string(args));
	else
		json_object_del(cfg, "cmdline");
	return 0;
}

/* PUT and PATCH /machine-config. */
int fc_machine_config(json_t *cfg, void *req, char *err, size_t errlen)
{
	static const struct fc_field fields[] = {
	    {"vcpu_count", FC_UINT, true},
	    {"mem_size_mib", FC_UINT, true},
	    {"smt", FC_BOOL, false},
	    {"track_dirty_pages", FC_BOOL, false},
	    {"cpu_template", FC_STRING, false},
	    {"huge_pages", FC_STRING, false},
	};
	const struct fc_request *r = req;
	const json_t *cpus = json_object_get(r->body, "vcpu_count");
	const json_t *mem = json_object_get(r->body, "mem_size_mib");
	int ret = check_fields("machine-config", r->body, fields, N(fields), r->patch, err, errlen);

	if (ret)
		return ret;
	if (is_true(r->body, "smt"))
		return fail(err, errlen,
			    "machine-config: smt: not supported (each vCPU is a core of its own)");
	if (is_true(r->body, "track_dirty_pages"))
		return fail(err, errlen,
			    "machine-config: track_dirty_pages: not supported (snapshots are "
			    "whole, not diffs)");
	ret = only_value("machine-config", r->body, "cpu_template", "None",
			 "the guest sees KVM's CPUID, filtered", err, errlen);
	if (!ret)
		ret = only_value("machine-config", r->body, "huge_pages", "None",
				 "guest memory is in 4 KiB pages", err, errlen);
	if (ret)
		return ret;
	if (cpus)
		json_object_set(cfg, "cpus", (json_t *)cpus);
	if (mem)
		json_object_set(cfg, "memory", (json_t *)mem);
	return 0;
}

json_t *fc_machine_config_json(const struct vm_config *cfg)
{
	return json_pack("{s:i, s:I, s:b, s:b, s:s, s:s}", "vcpu_count", (int)cfg->cpus,
			 "mem_size_mib", (json_int_t)cfg->mem_mib, "smt", 0, "track_dirty_pages", 0,
			 "cpu_template", "None", "huge_pages", "None");
}

/*
 * A token bucket {size, refill_time, one_time_burst} as a rate a second: size tokens each
 * refill_time ms. yun-vmm's buckets hold one second of their rate, so only the rate carries
 * over; a size or refill_time of 0 is no limit, as in Firecracker.
 */
static int bucket_rate(const char *what, const json_t *b, json_int_t *rate, char *err,
		       size_t errlen)
{
	static const struct fc_field fields[] = {
	    {"size", FC_UINT, true},
	    {"refill_time", FC_UINT, true},
	    {"one_time_burst", FC_UINT, false},
	};
	json_int_t size, ms;
	int ret = check_fields(what, b, fields, N(fields), false, err, errlen);

	if (ret)
		return ret;
	if (json_integer_value(json_object_get(b, "one_time_burst")))
		return fail(err, errlen,
			    "%s: one_time_burst: not supported (a bucket starts with a second "
			    "of its rate)",
			    what);
	size = json_integer_value(json_object_get(b, "size"));
	ms = json_integer_value(json_object_get(b, "refill_time"));
	if (size > LLONG_MAX / 1000)
		return fail(err, errlen, "%s: size %" JSON_INTEGER_FORMAT ": too large", what,
			    size);
	*rate = size && ms ? size * 1000 / ms : 0;
	if (size && ms && !*rate)
		*rate = 1;
	return 0;
}

/* A RateLimiter {bandwidth, ops} as bw= and ops= of a --disk or --net object. */
static int rate_limiter(const char *what, const json_t *rl, json_t *dev, char *err, size_t errlen)
{
	static const struct fc_field fields[] = {
	    {"bandwidth", FC_OBJECT, false},
	    {"ops", FC_OBJECT, false},
	};
	static const char *const keys[][2] = {{"bandwidth", "bw"}, {"ops", "ops"}};
	int ret = check_fields(what, rl, fields, N(fields), false, err, errlen);

	for (size_t i = 0; !ret && i < N(keys); i++) {
		const json_t *b = json_object_get(rl, keys[i][0]);
		char name[64];
		json_int_t rate;

		if (!b)
			continue;
		snprintf(name, sizeof(name), "%s.%s", what, keys[i][0]);
		ret = bucket_rate(name, b, &rate, err, errlen);
		if (!ret && rate)
			json_object_set_new(dev, keys[i][1], json_integer(rate));
	}
	return ret;
}

static json_t *disk_array(json_t *cfg)
{
	json_t *disks = json_object_get(cfg, "disk");

	if (!json_is_array(disks)) {
		disks = json_array();
		json_object_set_new(cfg, "disk", disks);
	}
	return disks;
}

/*
 * PUT /drives/ID: a disk whose serial is ID, replacing the one of that ID. The root device is
 * the first disk (the guest's /dev/vda), marked root=on.
 */
int fc_drive(json_t *cfg, void *req, char *err, size_t errlen)
{
	static const struct fc_field fields[] = {
	    {"drive_id", FC_STRING, true},	{"path_on_host", FC_STRING, true},
	    {"is_root_device", FC_BOOL, true},	{"is_read_only", FC_BOOL, false},
	    {"rate_limiter", FC_OBJECT, false}, {"io_engine", FC_STRING, false},
	    {"cache_type", FC_STRING, false},	{"partuuid", FC_STRING, false},
	    {"socket", FC_STRING, false},
	};
	const struct fc_request *r = req;
	const char *engine = str(r->body, "io_engine"), *cache = str(r->body, "cache_type");
	const json_t *rl = json_object_get(r->body, "rate_limiter");
	bool root = is_true(r->body, "is_root_device");
	json_t *disks, *disk, *d;
	size_t at, i;
	int ret = check_fields("drives", r->body, fields, N(fields), false, err, errlen);

	if (!ret)
		ret = check_id("drives", "drive_id", r,
			       sizeof(((struct blk_config *)0)->serial) - 1, err, errlen);
	if (ret)
		return ret;
	if (json_object_get(r->body, "partuuid"))
		return fail(err, errlen,
			    "drives: partuuid: not supported (give root=PARTUUID=... in "
			    "boot_args)");
	if (json_object_get(r->body, "socket"))
		return fail(err, errlen, "drives: socket: vhost-user disks are not supported");
	if (engine && strcmp(engine, "Sync") && strcmp(engine, "Async"))
		return fail(err, errlen, "drives: io_engine \"%s\": want Sync or Async", engine);
	/* Flushes always reach the file (fdatasync): Writeback, and Unsafe is as safe. */
	if (cache && strcmp(cache, "Unsafe") && strcmp(cache, "Writeback"))
		return fail(err, errlen, "drives: cache_type \"%s\": want Unsafe or Writeback",
			    cache);
	disk = json_pack("{s:s, s:b, s:s}", "path", str(r->body, "path_on_host"), "readonly",
			 is_true(r->body, "is_read_only"), "serial", r->id);
	if (!disk)
		return fail(err, errlen, "drives: out of memory");
	if (engine)
		json_object_set_new(disk, "engine",
				    json_string(!strcmp(engine, "Sync") ? "sync" : "io_uring"));
	if (root)
		json_object_set_new(disk, "root", json_true());
	if (rl && (ret = rate_limiter("drives: rate_limiter", rl, disk, err, errlen))) {
		json_decref(disk);
		return ret;
	}
	disks = disk_array(cfg);
	at = json_array_size(disks);
	json_array_foreach(disks, i, d)
	{
		if (!strcmp(str(d, "serial") ? str(d, "serial") : "", r->id))
			at = i;
		else if (root && is_true(d, "root")) {
			json_decref(disk);
			return fail(err, errlen,
				    "drives: \"%s\" is the root device already (one at most)",
				    str(d, "serial"));
		}
	}
	if (at < json_array_size(disks))
		json_array_remove(disks, at);
	/* The root device goes first; another keeps its place, or goes last. */
	if (root)
		at = 0;
	json_array_insert_new(disks, at, disk);
	return 0;
}

/* Both absent, or equal. */
static bool same(const json_t *a, const json_t *b)
{
	return a == b || json_equal((json_t *)a, (json_t *)b);
}

/* PUT /network-interfaces/ID: the one NIC, named ID. */
int fc_network_interface(json_t *cfg, void *req, char *err, size_t errlen)
{
	static const struct fc_field fields[] = {
	    {"iface_id", FC_STRING, true},	   {"host_dev_name", FC_STRING, true},
	    {"guest_mac", FC_STRING, false},	   {"rx_rate_limiter", FC_OBJECT, false},
	    {"tx_rate_limiter", FC_OBJECT, false}, {"mtu", FC_UINT, false},
	};
	const struct fc_request *r = req;
	const json_t *rx = json_object_get(r->body, "rx_rate_limiter");
	const json_t *tx = json_object_get(r->body, "tx_rate_limiter");
	const json_t *old = json_object_get(cfg, "net");
	const char *mac = str(r->body, "guest_mac");
	json_t *net, *txnet;
	int ret =
	    check_fields("network-interfaces", r->body, fields, N(fields), false, err, errlen);

	if (!ret)
		ret = check_id("network-interfaces", "iface_id", r, VM_MAX_ID, err, errlen);
	if (ret)
		return ret;
	if (old && (!str(old, "id") || strcmp(str(old, "id"), r->id)))
		return fail(err, errlen,
			    "network-interfaces: one NIC at most, and \"%s\" (tap %s) is there "
			    "already",
			    str(old, "id") ? str(old, "id") : "", str(old, "tap"));
	if (json_object_get(r->body, "mtu"))
		return fail(err, errlen, "network-interfaces: mtu: not supported");
	net = json_pack("{s:s, s:s}", "tap", str(r->body, "host_dev_name"), "id", r->id);
	txnet = json_object();
	if (!net || !txnet) {
		json_decref(net);
		json_decref(txnet);
		return fail(err, errlen, "network-interfaces: out of memory");
	}
	if (mac)
		json_object_set_new(net, "mac", json_string(mac));
	/* One limit serves both ways (--net bw=, ops=): the two must be the same. */
	if (rx)
		ret = rate_limiter("network-interfaces: rx_rate_limiter", rx, net, err, errlen);
	if (!ret && tx)
		ret = rate_limiter("network-interfaces: tx_rate_limiter", tx, txnet, err, errlen);
	if (!ret && (!same(json_object_get(net, "bw"), json_object_get(txnet, "bw")) ||
		     !same(json_object_get(net, "ops"), json_object_get(txnet, "ops"))))
		ret = fail(err, errlen,
			   "network-interfaces: rx_rate_limiter and tx_rate_limiter: yun-vmm "
			   "limits both ways alike; give both the same rates, or neither");
	json_decref(txnet);
	if (ret) {
		json_decref(net);
		return ret;
	}
	json_object_set_new(cfg, "net", net);
	return 0;
}

/* PUT /vsock: the vsock device; vsock_id (deprecated in Firecracker) is accepted, unused. */
int fc_vsock(json_t *cfg, void *req, char *err, size_t errlen)
{
	static const struct fc_field fields[] = {
	    {"guest_cid", FC_UINT, true},
	    {"uds_path", FC_STRING, true},
	    {"vsock_id", FC_STRING, false},
	};
	const struct fc_request *r = req;
	int ret = check_fields("vsock", r->body, fields, N(fields), false, err, errlen);

	if (ret)
		return ret;
	json_object_set_new(cfg, "vsock",
			    json_pack("{s:O, s:s}", "cid", json_object_get(r->body, "guest_cid"),
				      "uds", str(r->body, "uds_path")));
	return 0;
}
