// SPDX-License-Identifier: MIT
#include "common/token_bucket.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/event_loop.h"
#include "common/log.h"

#define NSEC_PER_SEC 1000000000ULL

typedef unsigned __int128 u128;

static uint64_t saturate(u128 v)
{
	return v > UINT64_MAX ? UINT64_MAX : (uint64_t)v;
}

/* The time n more tokens take to earn from last_ns, rounded up. */
static uint64_t earn_ns(const struct token_bucket *tb, uint64_t n)
{
	return saturate(((u128)n * NSEC_PER_SEC - tb->frac + tb->rate - 1) / tb->rate);
}

/* Bring tokens up to `now`. */
static void refill(struct token_bucket *tb, uint64_t now)
{
	u128 credit, add;

	if (now <= tb->last_ns)
		return; /* a debt still being paid, or a clock that stood still */
	/* Token-nanoseconds: below 2^128 for any two 64-bit factors. */
	credit = (u128)(now - tb->last_ns) * tb->rate + tb->frac;
	add = credit / NSEC_PER_SEC;
	tb->last_ns = now;
	if (add >= tb->size - tb->tokens) {
		tb->tokens = tb->size;
		tb->frac = 0;
		return;
	}
	tb->tokens += (uint64_t)add;
	tb->frac = (uint64_t)(credit % NSEC_PER_SEC);
}

void tb_init(struct token_bucket *tb, uint64_t rate, uint64_t burst, uint64_t now)
{
	tb->rate = rate;
	tb->size = burst ? burst : rate;
	tb->tokens = tb->size;
	tb->frac = 0;
	tb->last_ns = now;
}

bool tb_take(struct token_bucket *tb, uint64_t n, uint64_t now)
{
	if (!tb->rate)
		return true;
	refill(tb, now);
	if (n <= tb->tokens) {
		tb->tokens -= n;
		return true;
	}
	if (n > tb->size && tb->tokens == tb->size) {
		/* More than the bucket holds: served from a full bucket, the excess a debt. */
		uint64_t debt;

		tb->frac = 0;
		debt = earn_ns(tb, n - tb->size);
		tb->tokens = 0;
		tb->last_ns = now > UINT64_MAX - debt ? UINT64_MAX : now + debt;
		return true;
	}
	return false;
}

uint64_t tb_wait_ns(const struct token_bucket *tb, uint64_t n, uint64_t now)
{
	struct token_bucket t = *tb;
	uint64_t need, at;

	if (!t.rate)
		return 0;
	refill(&t, now);
	need = n < t.size ? n : t.size;
	if (t.tokens >= need)
		return 0;
	/* Tokens are earned from last_ns on: now, or later while a debt is paid. */
	at = saturate((u128)t.last_ns + earn_ns(&t, need - t.tokens));
	return at > now ? at - now : 1;
}

uint64_t rate_limit_clock(void)
{
	return monotonic_ns();
}

static void on_timer(void *opaque, uint32_t events)
{
	struct rate_limiter *rl = opaque;
	uint64_t expirations;

	if (read(rl->timerfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		log_warn("rate limiter: timerfd: %s", strerror(errno));
	rate_limiter_timer(rl);
}

int rate_limiter_init(struct rate_limiter *rl, const struct rate_limit_config *cfg,
		      struct event_loop *loop, pthread_mutex_t *lock, void (*resume)(void *opaque),
		      void *opaque)
{
	int err;

	memset(rl, 0, sizeof(*rl));
	rl->timerfd = -1;
	rl->clock = cfg->clock ? cfg->clock : rate_limit_clock;
	rl->lock = lock;
	rl->resume = resume;
	rl->opaque = opaque;
	tb_init(&rl->bw, cfg->bw, cfg->bw_burst, rl->clock());
	tb_init(&rl->ops, cfg->ops, cfg->ops_burst, rl->clock());
	if (!rate_limiter_active(rl))
		return 0;
	rl->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (rl->timerfd < 0)
		return -errno;
	if (loop) {
		err = event_loop_add(loop, rl->timerfd, EPOLLIN, on_timer, rl);
		if (err) {
			close(rl->timerfd);
			rl->timerfd = -1;
			return err;
		}
		rl->loop = loop;
	}
	return 0;
}

void rate_limiter_destroy(struct rate_limiter *rl)
{
	if (rl->timerfd < 0)
		return;
	if (rl->loop)
		event_loop_del(rl->loop, rl->timerfd);
	close(rl->timerfd);
	rl->timerfd = -1;
}

bool rate_limiter_active(const struct rate_limiter *rl)
{
	return rl->bw.rate || rl->ops.rate;
}

static void unblock(struct rate_limiter *rl, uint64_t now)
{
	rl->blocked = false;
	rl->throttled_ns += now > rl->blocked_since ? now - rl->blocked_since : 0;
}

bool rate_limiter_consume(struct rate_limiter *rl, uint64_t bytes, uint64_t ops)
{
	struct itimerspec its = {{0, 0}, {0, 0}};
	uint64_t now, wait, w;

	if (!rate_limiter_active(rl))
		return true;
	now = rl->clock();
	if (rl->blocked && now < rl->blocked_until)
		return false; /* the timer is armed */
	wait = tb_wait_ns(&rl->bw, bytes, now);
	w = tb_wait_ns(&rl->ops, ops, now);
	if (w > wait)
		wait = w;
	if (!wait) {
		tb_take(&rl->bw, bytes, now);
		tb_take(&rl->ops, ops, now);
		if (rl->blocked)
			unblock(rl, now);
		return true;
	}
	its.it_value.tv_sec = (time_t)(wait / NSEC_PER_SEC);
	its.it_value.tv_nsec = (long)(wait % NSEC_PER_SEC);
	if (timerfd_settime(rl->timerfd, 0, &its, NULL) < 0) {
		/* Without a timer nothing would wake the device: better unlimited than stuck. */
		log_warn("rate limiter: timerfd_settime: %s", strerror(errno));
		return true;
	}
	if (!rl->blocked) {
		rl->blocked = true;
		rl->blocked_since = now;
		rl->throttled++;
	}
	rl->blocked_until = now > UINT64_MAX - wait ? UINT64_MAX : now + wait;
	return false;
}

void rate_limiter_timer(struct rate_limiter *rl)
{
	pthread_mutex_lock(rl->lock);
	rl->resume(rl->opaque);
	/* A device that found nothing left to serve (a reset meanwhile) waits no more. */
	if (rl->blocked) {
		uint64_t now = rl->clock();

		if (now >= rl->blocked_until)
			unblock(rl, now);
	}
	pthread_mutex_unlock(rl->lock);
}
