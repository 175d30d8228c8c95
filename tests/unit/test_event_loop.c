// SPDX-License-Identifier: MIT
/*
 * The event loop's calls from other threads (event_loop_call()): they run on the loop's thread
 * while it runs, between callbacks, and in the caller's thread while it does not; a call
 * queued as the loop stops still runs.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/event_loop.h"

struct call {
	pthread_t ran_on;
	int count;
};

static void record(void *arg)
{
	struct call *c = arg;

	c->ran_on = pthread_self();
	c->count++;
}

static void *run_loop(void *arg)
{
	event_loop_run(arg);
	return NULL;
}

static void test_call_runs_on_the_loop_thread(void **state)
{
	struct event_loop l;
	struct call c = {0};
	pthread_t t;

	(void)state;
	assert_int_equal(event_loop_init(&l), 0);
	assert_int_equal(pthread_create(&t, NULL, run_loop, &l), 0);
	/* Until the loop runs, the call may run here; keep calling until one lands there. */
	for (int i = 0; i < 1000; i++) {
		event_loop_call(&l, record, &c);
		if (pthread_equal(c.ran_on, t))
			break;
		usleep(1000);
	}
	assert_true(pthread_equal(c.ran_on, t));
	event_loop_stop(&l);
	pthread_join(t, NULL);
	event_loop_destroy(&l);
}

static void test_call_runs_inline_when_stopped(void **state)
{
	struct event_loop l;
	struct call c = {0};

	(void)state;
	assert_int_equal(event_loop_init(&l), 0);
	event_loop_call(&l, record, &c);
	assert_int_equal(c.count, 1);
	assert_true(pthread_equal(c.ran_on, pthread_self()));
	event_loop_destroy(&l);
}

/* Many threads calling at once: every call runs exactly once, one at a time. */
static int calls;

static void count(void *arg)
{
	(void)arg;
	calls++; /* only ever on one thread at a time: the loop's, or one inline caller */
}

static void *counting_caller(void *arg)
{
	for (int i = 0; i < 200; i++)
		event_loop_call(arg, count, NULL);
	return NULL;
}

static void test_concurrent_calls(void **state)
{
	struct event_loop l;
	pthread_t loop, callers[4];

	(void)state;
	calls = 0;
	assert_int_equal(event_loop_init(&l), 0);
	assert_int_equal(pthread_create(&loop, NULL, run_loop, &l), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&callers[i], NULL, counting_caller, &l), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(callers[i], NULL);
	event_loop_stop(&l);
	pthread_join(loop, NULL);
	assert_int_equal(calls, 800);
	event_loop_destroy(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_call_runs_on_the_loop_thread),
	    cmocka_unit_test(test_call_runs_inline_when_stopped),
	    cmocka_unit_test(test_concurrent_calls),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
