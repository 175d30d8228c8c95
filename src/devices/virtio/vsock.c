// SPDX-License-Identifier: MIT
#include "devices/virtio/vsock.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/snapshot_file.h"

#define RXQ	   0
#define TXQ	   1
#define EVQ	   2
#define QUEUE_SIZE 256
#define HDR	   ((uint32_t)sizeof(struct virtio_vsock_hdr))
/* The most payload one packet to the guest carries (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
#define MAX_PKT (64 * 1024)
/* Tell the guest of forwarded bytes once its view of our free space falls below a packet. */
#define CREDIT_LOW MAX_PKT
/* RSTs owed to the guest for packets of no connection; more are dropped (the guest times out). */
#define RST_QUEUE  256
#define HASH_SIZE  256
#define TICK_NS	   (250 * 1000000ULL)
#define MAX_EVENTS 64
/* epoll data for the two sockets that are not connections. */
#define EV_LISTEN UINT64_MAX
#define EV_TIMER  (UINT64_MAX - 1)

enum conn_state {
	CONN_FREE = 0,
	CONN_HOST_LINE,	   /* the host connected; its CONNECT line is being read */
	CONN_HOST_REQUEST, /* a REQUEST for the guest, queued or sent; awaiting the RESPONSE */
	CONN_ESTABLISHED,
	CONN_CLOSING, /* the host closed: SHUTDOWN sent to the guest, awaiting its RST */
};

/* Control packets a connection owes the guest. */
#define PEND_REQUEST  1u
#define PEND_RESPONSE 2u
#define PEND_SHUTDOWN 4u
#define PEND_CREDIT   8u

struct vsock_conn {
	enum conn_state state;
	uint32_t gen; /* tells a stale epoll event from one for this slot's new connection */
	bool queued;  /* in the rx FIFO (the slot's, kept across a close until popped) */
	bool hashed;
	int fd;
	uint32_t local_port; /* the host's end, CID 2 */
	uint32_t peer_port;  /* the guest's end */
	int hash_next;
	uint32_t events; /* the epoll interest registered; 0: not in the set */
	unsigned pend;
	uint32_t shutdown_flags; /* with PEND_SHUTDOWN */
	bool readable;		 /* the socket has data (or EOF) for the guest */
	bool host_eof;		 /* it said EOF: the host sends no more */
	uint32_t guest_shut;	 /* SHUTDOWN flags from the guest */
	bool shut_rd, shut_wr;	 /* done on the socket */
	/* §5.10.6.3: the guest's buffer as it last told us, and what we sent into it ... */
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
	/* ... and ours: bytes from the guest, those written to the host, and the count the guest
	 * last saw. rx_cnt - fwd_cnt bytes wait in buf. */
	uint32_t rx_cnt, fwd_cnt, fwd_cnt_sent;
	uint8_t *buf; /* a ring of VIRTIO_VSOCK_BUF_ALLOC bytes, allocated when first needed */
	uint32_t buf_head, buf_len;
	uint64_t deadline; /* ns; 0: none */
	char line[VIRTIO_VSOCK_LINE_MAX];
	unsigned line_len;
};

/* An RST owed to the guest; src_cid is the address the guest sent to. */
struct rst {
	uint64_t src_cid;
	uint32_t local_port, peer_port;
};

struct virtio_vsock {
	struct virtio_dev vdev;
	char id[16];
	uint64_t cid;
	char path[VIRTIO_VSOCK_PATH_MAX + 1];
	uint64_t (*clock)(void);
	struct event_loop *loop;
	int epfd, listen_fd, timer_fd;
	bool timer_armed;
	uint8_t config[8]; /* guest_cid, le64 */
	struct vsock_stats stats;

	struct vsock_conn conns[VIRTIO_VSOCK_MAX_CONNS];
	unsigned nr_conns, nr_deadlines;
	int hash[HASH_SIZE];
	uint32_t next_port; /* for connections the host asks for */
	/* Connections with something for the guest, served round robin; each slot at most once. */
	uint16_t fifo[VIRTIO_VSOCK_MAX_CONNS];
	unsigned fifo_head, fifo_len;
	struct rst rsts[RST_QUEUE];
	unsigned rst_head, rst_len;

	struct virtq_chain chain;
	struct iovec iov[VIRTQ_MAX_SIZE]; /* a payload's part of a chain */
};

static uint64_t clock_ns(const struct virtio_vsock *vs)
{
	return vs->clock ? vs->clock() : monotonic_ns();
}

/* The part [off, off + len) of an iovec, as an iovec in dst; returns its entries. */
static unsigned iov_range(const struct iovec *src, unsigned nr, uint64_t off, uint64_t len,
			  struct iovec *dst)
{
	unsigned n = 0;

	for (unsigned i = 0; i < nr && len; i++) {
		uint64_t take;

		if (off >= src[i].iov_len) {
			off -= src[i].iov_len;
			continue;
		}
		take = src[i].iov_len - off;
		if (take > len)
			take = len;
		dst[n++] = (struct iovec){(uint8_t *)src[i].iov_base + off, take};
		len -= take;
		off = 0;
	}
	return n;
}

/* ---- Connections: table, hash by (host port, guest port), epoll interest ---- */

static unsigned hash_ports(uint32_t local, uint32_t peer)
{
	return (local * 2654435761u ^ peer * 40503u) % HASH_SIZE;
}

static struct vsock_conn *lookup(struct virtio_vsock *vs, uint32_t local, uint32_t peer)
{
	for (int i = vs->hash[hash_ports(local, peer)]; i >= 0; i = vs->conns[i].hash_next) {
		struct vsock_conn *c = &vs->conns[i];

		if (c->local_port == local && c->peer_port == peer)
			return c;
	}
	return NULL;
}

static void hash_add(struct virtio_vsock *vs, struct vsock_conn *c)
{
	unsigned h = hash_ports(c->local_port, c->peer_port);

	c->hash_next = vs->hash[h];
	vs->hash[h] = (int)(c - vs->conns);
	c->hashed = true;
}

static void hash_del(struct virtio_vsock *vs, struct vsock_conn *c)
{
	int self = (int)(c - vs->conns);

	for (int *p = &vs->hash[hash_ports(c->local_port, c->peer_port)]; *p >= 0;
	     p = &vs->conns[*p].hash_next) {
		if (*p == self) {
			*p = c->hash_next;
			break;
		}
	}
	c->hashed = false;
}

/* Bytes the guest can take now on c (§5.10.6.3: buf_alloc - (tx_cnt - fwd_cnt)). */
static uint32_t peer_credit(const struct vsock_conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

	/* A guest that claims to have forwarded more than it got only stalls itself. */
	return in_flight > c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

static bool wants_read(const struct vsock_conn *c)
{
	return c->state == CONN_ESTABLISHED && !c->host_eof &&
	       !(c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_RCV) && peer_credit(c) > 0;
}

static bool has_work(const struct vsock_conn *c)
{
	return c->pend || (wants_read(c) && c->readable);
}

static void set_deadline(struct virtio_vsock *vs, struct vsock_conn *c, uint64_t ms)
{
	if (!c->deadline)
		vs->nr_deadlines++;
	c->deadline = clock_ns(vs) + ms * 1000000ULL;
	if (!c->deadline)
		c->deadline = 1;
}

static void clear_deadline(struct virtio_vsock *vs, struct vsock_conn *c)
{
	if (c->deadline)
		vs->nr_deadlines--;
	c->deadline = 0;
}

/* Watch the socket for what c can use now: data while the guest can take it, room to write
 * while guest data waits; a socket with nothing to watch for leaves the set (so a hung-up
 * socket, always ready, does not spin the loop). */
static void update_interest(struct virtio_vsock *vs, struct vsock_conn *c)
{
	uint32_t want = 0;
	struct epoll_event ev;
	int op;

	if (c->state == CONN_HOST_LINE || (wants_read(c) && !c->readable))
		want |= EPOLLIN;
	if (c->buf_len)
		want |= EPOLLOUT;
	if (want == c->events)
		return;
	op = !want ? EPOLL_CTL_DEL : c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	ev.events = want;
	ev.data.u64 = (uint64_t)c->gen << 32 | (uint64_t)(c - vs->conns);
	if (epoll_ctl(vs->epfd, op, c->fd, &ev) < 0) {
		log_warn("%s: epoll on port %u: %s", vs->id, c->local_port, strerror(errno));
		return;
	}
	c->events = want;
}

static void queue_conn(struct virtio_vsock *vs, struct vsock_conn *c)
{
	if (c->queued || !has_work(c))
		return;
	c->queued = true;
	vs->fifo[(vs->fifo_head + vs->fifo_len++) % VIRTIO_VSOCK_MAX_CONNS] =
	    (uint16_t)(c - vs->conns);
}

/* After anything that changed c: its epoll interest, and its place in the rx FIFO. */
static void conn_update(struct virtio_vsock *vs, struct vsock_conn *c)
{
	if (c->state == CONN_FREE)
		return;
	update_interest(vs, c);
	queue_conn(vs, c);
}

static struct vsock_conn *conn_alloc(struct virtio_vsock *vs, int fd)
{
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &vs->conns[i];
		bool queued = c->queued;
		uint32_t gen = c->gen + 1;

		if (c->state != CONN_FREE)
			continue;
		memset(c, 0, sizeof(*c));
		c->queued = queued;
		c->gen = gen;
		c->fd = fd;
		c->hash_next = -1;
		vs->nr_conns++;
		return c;
	}
	return NULL;
}

static void conn_close(struct virtio_vsock *vs, struct vsock_conn *c)
{
	if (c->state == CONN_FREE)
		return;
	if (c->events)
		epoll_ctl(vs->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->hashed)
		hash_del(vs, c);
	clear_deadline(vs, c);
	free(c->buf);
	c->buf = NULL;
	c->state = CONN_FREE;
	vs->nr_conns--;
}

/* An RST for the guest, from (src_cid, local) to guest port `peer`. */
static void rst_enqueue(struct virtio_vsock *vs, uint64_t src_cid, uint32_t local, uint32_t peer)
{
	if (vs->rst_len == RST_QUEUE) {
		log_guest_error("%s: RST queue full: RST to guest port %u dropped", vs->id, peer);
		return;
	}
	vs->rsts[(vs->rst_head + vs->rst_len++) % RST_QUEUE] = (struct rst){src_cid, local, peer};
}

/* Close c and tell the guest, if the guest knows of it. */
static void conn_reset(struct virtio_vsock *vs, struct vsock_conn *c)
{
	bool known = c->state != CONN_HOST_LINE &&
		     !(c->state == CONN_HOST_REQUEST && (c->pend & PEND_REQUEST));

	if (known)
		rst_enqueue(vs, VSOCK_HOST_CID, c->local_port, c->peer_port);
	conn_close(vs, c);
}

/* The answer to a guest packet that has no connection (§5.10.6.4), from where it was sent. */
static void rst_reply(struct virtio_vsock *vs, const struct virtio_vsock_hdr *h)
{
	rst_enqueue(vs, h->dst_cid, h->dst_port, h->src_port);
}

/* ---- Guest to host ---- */

/* Once the guest's view of our free space runs low, tell it what we forwarded. */
static void credit_check(struct vsock_conn *c)
{
	uint32_t seen_free = VIRTIO_VSOCK_BUF_ALLOC - (c->rx_cnt - c->fwd_cnt_sent);

	if (c->fwd_cnt != c->fwd_cnt_sent && seen_free < CREDIT_LOW)
		c->pend |= PEND_CREDIT;
}

/* The guest's SHUTDOWN flags, on the socket once its data is out (§5.10.6.5). Returns false
 * when that closed c. */
static bool apply_shutdown(struct virtio_vsock *vs, struct vsock_conn *c)
{
	if ((c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_RCV) && !c->shut_rd) {
		shutdown(c->fd, SHUT_RD);
		c->shut_rd = true;
	}
	if (c->buf_len)
		return true;
	if ((c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_SEND) && !c->shut_wr) {
		shutdown(c->fd, SHUT_WR);
		c->shut_wr = true;
	}
	/* §5.10.6.6: a clean disconnect is SHUTDOWN both ways, answered with RST. */
	if (c->guest_shut == (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND)) {
		conn_reset(vs, c);
		return false;
	}
	return true;
}

/* Write what waits in c's buffer to the socket. Returns false when that closed c. */
static bool flush(struct virtio_vsock *vs, struct vsock_conn *c)
{
	while (c->buf_len) {
		uint32_t first = VIRTIO_VSOCK_BUF_ALLOC - c->buf_head;
		struct iovec iov[2] = {
		    {c->buf + c->buf_head, first < c->buf_len ? first : c->buf_len},
		    {c->buf, first < c->buf_len ? c->buf_len - first : 0}};
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = iov[1].iov_len ? 2 : 1};
		ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			/* The host stopped reading: the guest's data cannot arrive. */
			conn_reset(vs, c);
			return false;
		}
		c->buf_head = (c->buf_head + (uint32_t)n) % VIRTIO_VSOCK_BUF_ALLOC;
		c->buf_len -= (uint32_t)n;
		c->fwd_cnt += (uint32_t)n;
		vs->stats.tx_bytes += (uint64_t)n;
	}
	credit_check(c);
	return apply_shutdown(vs, c);
}

/* An RW packet's payload: to the socket at once if nothing waits before it, the rest into the
 * buffer; a guest that sends more than the credit we gave it gets RST. */
static void guest_data(struct virtio_vsock *vs, struct vsock_conn *c, const struct virtq_chain *ch,
		       uint32_t len)
{
	unsigned nr = iov_range(ch->out, ch->nr_out, HDR, len, vs->iov);
	uint64_t sent = 0;

	if (c->buf_len + (uint64_t)len > VIRTIO_VSOCK_BUF_ALLOC) {
		log_guest_error("%s: guest port %u sent %u bytes with %u of credit: RST", vs->id,
				c->peer_port, len, VIRTIO_VSOCK_BUF_ALLOC - c->buf_len);
		conn_reset(vs, c);
		return;
	}
	if (!c->buf_len) {
		struct msghdr msg = {.msg_iov = vs->iov, .msg_iovlen = nr};
		ssize_t n;

		do
			n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_reset(vs, c);
			return;
		}
		sent = n > 0 ? (uint64_t)n : 0;
	}
	if (sent < len) {
		uint32_t tail = (c->buf_head + c->buf_len) % VIRTIO_VSOCK_BUF_ALLOC;
		uint32_t rest = len - (uint32_t)sent, first = VIRTIO_VSOCK_BUF_ALLOC - tail;

		if (!c->buf && !(c->buf = malloc(VIRTIO_VSOCK_BUF_ALLOC))) {
			log_error("%s: out of memory for port %u's buffer", vs->id, c->local_port);
			conn_reset(vs, c);
			return;
		}
		if (first > rest)
			first = rest;
		iov_to_buf(vs->iov, nr, sent, c->buf + tail, first);
		iov_to_buf(vs->iov, nr, sent + first, c->buf, rest - first);
		c->buf_len += rest;
	}
	c->rx_cnt += len;
	c->fwd_cnt += (uint32_t)sent;
	vs->stats.tx_bytes += sent;
	credit_check(c);
}

/* The guest connects to CID 2 port hdr->dst_port: the host's socket PATH_<port>. */
static void guest_connect(struct virtio_vsock *vs, const struct virtio_vsock_hdr *h)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct vsock_conn *c;
	int fd;

	if (vs->nr_conns == VIRTIO_VSOCK_MAX_CONNS) {
		log_guest_error("%s: %d connections: guest port %u refused", vs->id,
				VIRTIO_VSOCK_MAX_CONNS, h->src_port);
		rst_reply(vs, h);
		return;
	}
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s_%u", vs->path, h->dst_port);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* A Unix socket connects at once, or not at all (EAGAIN: its backlog is full). */
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		log_debug("%s: guest port %u to %s: %s", vs->id, h->src_port, addr.sun_path,
			  strerror(errno));
		if (fd >= 0)
			close(fd);
		rst_reply(vs, h);
		return;
	}
	c = conn_alloc(vs, fd);
	c->state = CONN_ESTABLISHED;
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->pend = PEND_RESPONSE;
	hash_add(vs, c);
	vs->stats.guest_conns++;
	conn_update(vs, c);
}

/* The guest's RESPONSE to a host's CONNECT: tell the host, then relay. */
static void host_established(struct virtio_vsock *vs, struct vsock_conn *c)
{
	char ok[24];
	int len = snprintf(ok, sizeof(ok), "OK %u\n", c->local_port);

	clear_deadline(vs, c);
	c->state = CONN_ESTABLISHED;
	/* Nothing was written to this socket before: a line this short goes in whole. */
	if (send(c->fd, ok, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) != len) {
		conn_reset(vs, c);
		return;
	}
	c->readable = true; /* data may have come with the CONNECT line */
}

static const char *op_name(uint16_t op)
{
	static const char *const names[] = {"INVALID",	     "REQUEST",	      "RESPONSE",
					    "RST",	     "SHUTDOWN",      "RW",
					    "CREDIT_UPDATE", "CREDIT_REQUEST"};

	return op < sizeof(names) / sizeof(names[0]) ? names[op] : "unknown";
}

/* One packet from the guest, its header checked field by field (§5.10.6). */
static void guest_packet(struct virtio_vsock *vs, const struct virtio_vsock_hdr *h,
			 const struct virtq_chain *ch)
{
	struct vsock_conn *c;
	const char *bad = NULL;

	vs->stats.tx_packets++;
	/* Not from the guest's own address: nothing sensible to answer. */
	if (h->src_cid != vs->cid) {
		log_guest_error("%s: packet from CID %llu, not the guest's %llu: dropped", vs->id,
				(unsigned long long)h->src_cid, (unsigned long long)vs->cid);
		vs->stats.dropped++;
		return;
	}
	/* Only the host is served here: a connection elsewhere is refused at once. */
	if (h->dst_cid != VSOCK_HOST_CID) {
		if (h->op != VIRTIO_VSOCK_OP_RST)
			rst_reply(vs, h);
		return;
	}
	if (h->len > ch->out_len - HDR)
		bad = "a length beyond its buffers";
	else if (h->op == VIRTIO_VSOCK_OP_INVALID || h->op > VIRTIO_VSOCK_OP_CREDIT_REQUEST)
		bad = "an unknown operation";
	else if (h->len && h->op != VIRTIO_VSOCK_OP_RW)
		bad = "a payload on a control packet";
	else if (h->type != VIRTIO_VSOCK_TYPE_STREAM)
		bad = "a socket type other than stream"; /* no VIRTIO_VSOCK_F_SEQPACKET */
	c = lookup(vs, h->dst_port, h->src_port);
	if (bad) {
		log_guest_error("%s: %s packet from guest port %u with %s (len %u, type %u): RST",
				vs->id, op_name(h->op), h->src_port, bad, h->len, h->type);
		if (c)
			conn_reset(vs, c);
		else if (h->op != VIRTIO_VSOCK_OP_RST)
			rst_reply(vs, h);
		return;
	}
	if (!c) {
		if (h->op == VIRTIO_VSOCK_OP_REQUEST)
			guest_connect(vs, h);
		else if (h->op != VIRTIO_VSOCK_OP_RST)
			rst_reply(vs, h);
		return;
	}
	/* Every packet carries the guest's credit for the connection (§5.10.6.3). */
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case VIRTIO_VSOCK_OP_REQUEST:
		conn_reset(vs, c); /* a second REQUEST on a live connection */
		return;
	case VIRTIO_VSOCK_OP_RESPONSE:
		if (c->state != CONN_HOST_REQUEST || (c->pend & PEND_REQUEST)) {
			conn_reset(vs, c);
			return;
		}
		host_established(vs, c);
		break;
	case VIRTIO_VSOCK_OP_RST:
		conn_close(vs, c);
		return;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		if (c->state != CONN_ESTABLISHED && c->state != CONN_CLOSING) {
			conn_reset(vs, c);
			return;
		}
		c->guest_shut |=
		    h->flags & (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
		if (c->state == CONN_CLOSING)
			c->guest_shut = VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND;
		if (!apply_shutdown(vs, c))
			return;
		break;
	case VIRTIO_VSOCK_OP_RW:
		if (c->state != CONN_ESTABLISHED || (c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_SEND)) {
			conn_reset(vs, c);
			return;
		}
		guest_data(vs, c, ch, h->len);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
		break; /* taken above */
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		c->pend |= PEND_CREDIT;
		break;
	}
	conn_update(vs, c);
}

static void vsock_rx(struct virtio_vsock *vs);

static void vsock_tx(struct virtio_vsock *vs)
{
	struct virtio_dev *d = &vs->vdev;
	struct virtq_chain *ch = &vs->chain;
	bool served = false;
	int r;

	while ((r = virtq_pop_or_arm(&vs->vdev.vqs[TXQ], &vs->chain)) == 1) {
		struct virtio_vsock_hdr h;

		/* §5.10.6.2: a packet is header and payload, device-readable only. */
		if (ch->nr_in || ch->out_len < HDR) {
			virtio_dev_error(d, "transmit chain of %llu+%llu bytes",
					 (unsigned long long)ch->out_len,
					 (unsigned long long)ch->in_len);
			break;
		}
		iov_to_buf(ch->out, ch->nr_out, 0, &h, HDR);
		guest_packet(vs, &h, ch);
		virtq_push(&d->vqs[TXQ], ch->head, 0);
		served = true;
	}
	if (r < 0)
		virtio_dev_error(d, "malformed transmit chain");
	if (served)
		virtio_queue_notify_driver(d, TXQ);
	/* Answers (RESPONSE, RST, CREDIT_UPDATE) go out now. */
	vsock_rx(vs);
}

/* ---- Host to guest ---- */

static void hdr_for(struct virtio_vsock *vs, struct virtio_vsock_hdr *h, uint32_t local,
		    uint32_t peer, uint16_t op)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = VSOCK_HOST_CID;
	h->dst_cid = vs->cid;
	h->src_port = local;
	h->dst_port = peer;
	h->type = VIRTIO_VSOCK_TYPE_STREAM;
	h->op = op;
}

/* A packet of c with our credit in it; sending any packet tells the guest our fwd_cnt. */
static void conn_hdr(struct virtio_vsock *vs, struct vsock_conn *c, struct virtio_vsock_hdr *h,
		     uint16_t op)
{
	hdr_for(vs, h, c->local_port, c->peer_port, op);
	h->buf_alloc = VIRTIO_VSOCK_BUF_ALLOC;
	h->fwd_cnt = c->fwd_cnt;
	c->fwd_cnt_sent = c->fwd_cnt;
	c->pend &= ~PEND_CREDIT;
}

/* The host ended its side (EOF): SHUTDOWN for the guest, both ways if it closed altogether. */
static void host_eof(struct virtio_vsock *vs, struct vsock_conn *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLOUT};

	c->host_eof = true;
	c->readable = false;
	c->pend |= PEND_SHUTDOWN;
	c->shutdown_flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
	/* POLLHUP: neither direction is open any more (the host closed, or it half-closed and so
	 * did the guest). Then the guest is to answer with RST. */
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
		c->shutdown_flags |= VIRTIO_VSOCK_SHUTDOWN_RCV;
		c->state = CONN_CLOSING;
		set_deadline(vs, c, VIRTIO_VSOCK_CLOSE_TIMEOUT_MS);
	}
}

/*
 * Read c's socket straight into the receive chain after the header, at most the guest's credit.
 * Returns the payload bytes, 0 when there was nothing (EAGAIN, EOF), -1 when that closed c.
 */
static int64_t host_read(struct virtio_vsock *vs, struct vsock_conn *c)
{
	const struct virtq_chain *ch = &vs->chain;
	uint64_t max = ch->in_len - HDR;
	unsigned nr;
	ssize_t n;

	if (max > peer_credit(c))
		max = peer_credit(c);
	if (max > MAX_PKT)
		max = MAX_PKT;
	if (!max)
		return 0; /* a chain with room for the header alone */
	nr = iov_range(ch->in, ch->nr_in, HDR, max, vs->iov);
	do
		n = readv(c->fd, vs->iov, (int)nr);
	while (n < 0 && errno == EINTR);
	if (n > 0)
		return n;
	if (n == 0) {
		host_eof(vs, c);
	} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
		c->readable = false;
	} else {
		conn_reset(vs, c);
		return -1;
	}
	return 0;
}

/* c's next packet for the guest into the popped chain; returns its length, 0 for none. */
static uint32_t conn_packet(struct virtio_vsock *vs, struct vsock_conn *c)
{
	struct virtio_vsock_hdr h;
	uint16_t op = VIRTIO_VSOCK_OP_INVALID;
	int64_t n = 0;

	if (c->pend & PEND_REQUEST) {
		c->pend &= ~PEND_REQUEST;
		op = VIRTIO_VSOCK_OP_REQUEST;
	} else if (c->pend & PEND_RESPONSE) {
		c->pend &= ~PEND_RESPONSE;
		op = VIRTIO_VSOCK_OP_RESPONSE;
	} else if (wants_read(c) && c->readable && (n = host_read(vs, c)) != 0) {
		if (n < 0)
			return 0;
		op = VIRTIO_VSOCK_OP_RW;
	} else if (c->pend & PEND_SHUTDOWN) {
		c->pend &= ~PEND_SHUTDOWN;
		op = VIRTIO_VSOCK_OP_SHUTDOWN;
	} else if (c->pend & PEND_CREDIT) {
		op = VIRTIO_VSOCK_OP_CREDIT_UPDATE;
	} else {
		return 0;
	}
	conn_hdr(vs, c, &h, op);
	if (op == VIRTIO_VSOCK_OP_SHUTDOWN)
		h.flags = c->shutdown_flags;
	h.len = (uint32_t)n;
	c->tx_cnt += (uint32_t)n;
	vs->stats.rx_bytes += (uint64_t)n;
	iov_from_buf(vs->chain.in, vs->chain.nr_in, 0, &h, HDR);
	return HDR + (uint32_t)n;
}

/* The next packet for the guest into the popped chain: an RST owed, or a connection's packet
 * (round robin). Returns its length, 0 when that turned out to be nothing. */
static uint32_t rx_one(struct virtio_vsock *vs)
{
	struct vsock_conn *c;
	uint32_t len;

	if (vs->rst_len) {
		struct virtio_vsock_hdr h;
		struct rst *r = &vs->rsts[vs->rst_head];

		hdr_for(vs, &h, r->local_port, r->peer_port, VIRTIO_VSOCK_OP_RST);
		h.src_cid = r->src_cid;
		vs->rst_head = (vs->rst_head + 1) % RST_QUEUE;
		vs->rst_len--;
		vs->stats.rsts++;
		iov_from_buf(vs->chain.in, vs->chain.nr_in, 0, &h, HDR);
		return HDR;
	}
	c = &vs->conns[vs->fifo[vs->fifo_head]];
	vs->fifo_head = (vs->fifo_head + 1) % VIRTIO_VSOCK_MAX_CONNS;
	vs->fifo_len--;
	c->queued = false;
	if (c->state == CONN_FREE)
		return 0;
	len = conn_packet(vs, c);
	conn_update(vs, c); /* back at the end of the FIFO if it has more */
	return len;
}

/* Give the guest what is owed, while it has receive buffers. */
static void vsock_rx(struct virtio_vsock *vs)
{
	struct virtio_dev *d = &vs->vdev;
	struct virtq *vq = &d->vqs[RXQ];
	bool served = false;
	int r = 0;

	if (!virtio_queue_live(d, RXQ))
		return;
	while ((vs->rst_len || vs->fifo_len) &&
	       (r = virtq_pop_or_arm(&vs->vdev.vqs[RXQ], &vs->chain)) == 1) {
		uint32_t len;

		/* §5.10.6.1: receive buffers are device-writable, room for a header at least. */
		if (vs->chain.nr_out || vs->chain.in_len < HDR) {
			virtio_dev_error(d, "receive chain of %llu+%llu bytes",
					 (unsigned long long)vs->chain.out_len,
					 (unsigned long long)vs->chain.in_len);
			break;
		}
		len = rx_one(vs);
		if (!len) {
			vq->last_avail_idx--; /* unused: the next packet takes it */
			/* A chain with no room for data cannot serve a connection that has only
			 * data to give: wait for the next kick rather than spin on it. */
			if (vs->chain.in_len == HDR)
				break;
			continue;
		}
		virtq_push(vq, vs->chain.head, len);
		vs->stats.rx_packets++;
		served = true;
	}
	if (r < 0)
		virtio_dev_error(d, "malformed receive chain");
	if (served)
		virtio_queue_notify_driver(d, RXQ);
}

/* ---- The host's sockets ---- */

/* "CONNECT <port>" with a decimal port that fits 32 bits. */
static int parse_connect(const char *line, uint32_t *port)
{
	unsigned long long v = 0;
	const char *p;

	if (strncmp(line, "CONNECT ", 8))
		return -EINVAL;
	for (p = line + 8; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned)(*p - '0');
		if (v > UINT32_MAX)
			return -EINVAL;
	}
	if (p == line + 8 || *p)
		return -EINVAL;
	*port = (uint32_t)v;
	return 0;
}

/* A host port for a connection to guest port `peer`, unused with it. */
static int alloc_port(struct virtio_vsock *vs, uint32_t peer, uint32_t *out)
{
	for (unsigned i = 0; i <= VIRTIO_VSOCK_MAX_CONNS; i++) {
		uint32_t p = vs->next_port++;

		if (vs->next_port == UINT32_MAX)
			vs->next_port = 1u << 30;
		if (!lookup(vs, p, peer)) {
			*out = p;
			return 0;
		}
	}
	return -EADDRINUSE;
}

/* Bytes of the CONNECT line, one read at a time so that data after it stays in the socket. */
static void host_line(struct virtio_vsock *vs, struct vsock_conn *c)
{
	uint32_t port, local;

	for (;;) {
		char ch;
		ssize_t n = read(c->fd, &ch, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			conn_close(vs, c);
			return;
		}
		if (ch == '\n')
			break;
		if (c->line_len == VIRTIO_VSOCK_LINE_MAX - 1) {
			log_warn("%s: a host connection's CONNECT line is over %d bytes: closed",
				 vs->id, VIRTIO_VSOCK_LINE_MAX - 1);
			conn_close(vs, c);
			return;
		}
		c->line[c->line_len++] = ch;
	}
	c->line[c->line_len] = '\0';
	if (parse_connect(c->line, &port)) {
		log_warn("%s: a host connection sent '%s', not 'CONNECT <port>': closed", vs->id,
			 c->line);
		conn_close(vs, c);
		return;
	}
	if (alloc_port(vs, port, &local)) {
		conn_close(vs, c);
		return;
	}
	c->state = CONN_HOST_REQUEST;
	c->local_port = local;
	c->peer_port = port;
	c->pend = PEND_REQUEST;
	hash_add(vs, c);
	set_deadline(vs, c, VIRTIO_VSOCK_REQUEST_TIMEOUT_MS);
	vs->stats.host_conns++;
	conn_update(vs, c);
}

static void host_accept(struct virtio_vsock *vs)
{
	for (unsigned i = 0; i < 16; i++) {
		int fd = accept4(vs->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct vsock_conn *c;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_warn("%s: accept on %s: %s", vs->id, vs->path, strerror(errno));
			return;
		}
		if (vs->nr_conns == VIRTIO_VSOCK_MAX_CONNS) {
			static struct log_ratelimit rl;

			log_ratelimited(&rl, LOG_WARN,
					"%s: %d connections: a host connection closed", vs->id,
					VIRTIO_VSOCK_MAX_CONNS);
			close(fd);
			continue;
		}
		c = conn_alloc(vs, fd);
		c->state = CONN_HOST_LINE;
		conn_update(vs, c);
		host_line(vs, c); /* the line may be there already */
	}
}

static void conn_event(struct virtio_vsock *vs, struct vsock_conn *c, uint32_t events)
{
	if (c->state == CONN_HOST_LINE) {
		host_line(vs, c);
		return;
	}
	if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && c->buf_len && !flush(vs, c))
		return;
	/* Data, EOF or an error: all are for the guest, in order, when it can take them. */
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		c->readable = true;
	conn_update(vs, c);
}

/* Connections whose guest did not answer in time are reset. */
static void expire(struct virtio_vsock *vs)
{
	uint64_t now;

	if (!vs->nr_deadlines)
		return;
	now = clock_ns(vs);
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &vs->conns[i];

		if (c->state == CONN_FREE || !c->deadline || c->deadline > now)
			continue;
		log_info("%s: host port %u, guest port %u: no %s from the guest in time: RST",
			 vs->id, c->local_port, c->peer_port,
			 c->state == CONN_HOST_REQUEST ? "RESPONSE" : "RST");
		conn_reset(vs, c);
	}
}

/* A periodic tick while some connection waits for the guest. */
static void arm_timer(struct virtio_vsock *vs)
{
	bool want = vs->nr_deadlines > 0;
	struct itimerspec its = {0};

	if (want == vs->timer_armed)
		return;
	if (want)
		its.it_value.tv_nsec = its.it_interval.tv_nsec = (long)TICK_NS;
	if (timerfd_settime(vs->timer_fd, 0, &its, NULL) == 0)
		vs->timer_armed = want;
}

void virtio_vsock_poll(struct virtio_vsock *vs)
{
	struct epoll_event evs[MAX_EVENTS];
	int n;

	pthread_mutex_lock(&vs->vdev.lock);
	n = epoll_wait(vs->epfd, evs, MAX_EVENTS, 0);
	for (int i = 0; i < n; i++) {
		uint64_t tag = evs[i].data.u64, ticks;
		struct vsock_conn *c;

		if (tag == EV_LISTEN) {
			host_accept(vs);
		} else if (tag == EV_TIMER) {
			if (read(vs->timer_fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
				log_warn("%s: timer: %s", vs->id, strerror(errno));
		} else {
			c = &vs->conns[(uint32_t)tag % VIRTIO_VSOCK_MAX_CONNS];
			if (c->state != CONN_FREE && c->gen == (uint32_t)(tag >> 32))
				conn_event(vs, c, evs[i].events);
		}
	}
	expire(vs);
	vsock_rx(vs);
	arm_timer(vs);
	pthread_mutex_unlock(&vs->vdev.lock);
}

static void on_epoll(void *opaque, uint32_t events)
{
	virtio_vsock_poll(opaque);
}

/* ---- Device operations ---- */

static void vsock_queue_notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_vsock *vs = d->priv;

	pthread_mutex_lock(&d->lock);
	d->stat_notifications++;
	if (q == TXQ && virtio_queue_live(d, TXQ))
		vsock_tx(vs);
	else if (q == RXQ)
		vsock_rx(vs); /* new receive buffers, for what waited */
	/* The event queue's buffers stay: no event is ever sent (§5.10.6.7). */
	arm_timer(vs);
	pthread_mutex_unlock(&d->lock);
}

static void vsock_config_read(struct virtio_dev *d, uint32_t offset, void *data, unsigned size)
{
	struct virtio_vsock *vs = d->priv;

	memset(data, 0, size);
	if (offset < sizeof(vs->config))
		memcpy(data, vs->config + offset,
		       size < sizeof(vs->config) - offset ? size : sizeof(vs->config) - offset);
}

static void vsock_config_write(struct virtio_dev *d, uint32_t offset, const void *data,
			       unsigned size)
{
	log_guest_error("%s: write to read-only configuration at %u ignored", d->id, offset);
}

static int vsock_activate(struct virtio_dev *d)
{
	/* Host connections may have come before the driver was ready. */
	vsock_rx(d->priv);
	return 0;
}

static void close_all(struct virtio_vsock *vs)
{
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
		conn_close(vs, &vs->conns[i]);
		vs->conns[i].queued = false;
	}
	vs->fifo_head = vs->fifo_len = 0;
	vs->rst_head = vs->rst_len = 0;
}

static void vsock_reset(struct virtio_dev *d)
{
	/* The driver forgot every connection: so do we, and the host's ends are closed. */
	close_all(d->priv);
}

/*
 * Snapshots: connections are the host's sockets, which a snapshot cannot hold. A restored
 * device starts with none and tells the driver so (§5.10.6.6: VIRTIO_VSOCK_EVENT_TRANSPORT_RESET),
 * as Firecracker does; the driver drops its connections and reads the CID again.
 */
#define VSOCK_EVENT_TRANSPORT_RESET 0

static void vsock_save(struct virtio_dev *d, struct snap_writer *w)
{
	struct virtio_vsock *vs = d->priv;

	snap_put(w, d->id, &vs->cid, sizeof(vs->cid));
}

static int vsock_load(struct virtio_dev *d, const struct snap_reader *r)
{
	struct virtio_vsock *vs = d->priv;
	struct virtq *vq = &d->vqs[EVQ];
	uint32_t event = VSOCK_EVENT_TRANSPORT_RESET;
	uint64_t cid;
	int err = snap_get(r, d->id, &cid, sizeof(cid));

	if (err)
		return err;
	if (cid != vs->cid)
		log_info("%s: guest CID %llu, the snapshot's was %llu", d->id,
			 (unsigned long long)vs->cid, (unsigned long long)cid);
	if (!virtio_queue_live(d, EVQ))
		return 0;
	err = virtq_pop(vq, &vs->chain);
	if (err < 0) {
		virtio_dev_error(d, "malformed event queue chain");
		return 0;
	}
	if (err == 0 || vs->chain.in_len < sizeof(event)) {
		log_warn("%s: no event buffer for the transport reset", d->id);
		if (err == 1)
			virtq_push(vq, vs->chain.head, 0);
		return 0;
	}
	iov_from_buf(vs->chain.in, vs->chain.nr_in, 0, &event, sizeof(event));
	virtq_push(vq, vs->chain.head, sizeof(event));
	virtio_queue_notify_driver(d, EVQ);
	return 0;
}

static const struct virtio_dev_ops vsock_ops = {
    .name = "virtio-vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .pci_class = {0x00, 0xff, 0x00}, /* unclassified, "other" */
    .config_read = vsock_config_read,
    .config_write = vsock_config_write,
    .activate = vsock_activate,
    .queue_notify = vsock_queue_notify,
    .reset = vsock_reset,
    .save = vsock_save,
    .load = vsock_load,
};

/* Listen on path, replacing a socket left there by an earlier run, never another file. */
static int listen_on(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, err;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_error("vsock: %s exists and is not a socket", path);
			return -EEXIST;
		}
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0) {
		err = -errno;
		log_error("vsock: %s: %s", path, strerror(errno));
		close(fd);
		return err;
	}
	return fd;
}

static int add_fd(int epfd, int fd, uint64_t tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int virtio_vsock_create(const struct vsock_config *cfg, const char *id, const struct guest_mem *mem,
			struct event_loop *loop, struct virtio_vsock **out)
{
	struct virtio_vsock *vs;
	int err;

	if (cfg->cid < VSOCK_MIN_GUEST_CID || cfg->cid > VSOCK_MAX_GUEST_CID || !cfg->uds ||
	    strlen(cfg->uds) > VIRTIO_VSOCK_PATH_MAX)
		return -EINVAL;
	vs = calloc(1, sizeof(*vs));
	if (!vs)
		return -ENOMEM;
	snprintf(vs->id, sizeof(vs->id), "%s", id);
	snprintf(vs->path, sizeof(vs->path), "%s", cfg->uds);
	vs->cid = cfg->cid;
	vs->clock = cfg->clock;
	vs->loop = loop;
	vs->next_port = 1u << 30;
	for (unsigned i = 0; i < 8; i++)
		vs->config[i] = (uint8_t)(cfg->cid >> (8 * i));
	for (unsigned i = 0; i < HASH_SIZE; i++)
		vs->hash[i] = -1;
	vs->timer_fd = -1;
	vs->listen_fd = -1;
	vs->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (vs->epfd < 0) {
		err = -errno;
		free(vs);
		return err;
	}
	vs->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	err = vs->timer_fd < 0 ? -errno : add_fd(vs->epfd, vs->timer_fd, EV_TIMER);
	if (!err) {
		vs->listen_fd = listen_on(cfg->uds);
		err =
		    vs->listen_fd < 0 ? vs->listen_fd : add_fd(vs->epfd, vs->listen_fd, EV_LISTEN);
	}
	virtio_dev_init(&vs->vdev, &vsock_ops, vs, vs->id, mem, 3, QUEUE_SIZE);
	vs->vdev.config_size = sizeof(vs->config);
	vs->vdev.device_features = (1ULL << VIRTIO_F_INDIRECT_DESC) | (1ULL << VIRTIO_F_EVENT_IDX);
	if (!err && loop)
		err = event_loop_add(loop, vs->epfd, EPOLLIN, on_epoll, vs);
	if (err) {
		vs->loop = NULL;
		virtio_vsock_destroy(vs);
		return err;
	}
	*out = vs;
	return 0;
}

struct virtio_dev *virtio_vsock_dev(struct virtio_vsock *vs)
{
	return &vs->vdev;
}

void virtio_vsock_stats(struct virtio_vsock *vs, struct vsock_stats *out)
{
	pthread_mutex_lock(&vs->vdev.lock);
	*out = vs->stats;
	out->open_conns = vs->nr_conns;
	pthread_mutex_unlock(&vs->vdev.lock);
}

void virtio_vsock_destroy(struct virtio_vsock *vs)
{
	if (!vs)
		return;
	log_info("%s: rx %llu packets %llu bytes; tx %llu packets %llu bytes; connections %llu "
		 "from the host %llu from the guest; %llu RSTs; %llu dropped",
		 vs->id, (unsigned long long)vs->stats.rx_packets,
		 (unsigned long long)vs->stats.rx_bytes, (unsigned long long)vs->stats.tx_packets,
		 (unsigned long long)vs->stats.tx_bytes, (unsigned long long)vs->stats.host_conns,
		 (unsigned long long)vs->stats.guest_conns, (unsigned long long)vs->stats.rsts,
		 (unsigned long long)vs->stats.dropped);
	if (vs->loop)
		event_loop_del(vs->loop, vs->epfd);
	close_all(vs);
	if (vs->listen_fd >= 0) {
		close(vs->listen_fd);
		unlink(vs->path);
	}
	if (vs->timer_fd >= 0)
		close(vs->timer_fd);
	close(vs->epfd);
	pthread_mutex_destroy(&vs->vdev.lock);
	free(vs);
}
