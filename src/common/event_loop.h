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

struct event_loop {
	int epfd;
	int wakefd; /* eventfd that makes event_loop_run return */
	volatile bool stop;
	pthread_mutex_t lock;	     /* guards the two lists */
	struct event_reg *regs;	     /* registrations, so that removal can free them */
	struct event_reg *graveyard; /* removed during a dispatch batch, freed after it */
};

int event_loop_init(struct event_loop *l);
void event_loop_destroy(struct event_loop *l);
/* events are EPOLLIN/EPOLLOUT/...; the returned handle is owned by the loop until removed. */
int event_loop_add(struct event_loop *l, int fd, uint32_t events, event_cb cb, void *opaque);
int event_loop_del(struct event_loop *l, int fd);
/* Run until event_loop_stop() is called (from any thread). */
int event_loop_run(struct event_loop *l);
void event_loop_stop(struct event_loop *l);

#endif
