// SPDX-License-Identifier: MIT
#include "vmm/jail.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/log.h"

/*
 * Fixed device numbers (Linux Documentation/admin-guide/devices.txt), as Firecracker's jailer
 * makes them: the host needs no /dev/kvm of its own to configure a VM before it starts.
 * /dev/urandom seeds jansson's hash tables (without it, the API's thread would seed them
 * from the time of day).
 */
#define MEM_MAJOR     1
#define URANDOM_MINOR 9
#define MISC_MAJOR    10
#define TUN_MINOR     200
#define KVM_MINOR     232

/* A call on `what` failed: say so, and return -errno as the call left it. */
static int failed(const char *jail, const char *what)
{
	int err = errno;

	log_error("--jail %s: %s: %s", jail, what, strerror(err));
	return -err;
}

/* dirfd's subdirectory name (path, for messages), made root's 0755 if missing; a symlink
 * there is refused, so that nothing is made outside the jail. */
static int open_subdir(const char *jail, int dirfd, const char *name, const char *path)
{
	int fd;

	if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
		return failed(jail, path);
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? failed(jail, path) : fd;
}

/* dirfd's node name: the character device major:minor, made if missing, then owned by
 * uid:gid, 0600. */
static int make_node(const char *jail, int dirfd, const char *name, const char *path,
		     unsigned major, unsigned minor, uid_t uid, gid_t gid)
{
	dev_t want = makedev(major, minor);
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (!S_ISCHR(st.st_mode) || st.st_rdev != want) {
			log_error("--jail %s: %s exists and is not the character device %u:%u",
				  jail, path, major, minor);
			return -EEXIST;
		}
	} else if (errno != ENOENT || mknodat(dirfd, name, S_IFCHR | 0600, want) < 0) {
		return failed(jail, path);
	}
	if (fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
	    fchmodat(dirfd, name, 0600, 0) < 0)
		return failed(jail, path);
	return 0;
}

static int make_nodes(const char *jail, int dirfd, uid_t uid, gid_t gid)
{
	int dev, net = -1, err;

	dev = open_subdir(jail, dirfd, "dev", "dev");
	if (dev < 0)
		return dev;
	err = make_node(jail, dev, "kvm", "dev/kvm", MISC_MAJOR, KVM_MINOR, uid, gid);
	if (!err)
		err = make_node(jail, dev, "urandom", "dev/urandom", MEM_MAJOR, URANDOM_MINOR, uid,
				gid);
	if (!err) {
		net = open_subdir(jail, dev, "net", "dev/net");
		err = net < 0 ? net : 0;
	}
	if (!err)
		err = make_node(jail, net, "tun", "dev/net/tun", MISC_MAJOR, TUN_MINOR, uid, gid);
	if (net >= 0)
		close(net);
	close(dev);
	return err;
}

/*
 * Become uid:gid for good. The switch of all three uids away from 0 empties the permitted
 * and effective sets (capabilities(7), "Effect of user ID changes on capabilities"); the
 * bounding set is emptied before it, while CAP_SETPCAP is still held, so that no exec can
 * bring one back; and the sets are emptied once more after it, in case securebits kept them.
 */
static int drop_privileges(const char *jail, uid_t uid, gid_t gid)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2] = {0};

	if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0)
		return failed(jail, "setting the group");
	for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
		/* EINVAL: a capability this kernel does not have. */
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return failed(jail, "emptying the capability bounding set");
	}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	if (setresuid(uid, uid, uid) < 0)
		return failed(jail, "setting the user");
	if (syscall(SYS_capset, &hdr, data) < 0)
		return failed(jail, "capset");
	return 0;
}

int jail_enter(const char *dir, uid_t uid, gid_t gid)
{
	int fd, err;

	/* Making device nodes, chroot and the switch of user take root's capabilities. */
	if (geteuid() != 0) {
		log_error("--jail %s: yun-vmm must be started as root to enter a jail", dir);
		return -EPERM;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return failed(dir, "open");
	err = make_nodes(dir, fd, uid, gid);
	if (!err && (fchdir(fd) < 0 || chroot(".") < 0 || chdir("/") < 0))
		err = failed(dir, "chroot");
	close(fd);
	if (!err)
		err = drop_privileges(dir, uid, gid);
	/* A jail root the user cannot search (mktemp -d makes 0700) would fail every open. */
	if (!err && access("/", X_OK) < 0) {
		log_error("--jail %s: user %u cannot search it: %s", dir, (unsigned)uid,
			  strerror(errno));
		err = -EACCES;
	}
	if (!err)
		log_debug("jailed in %s as user %u, group %u", dir, (unsigned)uid, (unsigned)gid);
	return err;
}
