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
