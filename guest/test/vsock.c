// SPDX-License-Identifier: MIT
/*
 * virtio-vsock (virtio 1.2 §5.10), driven by polling with one stream connection at a time:
 * features VERSION_1 only; rxq (0), txq (1) and eventq (2), no MSI-X vectors; receive buffers
 * of one descriptor each (header and payload together, §5.10.6.1), one packet per transmit
 * buffer.
 *
 * vsock_cid=N vsock_port=P ask for the checks: the configuration holds CID N; the guest
 * connects to the host (CID 2) port P, sends HELLO and reads the listener's answer, then
 * sends BULK_LEN bytes, more than the device's buf_alloc, within the credit it is given
 * (§5.10.6.3), and reads the listener's verdict on them; it shuts the connection down both ways
 * and waits for RST or the host's SHUTDOWN (§5.10.6.6). A connection to port P + 1, where
 * nobody listens, must get RST.
 */
#include "vq.h"

/* virtio 1.2 §5.10.6, little-endian. */
struct vsock_hdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

#define HDR_LEN		  44
#define HOST_CID	  2
#define TYPE_STREAM	  1
#define OP_REQUEST	  1
#define OP_RESPONSE	  2
#define OP_RST		  3
#define OP_SHUTDOWN	  4
#define OP_RW		  5
#define OP_CREDIT_UPDATE  6
#define OP_CREDIT_REQUEST 7
#define SHUTDOWN_RCV	  1
#define SHUTDOWN_SEND	  2
#define CFG_GUEST_CID	  0

#define RXQ	   0
#define TXQ	   1
#define EVQ	   2
#define VQ_SIZE	   16
#define RX_BUFS	   8
#define RX_BUF_LEN 4096
#define EV_BUFS	   4
#define TX_PAYLOAD 4096
#define GUEST_PORT 49152 /* the first of this guest's own ports */
#define BUF_ALLOC  (RX_BUFS * (RX_BUF_LEN - HDR_LEN))
#define BULK_LEN   (512 * 1024)
#define WAIT_MS	   5000

/* What run-yun.sh's listener (tests/guest/vsock-listener.py) expects and answers. */
#define HELLO	    "hello from the test guest\n"
#define HELLO_REPLY "host got: hello from the test guest\n"
#define BULK_LINE   "bulk 524288\n"
#define BULK_REPLY  "bulk 524288 ok\n"

_Static_assert(sizeof(struct vsock_hdr) == HDR_LEN, "virtio_vsock_hdr is 44 bytes");

/* One connection's state: the peer's credit as it last told us, and our counts (§5.10.6.3). */
struct conn {
	uint32_t port, peer_port;
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt, fwd_cnt;
	bool rst, shutdown;
	char got[256];
	uint32_t got_len;
};

VQ_DEFINE(rxq, VQ_SIZE);
VQ_DEFINE(txq, VQ_SIZE);
VQ_DEFINE(evq, VQ_SIZE);
static uint8_t rx_buf[RX_BUFS][RX_BUF_LEN] __attribute__((aligned(8)));
static uint8_t ev_buf[EV_BUFS][8] __attribute__((aligned(8)));
static uint8_t tx_buf[HDR_LEN + TX_PAYLOAD] __attribute__((aligned(8)));
static struct vpci vs = {.name = "virtio-vsock"};
static volatile uint8_t *ccfg;
static uint64_t guest_cid;
/* Every used receive buffer was one of ours, with a packet that fits it. */
static bool rx_sane = true;
static unsigned rx_packets;

/* Queue index on q, polled (no MSI-X vector); false (and a failed check) when the device has no
 * such queue. */
static bool setup_queue(struct vq *q, uint16_t index)
{
	uint16_t max;
	bool ok = vq_setup(q, &vs, index, VIRTIO_NO_MSI, &max);

	tap(ok, "%s: queue %u has a size, a power of 2 (%u, %u used)", vs.name, index, max,
	    q->size);
	return ok;
}

/* One packet from c (or from port `port` to `dst_port` when c is NULL) with len bytes of
 * payload; false when the device did not use the buffer. */
static bool send_pkt(struct conn *c, uint32_t port, uint32_t dst_port, uint16_t op, uint32_t flags,
		     const void *payload, uint32_t len)
{
	struct vsock_hdr h = {
	    .src_cid = guest_cid,
	    .dst_cid = HOST_CID,
	    .src_port = c ? c->port : port,
	    .dst_port = c ? c->peer_port : dst_port,
	    .len = len,
	    .type = TYPE_STREAM,
	    .op = op,
	    .flags = flags,
	    .buf_alloc = BUF_ALLOC,
	    .fwd_cnt = c ? c->fwd_cnt : 0,
	};
	uint32_t id, used_len;

	if (len > TX_PAYLOAD)
		return false;
	memcpy(tx_buf, &h, HDR_LEN);
	memcpy(tx_buf + HDR_LEN, payload, len);
	vq_post(&txq, 0, tx_buf, HDR_LEN + len, 0);
	vq_kick(&txq);
	if (!vq_wait(&txq, WAIT_MS, &id, &used_len) || id != 0)
		return false;
	if (c && op == OP_RW)
		c->tx_cnt += len;
	return true;
}

/* The next packet for the guest, waiting up to ms: its header, and its payload (when it is for
 * c) appended to c->got. The buffer goes back to the device at once. */
static bool recv_pkt(struct conn *c, unsigned ms, struct vsock_hdr *h)
{
	uint32_t id, len;

	if (!vq_wait(&rxq, ms, &id, &len))
		return false;
	rx_packets++;
	if (id >= RX_BUFS || len < HDR_LEN || len > RX_BUF_LEN) {
		rx_sane = false;
		return false;
	}
	memcpy(h, rx_buf[id], HDR_LEN);
	if (h->len != len - HDR_LEN || h->dst_cid != guest_cid)
		rx_sane = false;
	else if (c && h->src_port == c->peer_port && h->dst_port == c->port) {
		/* Every packet carries the peer's credit (§5.10.6.3). */
		c->peer_buf_alloc = h->buf_alloc;
		c->peer_fwd_cnt = h->fwd_cnt;
		c->rst |= h->op == OP_RST;
		c->shutdown |= h->op == OP_SHUTDOWN;
		if (h->op == OP_RW && c->got_len + h->len <= sizeof(c->got)) {
			memcpy(c->got + c->got_len, rx_buf[id] + HDR_LEN, h->len);
			c->got_len += h->len;
		}
		/* Consumed at once: all of it counts as forwarded. */
		if (h->op == OP_RW)
			c->fwd_cnt += h->len;
	}
	vq_post(&rxq, (uint16_t)id, rx_buf[id], RX_BUF_LEN, VRING_DESC_F_WRITE);
	vq_kick(&rxq);
	return true;
}

/* Packets for c until it has received want_len bytes or gone; true when it has them. */
static bool recv_data(struct conn *c, uint32_t want_len)
{
	struct vsock_hdr h;

	while (c->got_len < want_len && !c->rst && !c->shutdown && recv_pkt(c, WAIT_MS, &h))
		;
	return c->got_len >= want_len;
}

/* The credit the peer gives c: buf_alloc - (tx_cnt - fwd_cnt) (§5.10.6.3). */
static uint32_t credit(const struct conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

	return in_flight > c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* len bytes of i % 251 on c, each packet within the credit; waits for the peer's credit
 * updates, asking for one (CREDIT_REQUEST) when none comes. False when the peer ended the
 * connection first. */
static bool send_bulk(struct conn *c, uint32_t len, unsigned *waits, bool *overran)
{
	static uint8_t chunk[TX_PAYLOAD];
	struct vsock_hdr h;

	for (uint32_t off = 0; off < len;) {
		uint32_t n = len - off < TX_PAYLOAD ? len - off : TX_PAYLOAD;

		/* What the peer sent meanwhile: more credit, or the end of the connection. */
		while (recv_pkt(c, 0, &h))
			;
		if (c->rst || c->shutdown)
			return false;
		if (credit(c) < n) {
			unsigned tries = 0;

			(*waits)++;
			while (credit(c) < n && !c->rst && !c->shutdown && tries < 3) {
				if (!recv_pkt(c, WAIT_MS, &h)) {
					send_pkt(c, 0, 0, OP_CREDIT_REQUEST, 0, NULL, 0);
					tries++;
				}
			}
			if (credit(c) < n)
				return false;
		}
		if (c->tx_cnt + n - c->peer_fwd_cnt > c->peer_buf_alloc)
			*overran = true;
		for (uint32_t i = 0; i < n; i++)
			chunk[i] = (uint8_t)((off + i) % 251);
		if (!send_pkt(c, 0, 0, OP_RW, 0, chunk, n))
			return false;
		off += n;
	}
	return true;
}

/* REQUEST from c->port to host port c->peer_port; its answer's op (0: none in time). */
static uint16_t vs_connect(struct conn *c)
{
	struct vsock_hdr h;

	if (!send_pkt(c, 0, 0, OP_REQUEST, 0, NULL, 0))
		return 0;
	while (recv_pkt(c, WAIT_MS, &h))
		if (h.src_port == c->peer_port && h.dst_port == c->port)
			return h.op;
	return 0;
}

static void check_connection(uint32_t port)
{
	struct conn c = {.port = GUEST_PORT, .peer_port = port};
	struct vsock_hdr h;
	unsigned waits = 0;
	uint32_t alloc;
	const char *answer = "nothing";
	bool overran = false, sent;
	uint16_t op = vs_connect(&c);

	tap(op == OP_RESPONSE, "%s: REQUEST to CID 2 port %u answered with RESPONSE (op %u)",
	    vs.name, port, op);
	if (op != OP_RESPONSE)
		return;
	tap(c.peer_buf_alloc > 0, "%s: the host gives credit (buf_alloc %u, fwd_cnt %u)", vs.name,
	    c.peer_buf_alloc, c.peer_fwd_cnt);
	sent = send_pkt(&c, 0, 0, OP_RW, 0, HELLO, sizeof(HELLO) - 1);
	tap(sent, "%s: the device used the RW packet of %u bytes", vs.name,
	    (unsigned)sizeof(HELLO) - 1);
	recv_data(&c, sizeof(HELLO_REPLY) - 1);
	c.got[c.got_len < sizeof(c.got) ? c.got_len : sizeof(c.got) - 1] = 0;
	tap(c.got_len == sizeof(HELLO_REPLY) - 1 && !memcmp(c.got, HELLO_REPLY, c.got_len),
	    "%s: the listener's answer came back with RW (%u bytes)", vs.name, c.got_len);

	c.got_len = 0;
	alloc = c.peer_buf_alloc;
	sent = send_pkt(&c, 0, 0, OP_RW, 0, BULK_LINE, sizeof(BULK_LINE) - 1) &&
	       send_bulk(&c, BULK_LEN, &waits, &overran);
	tap(sent && !overran && !c.rst && waits > 0,
	    "%s: %u bytes sent (beyond buf_alloc %u), never beyond the credit (%u waits for it)",
	    vs.name, BULK_LEN, alloc, waits);
	recv_data(&c, sizeof(BULK_REPLY) - 1);
	c.got[c.got_len < sizeof(c.got) ? c.got_len : sizeof(c.got) - 1] = 0;
	tap(c.got_len == sizeof(BULK_REPLY) - 1 && !memcmp(c.got, BULK_REPLY, c.got_len),
	    "%s: the listener got them all intact (answer %u bytes)", vs.name, c.got_len);

	/* §5.10.6.6: SHUTDOWN both ways; the peer answers with RST (or its own SHUTDOWN). What
	 * came before it does not count. */
	c.rst = c.shutdown = false;
	sent = send_pkt(&c, 0, 0, OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND, NULL, 0);
	while (sent && !c.rst && !c.shutdown && recv_pkt(&c, WAIT_MS, &h))
		;
	if (c.rst)
		answer = "RST";
	else if (c.shutdown)
		answer = "the host's SHUTDOWN";
	tap(sent && (c.rst || c.shutdown), "%s: SHUTDOWN answered with %s", vs.name, answer);
	if (c.shutdown && !c.rst)
		send_pkt(&c, 0, 0, OP_RST, 0, NULL, 0);
}

void check_virtio_vsock(void)
{
	struct conn refused;
	uint64_t want_cid, port, offered;
	uint32_t id, len;
	uint16_t op;

	if (!arg_num("vsock_cid", &want_cid) || !arg_num("vsock_port", &port)) {
		tap_skip("virtio-vsock: not asked for (vsock_cid=N vsock_port=P)");
		return;
	}
	if (!find_virtio(&vs, 19, 0x00ff) || !read_caps(&vs, true))
		return;
	ccfg = (volatile uint8_t *)vs.common.addr;

	/* virtio 1.2 §3.1.1 */
	CC8(ccfg, CC_STATUS) = 0;
	tap(CC8(ccfg, CC_STATUS) == 0, "%s: reset (status reads 0)", vs.name);
	CC8(ccfg, CC_STATUS) = VIRTIO_STATUS_ACK;
	CC8(ccfg, CC_STATUS) = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER;
	offered = cc_device_features(ccfg);
	tap(offered & (1ull << VIRTIO_F_VERSION_1), "%s: device offers VERSION_1 (features %#lx)",
	    vs.name, offered);
	cc_driver_features(ccfg, 1ull << VIRTIO_F_VERSION_1);
	CC8(ccfg, CC_STATUS) = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	if (!(CC8(ccfg, CC_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
		tap(false, "%s: FEATURES_OK accepted with VERSION_1", vs.name);
		return;
	}
	tap(true, "%s: FEATURES_OK accepted with VERSION_1", vs.name);

	/* §5.10.4: le64 guest_cid, of which the upper 32 bits are reserved (zero). */
	guest_cid = *(volatile uint32_t *)(vs.device.addr + CFG_GUEST_CID) |
		    (uint64_t) * (volatile uint32_t *)(vs.device.addr + CFG_GUEST_CID + 4) << 32;
	tap(guest_cid == want_cid, "%s: configuration gives guest CID %lu (want %lu)", vs.name,
	    guest_cid, want_cid);
	CC16(ccfg, CC_MSIX) = VIRTIO_NO_MSI;
	tap(CC16(ccfg, CC_NUMQ) >= 3, "%s: %u queues: rx, tx and event", vs.name,
	    CC16(ccfg, CC_NUMQ));
	if (!setup_queue(&rxq, RXQ) || !setup_queue(&txq, TXQ) || !setup_queue(&evq, EVQ))
		return;
	CC8(ccfg, CC_STATUS) = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER |
			       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	tap(CC8(ccfg, CC_STATUS) == 0xf, "%s: DRIVER_OK (status %#x)", vs.name,
	    CC8(ccfg, CC_STATUS));

	/* §5.10.6: the event queue and the receive queue want buffers from the start. */
	for (uint16_t i = 0; i < EV_BUFS; i++)
		vq_post(&evq, i, ev_buf[i], sizeof(ev_buf[i]), VRING_DESC_F_WRITE);
	vq_kick(&evq);
	for (uint16_t i = 0; i < RX_BUFS; i++)
		vq_post(&rxq, i, rx_buf[i], RX_BUF_LEN, VRING_DESC_F_WRITE);
	vq_kick(&rxq);
	tap(evq.avail->idx == EV_BUFS && rxq.avail->idx == RX_BUFS &&
		!(CC8(ccfg, CC_STATUS) & VIRTIO_STATUS_NEEDS_RESET),
	    "%s: %u event and %u receive buffers posted, device content (status %#x)", vs.name,
	    evq.avail->idx, rxq.avail->idx, CC8(ccfg, CC_STATUS));

	check_connection((uint32_t)port);

	/* Nobody listens on port + 1: RST (§5.10.6.4). */
	refused = (struct conn){.port = GUEST_PORT + 1, .peer_port = (uint32_t)port + 1};
	op = vs_connect(&refused);
	tap(op == OP_RST, "%s: REQUEST to CID 2 port %u, where nobody listens, gets RST (op %u)",
	    vs.name, refused.peer_port, op);

	tap(rx_sane && rx_packets > 0, "%s: %u used receive buffers, all ours and well-formed",
	    vs.name, rx_packets);
	tap(!vq_wait(&evq, 0, &id, &len), "%s: no event (the event buffers stay unused)", vs.name);
	tap(!(CC8(ccfg, CC_STATUS) & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)),
	    "%s: device still healthy (status %#x)", vs.name, CC8(ccfg, CC_STATUS));
	CC8(ccfg, CC_STATUS) = 0;
	tap(CC8(ccfg, CC_STATUS) == 0, "%s: reset after use (status reads 0)", vs.name);
}
