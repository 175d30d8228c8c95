// SPDX-License-Identifier: MIT
/*
 * yun-vmm: one virtual machine per process. Parse and check the configuration, then build the
 * VM and run it until it stops; a guest reset builds it afresh (unless --no-reboot). Only this
 * file exits.
 */
#include <signal.h>
#include <stdlib.h>

#include "common/log.h"
#include "vmm/config.h"
#include "vmm/console.h"
#include "vmm/vm.h"

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

int main(int argc, char **argv)
{
	struct vm_config cfg;
	struct console *console;
	enum vm_exit why;
	int signal = 0;
	int ret;

	/* A console reader that goes away (a closed pipe) must not kill the VM: the write fails
	 * with EPIPE and the output is dropped, as on a UART with nothing attached. */
	signal_ignore_sigpipe();
	vm_config_defaults(&cfg);
	ret = vm_config_parse_args(&cfg, argc, argv);
	if (ret)
		return ret > 0 ? 0 : STATUS_CONFIG;
	if (vm_config_validate(&cfg))
		return STATUS_CONFIG;
	if (cfg.verbose)
		log_set_level(LOG_DEBUG);
	if (console_open(&cfg, &console))
		return STATUS_CONFIG;

	for (;;) {
		struct vm *vm;

		if (vm_create(&cfg, console, &vm)) {
			console_close(console);
			return STATUS_CONFIG;
		}
		why = vm_run(vm);
		signal = vm->signal;
		vm_destroy(vm);
		if (why != VM_EXIT_RESET || cfg.no_reboot)
			break;
		log_info("guest reset: starting it again");
	}
	console_close(console);
	return status_of(why, signal);
}
