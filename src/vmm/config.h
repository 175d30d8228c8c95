/* SPDX-License-Identifier: MIT */
/*
 * A VM's configuration, however it was given (command line now; a JSON file and the API
 * later), and the one function that checks it: vm_config_validate().
 */
#ifndef YUN_VMM_CONFIG_H
#define YUN_VMM_CONFIG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct json_t;

#include "devices/virtio/blk.h"
#include "devices/virtio/net.h"
#include "devices/virtio/vsock.h"

#define VM_MAX_DISKS   8
#define VM_MAX_CPUS    255
#define VM_MIN_MEM_MIB 8
#define VM_MAX_MEM_MIB (1024 * 1024) /* 1 TiB */
#define VM_MAX_ID      64	     /* a NIC's name: letters, digits, '_' and '-' */

enum console_mode { CONSOLE_STDIO, CONSOLE_FILE, CONSOLE_NONE };
/* The guest's device the console is connected to: COM1 (ttyS0) or a virtio-console (hvc0). */
enum console_device { CONSOLE_DEVICE_SERIAL, CONSOLE_DEVICE_VIRTIO };

struct vm_config {
	const char *kernel;
	const char *initrd;
	const char *cmdline; /* NULL: the default command line */
	uint64_t mem_mib;
	unsigned cpus;
	struct blk_config disks[VM_MAX_DISKS];
	unsigned nr_disks;
	bool root_disk; /* disk 0 holds the guest's root file system (--disk ...,root=on) */
	bool rng;	/* a virtio-rng device */
	bool has_net;
	struct net_config net;	    /* one virtio-net NIC on a tap */
	char net_id[VM_MAX_ID + 1]; /* the NIC's name for the API (--net ...,id=); "": none */
	bool has_vsock;
	struct vsock_config vsock; /* a virtio-vsock onto host Unix sockets */
	enum console_mode console;
	const char *console_path;
	enum console_device console_device;
	bool no_reboot;
	bool verbose;
	const char *api_socket; /* the control API's Unix socket */
	bool no_sandbox;	/* no seccomp filters (debugging) */
	const char *restore;	/* a snapshot directory to go on from, instead of booting */
	/* --jail DIR --uid U --gid G (jail.h): every path above is then inside DIR. U and G are
	 * never 0, so 0 means not given. */
	const char *jail;
	uid_t uid;
	gid_t gid;
	/* Strings the configuration points into when it came from JSON (config_json.c). */
	struct config_strings *strings;
};

#define VM_DEFAULT_CMDLINE     "console=ttyS0 reboot=k panic=1"
#define VM_DEFAULT_CMDLINE_HVC "console=hvc0 reboot=k panic=1" /* --console-device virtio */

void vm_config_defaults(struct vm_config *cfg);
/*
 * Parse the command line into cfg. Returns 0, 1 when --help or --version was printed (the
 * caller exits 0), or -EINVAL after printing one line that says what is wrong.
 */
int vm_config_parse_args(struct vm_config *cfg, int argc, char **argv);
/* Check everything that can be checked before the VM exists; one clear line on error. */
int vm_config_validate(const struct vm_config *cfg);
/* Parts of vm_config_validate(), for a configuration given a part at a time (the API). */
#define VM_CHECK_BOOT  0x1u /* the kernel (required) and the initrd */
#define VM_CHECK_DISKS 0x2u
#define VM_CHECK_VSOCK 0x4u
#define VM_CHECK_ALL   0x7u
int vm_config_check(const struct vm_config *cfg, unsigned what);
/* The same two, with the message in err instead of on stderr (for the control API). */
int vm_config_parse_args_msg(struct vm_config *cfg, int argc, char **argv, char *err,
			     size_t errlen);
int vm_config_validate_msg(const struct vm_config *cfg, char *err, size_t errlen);
int vm_config_check_msg(const struct vm_config *cfg, unsigned what, char *err, size_t errlen);

/*
 * A message about a configuration: into buf (len bytes) when there is one, else one line on
 * stderr after "yun-vmm: ". Every message of config.c and config_json.c goes through it.
 */
void vm_config_vmessage(char *buf, size_t len, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/*
 * A configuration as JSON (config_json.c): an object whose keys are the long options and
 * whose values are their arguments: a string or number; true for an option without one;
 * an array to repeat one; an object of key=value pairs for --disk and --net. Parsed on top
 * of cfg by vm_config_parse_args(), so the messages and checks are the command line's.
 */
int vm_config_load_file(struct vm_config *cfg, const char *path);
int vm_config_parse_json(struct vm_config *cfg, const char *text, size_t len, char *err,
			 size_t errlen);
/*
 * The VM's part of a configuration (not the process's: console, API socket, sandbox) as a JSON
 * object that --config reads back to the same VM: GET /vm shows it, a snapshot keeps it.
 */
struct json_t *vm_config_to_json(const struct vm_config *cfg);
/* Free the strings a JSON configuration left in cfg (after its last use). */
void vm_config_free_strings(struct vm_config *cfg);
void vm_config_usage(FILE *out);
/* The kernel command line: the one given, or the default for the console device. */
const char *vm_config_cmdline(const struct vm_config *cfg);
/*
 * The command line the guest boots with, allocated (the caller frees it; NULL without memory):
 * vm_config_cmdline(), after "root=/dev/vda rw" (ro for a read-only disk) when disk 0 is the
 * root disk and the line has no root= of its own, as Firecracker does for is_root_device.
 */
char *vm_config_boot_cmdline(const struct vm_config *cfg);
/* Whether a word of the kernel command line starts with key (which ends in '='). */
bool cmdline_has(const char *line, const char *key);

#endif
