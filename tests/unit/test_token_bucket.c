// SPDX-License-Identifier: MIT
/*
 * Token buckets and the rate limiter, on a clock the tests move: refill arithmetic, the burst,
 * fractions of tokens carried over, large rates without overflow, requests bigger than the
 * bucket, the wait time, and the limiter's timer bringing a device back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/event_loop.h"
#include "common/token_bucket.h"

#define SEC  1000000000ULL
#define MSEC 1000000ULL

static void test_starts_full(void **state)
{
	struct token_bucket tb;

	(void)state;
	tb_init(&tb, 1000, 0, 5 * SEC);
	assert_int_equal(tb.size, 1000); /* one second's worth */
	assert_true(tb_take(&tb, 1000, 5 * SEC));
	assert_false(tb_take(&tb, 1, 5 * SEC));
	tb_init(&tb, 1000, 10, 0);
	assert_int_equal(tb.size, 10);
	assert_true(tb_take(&tb, 10, 0));
	assert_false(tb_take(&tb, 1, 0));
}

static void test_refill(void **state)
{
	struct token_bucket tb;

	(void)state;
	tb_init(&tb, 1000, 10, 0);
	assert_true(tb_take(&tb, 10, 0));
	assert_false(tb_take(&tb, 1, 999999)); /* a token takes 1 ms */
	assert_true(tb_take(&tb, 1, 1 * MSEC));
	assert_false(tb_take(&tb, 1, 1 * MSEC));
	assert_false(tb_take(&tb, 3, 3 * MSEC));
	assert_true(tb_take(&tb, 3, 4 * MSEC));
	/* No more than the burst, however long the bucket waits. */
	assert_int_equal(tb_wait_ns(&tb, 10, 100 * SEC), 0);
	assert_true(tb_take(&tb, 10, 100 * SEC));
	assert_false(tb_take(&tb, 1, 100 * SEC));
}

/* 3 tokens a second taken one at a time, asked for every millisecond for ten seconds: the
 * fractions of a token earned between two asks add up, so exactly 30 come (the bucket never
 * fills, which would waste what it earns while full). */
static void test_fractions_carried(void **state)
{
	struct token_bucket tb;
	unsigned got = 0;

	(void)state;
	tb_init(&tb, 3, 0, 0);
	assert_true(tb_take(&tb, 3, 0));
	for (uint64_t t = 1 * MSEC; t <= 10 * SEC; t += MSEC)
		got += tb_take(&tb, 1, t);
	assert_int_equal(got, 30);
	/* Asked every 200 ms: a bucket that dropped the fraction would give one every 400. */
	tb_init(&tb, 3, 0, 0);
	assert_true(tb_take(&tb, 3, 0));
	got = 0;
	for (uint64_t t = 200 * MSEC; t <= 10 * SEC; t += 200 * MSEC)
		got += tb_take(&tb, 1, t);
	assert_int_equal(got, 30);
}

static void test_large_rates(void **state)
{
	const uint64_t rate = 1ULL << 40;
	struct token_bucket tb;

	(void)state;
	tb_init(&tb, rate, 0, 0);
	assert_true(tb_take(&tb, rate, 0));
	/* Half a second earns half: (2^40 * 5e8 ns) overflows 64 bits if done naively. */
	assert_false(tb_take(&tb, rate / 2 + 1, SEC / 2));
	assert_true(tb_take(&tb, rate / 2, SEC / 2));
	assert_int_equal(tb_wait_ns(&tb, rate, SEC / 2), SEC);
	/* Centuries later: full, no more. */
	assert_true(tb_take(&tb, rate, UINT64_MAX / 2));
	assert_int_equal(tb.tokens, 0);
	/* The largest rate there is. */
	tb_init(&tb, UINT64_MAX, 0, 0);
	assert_true(tb_take(&tb, UINT64_MAX, 0));
	assert_true(tb_take(&tb, UINT64_MAX / SEC, 1));
	assert_false(tb_take(&tb, UINT64_MAX / SEC, 1));
	assert_int_equal(tb_wait_ns(&tb, UINT64_MAX, 1), SEC);
	assert_true(tb_take(&tb, UINT64_MAX, UINT64_MAX));
}

static void test_wait(void **state)
{
	struct token_bucket tb;

	(void)state;
	tb_init(&tb, 1000, 100, 0);
	assert_int_equal(tb_wait_ns(&tb, 100, 0), 0);
	assert_true(tb_take(&tb, 100, 0));
	assert_int_equal(tb_wait_ns(&tb, 1, 0), 1 * MSEC);
	assert_int_equal(tb_wait_ns(&tb, 50, 0), 50 * MSEC);
	assert_int_equal(tb_wait_ns(&tb, 50, 20 * MSEC + 500000), 29500000);
	/* More than the bucket holds: the wait is until it is full. */
	assert_int_equal(tb_wait_ns(&tb, 1000, 0), 100 * MSEC);
	/* tb_wait_ns() is the time tb_take() succeeds, to the nanosecond, at odd rates too. */
	static const uint64_t rates[] = {1, 3, 7, 1000, 999983, 1ULL << 33};
	for (unsigned i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
		for (uint64_t n = 1; n <= 5; n++) {
			struct token_bucket t;
			uint64_t start = 12345, w;

			tb_init(&t, rates[i], 5, 0);
			assert_true(tb_take(&t, 5, start));
			w = tb_wait_ns(&t, n, start);
			assert_true(w > 0);
			struct token_bucket early = t;
			assert_false(tb_take(&early, n, start + w - 1));
			assert_true(tb_take(&t, n, start + w));
		}
	}
}

/* A request over the burst passes from a full bucket and leaves a debt, so the rate holds. */
static void test_bigger_than_burst(void **state)
{
	struct token_bucket tb;

	(void)state;
	tb_init(&tb, 100, 100, 0);
	assert_true(tb_take(&tb, 10, 0));
	assert_false(tb_take(&tb, 250, 0)); /* not full: it waits */
	assert_int_equal(tb_wait_ns(&tb, 250, 0), 100 * MSEC);
	assert_true(tb_take(&tb, 250, 100 * MSEC));
	/* 150 tokens owed: 1.5 s before the bucket earns again, then 10 ms a token. */
	assert_int_equal(tb_wait_ns(&tb, 1, 100 * MSEC), 1510 * MSEC);
	assert_false(tb_take(&tb, 1, 1600 * MSEC));
	assert_false(tb_take(&tb, 1, 1609 * MSEC));
	assert_true(tb_take(&tb, 1, 1610 * MSEC));
	/* Over time: 250-token requests come at 100 a second. */
	uint64_t t = 1610 * MSEC;
	for (int i = 0; i < 4; i++) {
		t += tb_wait_ns(&tb, 250, t);
		assert_true(tb_take(&tb, 250, t));
	}
	assert_int_equal(t, 1610 * MSEC + 1000 * MSEC + 3 * 2500 * MSEC);
}

static void test_unlimited(void **state)
{
	struct token_bucket tb;

	(void)state;
	tb_init(&tb, 0, 0, 0);
	for (int i = 0; i < 3; i++)
		assert_true(tb_take(&tb, UINT64_MAX, 0));
	assert_int_equal(tb_wait_ns(&tb, UINT64_MAX, 0), 0);
}

/* The rate limiter, with the tests' clock and a device that counts its resumptions. */
static uint64_t now;
static unsigned resumed;
static struct rate_limiter *resumed_rl;
static bool admitted;

static uint64_t test_clock(void)
{
	return now;
}

static void on_resume(void *opaque)
{
	resumed++;
	resumed_rl = opaque;
	admitted = rate_limiter_consume(opaque, 100, 1);
}

static void resume_nothing(void *opaque)
{
	resumed++;
}

static void test_rate_limiter(void **state)
{
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct rate_limit_config cfg = {.bw = 1000, .ops = 2, .clock = test_clock};
	struct rate_limiter rl;

	(void)state;
	now = 7 * SEC;
	resumed = 0;
	assert_int_equal(rate_limiter_init(&rl, &cfg, NULL, &lock, on_resume, &rl), 0);
	assert_true(rate_limiter_active(&rl));
	assert_true(rl.timerfd >= 0);
	assert_true(rate_limiter_consume(&rl, 600, 1));
	/* Bytes are missing, operations are not: neither is taken. */
	assert_false(rate_limiter_consume(&rl, 500, 1));
	assert_int_equal(rl.ops.tokens, 1);
	assert_int_equal(rl.bw.tokens, 400);
	assert_true(rl.blocked);
	assert_int_equal(rl.throttled, 1);
	/* Asked again before the timer: still no, counted once. */
	now += 50 * MSEC;
	assert_false(rate_limiter_consume(&rl, 500, 1));
	assert_int_equal(rl.throttled, 1);
	/* The timer: the device is called back and is served. */
	now += 50 * MSEC;
	rate_limiter_timer(&rl);
	assert_int_equal(resumed, 1);
	assert_ptr_equal(resumed_rl, &rl);
	assert_true(admitted);
	assert_false(rl.blocked);
	assert_int_equal(rl.throttled_ns, 100 * MSEC);
	/* A device that needs nothing when the timer fires waits no more either. */
	assert_false(rate_limiter_consume(&rl, 0, 5));
	now += 2 * SEC;
	rl.resume = resume_nothing;
	rate_limiter_timer(&rl);
	assert_int_equal(resumed, 2);
	assert_false(rl.blocked);
	assert_int_equal(rl.throttled, 2);
	rate_limiter_destroy(&rl);
	assert_int_equal(rl.timerfd, -1);

	/* No limit: no timer, everything passes. */
	struct rate_limit_config none = {0};
	assert_int_equal(rate_limiter_init(&rl, &none, NULL, &lock, on_resume, &rl), 0);
	assert_false(rate_limiter_active(&rl));
	assert_int_equal(rl.timerfd, -1);
	assert_true(rate_limiter_consume(&rl, UINT64_MAX, UINT64_MAX));
	rate_limiter_destroy(&rl);
}

/* The real thing: CLOCK_MONOTONIC, a timerfd on an event loop, which the resumed device
 * stops once it is served. */
static struct event_loop loop;

static void on_resume_stop(void *opaque)
{
	resumed++;
	if (rate_limiter_consume(opaque, 0, 1))
		event_loop_stop(&loop);
}

static void test_rate_limiter_on_loop(void **state)
{
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct rate_limit_config cfg = {.ops = 200, .ops_burst = 1};
	struct rate_limiter rl;
	uint64_t start;

	(void)state;
	assert_int_equal(event_loop_init(&loop), 0);
	assert_int_equal(rate_limiter_init(&rl, &cfg, &loop, &lock, on_resume_stop, &rl), 0);
	start = rate_limit_clock();
	assert_true(rate_limiter_consume(&rl, 0, 1));
	assert_false(rate_limiter_consume(&rl, 0, 1));
	resumed = 0;
	assert_int_equal(event_loop_run(&loop), 0);
	assert_int_equal(resumed, 1);
	assert_true(rate_limit_clock() - start >= 5 * MSEC); /* a token every 5 ms */
	assert_false(rl.blocked);
	assert_true(rl.throttled_ns > 0 && rl.throttled == 1);
	rate_limiter_destroy(&rl);
	event_loop_destroy(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_starts_full),
	    cmocka_unit_test(test_refill),
	    cmocka_unit_test(test_fractions_carried),
	    cmocka_unit_test(test_large_rates),
	    cmocka_unit_test(test_wait),
	    cmocka_unit_test(test_bigger_than_burst),
	    cmocka_unit_test(test_unlimited),
	    cmocka_unit_test(test_rate_limiter),
	    cmocka_unit_test(test_rate_limiter_on_loop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
