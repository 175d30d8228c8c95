// SPDX-License-Identifier: MIT
/*
 * The io_uring engine: a ring as deep as the queue, submitted in batches, completions
 * signalled on an eventfd registered with the ring. A short transfer comes back short;
 * blk.c finishes it.
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/virtio/blk_engine.h"

struct uring_engine {
	struct blk_io_engine e;
	int fd;
	struct io_uring ring;
	unsigned unsubmitted;
};

static struct uring_engine *to_uring(struct blk_io_engine *e)
{
	return (struct uring_engine *)e;
}

static int uring_create(int fd, unsigned depth, struct blk_io_engine **out)
{
	struct uring_engine *u = calloc(1, sizeof(*u));
	int err;

	if (!u)
		return -ENOMEM;
	err = io_uring_queue_init(depth, &u->ring, 0);
	if (err < 0) {
		free(u);
		return err;
	}
	u->e.ops = &blk_io_uring_ops;
	u->fd = fd;
	u->e.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	err = u->e.efd < 0 ? -errno : io_uring_register_eventfd(&u->ring, u->e.efd);
	if (err) {
		if (u->e.efd >= 0)
			close(u->e.efd);
		io_uring_queue_exit(&u->ring);
		free(u);
		return err;
	}
	*out = &u->e;
	return 0;
}

static void uring_kick(struct blk_io_engine *e)
{
	struct uring_engine *u = to_uring(e);

	if (u->unsubmitted) {
		io_uring_submit(&u->ring);
		u->unsubmitted = 0;
	}
}

static int uring_submit(struct blk_io_engine *e, struct blk_io *io)
{
	struct uring_engine *u = to_uring(e);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

	if (!sqe) {
		uring_kick(e);
		sqe = io_uring_get_sqe(&u->ring);
		if (!sqe)
			return -EAGAIN;
	}
	if (io->op == BLK_IO_READ)
		io_uring_prep_readv(sqe, u->fd, io->iov, io->nr, io->off);
	else if (io->op == BLK_IO_WRITE)
		io_uring_prep_writev(sqe, u->fd, io->iov, io->nr, io->off);
	else
		io_uring_prep_fsync(sqe, u->fd, IORING_FSYNC_DATASYNC);
	io_uring_sqe_set_data(sqe, io);
	u->unsubmitted++;
	return 0;
}

static struct blk_io *uring_reap(struct blk_io_engine *e, bool wait)
{
	struct uring_engine *u = to_uring(e);
	struct io_uring_cqe *cqe;
	struct blk_io *io;
	int err;

	do
		err = wait ? io_uring_wait_cqe(&u->ring, &cqe) : io_uring_peek_cqe(&u->ring, &cqe);
	while (err == -EINTR);
	if (err < 0)
		return NULL;
	io = io_uring_cqe_get_data(cqe);
	io->res = cqe->res;
	io_uring_cqe_seen(&u->ring, cqe);
	return io;
}

static void uring_destroy(struct blk_io_engine *e)
{
	struct uring_engine *u = to_uring(e);

	io_uring_queue_exit(&u->ring);
	close(u->e.efd);
	free(u);
}

const struct blk_io_engine_ops blk_io_uring_ops = {
    .name = "io_uring",
    .create = uring_create,
    .submit = uring_submit,
    .kick = uring_kick,
    .reap = uring_reap,
    .destroy = uring_destroy,
};
