// SPDX-License-Identifier: MIT
#include "vmm/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

static bool enabled = true;

void sandbox_set_enabled(bool on)
{
	enabled = on;
}

bool sandbox_enabled(void)
{
	return enabled;
}

/*
 * Every thread: memory, locks, time, signals it uses, its own end, and I/O on its fds. Time
 * includes gettimeofday: the vDSO makes it a real system call where the host's clock source
 * has no vDSO mode (a KVM host under TCG), and jansson seeds its hash tables with it when it
 * cannot read /dev/urandom.
 */
static const int common_calls[] = {
    SCMP_SYS(read),	     SCMP_SYS(readv),
    SCMP_SYS(write),	     SCMP_SYS(writev),
    SCMP_SYS(close),	     SCMP_SYS(futex),
    SCMP_SYS(mmap),	     SCMP_SYS(munmap),
    SCMP_SYS(mremap),	     SCMP_SYS(mprotect),
    SCMP_SYS(madvise),	     SCMP_SYS(brk),
    SCMP_SYS(rt_sigreturn),  SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(exit),	     SCMP_SYS(exit_group),
    SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep),
    SCMP_SYS(nanosleep),     SCMP_SYS(gettid),
    SCMP_SYS(getpid),	     SCMP_SYS(tgkill),
    SCMP_SYS(sched_yield),   SCMP_SYS(restart_syscall),
    SCMP_SYS(fstat),	     SCMP_SYS(newfstatat),
    SCMP_SYS(lseek),	     SCMP_SYS(getrandom),
    SCMP_SYS(epoll_wait),    SCMP_SYS(epoll_pwait),
    SCMP_SYS(epoll_ctl),     SCMP_SYS(set_robust_list),
    SCMP_SYS(rseq),	     SCMP_SYS(sched_getaffinity),
    SCMP_SYS(gettimeofday),  SCMP_SYS(seccomp), /* more filters only narrow */
};

/*
 * The main thread builds the VM (again after a guest reset) and runs the event loop: files,
 * KVM, the tap, memfd, io_uring, timers, the vsock's Unix sockets, and its threads.
 */
static const int main_calls[] = {
    SCMP_SYS(openat),
    SCMP_SYS(memfd_create),
    SCMP_SYS(ftruncate),
    SCMP_SYS(fallocate),
    SCMP_SYS(fdatasync),
    SCMP_SYS(fsync),
    SCMP_SYS(pread64),
    SCMP_SYS(pwrite64),
    SCMP_SYS(preadv),
    SCMP_SYS(pwritev),
    SCMP_SYS(preadv2),
    SCMP_SYS(pwritev2),
    SCMP_SYS(ioctl),
    SCMP_SYS(fcntl),
    SCMP_SYS(flock),
    SCMP_SYS(socket),
    SCMP_SYS(connect),
    SCMP_SYS(accept4),
    SCMP_SYS(bind),
    SCMP_SYS(listen),
    SCMP_SYS(shutdown),
    SCMP_SYS(sendmsg),
    SCMP_SYS(recvmsg),
    SCMP_SYS(sendto),
    SCMP_SYS(recvfrom),
    SCMP_SYS(getsockopt),
    SCMP_SYS(setsockopt),
    SCMP_SYS(getsockname),
    SCMP_SYS(unlink),
    SCMP_SYS(unlinkat),
    SCMP_SYS(mkdir),
    SCMP_SYS(mkdirat),
    SCMP_SYS(epoll_create1),
    SCMP_SYS(eventfd2),
    SCMP_SYS(timerfd_create),
    SCMP_SYS(timerfd_settime),
    SCMP_SYS(timerfd_gettime),
    SCMP_SYS(signalfd4),
    SCMP_SYS(io_uring_setup),
    SCMP_SYS(io_uring_enter),
    SCMP_SYS(io_uring_register),
    SCMP_SYS(clone),
    SCMP_SYS(clone3),
    SCMP_SYS(statx),
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(dup),
    SCMP_SYS(dup3),
    SCMP_SYS(pipe2),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(prlimit64),
    SCMP_SYS(uname),
    SCMP_SYS(getuid),
    SCMP_SYS(geteuid),
    SCMP_SYS(getgid),
    SCMP_SYS(getegid),
    SCMP_SYS(faccessat),
    SCMP_SYS(faccessat2),
    SCMP_SYS(readlinkat),
    SCMP_SYS(sysinfo),
    SCMP_SYS(rt_sigtimedwait),
    SCMP_SYS(mlock),
    SCMP_SYS(munlock),
};

/*
 * A vCPU: what its exits reach. Device registers may activate or reset a device here, which
 * touches the event loop's registrations, io_uring, timers and the tap's offloads.
 */
static const int vcpu_calls[] = {
    SCMP_SYS(io_uring_enter), SCMP_SYS(timerfd_settime), SCMP_SYS(shutdown),
    SCMP_SYS(fdatasync),      SCMP_SYS(pwritev),	 SCMP_SYS(preadv),
};
static const unsigned long vcpu_ioctls[] = {
    KVM_RUN,
    KVM_GET_REGS,
    KVM_GET_SREGS,
    KVM_SET_GSI_ROUTING,
    KVM_IRQFD,
    KVM_IOEVENTFD,
    KVM_SIGNAL_MSI,
    KVM_IRQ_LINE,
    KVM_IRQ_LINE_STATUS,
    TUNSETOFFLOAD,
    TUNSETQUEUE,
    /* The emulation fallback (vcpu.c): the vCPU's state, and an exception to inject. */
    KVM_SET_REGS,
    KVM_SET_SREGS,
    KVM_GET_XSAVE,
    KVM_SET_XSAVE,
    KVM_GET_XCRS,
    KVM_GET_VCPU_EVENTS,
    KVM_SET_VCPU_EVENTS,
};

/* The API's HTTP thread: its socket, libmicrohttpd's own set-up, and files it checks at start. */
static const int api_calls[] = {
    SCMP_SYS(accept4),	    SCMP_SYS(recvfrom), SCMP_SYS(sendto),	 SCMP_SYS(sendmsg),
    SCMP_SYS(recvmsg),	    SCMP_SYS(shutdown), SCMP_SYS(setsockopt),	 SCMP_SYS(getsockopt),
    SCMP_SYS(getsockname),  SCMP_SYS(fcntl),	SCMP_SYS(epoll_create1), SCMP_SYS(eventfd2),
    SCMP_SYS(pipe2),	    SCMP_SYS(poll),	SCMP_SYS(ppoll),	 SCMP_SYS(clone),
    SCMP_SYS(clone3),	    SCMP_SYS(openat),	SCMP_SYS(statx),	 SCMP_SYS(pread64),
    SCMP_SYS(rt_sigaction),
};
static const unsigned long api_ioctls[] = {KVM_GET_REGS, KVM_GET_SREGS};

static const char *const role_names[] = {
    [SANDBOX_MAIN] = "main",
    [SANDBOX_VCPU] = "vcpu",
    [SANDBOX_API] = "api",
};

/* A forbidden call: say which, then die of SIGSYS (the handler's return delivers it). */
static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
	char msg[128];
	int len = snprintf(msg, sizeof(msg),
			   "yun-vmm: sandbox: thread %ld made a forbidden system call, number %d; "
			   "stopping\n",
			   (long)syscall(SYS_gettid), si->si_syscall);

	if (len > 0 && write(STDERR_FILENO, msg, (size_t)len) < 0)
		msg[0] = '\0';
	/* SA_RESETHAND made the action the default again: this one kills the process. */
	raise(SIGSYS);
}

static void install_sigsys_handler(void)
{
	struct sigaction sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO | SA_RESETHAND};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGSYS, &sa, NULL);
}

static int allow_all(scmp_filter_ctx ctx, const int *calls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int err = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[i], 0);

		/* A call this kernel's headers do not know is not needed here either. */
		if (err && err != -EDOM && err != -EFAULT)
			return err;
	}
	return 0;
}

static int allow_ioctls(scmp_filter_ctx ctx, const unsigned long *cmds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int err = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
					   SCMP_A1(SCMP_CMP_EQ, cmds[i]));

		if (err)
			return err;
	}
	return 0;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

#ifdef YUN_SANDBOX_SELFTEST
/*
 * A test-only build (build/yun-vmm-sandbox-test): YUN_SANDBOX_SELFTEST=ROLE makes that thread
 * try a call its filter refuses, right after installing it; the process must die of SIGSYS.
 */
static void selftest(enum sandbox_role role)
{
	const char *want = getenv("YUN_SANDBOX_SELFTEST");

	if (!want || strcmp(want, role_names[role]))
		return;
	log_info("sandbox self-test: the %s thread tries a forbidden call", role_names[role]);
	if (role == SANDBOX_MAIN)
		syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0);
	else if (role == SANDBOX_VCPU)
		syscall(SYS_openat, AT_FDCWD, "/", O_RDONLY);
	else
		syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
	log_error("sandbox self-test: the forbidden call returned");
}
#endif

int sandbox_enter(enum sandbox_role role)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	scmp_filter_ctx ctx;
	int err;

	if (!enabled)
		return 0;
	pthread_once(&once, install_sigsys_handler);
	/* glibc reads /etc/localtime on the first time conversion (the RTC's gmtime_r() on a
	 * vCPU thread): read it now, while files may still be opened. */
	tzset();
	ctx = seccomp_init(SCMP_ACT_TRAP);
	if (!ctx)
		return -ENOMEM;
	err = allow_all(ctx, common_calls, N(common_calls));
	/* Loading a filter sets no-new-privileges again (a thread under its parent's filter). */
	if (!err)
		err = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				       SCMP_A0(SCMP_CMP_EQ, PR_SET_NO_NEW_PRIVS));
	if (!err && role == SANDBOX_MAIN)
		err = allow_all(ctx, main_calls, N(main_calls));
	if (!err && role == SANDBOX_VCPU)
		err = allow_all(ctx, vcpu_calls, N(vcpu_calls));
	if (!err && role == SANDBOX_VCPU)
		err = allow_ioctls(ctx, vcpu_ioctls, N(vcpu_ioctls));
	if (!err && role == SANDBOX_API)
		err = allow_all(ctx, api_calls, N(api_calls));
	if (!err && role == SANDBOX_API)
		err = allow_ioctls(ctx, api_ioctls, N(api_ioctls));
	/* Threads name themselves ("vcpu 0", libmicrohttpd's), for ps, top and perf. */
	if (!err)
		err = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				       SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
	/* seccomp_load() sets PR_SET_NO_NEW_PRIVS (SCMP_FLTATR_CTL_NNP is on by default). */
	if (!err)
		err = seccomp_load(ctx);
	seccomp_release(ctx);
	if (err) {
		log_error("sandbox: the %s thread's filter: %s", role_names[role], strerror(-err));
		return err;
	}
#ifdef YUN_SANDBOX_SELFTEST
	selftest(role);
#endif
	return 0;
}

int sandbox_drop_capabilities(bool keep_net_admin)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2] = {0};

	if (!enabled)
		return 0;
	/* No capability can come back through exec or file capabilities: empty the bounding
	 * and ambient sets (dropping from the bounding set needs CAP_SETPCAP, held until now). */
	for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
		if (keep_net_admin && cap == CAP_NET_ADMIN)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL && errno != EPERM) {
			log_error("sandbox: dropping capability %d: %s", cap, strerror(errno));
			return -errno;
		}
	}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	if (keep_net_admin) {
		data[0].effective = data[0].permitted = 1u << CAP_NET_ADMIN;
	}
	if (syscall(SYS_capset, &hdr, data) < 0) {
		log_error("sandbox: capset: %s", strerror(errno));
		return -errno;
	}
	return 0;
}
