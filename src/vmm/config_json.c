// SPDX-License-Identifier: MIT
/*
 * A VM's configuration as JSON, for --config FILE and the control API: the command line's own
 * options, spelled as an object, e.g.
 *
 *   {"kernel": "vmlinuz", "memory": 256, "cpus": 2, "rng": true,
 *    "disk": [{"path": "root.img"}, {"path": "data.img", "readonly": true}],
 *    "net": {"tap": "tap0", "mac": "52:54:00:12:34:56"}}
 *
 * is turned into `--kernel vmlinuz --memory 256 ... --disk path=root.img --disk
 * path=data.img,readonly=on --net tap=tap0,mac=...` and parsed by vm_config_parse_args(), so
 * there is one set of options, checks and messages however a VM is described.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/config.h"

/* The arguments built from one JSON document; the configuration points into them. */
struct config_strings {
	struct config_strings *next;
	int argc;
	char *argv[];
};

#define MAX_ARGS 256

struct builder {
	char *args[MAX_ARGS];
	int argc;
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 2, 3))) static int fail(struct builder *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vm_config_vmessage(b->err, b->errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int push(struct builder *b, char *s)
{
	if (!s)
		return -ENOMEM;
	if (b->argc == MAX_ARGS) {
		free(s);
		return fail(b, "config: more than %d options", MAX_ARGS / 2);
	}
	b->args[b->argc++] = s;
	return 0;
}

/* A scalar as an option's argument: a string as it is, a whole number in decimal. */
static char *scalar_text(const json_t *v)
{
	char *s = NULL;

	if (json_is_string(v))
		return strdup(json_string_value(v));
	if (json_is_integer(v) && asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) > 0)
		return s;
	return NULL;
}

/* {"path": "a.img", "readonly": true} → "path=a.img,readonly=on". */
static int object_text(struct builder *b, const char *opt, const json_t *obj, char **out)
{
	const char *key;
	json_t *v;
	char *s = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&s, &len);
	bool first = true;

	if (!f)
		return -ENOMEM;
	json_object_foreach((json_t *)obj, key, v)
	{
		char *text =
		    json_is_boolean(v) ? strdup(json_is_true(v) ? "on" : "off") : scalar_text(v);

		if (!text || strchr(text, ',') || strchr(key, ',') || strchr(key, '=')) {
			fclose(f);
			free(s);
			free(text);
			return fail(b,
				    "config: \"%s\": \"%s\": want a string, a whole number or "
				    "true/false, without commas",
				    opt, key);
		}
		fprintf(f, "%s%s=%s", first ? "" : ",", key, text);
		free(text);
		first = false;
	}
	fclose(f);
	*out = s;
	return 0;
}

/* One option with one value (an array's element, or the value itself). */
static int add_value(struct builder *b, const char *opt, const json_t *v)
{
	char *flag = NULL, *arg = NULL;
	int err;

	if (json_is_false(v))
		return 0;
	if (asprintf(&flag, "--%s", opt) < 0)
		return -ENOMEM;
	err = push(b, flag);
	if (err || json_is_true(v))
		return err;
	if (json_is_object(v)) {
		err = object_text(b, opt, v, &arg);
		if (err)
			return err;
	} else {
		arg = scalar_text(v);
		if (!arg)
			return fail(b,
				    "config: \"%s\": want a string, a whole number, true, an "
				    "object or an array of them",
				    opt);
	}
	return push(b, arg);
}

static int build(struct builder *b, const json_t *root)
{
	const char *key;
	json_t *v;
	size_t i;
	json_t *e;
	int err;

	if (!json_is_object(root))
		return fail(b, "config: want a JSON object of options");
	json_object_foreach((json_t *)root, key, v)
	{
		if (!strcmp(key, "help") || !strcmp(key, "version"))
			return fail(b, "config: \"%s\" is not a VM's option", key);
		if (json_is_array(v)) {
			json_array_foreach(v, i, e)
			{
				if (json_is_array(e))
					return fail(b, "config: \"%s\": arrays do not nest", key);
				err = add_value(b, key, e);
				if (err)
					return err;
			}
		} else {
			err = add_value(b, key, v);
			if (err)
				return err;
		}
	}
	return 0;
}

static int parse(struct vm_config *cfg, const json_t *root, char *err, size_t errlen)
{
	struct builder b = {.argc = 1, .err = err, .errlen = errlen};
	struct config_strings *strings;
	int ret;

	b.args[0] = strdup("config");
	ret = b.args[0] ? build(&b, root) : -ENOMEM;
	if (ret == -ENOMEM)
		fail(&b, "config: out of memory");
	if (ret)
		goto err;
	strings = malloc(sizeof(*strings) + (size_t)b.argc * sizeof(char *));
	if (!strings) {
		ret = fail(&b, "config: out of memory");
		goto err;
	}
	strings->argc = b.argc;
	memcpy(strings->argv, b.args, (size_t)b.argc * sizeof(char *));
	strings->next = cfg->strings;
	cfg->strings = strings;
	/* getopt permutes argv: parse a copy so that `strings` keeps every pointer to free. */
	char *argv[MAX_ARGS];

	memcpy(argv, b.args, (size_t)b.argc * sizeof(char *));
	ret = vm_config_parse_args_msg(cfg, b.argc, argv, err, errlen);
	return ret > 0 ? -EINVAL : ret;
err:
	for (int i = 0; i < b.argc; i++)
		free(b.args[i]);
	return ret;
}

int vm_config_parse_json(struct vm_config *cfg, const char *text, size_t len, char *err,
			 size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	int ret;

	if (!root) {
		snprintf(err, errlen, "config: line %d, column %d: %s", jerr.line, jerr.column,
			 jerr.text);
		return -EINVAL;
	}
	ret = parse(cfg, root, err, errlen);
	json_decref(root);
	return ret;
}

int vm_config_load_file(struct vm_config *cfg, const char *path)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	int ret;

	if (!root) {
		fprintf(stderr, "yun-vmm: --config %s: line %d: %s\n", path, jerr.line, jerr.text);
		return -EINVAL;
	}
	ret = parse(cfg, root, NULL, 0);
	json_decref(root);
	return ret;
}

void vm_config_free_strings(struct vm_config *cfg)
{
	while (cfg->strings) {
		struct config_strings *s = cfg->strings;

		cfg->strings = s->next;
		for (int i = 0; i < s->argc; i++)
			free(s->argv[i]);
		free(s);
	}
}

/* A rate limit's keys, as --disk and --net spell them. */
static void put_rate(json_t *o, const struct rate_limit_config *r)
{
	if (r->bw)
		json_object_set_new(o, "bw", json_integer((json_int_t)r->bw));
	if (r->ops)
		json_object_set_new(o, "ops", json_integer((json_int_t)r->ops));
}

static const char *const engine_names[] = {
    [BLK_ENGINE_IO_URING] = "io_uring",
    [BLK_ENGINE_THREADS] = "threads",
    [BLK_ENGINE_SYNC] = "sync",
};

json_t *vm_config_to_json(const struct vm_config *cfg)
{
	json_t *o = json_object(), *disks = json_array();

	if (!o || !disks) {
		json_decref(o);
		json_decref(disks);
		return NULL;
	}
	if (cfg->kernel)
		json_object_set_new(o, "kernel", json_string(cfg->kernel));
	if (cfg->initrd)
		json_object_set_new(o, "initrd", json_string(cfg->initrd));
	json_object_set_new(o, "cmdline", json_string(vm_config_cmdline(cfg)));
	json_object_set_new(o, "memory", json_integer((json_int_t)cfg->mem_mib));
	json_object_set_new(o, "cpus", json_integer(cfg->cpus));
	for (unsigned i = 0; i < cfg->nr_disks; i++) {
		const struct blk_config *d = &cfg->disks[i];
		json_t *disk = json_pack("{s:s, s:b, s:s, s:b}", "path", d->path, "readonly",
					 d->readonly, "serial", d->serial, "direct", d->direct);

		if (disk && i == 0 && cfg->root_disk)
			json_object_set_new(disk, "root", json_true());
		if (disk && d->engine != BLK_ENGINE_AUTO)
			json_object_set_new(disk, "engine", json_string(engine_names[d->engine]));
		if (disk)
			put_rate(disk, &d->rate);
		if (disk && i == 0 && cfg->root_disk)
			json_object_set_new(disk, "root", json_true());
		json_array_append_new(disks, disk);
	}
	json_object_set_new(o, "disk", disks);
	json_object_set_new(o, "rng", json_boolean(cfg->rng));
	if (cfg->has_net && cfg->net.tap[0]) {
		const uint8_t *a = cfg->net.mac;
		char mac[18];
		json_t *net;

		snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3],
			 a[4], a[5]);
		net = json_pack("{s:s, s:s, s:i}", "tap", cfg->net.tap, "mac", mac, "queues",
				cfg->net.queues ? (int)cfg->net.queues : 1);
		if (net && cfg->net_id[0])
			json_object_set_new(net, "id", json_string(cfg->net_id));
		if (net)
			put_rate(net, &cfg->net.rate);
		if (net && cfg->net_id[0])
			json_object_set_new(net, "id", json_string(cfg->net_id));
		json_object_set_new(o, "net", net);
	}
	if (cfg->has_vsock)
		json_object_set_new(o, "vsock",
				    json_pack("{s:I, s:s}", "cid", (json_int_t)cfg->vsock.cid,
					      "uds", cfg->vsock.uds));
	json_object_set_new(
	    o, "console-device",
	    json_string(cfg->console_device == CONSOLE_DEVICE_VIRTIO ? "virtio" : "serial"));
	json_object_set_new(o, "no-reboot", json_boolean(cfg->no_reboot));
	return o;
}
