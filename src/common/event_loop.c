// SPDX-License-Identifier: MIT
#include "common/event_loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"

/*
 * Registrations live in a list so that event_loop_del() can free them; epoll hands back the
 * registration itself. A registration removed while its event is still in the batch being
 * dispatched is marked dead and freed after the batch.
 */
struct event_reg {
	int fd;
	event_cb cb;
	void *opaque;
	bool dead;
	struct event_reg *next;
};

struct event_call {
	void (*fn)(void *arg);
	void *arg;
	bool done;
	struct event_call *next;
};

int event_loop_init(struct event_loop *l)
{
	l->stop = false;
	l->regs = l->graveyard = NULL;
	l->calls = NULL;
	l->running = l->inline_call = false;
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->called, NULL);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return -errno;
	l->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->wakefd < 0) {
		int err = -errno;

		close(l->epfd);
		return err;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) < 0) {
		int err = -errno;

		close(l->wakefd);
		close(l->epfd);
		return err;
	}
	return 0;
}

static void free_list(struct event_reg *r)
{
	while (r) {
		struct event_reg *next = r->next;

		free(r);
		r = next;
	}
}

void event_loop_destroy(struct event_loop *l)
{
	pthread_mutex_lock(&l->lock);
	free_list(l->regs);
	free_list(l->graveyard);
	l->regs = l->graveyard = NULL;
	pthread_mutex_unlock(&l->lock);
	close(l->wakefd);
	close(l->epfd);
	pthread_cond_destroy(&l->called);
	pthread_mutex_destroy(&l->lock);
}

int event_loop_add(struct event_loop *l, int fd, uint32_t events, event_cb cb, void *opaque)
{
	struct event_reg *r = calloc(1, sizeof(*r));
	struct epoll_event ev = {.events = events};

	if (!r)
		return -ENOMEM;
	r->fd = fd;
	r->cb = cb;
	r->opaque = opaque;
	ev.data.ptr = r;
	pthread_mutex_lock(&l->lock);
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;

		pthread_mutex_unlock(&l->lock);
		free(r);
		return err;
	}
	r->next = l->regs;
	l->regs = r;
	pthread_mutex_unlock(&l->lock);
	return 0;
}

int event_loop_del(struct event_loop *l, int fd)
{
	struct event_reg **p;
	int ret = -ENOENT;

	pthread_mutex_lock(&l->lock);
	for (p = &l->regs; *p; p = &(*p)->next) {
		struct event_reg *r = *p;

		if (r->fd != fd)
			continue;
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
		*p = r->next;
		r->dead = true;
		r->next = l->graveyard;
		l->graveyard = r;
		ret = 0;
		break;
	}
	pthread_mutex_unlock(&l->lock);
	return ret;
}

/* Run the queued calls (the loop's lock held on entry and exit). */
static void run_calls(struct event_loop *l)
{
	if (!l->calls)
		return;
	while (l->calls) {
		struct event_call *c = l->calls;

		l->calls = c->next;
		pthread_mutex_unlock(&l->lock);
		c->fn(c->arg);
		pthread_mutex_lock(&l->lock);
		c->done = true;
	}
	pthread_cond_broadcast(&l->called);
}

int event_loop_run(struct event_loop *l)
{
	struct epoll_event evs[32];
	int ret = 0;

	pthread_mutex_lock(&l->lock);
	while (l->inline_call)
		pthread_cond_wait(&l->called, &l->lock);
	l->running = true;
	pthread_mutex_unlock(&l->lock);
	while (!l->stop) {
		int n = epoll_wait(l->epfd, evs, 32, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("event loop: epoll_wait: %s", strerror(errno));
			ret = -errno;
			break;
		}
		for (int i = 0; i < n; i++) {
			struct event_reg *r = evs[i].data.ptr;

			if (!r) {
				uint64_t v;

				if (read(l->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					log_warn("event loop: wake read: %s", strerror(errno));
				continue;
			}
			if (!r->dead)
				r->cb(r->opaque, evs[i].events);
		}
		pthread_mutex_lock(&l->lock);
		free_list(l->graveyard);
		l->graveyard = NULL;
		run_calls(l);
		pthread_mutex_unlock(&l->lock);
	}
	/* Calls queued as the loop stopped run here; later ones run in their caller. */
	pthread_mutex_lock(&l->lock);
	run_calls(l);
	l->running = false;
	pthread_mutex_unlock(&l->lock);
	return ret;
}

void event_loop_call(struct event_loop *l, void (*fn)(void *arg), void *arg)
{
	struct event_call c = {.fn = fn, .arg = arg};
	uint64_t one = 1;

	pthread_mutex_lock(&l->lock);
	if (!l->running) {
		/* event_loop_run() waits for this call before it dispatches anything. */
		while (l->inline_call)
			pthread_cond_wait(&l->called, &l->lock);
		l->inline_call = true;
		pthread_mutex_unlock(&l->lock);
		fn(arg);
		pthread_mutex_lock(&l->lock);
		l->inline_call = false;
		pthread_cond_broadcast(&l->called);
		pthread_mutex_unlock(&l->lock);
		return;
	}
	c.next = l->calls;
	l->calls = &c;
	if (write(l->wakefd, &one, sizeof(one)) < 0)
		log_warn("event loop: wake: %s", strerror(errno));
	while (!c.done)
		pthread_cond_wait(&l->called, &l->lock);
	pthread_mutex_unlock(&l->lock);
}

void event_loop_stop(struct event_loop *l)
{
	uint64_t one = 1;

	l->stop = true;
	if (write(l->wakefd, &one, sizeof(one)) < 0)
		log_warn("event loop: wake: %s", strerror(errno));
}
