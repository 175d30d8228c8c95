// SPDX-License-Identifier: MIT
/*
 * A VM's configuration as JSON (--config and the control API): the command line's options
 * spelled as an object, parsed by the command line's own parser. Values of each JSON type,
 * objects for --disk and --net, arrays to repeat an option, and every class of bad input with
 * its message; the strings a configuration points into outlive the JSON and are freed.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "vmm/config.h"

static int parse(struct vm_config *cfg, const char *json, char *err, size_t len)
{
	vm_config_defaults(cfg);
	err[0] = '\0';
	return vm_config_parse_json(cfg, json, strlen(json), err, len);
}

static void test_options_of_each_type(void **state)
{
	struct vm_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(
	    parse(&cfg,
		  "{\"kernel\": \"vmlinuz\", \"memory\": 256, \"cpus\": 2, \"rng\": true,"
		  " \"no-reboot\": false, \"cmdline\": \"console=ttyS0 quiet\"}",
		  err, sizeof(err)),
	    0);
	assert_string_equal(cfg.kernel, "vmlinuz");
	assert_int_equal(cfg.mem_mib, 256);
	assert_int_equal(cfg.cpus, 2);
	assert_true(cfg.rng);
	assert_false(cfg.no_reboot);
	assert_string_equal(cfg.cmdline, "console=ttyS0 quiet");
	vm_config_free_strings(&cfg);
	assert_null(cfg.strings);
}

static void test_objects_and_arrays(void **state)
{
	struct vm_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(
	    parse(&cfg,
		  "{\"disk\": [{\"path\": \"a.img\"},"
		  "            {\"path\": \"b.img\", \"readonly\": true, \"serial\": \"s1\"}],"
		  " \"net\": {\"tap\": \"tap7\", \"mac\": \"52:54:00:aa:bb:cc\", \"bw\": 1000}}",
		  err, sizeof(err)),
	    0);
	assert_int_equal(cfg.nr_disks, 2);
	assert_string_equal(cfg.disks[0].path, "a.img");
	assert_false(cfg.disks[0].readonly);
	assert_string_equal(cfg.disks[1].path, "b.img");
	assert_true(cfg.disks[1].readonly);
	assert_string_equal(cfg.disks[1].serial, "s1");
	assert_true(cfg.has_net);
	assert_string_equal(cfg.net.tap, "tap7");
	assert_int_equal(cfg.net.mac[3], 0xaa);
	assert_int_equal(cfg.net.rate.bw, 1000);
	vm_config_free_strings(&cfg);
}

/* Each bad input: refused with a message that names what is wrong. */
static void test_bad_input(void **state)
{
	static const struct {
		const char *json, *msg;
	} cases[] = {
	    {"{\"kernel\": ", "line 1"},
	    {"[1]", "object"},
	    {"{\"kernl\": \"x\"}", "--kernl"},
	    {"{\"memory\": 7}", "--memory 7"},
	    {"{\"memory\": 1.5}", "memory"},
	    {"{\"memory\": null}", "memory"},
	    {"{\"cpus\": [[1]]}", "nest"},
	    {"{\"disk\": {\"path\": \"a,b\"}}", "commas"},
	    {"{\"disk\": {\"path\": [\"a\"]}}", "path"},
	    {"{\"disk\": {\"speed\": 1, \"path\": \"a\"}}", "speed"},
	    {"{\"help\": true}", "help"},
	    {"{\"version\": true}", "version"},
	    {"{\"config\": \"other.json\"}", "cannot include another"},
	    {"{\"api-socket\": \"s\"}", "command line"},
	    {"{\"cpus\": 1, \"cpus\": 2}", "duplicate"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vm_config cfg;
		char err[256];

		if (parse(&cfg, cases[i].json, err, sizeof(err)) == 0 ||
		    !strstr(err, cases[i].msg)) {
			print_error("%s: got \"%s\", want a message with \"%s\"\n", cases[i].json,
				    err, cases[i].msg);
			fail();
		}
		vm_config_free_strings(&cfg);
	}
}

/* A configuration applied on top of another adds to it, as the command line does. */
static void test_layers(void **state)
{
	struct vm_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(
	    parse(&cfg, "{\"disk\": {\"path\": \"a.img\"}, \"memory\": 64}", err, sizeof(err)), 0);
	const char *more = "{\"disk\": {\"path\": \"b.img\"}}";

	assert_int_equal(vm_config_parse_json(&cfg, more, strlen(more), err, sizeof(err)), 0);
	assert_int_equal(cfg.nr_disks, 2);
	assert_string_equal(cfg.disks[0].path, "a.img");
	assert_string_equal(cfg.disks[1].path, "b.img");
	assert_int_equal(cfg.mem_mib, 64);
	vm_config_free_strings(&cfg);
}

/* root=on: first disk only; the boot command line gains root=/dev/vda unless it has a root=. */
static void test_root_disk(void **state)
{
	struct vm_config cfg;
	char err[256], *line;

	(void)state;
	assert_int_equal(
	    parse(&cfg,
		  "{\"disk\": [{\"path\": \"a.img\", \"root\": true,"
		  " \"readonly\": true}, {\"path\": \"b.img\"}],"
		  " \"net\": {\"tap\": \"tap0\", \"id\": \"eth_0\"}, \"cmdline\": \"quiet\"}",
		  err, sizeof(err)),
	    0);
	assert_true(cfg.root_disk);
	assert_string_equal(cfg.net_id, "eth_0");
	line = vm_config_boot_cmdline(&cfg);
	assert_string_equal(line, "root=/dev/vda ro quiet");
	free(line);
	cfg.disks[0].readonly = false;
	cfg.cmdline = "quiet root=/dev/vdb";
	line = vm_config_boot_cmdline(&cfg);
	assert_string_equal(line, "quiet root=/dev/vdb");
	free(line);
	cfg.cmdline = "quiet noroot=1";
	line = vm_config_boot_cmdline(&cfg);
	assert_string_equal(line, "root=/dev/vda rw quiet noroot=1");
	free(line);
	vm_config_free_strings(&cfg);

	assert_int_equal(
	    parse(&cfg,
		  "{\"disk\": [{\"path\": \"a.img\"}, {\"path\": \"b.img\", \"root\": true}]}", err,
		  sizeof(err)),
	    -EINVAL);
	assert_string_equal(err, "--disk: root=on: only the first disk (the guest's /dev/vda)");
	vm_config_free_strings(&cfg);
	assert_int_equal(
	    parse(&cfg, "{\"disk\": {\"path\": \"a.img\", \"root\": \"yes\"}}", err, sizeof(err)),
	    -EINVAL);
	assert_string_equal(err, "--disk: root=yes: use on or off");
	vm_config_free_strings(&cfg);
	assert_int_equal(
	    parse(&cfg, "{\"net\": {\"tap\": \"t\", \"id\": \"a/b\"}}", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "--net: id=a/b: want 1 to 64 letters, digits, '_' or '-'");
	vm_config_free_strings(&cfg);

	/* Without a root disk the line is as given. */
	assert_int_equal(parse(&cfg, "{\"disk\": {\"path\": \"a.img\"}}", err, sizeof(err)), 0);
	line = vm_config_boot_cmdline(&cfg);
	assert_string_equal(line, VM_DEFAULT_CMDLINE);
	free(line);
	vm_config_free_strings(&cfg);
}

/*
 * vm_config_to_json() is what a snapshot's config.json and GET /vm hold: read back through
 * --config's parser, it must give the same machine, every device option included.
 */
static void test_to_json_round_trip(void **state)
{
	const char *args[] = {"yun-vmm",
			      "--kernel",
			      "vmlinuz",
			      "--initrd",
			      "initrd.img",
			      "--cmdline",
			      "console=ttyS0 quiet",
			      "--memory",
			      "256",
			      "--cpus",
			      "3",
			      "--disk",
			      "path=a.img,root=on,engine=threads,direct=on,serial=s0,bw=1M,ops=100",
			      "--disk",
			      "path=b.img,readonly=on",
			      "--rng",
			      "--net",
			      "tap=tap7,mac=52:54:00:aa:bb:cc,queues=2,ops=50,id=eth0",
			      "--vsock",
			      "cid=7,uds=/run/v.sock",
			      "--console-device",
			      "virtio",
			      "--no-reboot"};
	const int argc = sizeof(args) / sizeof(args[0]);
	char *argv[sizeof(args) / sizeof(args[0])], *copies[sizeof(args) / sizeof(args[0])];
	struct vm_config a, b;
	char err[256], *text;
	json_t *o;

	(void)state;
	/* The parser cuts --disk's and --net's arguments in place: give it copies. */
	for (int i = 0; i < argc; i++)
		argv[i] = copies[i] = strdup(args[i]);
	vm_config_defaults(&a);
	assert_int_equal(vm_config_parse_args(&a, argc, argv), 0);
	o = vm_config_to_json(&a);
	assert_non_null(o);
	text = json_dumps(o, 0);
	json_decref(o);
	assert_non_null(text);
	assert_int_equal(parse(&b, text, err, sizeof(err)), 0);
	free(text);
	assert_string_equal(b.kernel, "vmlinuz");
	assert_string_equal(b.initrd, "initrd.img");
	assert_string_equal(vm_config_cmdline(&b), "console=ttyS0 quiet");
	assert_int_equal(b.mem_mib, 256);
	assert_int_equal(b.cpus, 3);
	assert_int_equal(b.nr_disks, 2);
	assert_string_equal(b.disks[0].path, "a.img");
	assert_true(b.root_disk);
	assert_int_equal(b.disks[0].engine, BLK_ENGINE_THREADS);
	assert_true(b.disks[0].direct);
	assert_string_equal(b.disks[0].serial, "s0");
	assert_int_equal(b.disks[0].rate.bw, 1 << 20);
	assert_int_equal(b.disks[0].rate.ops, 100);
	assert_true(b.disks[1].readonly);
	assert_string_equal(b.disks[1].serial, a.disks[1].serial);
	assert_true(b.rng);
	assert_true(b.has_net);
	assert_string_equal(b.net.tap, "tap7");
	assert_memory_equal(b.net.mac, a.net.mac, 6);
	assert_int_equal(b.net.queues, 2);
	assert_int_equal(b.net.rate.ops, 50);
	assert_string_equal(b.net_id, "eth0");
	assert_true(b.has_vsock);
	assert_int_equal(b.vsock.cid, 7);
	assert_string_equal(b.vsock.uds, "/run/v.sock");
	assert_int_equal(b.console_device, CONSOLE_DEVICE_VIRTIO);
	assert_true(b.no_reboot);
	vm_config_free_strings(&b);
	for (int i = 0; i < argc; i++)
		free(copies[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_options_of_each_type),
	    cmocka_unit_test(test_objects_and_arrays),
	    cmocka_unit_test(test_bad_input),
	    cmocka_unit_test(test_layers),
	    cmocka_unit_test(test_root_disk),
	    cmocka_unit_test(test_to_json_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
