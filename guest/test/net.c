// SPDX-License-Identifier: MIT
/*
 * bench=net-*: the virtio-net device path, driven from ring 3 by polling. The guest's own
 * driver (modern PCI, VERSION_1 and MAC only: no offloads, no mergeable buffers, no interrupts)
 * exchanges UDP/IPv4 frames with a peer on the host's side of the tap and reports on COM1, one
 * "bench-net" line per figure:
 *   net-tx    frames with 64-byte UDP payloads, as fast as the device takes them, for net_ms
 *   net-bulk  1500-byte IP packets (1514-byte frames), the same way
 *   net-rr    a 64-byte datagram to the peer's echo port and the wait for its reply, net_n times
 *   net-rx    "bench-net rx-ready", then the frames the host sends it, counted for net_ms
 *   net-rxb   "bench-net rxb-ready", then it takes no frames until a byte comes on COM1 (the
 *             host has queued its frames on the tap meanwhile), and counts how fast they drain
 *   net       all five in turn, 300 ms apart (so that the host can tell their frames apart)
 * The host gives the addresses: net_ip= net_peer_ip= net_peer_mac= (defaults 10.0.2.15,
 * 10.0.2.1 and broadcast). Like a driver that suppresses notifications, it kicks the device
 * only when the used ring's flags ask for it (virtio 1.2 §2.7.10).
 */
#include "vq.h"

#define VIRTIO_NET_F_MAC 5
#define NET_HDR		 12 /* struct virtio_net_hdr_v1: VERSION_1 always has num_buffers */
#define NET_QSIZE	 256
#define NET_BUF		 2048 /* any frame without offloads fits (virtio 1.2 §5.1.6.3.1) */
#define ETH_LEN		 14
#define IP_LEN		 20
#define UDP_LEN		 8
#define PORT_ECHO	 7
#define PORT_DISCARD	 9
#define PORT_SELF	 40000

VQ_DEFINE(rxq, NET_QSIZE);
VQ_DEFINE(txq, NET_QSIZE);
static uint8_t rx_buf[NET_QSIZE][NET_BUF] __attribute__((aligned(4096)));
static uint8_t tx_buf[NET_QSIZE][NET_BUF] __attribute__((aligned(4096)));
static uint32_t rr_lat[8192];
static uint64_t khz; /* TSC cycles a millisecond */
static volatile uint8_t *ncc;
static uint8_t my_mac[6], peer_mac[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static uint8_t my_ip[4] = {10, 0, 2, 15}, peer_ip[4] = {10, 0, 2, 1};

/* At least 1: the figures divide by it. */
static uint64_t elapsed_us(uint64_t cycles)
{
	uint64_t us = cycles * 1000 / khz;

	return us ? us : 1;
}

/* Queue i of the device on q, polled: no MSI-X vector, and no interrupts asked for. */
static bool netq_setup(const struct vpci *b, uint16_t i, struct vq *q)
{
	uint16_t max;

	if (!vq_setup(q, b, i, VIRTIO_NO_MSI, &max))
		return false;
	q->avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
	return true;
}

/* virtio 1.2 §3.1.1 with VERSION_1 and MAC; receive queue 0, transmit queue 1. */
static bool net_setup(const struct vpci *b)
{
	uint64_t want = 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_NET_F_MAC, features;
	const uint8_t ok = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;

	ncc = (volatile uint8_t *)b->common.addr;
	CC8(ncc, CC_STATUS) = 0;
	CC8(ncc, CC_STATUS) = VIRTIO_STATUS_ACK;
	CC8(ncc, CC_STATUS) = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER;
	features = cc_device_features(ncc);
	if ((features & want) != want)
		return false;
	cc_driver_features(ncc, want);
	CC8(ncc, CC_STATUS) = ok;
	if (!(CC8(ncc, CC_STATUS) & VIRTIO_STATUS_FEATURES_OK))
		return false;
	CC16(ncc, CC_MSIX) = VIRTIO_NO_MSI;
	if (CC16(ncc, CC_NUMQ) < 2 || !netq_setup(b, 0, &rxq) || !netq_setup(b, 1, &txq))
		return false;
	for (unsigned i = 0; i < 6; i++) /* §5.1.4: mac, first in the configuration */
		my_mac[i] = ((volatile uint8_t *)b->device.addr)[i];
	CC8(ncc, CC_STATUS) = ok | VIRTIO_STATUS_DRIVER_OK;
	return CC8(ncc, CC_STATUS) == (ok | VIRTIO_STATUS_DRIVER_OK);
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/*
 * A UDP/IPv4 frame to the peer's port with `payload` bytes (at least 4: the sequence number
 * first), behind a zeroed virtio-net header in buf; returns the frame's length (RFC 791, 768).
 */
static uint32_t build_udp(uint8_t *buf, uint16_t port, uint32_t payload, uint32_t seq)
{
	uint8_t *eth = buf + NET_HDR, *ip = eth + ETH_LEN, *udp = ip + IP_LEN,
		*data = udp + UDP_LEN;
	uint8_t pseudo[12];
	uint16_t sum;

	memset(buf, 0, NET_HDR);
	memcpy(eth, peer_mac, 6);
	memcpy(eth + 6, my_mac, 6);
	put16(eth + 12, 0x0800);
	memset(ip, 0, IP_LEN);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(IP_LEN + UDP_LEN + payload));
	put16(ip + 4, (uint16_t)seq);
	put16(ip + 6, 0x4000); /* don't fragment */
	ip[8] = 64;
	ip[9] = 17;
	memcpy(ip + 12, my_ip, 4);
	memcpy(ip + 16, peer_ip, 4);
	put16(ip + 10, csum_fold(csum_add(0, ip, IP_LEN)));
	put16(udp, PORT_SELF);
	put16(udp + 2, port);
	put16(udp + 4, (uint16_t)(UDP_LEN + payload));
	put16(udp + 6, 0);
	memcpy(data, &seq, 4);
	for (uint32_t i = 4; i < payload; i++)
		data[i] = (uint8_t)i;
	memcpy(pseudo, my_ip, 4);
	memcpy(pseudo + 4, peer_ip, 4);
	pseudo[8] = 0;
	pseudo[9] = 17;
	put16(pseudo + 10, (uint16_t)(UDP_LEN + payload));
	sum = csum_fold(csum_add(csum_add(0, pseudo, 12), udp, UDP_LEN + payload));
	put16(udp + 6, sum ? sum : 0xffff); /* 0 would mean "no checksum" */
	return ETH_LEN + IP_LEN + UDP_LEN + payload;
}

/*
 * Every transmit descriptor holds a frame with `payload` UDP bytes, each reposted as soon as
 * the device hands it back, until ms milliseconds have passed; then the last ones are awaited.
 * Prints the figures under `name`.
 */
static void tx_run(const char *name, uint32_t payload, uint64_t ms)
{
	struct vq *q = &txq;
	uint64_t t0, end, us, sent = 0;
	unsigned inflight = q->size;
	uint32_t len, flen = 0;
	bool stopping = false;
	int id;

	for (uint16_t s = 0; s < q->size; s++) {
		flen = build_udp(tx_buf[s], PORT_DISCARD, payload, s);
		q->desc[s] = (struct vring_desc){(uint64_t)tx_buf[s], NET_HDR + flen, 0, 0};
	}
	q->kicks = 0;
	t0 = rdtsc();
	end = t0 + ms * khz;
	for (uint16_t s = 0; s < q->size; s++)
		vq_add(q, s);
	vq_publish_kick(q);
	while (inflight) {
		bool more = false;
		uint64_t now = rdtsc();

		if (now - t0 > (ms + 5000) * khz)
			break; /* the device stopped taking frames */
		stopping = now >= end;
		while ((id = vq_next(q, &len)) >= 0) {
			sent++;
			if (stopping) {
				inflight--;
			} else {
				vq_add(q, (uint16_t)id);
				more = true;
			}
		}
		if (id == -2)
			break;
		if (more)
			vq_publish_kick(q);
		else
			cpu_relax();
	}
	us = elapsed_us(rdtsc() - t0);
	if (inflight) {
		print("bench-net error: %s: %u frames not handed back (%lu sent)\n", name, inflight,
		      sent);
		return;
	}
	print("bench-net %s packets=%lu frame_bytes=%u us=%lu pps=%lu mbps=%lu kicks=%lu\n", name,
	      sent, flen, us, sent * 1000000 / us, sent * flen / us, q->kicks);
}

/* Every receive descriptor a whole buffer, made available. */
static void rx_fill(void)
{
	for (uint16_t s = 0; s < rxq.size; s++) {
		rxq.desc[s] =
		    (struct vring_desc){(uint64_t)rx_buf[s], NET_BUF, VRING_DESC_F_WRITE, 0};
		vq_add(&rxq, s);
	}
	vq_publish_kick(&rxq);
}

/* Is the frame in buf (len bytes with the header) the echo of datagram seq? */
static bool is_reply(const uint8_t *buf, uint32_t len, uint32_t seq)
{
	const uint8_t *eth = buf + NET_HDR, *ip = eth + ETH_LEN, *udp = ip + IP_LEN;
	uint32_t got;

	if (len < NET_HDR + ETH_LEN + IP_LEN + UDP_LEN + 4 || get16(eth + 12) != 0x0800 ||
	    ip[0] != 0x45 || ip[9] != 17 || get16(udp) != PORT_ECHO || get16(udp + 2) != PORT_SELF)
		return false;
	memcpy(&got, udp + UDP_LEN, 4);
	return got == seq;
}

static void sort32(uint32_t *v, unsigned n)
{
	for (unsigned i = 1; i < n; i++) /* insertion sort: n is small */
		for (unsigned j = i; j > 0 && v[j - 1] > v[j]; j--) {
			uint32_t t = v[j];

			v[j] = v[j - 1];
			v[j - 1] = t;
		}
}

/* n round trips of a 64-byte datagram through the peer's echo port, one at a time. */
static void rr_run(uint64_t n)
{
	uint64_t t0, us, limit = 2000 * khz, other = 0;
	uint32_t len;
	int id;

	if (n > sizeof(rr_lat) / sizeof(rr_lat[0]))
		n = sizeof(rr_lat) / sizeof(rr_lat[0]);
	txq.kicks = rxq.kicks = 0;
	t0 = rdtsc();
	for (uint32_t i = 0; i < n; i++) {
		uint16_t s = (uint16_t)(i & (txq.size - 1));
		uint64_t start;
		bool got = false;

		txq.desc[s] = (struct vring_desc){
		    (uint64_t)tx_buf[s], NET_HDR + build_udp(tx_buf[s], PORT_ECHO, 64, i), 0, 0};
		start = rdtsc();
		vq_add(&txq, s);
		vq_publish_kick(&txq);
		while (!got) {
			id = vq_next(&rxq, &len);
			if (id == -1) {
				if (rdtsc() - start > limit) {
					print("bench-net error: rr-64: no reply to datagram %u\n",
					      i);
					return;
				}
				cpu_relax();
				continue;
			}
			if (id < 0)
				return;
			got = is_reply(rx_buf[id], len, i);
			if (got)
				rr_lat[i] = (uint32_t)(rdtsc() - start);
			else
				other++;
			vq_add(&rxq, (uint16_t)id);
			vq_publish_kick(&rxq);
		}
		while (vq_next(&txq, &len) >= 0) /* the request's descriptor, long since sent */
			;
	}
	us = elapsed_us(rdtsc() - t0);
	sort32(rr_lat, (unsigned)n);
	print("bench-net rr-64 n=%lu p50_us=%lu p99_us=%lu tps=%lu other=%lu kicks=%lu\n", n,
	      elapsed_us(rr_lat[(n - 1) * 50 / 100]), elapsed_us(rr_lat[(n - 1) * 99 / 100]),
	      n * 1000000 / us, other, txq.kicks + rxq.kicks);
}

/* Take every frame the device has used, counting each and reposting its buffer: whether there
 * was any. *id ends at -1, or at -2 for a used id that is none of the ring's. */
static bool rx_take(uint64_t *packets, int *id)
{
	uint32_t len;
	bool any = false;

	while ((*id = vq_next(&rxq, &len)) >= 0) {
		(*packets)++;
		vq_add(&rxq, (uint16_t)*id);
		any = true;
	}
	if (any)
		vq_publish_kick(&rxq);
	return any;
}

/* Count what arrives for ms milliseconds from the first frames, each buffer reposted. */
static void rx_run(uint64_t ms)
{
	uint64_t t0, us, packets = 0;
	int id = -1;

	rxq.kicks = 0;
	print("bench-net rx-ready\n");
	t0 = rdtsc();
	while (id != -2 && !rx_take(&packets, &id)) {
		if (rdtsc() - t0 > 10000 * khz) {
			print("bench-net error: rx-64: nothing arrived in 10 s\n");
			return;
		}
		cpu_relax();
	}
	t0 = rdtsc();
	while (id != -2 && rdtsc() - t0 < ms * khz) {
		if (!rx_take(&packets, &id))
			cpu_relax();
	}
	us = elapsed_us(rdtsc() - t0);
	print("bench-net rx-64 packets=%lu us=%lu pps=%lu kicks=%lu\n", packets, us,
	      packets * 1000000 / us, rxq.kicks);
}

/*
 * The receive path's own capacity, with no sender beside it: the host queues frames on the tap
 * while the guest takes none (its ring full, the device leaves them there), and sends a byte on
 * COM1; from then the guest counts what arrives until nothing has for idle_ms. The frames that
 * were in the ring already are not counted.
 */
static void rxb_run(uint64_t idle_ms)
{
	uint64_t t0, last, before = 0, packets = 0;
	int id = -1;

	rxq.kicks = 0;
	print("bench-net rxb-ready\n");
	t0 = rdtsc();
	while (!(inb(0x3f8 + 5) & 1)) { /* LSR: data ready */
		if (rdtsc() - t0 > 120000 * khz) {
			print("bench-net error: rxb-64: no byte from the host in 120 s\n");
			return;
		}
		cpu_relax();
	}
	(void)inb(0x3f8);
	rx_take(&before, &id);
	t0 = last = rdtsc();
	while (id != -2 && rdtsc() - last < idle_ms * khz) {
		if (rx_take(&packets, &id))
			last = rdtsc();
		else
			cpu_relax();
	}
	print("bench-net rxb-64 packets=%lu us=%lu pps=%lu kicks=%lu\n", packets,
	      elapsed_us(last - t0), packets * 1000000 / elapsed_us(last - t0), rxq.kicks);
}

/* An address on the command line (n numbers in base, between seps) into out; true when it is
 * absent too (out keeps its default). */
static bool parse_addr(const char *key, uint8_t *out, unsigned n, char sep, unsigned base)
{
	char buf[24];
	const char *p = buf;

	if (!arg(key, buf, sizeof(buf)))
		return true;
	for (unsigned i = 0; i < n; i++) {
		unsigned v = 0, digits = 0;

		for (;; p++, digits++) {
			unsigned d = *p >= '0' && *p <= '9'   ? (unsigned)(*p - '0')
				     : *p >= 'a' && *p <= 'f' ? (unsigned)(*p - 'a' + 10)
							      : 99;

			if (d >= base)
				break;
			v = v * base + d;
		}
		if (!digits || v > 255 || (i + 1 < n ? *p != sep : *p != 0))
			return false;
		out[i] = (uint8_t)v;
		p++;
	}
	return true;
}

void bench_net(const char *mode)
{
	struct vpci b = {.name = "virtio-net"};
	uint64_t ms = 1000, n = 2000, t;
	bool all = !strcmp(mode, "net");

	quiet = true;
	if (!find_virtio(&b, 1, 0x0200) || !read_caps(&b, true) || !net_setup(&b)) {
		quiet = false;
		print("bench-net error: no virtio-net with VERSION_1 and MAC\n");
		return;
	}
	quiet = false;
	arg_num("net_ms", &ms);
	arg_num("net_n", &n);
	if (!parse_addr("net_ip", my_ip, 4, '.', 10) ||
	    !parse_addr("net_peer_ip", peer_ip, 4, '.', 10) ||
	    !parse_addr("net_peer_mac", peer_mac, 6, ':', 16)) {
		print("bench-net error: bad net_ip, net_peer_ip or net_peer_mac\n");
		return;
	}
	t = rdtsc();
	delay_us(100000);
	khz = (rdtsc() - t) / 100;
	print("bench-net tsc_khz=%lu rx_qsize=%u tx_qsize=%u mac=%02x:%02x:%02x:%02x:%02x:%02x\n",
	      khz, rxq.size, txq.size, my_mac[0], my_mac[1], my_mac[2], my_mac[3], my_mac[4],
	      my_mac[5]);
	if (all || !strcmp(mode, "net-tx"))
		tx_run("tx-64", 64, ms);
	if (all)
		delay_us(300000);
	if (all || !strcmp(mode, "net-bulk"))
		tx_run("tx-1500", 1500 - IP_LEN - UDP_LEN, ms);
	if (all)
		delay_us(300000);
	if (all || !strcmp(mode, "net-rr") || !strcmp(mode, "net-rx") || !strcmp(mode, "net-rxb"))
		rx_fill();
	if (all || !strcmp(mode, "net-rr"))
		rr_run(n);
	if (all || !strcmp(mode, "net-rx"))
		rx_run(ms);
	if (all || !strcmp(mode, "net-rxb"))
		rxb_run(250);
	print("bench-net done\n");
	/* The host reads the figures as power-off comes: let the UART's transmitter empty first
	 * (LSR bit 6), or a VMM may exit with the last line still in its FIFO. */
	for (unsigned i = 0; i < 1000000 && !(inb(0x3f8 + 5) & 0x40); i++)
		cpu_relax();
}
