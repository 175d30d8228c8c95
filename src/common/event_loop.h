/* SPDX-License-Identifier: MIT */
/*
 * The VMM's one event loop (epoll): ioeventfds of virtio queues, the console, later tap and
 * the control socket. Callbacks run on the loop's thread, one at a time.
 */
#ifndef YUN_COMMON_EVENT_LOOP_H
#define YUN_COMMON_EVENT_LOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef void (*event_cb)(void *opaque, uint32_t events);

struct event_reg;
struct event_call;

struct event_loop {
	int epfd;
	int wakefd; /* eventfd that makes event_loop_run return */
	volatile bool stop;
	pthread_mutex_t lock;	     /* guards the two lists */
	struct event_reg *regs;	     /* registrations, so that removal can free them */
	struct event_reg *graveyard; /* removed during a dispatch batch, freed after it */
	struct event_call *calls;    /* event_loop_call()s waiting for the loop's thread */
	pthread_cond_t called;	     /* a call finished */
	bool running;		     /* inside event_loop_run() */
	bool inline_call;	     /* a call runs in its caller's thread */
};

int event_loop_init(struct event_loop *l);
void event_loop_destroy(struct event_loop *l);
/* events are EPOLLIN/EPOLLOUT/...; the returned handle is owned by the loop until removed. */
int event_loop_add(struct event_loop *l, int fd, uint32_t events, event_cb cb, void *opaque);
int event_loop_del(struct event_loop *l, int fd);
/* Run until event_loop_stop() is called (from any thread). */
int event_loop_run(struct event_loop *l);
void event_loop_stop(struct event_loop *l);
/*
 * Run fn(arg) where device callbacks cannot run at the same time, and wait for it: on the
 * loop's thread while the loop runs, in the caller's thread (holding the loop off) while it
 * does not. For other threads (the control API) that must see or change device state.
 */
void event_loop_call(struct event_loop *l, void (*fn)(void *arg), void *arg);

#endif
