/* SPDX-License-Identifier: MIT */
/*
 * The host side of the serial console: where the guest's output goes (stdout, a file, or
 * nowhere), and, on stdio, the host's input into the UART, with the terminal in raw mode while
 * the VM runs. It outlives a guest reset: main() owns it.
 */
#ifndef YUN_VMM_CONSOLE_H
#define YUN_VMM_CONSOLE_H

#include "common/event_loop.h"
#include "vmm/config.h"

struct console;
struct serial;

int console_open(const struct vm_config *cfg, struct console **out);
void console_close(struct console *c);
/* The fd the UART writes the guest's output to; -1 discards it. */
int console_output_fd(const struct console *c);
/*
 * Feed host input to the UART from the event loop. Ctrl-A x calls quit(ctx); Ctrl-A Ctrl-A
 * sends one Ctrl-A. Does nothing unless the console is stdio.
 */
int console_attach(struct console *c, struct event_loop *loop, struct serial *s,
		   void (*quit)(void *ctx), void *ctx);
void console_detach(struct console *c);

#endif
