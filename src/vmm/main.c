// SPDX-License-Identifier: MIT
/*
 * yun-vmm: one virtual machine per process. Parse and check the configuration (or wait for
 * the control API to give it), then build the VM and run it until it stops; a guest reset
 * builds it afresh (unless --no-reboot). Only this file exits.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "common/log.h"
#include "vmm/api/api.h"
#include "vmm/config.h"
#include "vmm/console.h"
#include "vmm/cpuid.h"
#include "vmm/jail.h"
#include "vmm/sandbox.h"
#include "vmm/vm.h"
#include "vmm/vmm.h"

/* Exit statuses, documented in --help and the README. */
enum {
	STATUS_POWEROFF = 0,
	STATUS_CONFIG = 1,
	STATUS_REBOOT = 2,
	STATUS_CRASH = 3,
	STATUS_ERROR = 4,
};

static int status_of(enum vm_exit why, int signal)
{
	switch (why) {
	case VM_EXIT_POWEROFF:
		return STATUS_POWEROFF;
	case VM_EXIT_RESET:
		return STATUS_REBOOT;
	case VM_EXIT_CRASH:
		return STATUS_CRASH;
	case VM_EXIT_SIGNAL:
		return signal ? 128 + signal : STATUS_POWEROFF;
	default:
		return STATUS_ERROR;
	}
}

static void signal_ignore_sigpipe(void)
{
	struct sigaction sa = {.sa_handler = SIG_IGN};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGPIPE, &sa, NULL);
}

/* Before InstanceStart: wait for it, or for a stop signal (the API's Stop, or one of ours). */
static void wait_for_start(struct vmm *m, const sigset_t *stop_signals)
{
	const struct timespec tick = {0, 100 * 1000 * 1000};

	log_info("waiting for the API to configure and start the VM");
	while (vmm_state(m) == VMM_NOT_STARTED) {
		if (sigtimedwait(stop_signals, NULL, &tick) > 0)
			vmm_stop(m);
	}
}

int main(int argc, char **argv)
{
	struct vm_config cfg;
	struct console *console;
	struct api_server *api = NULL;
	sigset_t stop_signals;
	struct vmm vmm;
	enum vm_exit why;
	int ret;

	/* A console reader that goes away (a closed pipe) must not kill the VM: the write fails
	 * with EPIPE and the output is dropped, as on a UART with nothing attached. */
	signal_ignore_sigpipe();
	vm_config_defaults(&cfg);
	ret = vm_config_parse_args(&cfg, argc, argv);
	if (ret)
		return ret > 0 ? 0 : STATUS_CONFIG;
	if (cfg.verbose)
		log_set_level(LOG_DEBUG);
	/* Whether the host holds guests to their CPUID is read in /sys, outside any jail. */
	cpuid_host_shows_through();
	/* Jailed, every path of the configuration is inside the jail: checked and opened there. */
	if (cfg.jail && jail_enter(cfg.jail, cfg.uid, cfg.gid))
		return STATUS_CONFIG;
	/* With an API socket and no kernel yet, the API configures the VM before it starts. */
	if ((!cfg.api_socket || cfg.kernel) && vm_config_validate(&cfg))
		return STATUS_CONFIG;
	if (console_open(&cfg, &console))
		return STATUS_CONFIG;
	/* Blocked in every thread from here: the VM's signalfd takes them while it runs, and
	 * wait_for_start() while the API has yet to start it. */
	vm_block_stop_signals(&stop_signals);
	sandbox_set_enabled(!cfg.no_sandbox);
	/* A VM configured through the API may get a tap, which needs CAP_NET_ADMIN to make; a
	 * jailed one has no capability left to keep. */
	if (sandbox_drop_capabilities(!cfg.jail && (cfg.has_net || cfg.api_socket))) {
		console_close(console);
		return STATUS_ERROR;
	}
	vmm_init(&vmm, &cfg, console);
	if (cfg.api_socket && api_server_start(cfg.api_socket, &vmm, &api)) {
		ret = STATUS_CONFIG;
		goto out;
	}
	if (cfg.kernel)
		vmm_start(&vmm);
	else
		wait_for_start(&vmm, &stop_signals);
	if (vmm_state(&vmm) == VMM_STOPPED) {
		ret = STATUS_POWEROFF;
		goto out;
	}
	/* From here on this thread builds VMs and serves their devices: see sandbox.h. */
	if (sandbox_enter(SANDBOX_MAIN)) {
		ret = STATUS_ERROR;
		goto out;
	}
	why = vmm_run(&vmm);
	ret = why == VM_EXIT_ERROR && vmm.boots == 0 ? STATUS_CONFIG
						     : status_of(why, vmm.exit_signal);
out:
	api_server_stop(api);
	vmm_destroy(&vmm);
	console_close(console);
	vm_config_free_strings(&cfg);
	return ret;
}
