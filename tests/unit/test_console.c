// SPDX-License-Identifier: MIT
/*
 * The host end of the console, with stdin a pipe or a pseudo-terminal: input reaches the sink
 * whatever it takes at a time, waits unread (and without spinning) while the sink is full, and
 * Ctrl-A x on a terminal quits.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmm/console.h"

struct sink {
	struct event_loop *loop;
	size_t room; /* bytes taken per call, at most */
	size_t want; /* stop the loop once this many arrived */
	uint8_t got[4096];
	size_t len;
	unsigned calls;
	bool quit;
};

static size_t take(void *ctx, const uint8_t *buf, size_t len)
{
	struct sink *s = ctx;
	size_t n = len < s->room ? len : s->room;

	s->calls++;
	if (n > sizeof(s->got) - s->len)
		n = sizeof(s->got) - s->len;
	memcpy(s->got + s->len, buf, n);
	s->len += n;
	if (s->want && s->len >= s->want)
		event_loop_stop(s->loop);
	return n;
}

static void on_quit(void *ctx)
{
	struct sink *s = ctx;

	s->quit = true;
	event_loop_stop(s->loop);
}

static void on_deadline(void *opaque, uint32_t events)
{
	event_loop_stop(opaque);
}

/* Run the loop until the sink stops it, or for at most ms milliseconds. */
static void run(struct event_loop *loop, unsigned ms)
{
	int t = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	struct itimerspec its = {.it_value = {ms / 1000, (ms % 1000) * 1000000L}};

	assert_true(t >= 0);
	assert_int_equal(timerfd_settime(t, 0, &its, NULL), 0);
	assert_int_equal(event_loop_add(loop, t, EPOLLIN, on_deadline, loop), 0);
	loop->stop = false;
	assert_int_equal(event_loop_run(loop), 0);
	event_loop_del(loop, t);
	close(t);
}

/* A console whose stdin is fd; returns it attached to loop and s. */
static struct console *open_on(int fd, struct event_loop *loop, struct sink *s)
{
	struct vm_config cfg;
	struct console *c;

	vm_config_defaults(&cfg);
	cfg.console = CONSOLE_STDIO;
	if (fd != STDIN_FILENO) {
		assert_int_equal(dup2(fd, STDIN_FILENO), STDIN_FILENO);
		close(fd);
	}
	assert_int_equal(console_open(&cfg, &c), 0);
	assert_int_equal(event_loop_init(loop), 0);
	s->loop = loop;
	assert_int_equal(console_attach(c, loop, take, s, on_quit, s), 0);
	return c;
}

static void close_all(struct console *c, struct event_loop *loop)
{
	int null;

	console_detach(c);
	console_close(c);
	event_loop_destroy(loop);
	/* stdin on /dev/null again, so that the next test's fds are not 0. */
	null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_int_equal(dup2(null, STDIN_FILENO), STDIN_FILENO);
	close(null);
}

static void pattern(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 7 + 2) | 0x80; /* never Ctrl-A */
}

static void test_input_in_small_bites(void **state)
{
	struct event_loop loop;
	struct sink s = {.room = 10, .want = 1000};
	uint8_t in[1000];
	int p[2];

	assert_int_equal(pipe(p), 0);
	pattern(in, sizeof(in));
	assert_int_equal(write(p[1], in, sizeof(in)), sizeof(in));
	struct console *c = open_on(p[0], &loop, &s);

	/* A sink that takes 10 bytes at a time gets all of it, in order (no escapes: no tty). */
	run(&loop, 5000);
	assert_int_equal(s.len, sizeof(in));
	assert_memory_equal(s.got, in, sizeof(in));
	close(p[1]);
	close_all(c, &loop);
}

static void test_full_sink_leaves_input_unread(void **state)
{
	struct event_loop loop;
	struct sink s = {.room = 0};
	uint8_t in[1000];
	int p[2], left = 0;

	assert_int_equal(pipe(p), 0);
	pattern(in, sizeof(in));
	assert_int_equal(write(p[1], in, sizeof(in)), sizeof(in));
	struct console *c = open_on(p[0], &loop, &s);

	/* The sink takes nothing for 100 ms: the console holds what it read and reads no more,
	 * offering it again now and then rather than spinning. */
	run(&loop, 100);
	assert_int_equal(s.len, 0);
	assert_int_equal(ioctl(STDIN_FILENO, FIONREAD, &left), 0);
	assert_true(left >= (int)sizeof(in) - 256);
	assert_true(s.calls >= 2);
	assert_true(s.calls < 200);

	/* Room again: everything arrives, then the end of input detaches the console. */
	s.room = 64;
	s.want = sizeof(in);
	close(p[1]);
	run(&loop, 5000);
	assert_int_equal(s.len, sizeof(in));
	assert_memory_equal(s.got, in, sizeof(in));
	close_all(c, &loop);
}

static void test_escape_on_terminal(void **state)
{
	struct event_loop loop;
	struct sink s = {.room = 64};
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), slave;

	assert_true(m >= 0);
	assert_int_equal(grantpt(m), 0);
	assert_int_equal(unlockpt(m), 0);
	slave = open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC);
	assert_true(slave >= 0);
	struct console *c = open_on(slave, &loop, &s);

	/* Raw mode: Ctrl-A Ctrl-A is one Ctrl-A, the rest passes... */
	s.want = 4;
	assert_int_equal(write(m, "ab\001\001c", 5), 5);
	run(&loop, 5000);
	assert_false(s.quit);
	assert_int_equal(s.len, 4);
	assert_memory_equal(s.got, "ab\001c", 4);
	/* ...and Ctrl-A x quits. */
	s.want = 0;
	assert_int_equal(write(m, "\001x", 2), 2);
	run(&loop, 5000);
	assert_true(s.quit);
	assert_int_equal(s.len, 4);
	close_all(c, &loop);
	close(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_input_in_small_bites),
	    cmocka_unit_test(test_full_sink_leaves_input_unread),
	    cmocka_unit_test(test_escape_on_terminal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
