// SPDX-License-Identifier: MIT
/*
 * virtio-vsock through its queues, against real Unix sockets in a temporary directory: host to
 * guest (CONNECT lines) and guest to host (PATH_<port>), data both ways, the guest's credit
 * respected and ours advertised, a guest that overruns its credit reset, timeouts, malformed
 * packets and chains, the connection limit, and device reset.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "devices/virtio/vsock.h"
#include "vmm/layout.h"
#include "vring_driver.h"

#define RAM_SIZE (4 * MiB)
#define QSZ	 64
#define RXQ	 0
#define TXQ	 1
#define CID	 3
#define HDR	 ((uint32_t)sizeof(struct virtio_vsock_hdr))

/* The transmit queue's rings sit above the receive queue's; buffers higher up. */
#define TX_RINGS  0x40000u
#define RX_BUF	  0x100000u /* QSZ / 2 receive slots of RX_SLOT bytes */
#define RX_SLOT	  0x2000u
#define RX_DATA	  4096u
#define TX_BUF	  0x200000u /* QSZ / 2 transmit slots of TX_SLOT bytes */
#define TX_SLOT	  0x10000u
#define RX_SLOTS  (QSZ / 2)
#define TX_SLOTS  (QSZ / 2)
#define SEC	  1000000000ULL
#define GUEST_BUF (256 * 1024)

static uint64_t now_ns = 1000;

static uint64_t test_clock(void)
{
	return now_ns;
}

struct fixture {
	struct guest_mem m;
	uint8_t *ram;
	struct vring_driver rx, tx;
	char dir[64];
	char uds[80];
	struct virtio_vsock *vs;
	struct virtio_dev *dev;
	unsigned rx_posted; /* receive chains made available so far */
	uint16_t rx_seen;   /* used receive chains read so far */
	unsigned tx_sent;
	bool rx_split; /* receive chains as Linux 6.1 posts them: header and data apart */
	/* The guest's credit, as its packets advertise it. */
	uint32_t buf_alloc, fwd_cnt;
};

struct rx_pkt {
	struct virtio_vsock_hdr h;
	uint32_t used_len;
	const uint8_t *data;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct vsock_config cfg = {.cid = CID, .clock = test_clock};

	f->ram = aligned_alloc(4096, RAM_SIZE);
	memset(f->ram, 0, RAM_SIZE);
	f->m.memfd = -1;
	assert_int_equal(gm_add_region(&f->m, 0, RAM_SIZE, f->ram), 0);
	snprintf(f->dir, sizeof(f->dir), "/tmp/yun-vsock-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->uds, sizeof(f->uds), "%s/v.sock", f->dir);
	cfg.uds = f->uds;
	assert_int_equal(virtio_vsock_create(&cfg, "vsock0", &f->m, NULL, &f->vs), 0);
	f->dev = virtio_vsock_dev(f->vs);
	f->buf_alloc = GUEST_BUF;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	virtio_vsock_destroy(f->vs);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f->ram);
	free(f);
	return 0;
}

static void start(struct fixture *f)
{
	f->dev->driver_features = 1ULL << VIRTIO_F_VERSION_1;
	f->dev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	vd_init(&f->rx, f->ram, QSZ);
	vd_setup_queue(&f->rx, &f->dev->vqs[RXQ]);
	vd_init_at(&f->tx, f->ram, TX_RINGS, QSZ);
	vd_setup_queue(&f->tx, &f->dev->vqs[TXQ]);
	for (unsigned q = 0; q < 2; q++)
		assert_int_equal(virtq_activate(&f->dev->vqs[q], &f->m, f->dev->driver_features),
				 0);
	assert_int_equal(f->dev->ops->activate(f->dev), 0);
}

/* n receive chains, each room for a header and RX_DATA bytes; one descriptor or two. */
static void post_rx(struct fixture *f, unsigned n)
{
	for (unsigned i = 0; i < n; i++, f->rx_posted++) {
		uint16_t s = (uint16_t)(f->rx_posted % RX_SLOTS);
		uint64_t gpa = RX_BUF + s * RX_SLOT;

		assert_true(f->rx_posted - f->rx_seen < RX_SLOTS);
		if (f->rx_split) {
			vd_desc(&f->rx, 2 * s, gpa, HDR, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
				2 * s + 1);
			vd_desc(&f->rx, 2 * s + 1, gpa + 0x100, RX_DATA, VIRTQ_DESC_F_WRITE, 0);
		} else {
			vd_desc(&f->rx, 2 * s, gpa, HDR + RX_DATA, VIRTQ_DESC_F_WRITE, 0);
		}
		vd_publish(&f->rx, 2 * s);
	}
	f->dev->ops->queue_notify(f->dev, RXQ);
}

/* The next packet the device gave the guest; false when there is none. */
static bool get_rx(struct fixture *f, struct rx_pkt *p)
{
	struct virtq_used_elem e;
	uint64_t gpa;

	if (vd_used_idx(&f->rx) == f->rx_seen)
		return false;
	e = vd_used(&f->rx, f->rx_seen++);
	assert_true(e.id % 2 == 0 && e.id < QSZ);
	gpa = RX_BUF + (e.id / 2) * RX_SLOT;
	memcpy(&p->h, f->ram + gpa, HDR);
	p->used_len = e.len;
	p->data = f->ram + gpa + (f->rx_split ? 0x100 : HDR);
	assert_int_equal(e.len, HDR + p->h.len);
	assert_true(p->h.len <= RX_DATA);
	return true;
}

/* The next packet, which must be there and be op. */
static void expect_rx(struct fixture *f, struct rx_pkt *p, uint16_t op)
{
	assert_true(get_rx(f, p));
	assert_int_equal(p->h.op, op);
	assert_int_equal(p->h.type, VIRTIO_VSOCK_TYPE_STREAM);
	assert_int_equal(p->h.dst_cid, CID);
}

static struct virtio_vsock_hdr ghdr(struct fixture *f, uint16_t op, uint32_t src_port,
				    uint32_t dst_port, uint32_t len)
{
	struct virtio_vsock_hdr h = {
	    .src_cid = CID,
	    .dst_cid = VSOCK_HOST_CID,
	    .src_port = src_port,
	    .dst_port = dst_port,
	    .len = len,
	    .type = VIRTIO_VSOCK_TYPE_STREAM,
	    .op = op,
	    .buf_alloc = f->buf_alloc,
	    .fwd_cnt = f->fwd_cnt,
	};
	return h;
}

/* One packet on the transmit queue: the header in one buffer, the payload in the next. */
static void send_raw(struct fixture *f, const struct virtio_vsock_hdr *h, const void *data,
		     uint32_t data_len)
{
	uint16_t s = (uint16_t)(f->tx_sent++ % TX_SLOTS);
	uint64_t gpa = TX_BUF + s * TX_SLOT;

	assert_true(data_len <= TX_SLOT - 0x100);
	memcpy(f->ram + gpa, h, HDR);
	if (data_len)
		memcpy(f->ram + gpa + 0x100, data, data_len);
	vd_desc(&f->tx, 2 * s, gpa, HDR, data_len ? VIRTQ_DESC_F_NEXT : 0, 2 * s + 1);
	vd_desc(&f->tx, 2 * s + 1, gpa + 0x100, data_len, 0, 0);
	vd_publish(&f->tx, 2 * s);
	f->dev->ops->queue_notify(f->dev, TXQ);
}

static void send_pkt(struct fixture *f, uint16_t op, uint32_t src_port, uint32_t dst_port,
		     const void *data, uint32_t len)
{
	struct virtio_vsock_hdr h = ghdr(f, op, src_port, dst_port, len);

	send_raw(f, &h, data, len);
}

static int host_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static int host_listen(struct fixture *f, uint32_t port)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s_%u", f->uds, port);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 2048), 0);
	return fd;
}

/* Whatever fd holds now (non-blocking); -1 when the device closed it (EOF, or a reset when it
 * closed with bytes unread). */
static ssize_t host_read(int fd, void *buf, size_t len)
{
	ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);

	if (n == 0 || (n < 0 && errno == ECONNRESET))
		return -1;
	return n < 0 ? 0 : n;
}

static void pattern(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i + seed) * 2654435761u >> 13);
}

/* A host connection to guest port `port`, accepted by the guest: returns the host's fd and
 * the host port the device chose. */
static int open_host_conn(struct fixture *f, uint32_t port, uint32_t *local)
{
	char line[32], ok[32];
	struct rx_pkt p;
	int fd = host_connect(f->uds);
	int n = snprintf(line, sizeof(line), "CONNECT %u\n", port);
	ssize_t got;

	assert_int_equal(write(fd, line, (size_t)n), n);
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_REQUEST);
	assert_int_equal(p.h.src_cid, VSOCK_HOST_CID);
	assert_int_equal(p.h.dst_port, port);
	assert_true(p.h.src_port >= 1u << 30);
	assert_int_equal(p.h.buf_alloc, VIRTIO_VSOCK_BUF_ALLOC);
	*local = p.h.src_port;
	send_pkt(f, VIRTIO_VSOCK_OP_RESPONSE, port, *local, NULL, 0);
	got = host_read(fd, ok, sizeof(ok) - 1);
	assert_true(got > 0);
	ok[got] = '\0';
	snprintf(line, sizeof(line), "OK %u\n", *local);
	assert_string_equal(ok, line);
	return fd;
}

static void test_config(void **state)
{
	struct fixture *f = *state;
	uint8_t cfg[8];
	uint32_t lo;
	struct stat st;

	assert_int_equal(f->dev->ops->device_id, VIRTIO_ID_VSOCK);
	assert_int_equal(f->dev->num_queues, 3);
	assert_int_equal(f->dev->config_size, 8);
	f->dev->ops->config_read(f->dev, 0, cfg, 8);
	assert_memory_equal(cfg, ((uint8_t[]){CID, 0, 0, 0, 0, 0, 0, 0}), 8);
	/* As drivers read a 64-bit field: two 32-bit halves. */
	f->dev->ops->config_read(f->dev, 4, &lo, 4);
	assert_int_equal(lo, 0);
	/* Read-only: a write changes nothing. */
	f->dev->ops->config_write(f->dev, 0, "\x09", 1);
	f->dev->ops->config_read(f->dev, 0, cfg, 1);
	assert_int_equal(cfg[0], CID);
	/* Stream only: neither VIRTIO_VSOCK_F_STREAM nor F_SEQPACKET is offered. */
	assert_int_equal(f->dev->device_features & 3, 0);
	/* The device listens on the path it was given. */
	assert_int_equal(stat(f->uds, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
}

static void test_listen_path(void **state)
{
	struct fixture *f = *state;
	struct vsock_config cfg = {.cid = CID, .uds = f->uds};
	struct virtio_vsock *other;
	char path[128];
	int fd;

	/* A socket file left by a run that died is replaced. */
	virtio_vsock_destroy(f->vs);
	f->vs = NULL;
	assert_int_equal(access(f->uds, F_OK), -1); /* destroy removed it */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	{
		struct sockaddr_un a = {.sun_family = AF_UNIX};

		snprintf(a.sun_path, sizeof(a.sun_path), "%s", f->uds);
		assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	}
	close(fd);
	assert_int_equal(virtio_vsock_create(&cfg, "vsock0", &f->m, NULL, &f->vs), 0);
	f->dev = virtio_vsock_dev(f->vs);
	/* Any other file is not touched. */
	snprintf(path, sizeof(path), "%s/file", f->dir);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	close(fd);
	cfg.uds = path;
	assert_int_equal(virtio_vsock_create(&cfg, "vsock1", &f->m, NULL, &other), -EEXIST);
	assert_int_equal(access(path, F_OK), 0);
	/* CIDs 0-2 and VMADDR_CID_ANY are not a guest's. */
	cfg.uds = f->uds;
	cfg.cid = 2;
	assert_int_equal(virtio_vsock_create(&cfg, "vsock1", &f->m, NULL, &other), -EINVAL);
	cfg.cid = 0xffffffff;
	assert_int_equal(virtio_vsock_create(&cfg, "vsock1", &f->m, NULL, &other), -EINVAL);
}

static void test_host_to_guest(void **state)
{
	struct fixture *f = *state;
	struct vsock_stats st;
	struct rx_pkt p;
	uint32_t local;
	char buf[64];
	int fd;

	start(f);
	post_rx(f, 8);
	fd = open_host_conn(f, 1234, &local);

	/* Host to guest. */
	assert_int_equal(write(fd, "hello", 5), 5);
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RW);
	assert_int_equal(p.h.src_port, local);
	assert_int_equal(p.h.dst_port, 1234);
	assert_int_equal(p.h.len, 5);
	assert_memory_equal(p.data, "hello", 5);
	assert_int_equal(p.h.buf_alloc, VIRTIO_VSOCK_BUF_ALLOC);
	assert_int_equal(p.h.fwd_cnt, 0);
	assert_false(get_rx(f, &p));

	/* Guest to host. */
	send_pkt(f, VIRTIO_VSOCK_OP_RW, 1234, local, "world", 5);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "world", 5);

	/* The host is done sending: SHUTDOWN(SEND) for the guest, which can still send. */
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_SHUTDOWN);
	assert_int_equal(p.h.flags, VIRTIO_VSOCK_SHUTDOWN_SEND);
	assert_int_equal(p.h.fwd_cnt, 5);
	send_pkt(f, VIRTIO_VSOCK_OP_RW, 1234, local, "bye", 3);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), 3);

	/* The guest closes: SHUTDOWN both ways, answered with RST; the host sees EOF. */
	f->fwd_cnt = 5;
	{
		struct virtio_vsock_hdr h = ghdr(f, VIRTIO_VSOCK_OP_SHUTDOWN, 1234, local, 0);

		h.flags = VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND;
		send_raw(f, &h, NULL, 0);
	}
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(p.h.src_port, local);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), -1);
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, 0);
	assert_int_equal(st.host_conns, 1);
	assert_int_equal(st.rx_bytes, 5);
	assert_int_equal(st.tx_bytes, 8);
	assert_false(f->dev->broken);
	close(fd);
}

static void test_host_connect_refused(void **state)
{
	struct fixture *f = *state;
	struct vsock_stats st;
	struct rx_pkt p;
	char buf[16];
	int fd = host_connect(f->uds);

	f->rx_split = true;
	start(f);
	post_rx(f, 4);
	assert_int_equal(write(fd, "CONNECT 99\n", 11), 11);
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_REQUEST);
	/* Nobody listens on port 99 in the guest. */
	send_pkt(f, VIRTIO_VSOCK_OP_RST, 99, p.h.src_port, NULL, 0);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), -1); /* closed, no OK */
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, 0);
	close(fd);
}

static void test_connect_line(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
	    "HELLO\n",	     "CONNECT\n",
	    "CONNECT 12x\n", "CONNECT 4294967296\n",
	    "connect 5\n",   "CONNECT -1\n",
	    "CONNECT 1 2\n", "CONNECT 000000000000000000000000000001\n",
	};
	char buf[64], long_line[VIRTIO_VSOCK_LINE_MAX + 8];
	struct vsock_stats st;
	struct rx_pkt p;
	uint32_t local;
	int fd;

	start(f);
	post_rx(f, 8);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fd = host_connect(f->uds);
		assert_int_equal(write(fd, bad[i], strlen(bad[i])), (ssize_t)strlen(bad[i]));
		virtio_vsock_poll(f->vs);
		virtio_vsock_poll(f->vs);
		assert_int_equal(host_read(fd, buf, sizeof(buf)), -1);
		close(fd);
	}
	/* No newline within the bound: closed, without waiting for one. */
	memset(long_line, 'C', sizeof(long_line));
	fd = host_connect(f->uds);
	assert_int_equal(write(fd, long_line, sizeof(long_line)), sizeof(long_line));
	virtio_vsock_poll(f->vs);
	virtio_vsock_poll(f->vs);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), -1);
	close(fd);
	assert_false(get_rx(f, &p)); /* the guest heard of none of them */
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, 0);

	/* A line in pieces, and data right behind it, which reaches the guest after the OK. */
	fd = host_connect(f->uds);
	assert_int_equal(write(fd, "CONN", 4), 4);
	virtio_vsock_poll(f->vs);
	assert_false(get_rx(f, &p));
	assert_int_equal(write(fd, "ECT 77\nearly", 12), 12);
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_REQUEST);
	assert_int_equal(p.h.dst_port, 77);
	local = p.h.src_port;
	send_pkt(f, VIRTIO_VSOCK_OP_RESPONSE, 77, local, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RW);
	assert_int_equal(p.h.len, 5);
	assert_memory_equal(p.data, "early", 5);
	snprintf(long_line, sizeof(long_line), "OK %u\n", local);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), (ssize_t)strlen(long_line));
	assert_memory_equal(buf, long_line, strlen(long_line));
	close(fd);
}

static void test_guest_to_host(void **state)
{
	struct fixture *f = *state;
	int lfd = host_listen(f, 5000), fd;
	struct vsock_stats st;
	struct rx_pkt p;
	char buf[64];

	f->rx_split = true;
	start(f);
	post_rx(f, 8);
	send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 40000, 5000, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RESPONSE);
	assert_int_equal(p.h.src_cid, VSOCK_HOST_CID);
	assert_int_equal(p.h.src_port, 5000);
	assert_int_equal(p.h.dst_port, 40000);
	assert_int_equal(p.h.buf_alloc, VIRTIO_VSOCK_BUF_ALLOC);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);

	send_pkt(f, VIRTIO_VSOCK_OP_RW, 40000, 5000, "ping", 4);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(write(fd, "pong", 4), 4);
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RW);
	assert_int_equal(p.h.len, 4);
	assert_memory_equal(p.data, "pong", 4);
	assert_int_equal(p.h.fwd_cnt, 4);

	/* The host closes altogether: SHUTDOWN both ways, and the guest's RST ends it. */
	close(fd);
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_SHUTDOWN);
	assert_int_equal(p.h.flags, VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
	send_pkt(f, VIRTIO_VSOCK_OP_RST, 40000, 5000, NULL, 0);
	assert_false(get_rx(f, &p));
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, 0);
	assert_int_equal(st.guest_conns, 1);

	/* Nobody listens on port 5001: RST from that port. */
	send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 40001, 5001, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(p.h.src_cid, VSOCK_HOST_CID);
	assert_int_equal(p.h.src_port, 5001);
	assert_int_equal(p.h.dst_port, 40001);
	close(lfd);
}

static void test_guest_credit_respected(void **state)
{
	struct fixture *f = *state;
	static uint8_t data[32 * 1024], got[32 * 1024];
	uint32_t local, total = 0;
	struct rx_pkt p;
	int fd;

	pattern(data, sizeof(data), 7);
	f->buf_alloc = 10000; /* not a multiple of the buffers' size */
	start(f);
	post_rx(f, 4);
	fd = open_host_conn(f, 80, &local);
	assert_int_equal(write(fd, data, sizeof(data)), (ssize_t)sizeof(data));
	virtio_vsock_poll(f->vs);
	post_rx(f, 8);
	virtio_vsock_poll(f->vs);
	/* Exactly the guest's credit, and not a byte more while it stands. */
	while (get_rx(f, &p)) {
		assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RW);
		memcpy(got + total, p.data, p.h.len);
		total += p.h.len;
	}
	assert_int_equal(total, 10000);
	virtio_vsock_poll(f->vs);
	assert_false(get_rx(f, &p));

	/* The guest's application read 6000 bytes: the guest tells the device, which sends that
	 * much more. */
	f->fwd_cnt = 6000;
	send_pkt(f, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 80, local, NULL, 0);
	while (get_rx(f, &p)) {
		assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RW);
		memcpy(got + total, p.data, p.h.len);
		total += p.h.len;
	}
	assert_int_equal(total, 16000);

	/* A bigger buffer announced on any packet counts too; then the rest arrives, in order. */
	f->fwd_cnt = 16000;
	f->buf_alloc = 64 * 1024;
	send_pkt(f, VIRTIO_VSOCK_OP_RW, 80, local, "x", 1);
	for (int round = 0; round < 8 && total < sizeof(data); round++) {
		post_rx(f, RX_SLOTS - (f->rx_posted - f->rx_seen));
		virtio_vsock_poll(f->vs);
		while (get_rx(f, &p)) {
			assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RW);
			memcpy(got + total, p.data, p.h.len);
			total += p.h.len;
		}
	}
	assert_int_equal(total, sizeof(data));
	assert_memory_equal(got, data, sizeof(data));
	assert_false(f->dev->broken);
	close(fd);
}

static void test_guest_without_buffers(void **state)
{
	struct fixture *f = *state;
	uint32_t local;
	struct rx_pkt p;
	int fd;

	start(f);
	post_rx(f, 1);
	fd = open_host_conn(f, 81, &local);
	/* No receive buffers: the data stays in the socket; a buffer brings one packet. */
	assert_int_equal(write(fd, "abcdef", 6), 6);
	virtio_vsock_poll(f->vs);
	virtio_vsock_poll(f->vs);
	assert_false(get_rx(f, &p));
	post_rx(f, 1);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RW);
	assert_int_equal(p.h.len, 6);
	assert_memory_equal(p.data, "abcdef", 6);
	close(fd);
}

static void test_our_credit(void **state)
{
	struct fixture *f = *state;
	static uint8_t chunk[50 * 1024], sink[64 * 1024];
	uint32_t local, last_fwd = 0, updates = 0;
	uint64_t drained = 0;
	struct rx_pkt p;
	int fd;

	pattern(chunk, sizeof(chunk), 1);
	start(f);
	post_rx(f, 16);
	fd = open_host_conn(f, 82, &local);
	/* The guest sends 200 KiB while the host reads nothing: once the guest's view of our free
	 * space is under a packet, we tell it what went through to the host. */
	for (int i = 0; i < 4; i++)
		send_pkt(f, VIRTIO_VSOCK_OP_RW, 82, local, chunk, sizeof(chunk));
	while (get_rx(f, &p)) {
		assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
		assert_int_equal(p.h.buf_alloc, VIRTIO_VSOCK_BUF_ALLOC);
		last_fwd = p.h.fwd_cnt;
		updates++;
	}
	assert_true(updates >= 1);
	assert_true(last_fwd > 0);
	/* The host drains it all; what was buffered goes on, and the guest hears of it. */
	for (int round = 0; round < 64 && drained < 4 * sizeof(chunk); round++) {
		ssize_t n = host_read(fd, sink, sizeof(sink));

		assert_true(n >= 0);
		drained += (uint64_t)n;
		virtio_vsock_poll(f->vs);
	}
	assert_int_equal(drained, 4 * sizeof(chunk));
	/* Asked for its credit, the device answers. */
	send_pkt(f, VIRTIO_VSOCK_OP_CREDIT_REQUEST, 82, local, NULL, 0);
	while (get_rx(f, &p)) {
		assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
		last_fwd = p.h.fwd_cnt;
	}
	assert_int_equal(last_fwd, 4 * sizeof(chunk));
	close(fd);
}

static void test_guest_overrun_is_reset(void **state)
{
	struct fixture *f = *state;
	static uint8_t chunk[60 * 1024];
	int lfd = host_listen(f, 6000), fd;
	struct vsock_stats st;
	struct rx_pkt p;
	uint64_t sent = 0;
	bool reset = false;

	start(f);
	post_rx(f, 16);
	send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 41000, 6000, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RESPONSE);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	/* The host reads nothing; the guest ignores its credit (the device's fwd_cnt stays low,
	 * since only what the socket takes is forwarded). */
	for (int i = 0; i < 32 && !reset; i++) {
		send_pkt(f, VIRTIO_VSOCK_OP_RW, 41000, 6000, chunk, sizeof(chunk));
		sent += sizeof(chunk);
		while (get_rx(f, &p))
			reset |= p.h.op == VIRTIO_VSOCK_OP_RST;
	}
	assert_true(reset);
	assert_true(sent > VIRTIO_VSOCK_BUF_ALLOC);
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, 0);
	/* The device held no more than it advertised: what the socket took, plus at most
	 * VIRTIO_VSOCK_BUF_ALLOC, which is dropped with the connection. */
	assert_true(st.tx_bytes < sent);
	assert_false(f->dev->broken);
	close(fd);
	close(lfd);
}

static void test_timeouts(void **state)
{
	struct fixture *f = *state;
	struct vsock_stats st;
	struct rx_pkt p;
	uint32_t local;
	char buf[16];
	int fd, fd2;

	start(f);
	post_rx(f, 8);
	/* A REQUEST the guest never answers. */
	fd = host_connect(f->uds);
	assert_int_equal(write(fd, "CONNECT 9\n", 10), 10);
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_REQUEST);
	now_ns += (VIRTIO_VSOCK_REQUEST_TIMEOUT_MS - 100) * 1000000ULL;
	virtio_vsock_poll(f->vs);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), 0); /* still waiting */
	now_ns += 200 * 1000000ULL;
	virtio_vsock_poll(f->vs);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), -1);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	close(fd);

	/* A SHUTDOWN the guest never answers with RST. */
	fd2 = open_host_conn(f, 10, &local);
	close(fd2);
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_SHUTDOWN);
	now_ns += 3 * SEC;
	virtio_vsock_poll(f->vs);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(p.h.src_port, local);
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, 0);
}

static void test_malformed_packets(void **state)
{
	struct fixture *f = *state;
	int lfd = host_listen(f, 7000), fd;
	struct virtio_vsock_hdr h;
	struct vsock_stats st;
	struct rx_pkt p;
	char buf[16];

	start(f);
	post_rx(f, 24);
	/* A length beyond the chain. */
	h = ghdr(f, VIRTIO_VSOCK_OP_RW, 1, 2, 100);
	send_raw(f, &h, "short", 5);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(p.h.dst_port, 1);
	/* Unknown operations. */
	send_pkt(f, VIRTIO_VSOCK_OP_INVALID, 1, 2, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	send_pkt(f, 99, 1, 2, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	/* SEQPACKET was not offered. */
	h = ghdr(f, VIRTIO_VSOCK_OP_REQUEST, 1, 7000, 0);
	h.type = VIRTIO_VSOCK_TYPE_SEQPACKET;
	send_raw(f, &h, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	/* To another CID: refused from there. */
	h = ghdr(f, VIRTIO_VSOCK_OP_REQUEST, 1, 7000, 0);
	h.dst_cid = 7;
	send_raw(f, &h, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(p.h.src_cid, 7);
	/* From a CID that is not the guest's: dropped, unanswered. */
	h = ghdr(f, VIRTIO_VSOCK_OP_REQUEST, 1, 7000, 0);
	h.src_cid = 4;
	send_raw(f, &h, NULL, 0);
	/* Data, SHUTDOWN, a RESPONSE for no connection: RST; an RST for none: nothing. */
	send_pkt(f, VIRTIO_VSOCK_OP_RW, 1, 2, "x", 1);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	send_pkt(f, VIRTIO_VSOCK_OP_RESPONSE, 1, 2, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	send_pkt(f, VIRTIO_VSOCK_OP_RST, 1, 2, NULL, 0);
	assert_false(get_rx(f, &p));
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.dropped, 1);
	assert_int_equal(st.open_conns, 0);
	assert_int_equal(accept4(lfd, NULL, NULL, SOCK_NONBLOCK), -1); /* nothing connected */

	/* On a live connection, a bad packet resets it, and the host sees the end. */
	send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 3, 7000, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RESPONSE);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	h = ghdr(f, VIRTIO_VSOCK_OP_SHUTDOWN, 3, 7000, 4);
	send_raw(f, &h, "junk", 4); /* a payload on a control packet */
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), -1);
	close(fd);
	/* A second REQUEST on a live connection, too. */
	send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 4, 7000, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RESPONSE);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 4, 7000, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), -1);
	close(fd);
	assert_false(f->dev->broken);
	close(lfd);
}

static void test_short_header_breaks(void **state)
{
	struct fixture *f = *state;
	uint16_t s = 0;

	start(f);
	memset(f->ram + TX_BUF, 0, HDR);
	vd_desc(&f->tx, 2 * s, TX_BUF, HDR - 1, 0, 0);
	vd_publish(&f->tx, 2 * s);
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_true(f->dev->broken);
	assert_true(f->dev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
}

static void test_writable_transmit_breaks(void **state)
{
	struct fixture *f = *state;
	struct virtio_vsock_hdr h = ghdr(f, VIRTIO_VSOCK_OP_REQUEST, 1, 2, 0);

	start(f);
	memcpy(f->ram + TX_BUF, &h, HDR);
	vd_desc(&f->tx, 0, TX_BUF, HDR, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->tx, 1, TX_BUF + 0x100, 16, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->tx, 0);
	f->dev->ops->queue_notify(f->dev, TXQ);
	assert_true(f->dev->broken);
}

static void test_bad_receive_chains_break(void **state)
{
	struct fixture *f = *state;

	/* A receive buffer the device may only read. */
	start(f);
	vd_desc(&f->rx, 0, RX_BUF, 4096, 0, 0);
	vd_publish(&f->rx, 0);
	send_pkt(f, VIRTIO_VSOCK_OP_RW, 1, 2, "x", 1); /* an RST is owed */
	assert_true(f->dev->broken);
	assert_int_equal(vd_used_idx(&f->rx), 0);
}

static void test_small_receive_chain(void **state)
{
	struct fixture *f = *state;
	struct rx_pkt p;
	uint32_t local;
	int fd;

	start(f);
	post_rx(f, 1);
	fd = open_host_conn(f, 83, &local);
	assert_int_equal(write(fd, "data", 4), 4);
	/* A chain with room for a header alone: it cannot carry data; the device waits. */
	vd_desc(&f->rx, 2 * (f->rx_posted % RX_SLOTS), RX_BUF, HDR, VIRTQ_DESC_F_WRITE, 0);
	vd_publish(&f->rx, (uint16_t)(2 * (f->rx_posted % RX_SLOTS)));
	f->rx_posted++;
	virtio_vsock_poll(f->vs);
	assert_false(get_rx(f, &p));
	assert_false(f->dev->broken);
	close(fd);
}

static void test_reset_frees_everything(void **state)
{
	struct fixture *f = *state;
	static uint8_t chunk[60 * 1024];
	int lfd = host_listen(f, 8000), hfd, gfd, line;
	struct vsock_stats st;
	struct rx_pkt p;
	uint32_t local;
	char buf[16];

	start(f);
	post_rx(f, 8);
	hfd = open_host_conn(f, 84, &local);
	send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 42000, 8000, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RESPONSE);
	gfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	/* Data buffered in the device, a connection still in its CONNECT line. */
	for (int i = 0; i < 6; i++)
		send_pkt(f, VIRTIO_VSOCK_OP_RW, 42000, 8000, chunk, sizeof(chunk));
	line = host_connect(f->uds);
	assert_int_equal(write(line, "CONN", 4), 4);
	virtio_vsock_poll(f->vs);
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, 3);

	f->dev->ops->reset(f->dev);
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, 0);
	assert_int_equal(host_read(hfd, buf, sizeof(buf)), -1);
	assert_int_equal(host_read(line, buf, sizeof(buf)), -1);
	while (host_read(gfd, chunk, sizeof(chunk)) > 0)
		;
	assert_int_equal(host_read(gfd, buf, sizeof(buf)), -1);
	close(hfd);
	close(gfd);
	close(line);

	/* The device serves a new driver as before: the listening socket stays. */
	for (unsigned q = 0; q < 3; q++)
		virtq_reset(&f->dev->vqs[q]);
	f->rx_posted = f->rx_seen = 0;
	f->tx_sent = 0;
	start(f);
	post_rx(f, 4);
	hfd = open_host_conn(f, 85, &local);
	close(hfd);
	close(lfd);
}

static void test_connection_limit(void **state)
{
	struct fixture *f = *state;
	struct rlimit rl;
	struct vsock_stats st;
	struct rx_pkt p;
	int lfd, fd;
	char buf[8];

	/* The device's 1024 sockets and the test's own. */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_max < VIRTIO_VSOCK_MAX_CONNS + 64) {
		skip();
		return;
	}
	rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	lfd = host_listen(f, 9000);
	start(f);
	for (uint32_t i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
		if (f->rx_posted == f->rx_seen)
			post_rx(f, RX_SLOTS);
		send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 10000 + i, 9000, NULL, 0);
		expect_rx(f, &p, VIRTIO_VSOCK_OP_RESPONSE);
	}
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, VIRTIO_VSOCK_MAX_CONNS);
	/* One more from the guest: RST; one more from the host: closed. */
	post_rx(f, 4);
	send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 20000, 9000, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RST);
	fd = host_connect(f->uds);
	virtio_vsock_poll(f->vs);
	assert_int_equal(host_read(fd, buf, sizeof(buf)), -1);
	close(fd);
	/* One closed: room for one again. */
	send_pkt(f, VIRTIO_VSOCK_OP_RST, 10000, 9000, NULL, 0);
	send_pkt(f, VIRTIO_VSOCK_OP_REQUEST, 20000, 9000, NULL, 0);
	expect_rx(f, &p, VIRTIO_VSOCK_OP_RESPONSE);
	f->dev->ops->reset(f->dev);
	virtio_vsock_stats(f->vs, &st);
	assert_int_equal(st.open_conns, 0);
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_listen_path, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_host_to_guest, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_host_connect_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connect_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_to_host, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_credit_respected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_without_buffers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_our_credit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_overrun_is_reset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_packets, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_short_header_breaks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writable_transmit_breaks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_receive_chains_break, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_small_receive_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reset_frees_everything, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connection_limit, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
