// SPDX-License-Identifier: MIT
/*
 * The thread-pool engine, for hosts without io_uring (an old kernel, or a seccomp filter that
 * refuses it): a few workers take requests from a queue in order and do them with
 * preadv/pwritev/fdatasync, each to the end (short transfers continued), then put them on a
 * done list and signal the eventfd. The queue is bounded by blk.c's requests in flight; the
 * workers touch only the file and the request's buffers, never the rings.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/log.h"
#include "devices/virtio/blk_engine.h"

#define WORKERS 4

struct threads_engine {
	struct blk_io_engine e;
	int fd;
	unsigned depth, held; /* held: submitted and not yet reaped */
	/* Submitted since the last kick: the event loop's alone. */
	struct blk_io *pending, **pending_tail;
	pthread_mutex_t lock;
	pthread_cond_t work, done_cond;
	struct blk_io *queue, **queue_tail; /* waiting for a worker */
	struct blk_io *done, **done_tail;   /* finished, waiting to be reaped */
	bool stop;
	unsigned nr_workers;
	pthread_t workers[WORKERS];
};

static struct threads_engine *to_threads(struct blk_io_engine *e)
{
	return (struct threads_engine *)e;
}

static int64_t do_io(int fd, struct blk_io *io)
{
	int err;

	if (io->op == BLK_IO_FLUSH) {
		do
			err = fdatasync(fd);
		while (err < 0 && errno == EINTR);
		return err < 0 ? -errno : 0;
	}
	err = blk_file_rw(fd, io->op == BLK_IO_WRITE, io->iov, io->nr, (off_t)io->off);
	return err ? err : (int64_t)io->len;
}

static void *worker(void *opaque)
{
	struct threads_engine *t = opaque;
	const uint64_t one = 1;

	prctl(PR_SET_NAME, "blk io");
	pthread_mutex_lock(&t->lock);
	for (;;) {
		struct blk_io *io;
		bool first;

		while (!t->queue && !t->stop)
			pthread_cond_wait(&t->work, &t->lock);
		if (!t->queue)
			break;
		io = t->queue;
		t->queue = io->next;
		if (!t->queue)
			t->queue_tail = &t->queue;
		pthread_mutex_unlock(&t->lock);

		io->res = do_io(t->fd, io);

		pthread_mutex_lock(&t->lock);
		io->next = NULL;
		first = !t->done;
		*t->done_tail = io;
		t->done_tail = &io->next;
		pthread_cond_signal(&t->done_cond);
		/* One wake-up per batch: the loop reads the eventfd before it empties the list. */
		if (first && write(t->e.efd, &one, sizeof(one)) < 0)
			log_warn("blk threads: completion eventfd: %s", strerror(errno));
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

static void threads_destroy(struct blk_io_engine *e)
{
	struct threads_engine *t = to_threads(e);

	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_broadcast(&t->work);
	pthread_mutex_unlock(&t->lock);
	for (unsigned i = 0; i < t->nr_workers; i++)
		pthread_join(t->workers[i], NULL);
	pthread_cond_destroy(&t->done_cond);
	pthread_cond_destroy(&t->work);
	pthread_mutex_destroy(&t->lock);
	close(t->e.efd);
	free(t);
}

static int threads_create(int fd, unsigned depth, struct blk_io_engine **out)
{
	struct threads_engine *t = calloc(1, sizeof(*t));
	sigset_t all, old;
	int err = 0;

	if (!t)
		return -ENOMEM;
	t->e.ops = &blk_threads_ops;
	t->fd = fd;
	t->depth = depth;
	t->pending_tail = &t->pending;
	t->queue_tail = &t->queue;
	t->done_tail = &t->done;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->work, NULL);
	pthread_cond_init(&t->done_cond, NULL);
	t->e.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->e.efd < 0) {
		err = -errno;
		pthread_cond_destroy(&t->done_cond);
		pthread_cond_destroy(&t->work);
		pthread_mutex_destroy(&t->lock);
		free(t);
		return err;
	}
	/* Signals are for the event loop's signalfd and the vCPUs' kicks: the workers take none. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (; t->nr_workers < WORKERS && !err; t->nr_workers++)
		err = -pthread_create(&t->workers[t->nr_workers], NULL, worker, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		t->nr_workers--;
		threads_destroy(&t->e);
		return err;
	}
	*out = &t->e;
	return 0;
}

static int threads_submit(struct blk_io_engine *e, struct blk_io *io)
{
	struct threads_engine *t = to_threads(e);

	if (t->held == t->depth)
		return -EAGAIN;
	io->next = NULL;
	*t->pending_tail = io;
	t->pending_tail = &io->next;
	t->held++;
	return 0;
}

static void threads_kick(struct blk_io_engine *e)
{
	struct threads_engine *t = to_threads(e);

	if (!t->pending)
		return;
	pthread_mutex_lock(&t->lock);
	*t->queue_tail = t->pending;
	t->queue_tail = t->pending_tail;
	if (t->pending->next)
		pthread_cond_broadcast(&t->work);
	else
		pthread_cond_signal(&t->work);
	pthread_mutex_unlock(&t->lock);
	t->pending = NULL;
	t->pending_tail = &t->pending;
}

static struct blk_io *threads_reap(struct blk_io_engine *e, bool wait)
{
	struct threads_engine *t = to_threads(e);
	struct blk_io *io;

	if (wait)
		threads_kick(e);
	pthread_mutex_lock(&t->lock);
	while (wait && !t->done && t->held)
		pthread_cond_wait(&t->done_cond, &t->lock);
	io = t->done;
	if (io) {
		t->done = io->next;
		if (!t->done)
			t->done_tail = &t->done;
		t->held--;
	}
	pthread_mutex_unlock(&t->lock);
	return io;
}

const struct blk_io_engine_ops blk_threads_ops = {
    .name = "threads",
    .create = threads_create,
    .submit = threads_submit,
    .kick = threads_kick,
    .reap = threads_reap,
    .destroy = threads_destroy,
};
