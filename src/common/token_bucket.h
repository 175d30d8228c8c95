/* SPDX-License-Identifier: MIT */
/*
 * Rate limiting as Firecracker does it: a token bucket per resource, and a rate limiter that
 * holds two (bytes and operations) and a timer.
 *
 * A token bucket earns `rate` tokens a second up to `size` (the burst; one second's worth
 * unless given), and starts full. Its arithmetic is a pure function of the time passed in
 * (nanoseconds of CLOCK_MONOTONIC), so it can be tested without sleeping; products are taken
 * in 128 bits, so any 64-bit rate and any time span work without overflow. The part of a
 * token earned is kept, to the token-nanosecond, so slow rates are exact too.
 *
 * A request bigger than the bucket could never be served whole, so it is served when the
 * bucket is full and leaves a debt: the bucket stays empty for the time the excess takes to
 * earn. Over time the rate holds whatever the sizes of the requests (Firecracker's
 * "over-consumption"); the only cost is that one such request passes at once.
 *
 * A rate limiter is what a device holds: both buckets, optional (a rate of 0 is no limit),
 * and a timerfd on the event loop. A device asks it before serving each request; when the
 * tokens are not there, the device leaves the request where it was (in the avail ring, in the
 * tap), the limiter arms the timer for the time the tokens take, and when it fires it calls
 * the device back to go on. Nothing busy-waits, nothing is dropped.
 */
#ifndef YUN_COMMON_TOKEN_BUCKET_H
#define YUN_COMMON_TOKEN_BUCKET_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct token_bucket {
	uint64_t rate;	  /* tokens earned a second; 0: no limit */
	uint64_t size;	  /* the most it holds */
	uint64_t tokens;  /* held at last_ns */
	uint64_t frac;	  /* and a part of the next one, in token-nanoseconds (below 1e9) */
	uint64_t last_ns; /* tokens are counted up to here; after "now" while a debt is paid */
};

/* A full bucket; burst 0 means one second's worth (at least one token). */
void tb_init(struct token_bucket *tb, uint64_t rate, uint64_t burst, uint64_t now);
/* Take n tokens if they are there (or n is over the size and the bucket is full). */
bool tb_take(struct token_bucket *tb, uint64_t n, uint64_t now);
/* Nanoseconds until tb_take(n) would succeed; 0 when it would now. */
uint64_t tb_wait_ns(const struct token_bucket *tb, uint64_t n, uint64_t now);

/* What a device is limited to; rates of 0 are no limit. */
struct rate_limit_config {
	uint64_t bw, bw_burst;	 /* bytes a second; bytes (0: one second's worth) */
	uint64_t ops, ops_burst; /* requests a second; requests (0: one second's worth) */
	uint64_t (*clock)(void); /* tests' own clock; NULL: CLOCK_MONOTONIC */
};

struct event_loop;

struct rate_limiter {
	struct token_bucket bw, ops;
	uint64_t (*clock)(void);
	int timerfd; /* -1 without a limit */
	struct event_loop *loop;
	/* The device's: held around resume, which the device uses to go on serving. */
	pthread_mutex_t *lock;
	void (*resume)(void *opaque);
	void *opaque;
	bool blocked; /* waiting for the timer */
	uint64_t blocked_since, blocked_until;
	/* Counters: times the device was held back, and for how long in all. */
	uint64_t throttled, throttled_ns;
};

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t rate_limit_clock(void);
/*
 * Set up rl from cfg. With a limit, a timerfd is made and, with a loop, registered on it.
 * resume(opaque) is called with *lock held once the tokens a request waited for are there.
 * Returns 0 or a negative errno.
 */
int rate_limiter_init(struct rate_limiter *rl, const struct rate_limit_config *cfg,
		      struct event_loop *loop, pthread_mutex_t *lock, void (*resume)(void *opaque),
		      void *opaque);
void rate_limiter_destroy(struct rate_limiter *rl);
bool rate_limiter_active(const struct rate_limiter *rl);
/*
 * Under *lock: take `bytes` and `ops` tokens, all or none. false: they are not there; the
 * timer is armed and the device must leave the request for later.
 */
bool rate_limiter_consume(struct rate_limiter *rl, uint64_t bytes, uint64_t ops);
/* What the timer does when it fires (tests call it after moving their clock): takes *lock. */
void rate_limiter_timer(struct rate_limiter *rl);

#endif
