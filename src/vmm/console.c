// SPDX-License-Identifier: MIT
#include "vmm/console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <termios.h>
#include <unistd.h>

#include "common/log.h"

#define CTRL_A 0x01

struct console {
	int out_fd;
	bool owns_out;
	int in_fd; /* -1 when there is no input */
	bool raw;  /* the terminal was put in raw mode */
	struct termios saved;
	bool escape; /* the last byte was Ctrl-A */

	/* Input read from the host that the sink has not taken yet. While there is some, the
	 * input is not read (its bytes wait in the host's buffers) and a timer offers these again. */
	uint8_t pending[256];
	size_t pending_len;
	int retry_fd;		 /* timerfd: offer the pending input again shortly */
	struct event_loop *loop; /* set while attached */
	bool reading;		 /* in_fd is watched by the loop */

	console_sink sink;
	void *sink_ctx;
	void (*quit)(void *ctx);
	void *quit_ctx;
};

int console_open(const struct vm_config *cfg, struct console **out)
{
	struct console *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->out_fd = -1;
	c->in_fd = -1;
	c->retry_fd = -1;
	switch (cfg->console) {
	case CONSOLE_STDIO:
		c->out_fd = STDOUT_FILENO;
		c->in_fd = STDIN_FILENO;
		if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &c->saved) == 0) {
			struct termios raw = c->saved;

			cfmakeraw(&raw);
			if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
				c->raw = true;
		}
		break;
	case CONSOLE_FILE:
		c->out_fd = open(cfg->console_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
		if (c->out_fd < 0) {
			int err = -errno;

			fprintf(stderr, "yun-vmm: console %s: %s\n", cfg->console_path,
				strerror(errno));
			free(c);
			return err;
		}
		c->owns_out = true;
		break;
	case CONSOLE_NONE:
		break;
	}
	*out = c;
	return 0;
}

void console_close(struct console *c)
{
	if (!c)
		return;
	if (c->raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &c->saved);
	if (c->owns_out)
		close(c->out_fd);
	if (c->retry_fd >= 0)
		close(c->retry_fd);
	free(c);
}

int console_output_fd(const struct console *c)
{
	return c->out_fd;
}

static void on_input(void *opaque, uint32_t events);

static void watch_input(struct console *c, bool on)
{
	int err;

	if (on == c->reading)
		return;
	if (!on) {
		event_loop_del(c->loop, c->in_fd);
		c->reading = false;
		return;
	}
	err = event_loop_add(c->loop, c->in_fd, EPOLLIN, on_input, c);
	if (err) {
		log_error("console: input: %s", strerror(-err));
		return;
	}
	c->reading = true;
}

static void arm_retry(struct console *c)
{
	struct itimerspec its = {.it_value = {.tv_nsec = 2 * 1000 * 1000}};

	timerfd_settime(c->retry_fd, 0, &its, NULL);
}

/* Offer the pending input to the sink; read more input only once it has taken all of it. */
static void flush_pending(struct console *c)
{
	if (c->pending_len) {
		size_t n = c->sink(c->sink_ctx, c->pending, c->pending_len);

		memmove(c->pending, c->pending + n, c->pending_len - n);
		c->pending_len -= n;
	}
	if (c->pending_len)
		arm_retry(c);
	watch_input(c, c->pending_len == 0);
}

static void on_input(void *opaque, uint32_t events)
{
	struct console *c = opaque;
	ssize_t n = read(c->in_fd, c->pending, sizeof(c->pending));
	size_t kept = 0;

	if (n <= 0) {
		/* End of input (or an error): stop watching it; the guest runs on. */
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			console_detach(c);
		return;
	}
	/* The escapes come out in place: what is kept never overtakes what is read. */
	for (ssize_t i = 0; i < n; i++) {
		uint8_t b = c->pending[i];

		if (c->escape) {
			c->escape = false;
			if (b == 'x') {
				c->quit(c->quit_ctx);
				return;
			}
			if (b != CTRL_A)
				continue;
		} else if (b == CTRL_A && c->raw) {
			c->escape = true;
			continue;
		}
		c->pending[kept++] = b;
	}
	c->pending_len = kept;
	flush_pending(c);
}

static void on_retry(void *opaque, uint32_t events)
{
	struct console *c = opaque;
	uint64_t expirations;

	if (read(c->retry_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		return;
	flush_pending(c);
}

int console_attach(struct console *c, struct event_loop *loop, console_sink sink, void *sink_ctx,
		   void (*quit)(void *ctx), void *quit_ctx)
{
	int err;

	if (c->in_fd < 0)
		return 0;
	c->sink = sink;
	c->sink_ctx = sink_ctx;
	c->quit = quit;
	c->quit_ctx = quit_ctx;
	c->pending_len = 0;
	c->escape = false;
	if (c->retry_fd < 0) {
		c->retry_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (c->retry_fd < 0)
			return -errno;
	}
	err = event_loop_add(loop, c->in_fd, EPOLLIN, on_input, c);
	if (err == -EPERM) {
		/* stdin is a regular file or /dev/null: epoll cannot watch it; no input then. */
		return 0;
	}
	if (err)
		return err;
	err = event_loop_add(loop, c->retry_fd, EPOLLIN, on_retry, c);
	if (err) {
		event_loop_del(loop, c->in_fd);
		return err;
	}
	c->loop = loop;
	c->reading = true;
	return 0;
}

void console_detach(struct console *c)
{
	if (!c->loop)
		return;
	if (c->reading)
		event_loop_del(c->loop, c->in_fd);
	event_loop_del(c->loop, c->retry_fd);
	c->reading = false;
	c->loop = NULL;
}
