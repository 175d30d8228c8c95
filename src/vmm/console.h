/* SPDX-License-Identifier: MIT */
/*
 * The host end of the guest's console: where the guest's output goes (stdout, a file, or
 * nowhere), and, on stdio, the host's input, with the terminal in raw mode while the VM runs.
 * Which device carries it (the COM1 UART or a virtio-console) is the VM's choice: that device
 * writes to console_output_fd() and takes input through the sink given to console_attach().
 * It outlives a guest reset: main() owns it.
 */
#ifndef YUN_VMM_CONSOLE_H
#define YUN_VMM_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

#include "common/event_loop.h"
#include "vmm/config.h"

struct console;

/*
 * A device taking host input: it takes up to len bytes and returns how many it took, 0 when it
 * has no room. What it leaves is offered again shortly; meanwhile the input is not read, so
 * nothing is dropped and nothing piles up.
 */
typedef size_t (*console_sink)(void *ctx, const uint8_t *buf, size_t len);

int console_open(const struct vm_config *cfg, struct console **out);
void console_close(struct console *c);
/* The fd the console device writes the guest's output to; -1 discards it. */
int console_output_fd(const struct console *c);
/*
 * Feed host input to sink(sink_ctx, ...) from the event loop. Ctrl-A x calls quit(quit_ctx);
 * Ctrl-A Ctrl-A sends one Ctrl-A. Does nothing unless the console is stdio.
 */
int console_attach(struct console *c, struct event_loop *loop, console_sink sink, void *sink_ctx,
		   void (*quit)(void *ctx), void *quit_ctx);
void console_detach(struct console *c);

#endif
