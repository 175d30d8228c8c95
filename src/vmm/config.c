// SPDX-License-Identifier: MIT
#include "vmm/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/boot/boot.h"

#ifndef YUN_VERSION
#define YUN_VERSION "0.1.0"
#endif

/* Where messages go: stderr, or the caller's buffer of a vm_config_*_msg() call. */
static __thread char *msg_buf;
static __thread size_t msg_len;

void vm_config_vmessage(char *buf, size_t len, const char *fmt, va_list ap)
{
	if (buf) {
		vsnprintf(buf, len, fmt, ap);
	} else {
		fputs("yun-vmm: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
}

__attribute__((format(printf, 1, 2))) static void config_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vm_config_vmessage(msg_buf, msg_len, fmt, ap);
	va_end(ap);
}

void vm_config_defaults(struct vm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mem_mib = 128;
	cfg->cpus = 1;
	cfg->console = CONSOLE_STDIO;
}

void vm_config_usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: yun-vmm --kernel PATH [options]\n"
	    "       yun-vmm --api-socket PATH [options]\n"
	    "\n"
	    "Runs one virtual machine on /dev/kvm until the guest powers off.\n"
	    "\n"
	    "  --kernel PATH          bzImage (64-bit boot protocol) or ELF with a PVH note\n"
	    "  --initrd PATH          initial ramdisk\n"
	    "  --cmdline STR          kernel command line (default: \"%s\";\n"
	    "                         console=hvc0 with --console-device virtio)\n"
	    "  --memory MiB           guest RAM, a multiple of 2 (default 128)\n"
	    "  --cpus N               vCPUs, 1..%d and no more than KVM allows (default 1)\n"
	    "  --disk path=FILE[,readonly=on][,serial=ID][,engine=io_uring|threads|sync]\n"
	    "         [,direct=on][,bw=BYTES][,ops=N][,root=on]\n"
	    "                         a virtio-blk disk on a raw image whose size is a\n"
	    "                         multiple of 512 bytes, locked while in use; repeat\n"
	    "                         for more (at most %d). engine=io_uring: many requests\n"
	    "                         in flight (the default where the kernel has it);\n"
	    "                         engine=threads: many, on a pool of 4 threads (the\n"
	    "                         default without io_uring); engine=sync: one at a\n"
	    "                         time. direct=on: O_DIRECT, bypassing the host's page\n"
	    "                         cache (not on tmpfs). bw=: bytes a second\n"
	    "                         (K, M, G: multiples of 1024), ops=: requests a\n"
	    "                         second; over the limit requests wait (default: none).\n"
	    "                         root=on (first disk only): the guest's root file\n"
	    "                         system, root=/dev/vda rw (ro) added to the command\n"
	    "                         line unless it has a root= already\n"
	    "  --rng                  a virtio-rng device fed by the host's getrandom(2)\n"
	    "  --net tap=NAME[,mac=52:54:00:12:34:56][,queues=N][,bw=BYTES][,ops=N][,id=NAME]\n"
	    "                         a virtio-net NIC on a tap device (created if it does\n"
	    "                         not exist: needs CAP_NET_ADMIN); queues=: queue pairs,\n"
	    "                         1..%d (default 1), above 1 on a multi-queue tap, the\n"
	    "                         guest choosing how many it uses; bw= and ops= limit\n"
	    "                         bytes and packets a second, each way, for the whole\n"
	    "                         NIC (as for --disk); id=: its name for the API\n"
	    "  --vsock cid=N,uds=PATH\n"
	    "                         a virtio-vsock device, guest CID N (3 to 4294967294),\n"
	    "                         served onto host Unix sockets: a host program\n"
	    "                         connects to PATH and sends \"CONNECT <port>\\n\"\n"
	    "                         (answer: \"OK <hostport>\\n\"); the guest's connections\n"
	    "                         to CID 2 port P reach the socket PATH_P\n"
	    "  --console stdio|file=PATH|none\n"
	    "                         where the guest's console goes (default stdio;\n"
	    "                         on a terminal: raw mode, Ctrl-A x quits)\n"
	    "  --console-device serial|virtio\n"
	    "                         the guest's console device: COM1 (ttyS0, the default)\n"
	    "                         or a virtio-console (hvc0; COM1 stays, its output is\n"
	    "                         discarded)\n"
	    "  --no-reboot            exit instead of resetting when the guest reboots\n"
	    "  --no-sandbox           run without the seccomp filters (for debugging)\n"
	    "  --jail DIR --uid U --gid G\n"
	    "                         (as root) chroot into DIR and run as user U, group G\n"
	    "                         (numbers, not 0) with no capability; every other path\n"
	    "                         (kernel, disks, sockets, console file; not --config)\n"
	    "                         is then inside DIR, which must hold them and which U\n"
	    "                         must be able to search. yun-vmm makes DIR/dev/kvm,\n"
	    "                         DIR/dev/urandom and DIR/dev/net/tun, owned by U:G,\n"
	    "                         mode 0600 (DIR must allow device nodes); a --net tap\n"
	    "                         must exist and be U's (ip tuntap add NAME mode tap\n"
	    "                         user U)\n"
	    "  --config FILE          options from a JSON file, e.g. {\"kernel\": \"vmlinuz\",\n"
	    "                         \"memory\": 256, \"disk\": [{\"path\": \"a.img\"}]};\n"
	    "                         options on the command line add to them\n"
	    "  --restore DIR          go on from the snapshot in DIR (PUT /snapshot/create\n"
	    "                         wrote it) instead of booting: the same machine,\n"
	    "                         DIR/config.json, its memory mapped copy-on-write\n"
	    "  --api-socket PATH      serve the control API (HTTP/JSON) on this Unix socket;\n"
	    "                         without --kernel, wait for it to configure and start\n"
	    "                         the VM (docs/api.md)\n"
	    "  -v, --verbose          log more\n"
	    "  -h, --help             this text\n"
	    "  --version              the version\n"
	    "\n"
	    "Exit status: 0 guest powered off; 1 bad configuration or set-up failure;\n"
	    "2 guest rebooted with --no-reboot; 3 guest crashed (triple fault, or an\n"
	    "instruction KVM could not run); 4 VMM or KVM error while running;\n"
	    "128+N stopped by signal N.\n",
	    VM_DEFAULT_CMDLINE, VM_MAX_CPUS, VM_MAX_DISKS, VIRTIO_NET_MAX_QUEUE_PAIRS);
}

const char *vm_config_cmdline(const struct vm_config *cfg)
{
	if (cfg->cmdline)
		return cfg->cmdline;
	return cfg->console_device == CONSOLE_DEVICE_VIRTIO ? VM_DEFAULT_CMDLINE_HVC
							    : VM_DEFAULT_CMDLINE;
}

/* A whole decimal number in [min, max], or -EINVAL. */
static int parse_uint(const char *s, unsigned long long min, unsigned long long max,
		      unsigned long long *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

#define RATE_MAX (1ULL << 40)

/*
 * A rate limit key of --disk or --net: bw=BYTES[K|M|G] (multiples of 1024) or ops=N, a
 * second, up to 2^40; 0 is no limit. Returns 1 when key is neither, 0, or -EINVAL.
 */
static int parse_rate_key(const char *opt, const char *key, const char *val,
			  struct rate_limit_config *rate)
{
	static const char suffixes[] = "KMG";
	bool bw = !strcmp(key, "bw");
	unsigned long long v, mult = 1;
	char num[32];
	size_t len = strlen(val);
	int last = len ? toupper((unsigned char)val[len - 1]) : 0;
	const char *sfx = last ? strchr(suffixes, last) : NULL;

	if (!bw && strcmp(key, "ops"))
		return 1;
	snprintf(num, sizeof(num), "%s", val);
	if (bw && sfx && len < sizeof(num)) {
		mult = 1ULL << (10 * (sfx - suffixes + 1));
		num[len - 1] = '\0';
	}
	if (len >= sizeof(num) || parse_uint(num, 0, RATE_MAX / mult, &v)) {
		if (bw)
			config_error("%s: bw=%s: want bytes a second from 0 (no limit) to "
				     "1024G; K, M, G are multiples of 1024",
				     opt, val);
		else
			config_error("%s: ops=%s: want a count a second from 0 (no limit) to "
				     "%llu",
				     opt, val, RATE_MAX);
		return -EINVAL;
	}
	if (bw)
		rate->bw = v * mult;
	else
		rate->ops = v;
	return 0;
}

/* --disk path=FILE[,readonly=on|off][,serial=ID][,engine=io_uring|threads|sync][,direct=on|off]
 *        [,bw=N][,ops=N] */
static int parse_disk(struct vm_config *cfg, char *arg)
{
	struct blk_config *d;
	char *save = NULL;
	int err;

	if (cfg->nr_disks == VM_MAX_DISKS) {
		config_error("--disk: at most %d disks", VM_MAX_DISKS);
		return -EINVAL;
	}
	d = &cfg->disks[cfg->nr_disks];
	memset(d, 0, sizeof(*d));
	if (!cfg->nr_disks)
		cfg->root_disk = false;
	for (char *kv = strtok_r(arg, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *val = strchr(kv, '=');

		if (!val) {
			config_error("--disk: '%s' is not key=value", kv);
			return -EINVAL;
		}
		*val++ = '\0';
		if (!strcmp(kv, "path")) {
			d->path = val;
		} else if (!strcmp(kv, "readonly")) {
			if (!strcmp(val, "on"))
				d->readonly = true;
			else if (!strcmp(val, "off"))
				d->readonly = false;
			else {
				config_error("--disk: readonly=%s: use on or off", val);
				return -EINVAL;
			}
		} else if (!strcmp(kv, "serial")) {
			if (strlen(val) > 20) {
				config_error("--disk: serial '%s' is over 20 bytes", val);
				return -EINVAL;
			}
			snprintf(d->serial, sizeof(d->serial), "%s", val);
		} else if (!strcmp(kv, "engine")) {
			if (!strcmp(val, "io_uring"))
				d->engine = BLK_ENGINE_IO_URING;
			else if (!strcmp(val, "threads"))
				d->engine = BLK_ENGINE_THREADS;
			else if (!strcmp(val, "sync"))
				d->engine = BLK_ENGINE_SYNC;
			else {
				config_error("--disk: engine=%s: use io_uring, threads or sync",
					     val);
				return -EINVAL;
			}
		} else if (!strcmp(kv, "direct")) {
			if (strcmp(val, "on") && strcmp(val, "off")) {
				config_error("--disk: direct=%s: use on or off", val);
				return -EINVAL;
			}
			d->direct = !strcmp(val, "on");
		} else if (!strcmp(kv, "root")) {
			if (strcmp(val, "on") && strcmp(val, "off")) {
				config_error("--disk: root=%s: use on or off", val);
				return -EINVAL;
			}
			if (!strcmp(val, "on") && cfg->nr_disks) {
				config_error("--disk: root=on: only the first disk (the guest's "
					     "/dev/vda)");
				return -EINVAL;
			}
			if (!cfg->nr_disks)
				cfg->root_disk = !strcmp(val, "on");
		} else if ((err = parse_rate_key("--disk", kv, val, &d->rate)) <= 0) {
			if (err)
				return err;
		} else {
			config_error("--disk: unknown key '%s'", kv);
			return -EINVAL;
		}
	}
	if (!d->path || !*d->path) {
		config_error("--disk: path=FILE is required");
		return -EINVAL;
	}
	if (!d->serial[0])
		snprintf(d->serial, sizeof(d->serial), "yun-disk%u", cfg->nr_disks);
	cfg->nr_disks++;
	return 0;
}

/* A name the API knows a device by: 1 to max letters, digits, '_' or '-'. */
static bool valid_id(const char *s, size_t max)
{
	size_t len = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");

	return len && len <= max && !s[len];
}

/* --net tap=NAME[,mac=52:54:00:12:34:56][,queues=N][,bw=N][,ops=N][,id=NAME] */
static int parse_net(struct vm_config *cfg, char *arg)
{
	struct net_config *n = &cfg->net;
	char *save = NULL;
	int err;

	if (cfg->has_net) {
		config_error("--net: one NIC for now");
		return -EINVAL;
	}
	memset(n, 0, sizeof(*n));
	cfg->net_id[0] = '\0';
	memcpy(n->mac, (const uint8_t[]){0x52, 0x54, 0x00, 0x12, 0x34, 0x56}, 6);
	for (char *kv = strtok_r(arg, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *val = strchr(kv, '=');
		unsigned m[6];
		char end;

		if (!val) {
			config_error("--net: '%s' is not key=value", kv);
			return -EINVAL;
		}
		*val++ = '\0';
		if (!strcmp(kv, "tap")) {
			if (!*val || strlen(val) >= sizeof(n->tap) || strchr(val, '/')) {
				config_error("--net: tap name '%s': 1 to %zu characters", val,
					     sizeof(n->tap) - 1);
				return -EINVAL;
			}
			snprintf(n->tap, sizeof(n->tap), "%s", val);
		} else if (!strcmp(kv, "mac")) {
			if (sscanf(val, "%2x:%2x:%2x:%2x:%2x:%2x%c", &m[0], &m[1], &m[2], &m[3],
				   &m[4], &m[5], &end) != 6 ||
			    strlen(val) != 17 || (m[0] & 1)) {
				config_error("--net: mac=%s: want a unicast address like "
					     "52:54:00:12:34:56",
					     val);
				return -EINVAL;
			}
			for (int i = 0; i < 6; i++)
				n->mac[i] = (uint8_t)m[i];
		} else if (!strcmp(kv, "queues")) {
			unsigned long long q;

			if (parse_uint(val, 1, VIRTIO_NET_MAX_QUEUE_PAIRS, &q)) {
				config_error("--net: queues=%s: want queue pairs from 1 to %d", val,
					     VIRTIO_NET_MAX_QUEUE_PAIRS);
				return -EINVAL;
			}
			n->queues = (unsigned)q;
		} else if (!strcmp(kv, "id")) {
			if (!valid_id(val, VM_MAX_ID)) {
				config_error(
				    "--net: id=%s: want 1 to %d letters, digits, '_' or '-'", val,
				    VM_MAX_ID);
				return -EINVAL;
			}
			snprintf(cfg->net_id, sizeof(cfg->net_id), "%s", val);
		} else if ((err = parse_rate_key("--net", kv, val, &n->rate)) <= 0) {
			if (err)
				return err;
		} else {
			config_error("--net: unknown key '%s'", kv);
			return -EINVAL;
		}
	}
	if (!n->tap[0]) {
		config_error("--net: tap=NAME is required");
		return -EINVAL;
	}
	cfg->has_net = true;
	return 0;
}

/* --vsock cid=N,uds=PATH; the values are checked by vm_config_validate(). */
static int parse_vsock(struct vm_config *cfg, char *arg)
{
	struct vsock_config *v = &cfg->vsock;
	bool has_cid = false;
	char *save = NULL;

	if (cfg->has_vsock) {
		config_error("--vsock: one device at most");
		return -EINVAL;
	}
	memset(v, 0, sizeof(*v));
	for (char *kv = strtok_r(arg, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *val = strchr(kv, '=');
		unsigned long long cid;

		if (!val) {
			config_error("--vsock: '%s' is not key=value", kv);
			return -EINVAL;
		}
		*val++ = '\0';
		if (!strcmp(kv, "cid")) {
			if (parse_uint(val, 0, UINT64_MAX, &cid)) {
				config_error("--vsock: cid=%s: want a number from %d to %llu", val,
					     VSOCK_MIN_GUEST_CID, VSOCK_MAX_GUEST_CID);
				return -EINVAL;
			}
			v->cid = cid;
			has_cid = true;
		} else if (!strcmp(kv, "uds")) {
			v->uds = val;
		} else {
			config_error("--vsock: unknown key '%s'", kv);
			return -EINVAL;
		}
	}
	if (!has_cid || !v->uds) {
		config_error("--vsock: cid=N and uds=PATH are required");
		return -EINVAL;
	}
	cfg->has_vsock = true;
	return 0;
}

static int parse_console(struct vm_config *cfg, const char *arg)
{
	if (!strcmp(arg, "stdio")) {
		cfg->console = CONSOLE_STDIO;
	} else if (!strcmp(arg, "none")) {
		cfg->console = CONSOLE_NONE;
	} else if (!strncmp(arg, "file=", 5) && arg[5]) {
		cfg->console = CONSOLE_FILE;
		cfg->console_path = arg + 5;
	} else {
		config_error("--console %s: use stdio, file=PATH or none", arg);
		return -EINVAL;
	}
	return 0;
}

static int parse_console_device(struct vm_config *cfg, const char *arg)
{
	if (!strcmp(arg, "serial")) {
		cfg->console_device = CONSOLE_DEVICE_SERIAL;
	} else if (!strcmp(arg, "virtio")) {
		cfg->console_device = CONSOLE_DEVICE_VIRTIO;
	} else {
		config_error("--console-device %s: use serial or virtio", arg);
		return -EINVAL;
	}
	return 0;
}

enum {
	OPT_KERNEL = 256,
	OPT_INITRD,
	OPT_CMDLINE,
	OPT_MEMORY,
	OPT_CPUS,
	OPT_DISK,
	OPT_CONSOLE,
	OPT_CONSOLE_DEVICE,
	OPT_NO_REBOOT,
	OPT_RNG,
	OPT_NET,
	OPT_API_SOCKET,
	OPT_CONFIG,
	OPT_RESTORE,
	OPT_VSOCK,
	OPT_NO_SANDBOX,
	OPT_JAIL,
	OPT_UID,
	OPT_GID,
	OPT_VERSION
};

/* Nesting: a --config file's options are parsed by the same function, one level down. */
static __thread int parse_depth;

/*
 * --jail DIR, --uid U, --gid G: the command line's only, as the process is jailed before a
 * configuration from the API could name them. Root (0) would make the jail pointless.
 */
static int parse_jail_option(struct vm_config *cfg, int opt, const char *arg)
{
	const char *name = opt == OPT_JAIL ? "jail" : opt == OPT_UID ? "uid" : "gid";
	unsigned long long id;

	if (parse_depth > 0) {
		config_error("%s: give it on the command line", name);
		return -EINVAL;
	}
	if (opt == OPT_JAIL) {
		if (!*arg) {
			config_error("--jail: want a directory");
			return -EINVAL;
		}
		cfg->jail = arg;
		return 0;
	}
	/* (uid_t)-1 means "unchanged" to setresuid(2). */
	if (parse_uint(arg, 0, UINT32_MAX - 1, &id)) {
		config_error("--%s %s: want a number from 1 to %u", name, arg, UINT32_MAX - 1);
		return -EINVAL;
	}
	if (id == 0) {
		config_error("--%s 0: the jail runs unprivileged; give an id other than root's",
			     name);
		return -EINVAL;
	}
	if (opt == OPT_UID)
		cfg->uid = (uid_t)id;
	else
		cfg->gid = (gid_t)id;
	return 0;
}

/*
 * --config FILE (or --config=FILE) anywhere in argv, applied before the other options; or
 * --restore DIR, whose configuration is DIR/config.json.
 */
static int apply_config_file(struct vm_config *cfg, int argc, char **argv)
{
	const char *path = NULL, *restore = NULL;
	char buf[4096];

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(arg, "--"))
			break;
		if (!strncmp(arg, "--config=", 9))
			path = arg + 9;
		else if (!strcmp(arg, "--config") && val)
			path = val;
		else if (!strncmp(arg, "--restore=", 10))
			restore = arg + 10;
		else if (!strcmp(arg, "--restore") && val)
			restore = val;
	}
	if (path && restore) {
		config_error("--restore DIR takes its configuration from DIR/config.json: no "
			     "--config with it");
		return -EINVAL;
	}
	if (restore) {
		snprintf(buf, sizeof(buf), "%s/config.json", restore);
		cfg->restore = restore;
		path = buf;
	}
	return path ? vm_config_load_file(cfg, path) : 0;
}

int vm_config_parse_args(struct vm_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"kernel", required_argument, NULL, OPT_KERNEL},
	    {"initrd", required_argument, NULL, OPT_INITRD},
	    {"cmdline", required_argument, NULL, OPT_CMDLINE},
	    {"memory", required_argument, NULL, OPT_MEMORY},
	    {"cpus", required_argument, NULL, OPT_CPUS},
	    {"disk", required_argument, NULL, OPT_DISK},
	    {"console", required_argument, NULL, OPT_CONSOLE},
	    {"console-device", required_argument, NULL, OPT_CONSOLE_DEVICE},
	    {"no-reboot", no_argument, NULL, OPT_NO_REBOOT},
	    {"rng", no_argument, NULL, OPT_RNG},
	    {"net", required_argument, NULL, OPT_NET},
	    {"api-socket", required_argument, NULL, OPT_API_SOCKET},
	    {"config", required_argument, NULL, OPT_CONFIG},
	    {"restore", required_argument, NULL, OPT_RESTORE},
	    {"vsock", required_argument, NULL, OPT_VSOCK},
	    {"no-sandbox", no_argument, NULL, OPT_NO_SANDBOX},
	    {"jail", required_argument, NULL, OPT_JAIL},
	    {"uid", required_argument, NULL, OPT_UID},
	    {"gid", required_argument, NULL, OPT_GID},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, OPT_VERSION},
	    {NULL, 0, NULL, 0},
	};
	unsigned long long v;
	int c;

	if (parse_depth == 0 && apply_config_file(cfg, argc, argv))
		return -EINVAL;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
		switch (c) {
		case OPT_KERNEL:
			cfg->kernel = optarg;
			break;
		case OPT_INITRD:
			cfg->initrd = optarg;
			break;
		case OPT_CMDLINE:
			cfg->cmdline = optarg;
			break;
		case OPT_MEMORY:
			if (parse_uint(optarg, VM_MIN_MEM_MIB, VM_MAX_MEM_MIB, &v) || v % 2) {
				config_error("--memory %s: want an even number of MiB from %d "
					     "to %d",
					     optarg, VM_MIN_MEM_MIB, VM_MAX_MEM_MIB);
				return -EINVAL;
			}
			cfg->mem_mib = v;
			break;
		case OPT_CPUS:
			if (parse_uint(optarg, 1, VM_MAX_CPUS, &v)) {
				config_error("--cpus %s: want a number from 1 to %d", optarg,
					     VM_MAX_CPUS);
				return -EINVAL;
			}
			cfg->cpus = (unsigned)v;
			break;
		case OPT_DISK:
			if (parse_disk(cfg, optarg))
				return -EINVAL;
			break;
		case OPT_CONSOLE:
			if (parse_console(cfg, optarg))
				return -EINVAL;
			break;
		case OPT_CONSOLE_DEVICE:
			if (parse_console_device(cfg, optarg))
				return -EINVAL;
			break;
		case OPT_NO_REBOOT:
			cfg->no_reboot = true;
			break;
		case OPT_RNG:
			cfg->rng = true;
			break;
		case OPT_NET:
			if (parse_net(cfg, optarg))
				return -EINVAL;
			break;
		case OPT_VSOCK:
			if (parse_vsock(cfg, optarg))
				return -EINVAL;
			break;
		case 'v':
			cfg->verbose = true;
			break;
		case 'h':
			vm_config_usage(stdout);
			return 1;
		case OPT_API_SOCKET:
			if (parse_depth > 0) {
				config_error("api-socket: give it on the command line");
				return -EINVAL;
			}
			if (!*optarg ||
			    strlen(optarg) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
				config_error("--api-socket %s: want a path of 1 to %zu bytes",
					     optarg,
					     sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
				return -EINVAL;
			}
			cfg->api_socket = optarg;
			break;
		case OPT_NO_SANDBOX:
			cfg->no_sandbox = true;
			break;
		case OPT_JAIL:
		case OPT_UID:
		case OPT_GID:
			if (parse_jail_option(cfg, c, optarg))
				return -EINVAL;
			break;
		case OPT_CONFIG:
		case OPT_RESTORE:
			/* Applied before the other options (apply_config_file()); not nested. */
			if (parse_depth > 0) {
				config_error("config: a configuration cannot include another");
				return -EINVAL;
			}
			break;
		case OPT_VERSION:
			printf("yun-vmm %s\n", YUN_VERSION);
			return 1;
		case ':':
			config_error("%s needs a value", argv[optind - 1]);
			return -EINVAL;
		default:
			config_error("unknown option '%s' (see --help)", argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		config_error("unexpected argument '%s' (see --help)", argv[optind]);
		return -EINVAL;
	}
	if (parse_depth == 0 && cfg->jail && (!cfg->uid || !cfg->gid)) {
		config_error("--jail needs --uid and --gid (the user and group it runs as)");
		return -EINVAL;
	}
	if (parse_depth == 0 && !cfg->jail && (cfg->uid || cfg->gid)) {
		config_error("--%s: only with --jail DIR", cfg->uid ? "uid" : "gid");
		return -EINVAL;
	}
	return 0;
}

bool cmdline_has(const char *line, const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = line; (p = strstr(p, key)); p += klen) {
		if (p == line || p[-1] == ' ')
			return true;
	}
	return false;
}

char *vm_config_boot_cmdline(const struct vm_config *cfg)
{
	const char *line = vm_config_cmdline(cfg);
	char *s = NULL;

	if (!cfg->root_disk || !cfg->nr_disks || cmdline_has(line, "root="))
		return strdup(line);
	if (asprintf(&s, "root=/dev/vda %s %s", cfg->disks[0].readonly ? "ro" : "rw", line) < 0)
		return NULL;
	return s;
}

/* A readable regular file; `what` names it in the message. */
static int check_file(const char *what, const char *path, bool writable)
{
	struct stat st;
	int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);

	if (fd < 0) {
		config_error("%s %s: %s", what, path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		config_error("%s %s: not a regular file", what, path);
		close(fd);
		return -EINVAL;
	}
	close(fd);
	return 0;
}

int vm_config_parse_args_msg(struct vm_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
	int ret;

	msg_buf = err;
	msg_len = errlen;
	parse_depth++;
	ret = vm_config_parse_args(cfg, argc, argv);
	parse_depth--;
	msg_buf = NULL;
	return ret;
}

int vm_config_validate_msg(const struct vm_config *cfg, char *err, size_t errlen)
{
	return vm_config_check_msg(cfg, VM_CHECK_ALL, err, errlen);
}

int vm_config_check_msg(const struct vm_config *cfg, unsigned what, char *err, size_t errlen)
{
	int ret;

	msg_buf = err;
	msg_len = errlen;
	ret = vm_config_check(cfg, what);
	msg_buf = NULL;
	return ret;
}

/* direct=on: a file system that refuses O_DIRECT (tmpfs before Linux 6.6) says so at open. */
static int check_direct(const char *path, bool readonly)
{
	int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC);

	if (fd < 0) {
		config_error("disk %s: direct=on: %s", path,
			     errno == EINVAL ? "its file system refuses O_DIRECT"
					     : strerror(errno));
		return -EINVAL;
	}
	close(fd);
	return 0;
}

static int check_boot(const struct vm_config *cfg)
{
	if (!cfg->kernel) {
		config_error("--kernel PATH is required (see --help)");
		return -EINVAL;
	}
	if (check_file("kernel", cfg->kernel, false))
		return -EINVAL;
	if (boot_check_kernel_file(cfg->kernel) == -ENOEXEC) {
		config_error("kernel %s: neither a bzImage nor an ELF file", cfg->kernel);
		return -EINVAL;
	}
	if (cfg->initrd && check_file("initrd", cfg->initrd, false))
		return -EINVAL;
	return 0;
}

static int check_machine(const struct vm_config *cfg)
{
	if (cfg->cpus < 1 || cfg->cpus > VM_MAX_CPUS) {
		config_error("%u vCPUs: want 1 to %d", cfg->cpus, VM_MAX_CPUS);
		return -EINVAL;
	}
	if (cfg->mem_mib < VM_MIN_MEM_MIB || cfg->mem_mib > VM_MAX_MEM_MIB || cfg->mem_mib % 2) {
		config_error("%llu MiB of memory: want an even number from %d to %d",
			     (unsigned long long)cfg->mem_mib, VM_MIN_MEM_MIB, VM_MAX_MEM_MIB);
		return -EINVAL;
	}
	if (cfg->console == CONSOLE_FILE && !cfg->console_path) {
		config_error("--console file= needs a path");
		return -EINVAL;
	}
	return 0;
}

static int check_disks(const struct vm_config *cfg)
{
	for (unsigned i = 0; i < cfg->nr_disks; i++) {
		const struct blk_config *d = &cfg->disks[i];
		struct stat st;

		if (check_file("disk", d->path, !d->readonly))
			return -EINVAL;
		if (stat(d->path, &st) == 0 && st.st_size % 512) {
			config_error("disk %s: size %lld is not a multiple of 512", d->path,
				     (long long)st.st_size);
			return -EINVAL;
		}
		if (d->direct && check_direct(d->path, d->readonly))
			return -EINVAL;
		for (unsigned j = 0; j < i; j++) {
			struct stat other;

			if (stat(cfg->disks[j].path, &other) == 0 && other.st_dev == st.st_dev &&
			    other.st_ino == st.st_ino) {
				config_error("disk %s is given twice", d->path);
				return -EINVAL;
			}
		}
	}
	return 0;
}

static int check_vsock(const struct vm_config *cfg)
{
	if (cfg->has_vsock &&
	    (cfg->vsock.cid < VSOCK_MIN_GUEST_CID || cfg->vsock.cid > VSOCK_MAX_GUEST_CID)) {
		config_error("vsock cid %llu: want %d to %llu (0-2 are reserved)",
			     (unsigned long long)cfg->vsock.cid, VSOCK_MIN_GUEST_CID,
			     VSOCK_MAX_GUEST_CID);
		return -EINVAL;
	}
	if (cfg->has_vsock && (!cfg->vsock.uds || !*cfg->vsock.uds ||
			       strlen(cfg->vsock.uds) > VIRTIO_VSOCK_PATH_MAX)) {
		config_error("vsock uds '%s': want a path of 1 to %d bytes (PATH_<port> must "
			     "fit a socket address)",
			     cfg->vsock.uds ? cfg->vsock.uds : "", VIRTIO_VSOCK_PATH_MAX);
		return -EINVAL;
	}
	if (cfg->has_vsock) {
		struct stat st;

		/* A socket there is a stale one, replaced; anything else is not ours to remove. */
		if (lstat(cfg->vsock.uds, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			config_error("vsock uds %s exists and is not a socket", cfg->vsock.uds);
			return -EINVAL;
		}
	}
	return 0;
}

int vm_config_check(const struct vm_config *cfg, unsigned what)
{
	if ((what & VM_CHECK_BOOT) && check_boot(cfg))
		return -EINVAL;
	if (what == VM_CHECK_ALL && check_machine(cfg))
		return -EINVAL;
	if ((what & VM_CHECK_DISKS) && check_disks(cfg))
		return -EINVAL;
	if ((what & VM_CHECK_VSOCK) && check_vsock(cfg))
		return -EINVAL;
	return 0;
}

int vm_config_validate(const struct vm_config *cfg)
{
	return vm_config_check(cfg, VM_CHECK_ALL);
}
