// SPDX-License-Identifier: MIT
/*
 * The host's end of bench/net.py, run in the network namespace that holds the tap:
 *   net-peer echo PORT                        every UDP datagram to PORT goes back to its sender
 *   net-peer flood IP PORT BYTES SECONDS      BYTES-byte UDP datagrams to IP:PORT as fast as the
 *                                             stack takes them, for at most SECONDS; then prints
 *                                             how many were sent
 *   net-peer flood-raw IF MAC IP PORT BYTES SECONDS
 *                                             the same datagrams as whole Ethernet frames to MAC,
 *                                             written straight to interface IF (a packet socket
 *                                             that bypasses the host's IP stack and queueing
 *                                             discipline): what a traffic generator on a wire
 *                                             would offer, at a small cost to the host's CPU
 *   net-peer tap-write TAP MAC IP PORT BYTES SECONDS
 *                                             the same frames as the guest's tx-64, from MAC and
 *                                             IP to TAP's own addresses, written into the tap
 *                                             one write() each with a virtio-net header, as a
 *                                             VMM does, for SECONDS: prints how many went. The
 *                                             most frames a second any VMM could send here
 * A small C program rather than Python, so that the host's own cost stays small beside the VMM's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH	     64
#define VNET_HDR_LEN 12 /* struct virtio_net_hdr_v1, as a VERSION_1 device has it */

static int udp_socket(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		perror("net-peer: socket");
	return fd;
}

static int echo(unsigned port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	char buf[65536];
	int fd = udp_socket();

	if (fd < 0)
		return 1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("net-peer: bind");
		return 1;
	}
	for (;;) {
		struct sockaddr_in from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("net-peer: recvfrom");
			return 1;
		}
		/* A full queue loses the reply, as a wire would; the guest reports the timeout. */
		sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
	}
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Send the frame or datagram in iov on fd (to `to`, when not connected), BATCH at a time, for
 * at most `seconds`. */
static int send_for(int fd, struct iovec *iov, void *to, socklen_t to_len, double seconds)
{
	struct mmsghdr msgs[BATCH];
	unsigned long long sent = 0;
	double end = now() + seconds;

	memset(msgs, 0, sizeof(msgs));
	for (unsigned i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = to;
		msgs[i].msg_hdr.msg_namelen = to_len;
	}
	while (now() < end) {
		int n = sendmmsg(fd, msgs, BATCH, 0);

		/* ENOBUFS: the tap's queue is full; the VMM is behind, keep offering. */
		if (n > 0)
			sent += (unsigned)n;
		else if (errno != ENOBUFS && errno != EINTR && errno != ECONNREFUSED)
			break;
	}
	printf("sent %llu\n", sent);
	return 0;
}

static int flood(const char *ip, unsigned port, size_t bytes, double seconds)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	static char buf[65536];
	struct iovec iov = {buf, bytes};
	int fd = udp_socket();

	if (fd < 0)
		return 1;
	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1 || bytes > sizeof(buf)) {
		fprintf(stderr, "net-peer: bad address %s or size %zu\n", ip, bytes);
		return 1;
	}
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("net-peer: connect");
		return 1;
	}
	memset(buf, 0x5a, bytes);
	return send_for(fd, &iov, NULL, 0, seconds);
}

/* The one's complement sum of len bytes (big-endian words, an odd last byte padded), added to
 * sum (RFC 1071). */
static uint32_t sum16(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *p = data;

	for (size_t i = 0; i < len; i += 2)
		sum += (uint32_t)p[i] << 8 | (i + 1 < len ? p[i + 1] : 0);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* A UDP/IPv4 frame of `bytes` bytes of payload, from smac/saddr to dmac/daddr, port to port:
 * its length. */
static size_t udp_frame(uint8_t *frame, const uint8_t *smac, in_addr_t saddr, const uint8_t *dmac,
			in_addr_t daddr, unsigned port, size_t bytes)
{
	struct ether_header *eth = (struct ether_header *)frame;
	struct iphdr *iph = (struct iphdr *)(eth + 1);
	struct udphdr *udp = (struct udphdr *)(iph + 1);
	size_t len = sizeof(*eth) + sizeof(*iph) + sizeof(*udp) + bytes;
	uint32_t sum;

	memcpy(eth->ether_shost, smac, ETH_ALEN);
	memcpy(eth->ether_dhost, dmac, ETH_ALEN);
	eth->ether_type = htons(ETHERTYPE_IP);
	iph->version = 4;
	iph->ihl = sizeof(*iph) / 4;
	iph->tot_len = htons((uint16_t)(len - sizeof(*eth)));
	iph->frag_off = htons(IP_DF);
	iph->ttl = 64;
	iph->protocol = IPPROTO_UDP;
	iph->saddr = saddr;
	iph->daddr = daddr;
	iph->check = htons((uint16_t)~sum16(0, iph, sizeof(*iph)));
	udp->source = htons(port);
	udp->dest = htons(port);
	udp->len = htons((uint16_t)(sizeof(*udp) + bytes));
	memset(udp + 1, 0x5a, bytes);
	/* The UDP checksum, over the pseudo-header too (RFC 768), as the guest's frames have it:
	 * the host verifies it on what it receives. */
	udp->check = 0;
	sum = sum16(0, &iph->saddr, 8);
	sum = sum16(sum, (uint8_t[]){0, IPPROTO_UDP}, 2);
	sum = sum16(sum, &udp->len, 2);
	sum = (uint16_t)~sum16(sum, udp, sizeof(*udp) + bytes);
	udp->check = htons(sum ? (uint16_t)sum : 0xffff); /* 0 would say "none" */
	return len;
}

static bool parse_mac(const char *s, uint8_t *mac)
{
	unsigned m[ETH_ALEN];

	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6)
		return false;
	for (unsigned i = 0; i < ETH_ALEN; i++)
		mac[i] = (uint8_t)m[i];
	return true;
}

/* The MAC and IPv4 address a frame of `bytes` payload bytes is to go to or from, from the
 * command line; false, said on stderr, when they are bad or the frame would pass the MTU. */
static bool frame_args(const char *mac, const char *ip, size_t bytes, uint8_t *mac_out,
		       struct in_addr *ip_out)
{
	if (bytes > ETH_DATA_LEN - sizeof(struct iphdr) - sizeof(struct udphdr) ||
	    inet_pton(AF_INET, ip, ip_out) != 1 || !parse_mac(mac, mac_out)) {
		fprintf(stderr, "net-peer: bad address %s, %s or size %zu\n", mac, ip, bytes);
		return false;
	}
	return true;
}

/* The interface's IPv4 and MAC addresses. */
static int if_addresses(int fd, const char *ifname, in_addr_t *ip, uint8_t *mac)
{
	struct ifreq ifr = {0};

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(fd, SIOCGIFADDR, &ifr) < 0) {
		perror("net-peer: the interface's IPv4 address");
		return -1;
	}
	*ip = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr;
	if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
		perror("net-peer: the interface's MAC address");
		return -1;
	}
	memcpy(mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
	return 0;
}

static int flood_raw(const char *ifname, const char *mac, const char *ip, unsigned port,
		     size_t bytes, double seconds)
{
	static uint8_t frame[ETH_FRAME_LEN];
	struct iovec iov = {frame, 0};
	struct ifreq ifr = {0};
	struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_halen = ETH_ALEN};
	struct in_addr dst;
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0), one = 1;
	uint8_t dmac[ETH_ALEN], smac[ETH_ALEN];
	in_addr_t src;

	if (fd < 0) {
		perror("net-peer: packet socket");
		return 1;
	}
	if (!frame_args(mac, ip, bytes, dmac, &dst))
		return 1;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
		perror("net-peer: interface");
		return 1;
	}
	to.sll_ifindex = ifr.ifr_ifindex;
	/* The source: the interface's own addresses, as the host's stack would put them. */
	if (if_addresses(fd, ifname, &src, smac))
		return 1;
	iov.iov_len = udp_frame(frame, smac, src, dmac, dst.s_addr, port, bytes);
	memcpy(to.sll_addr, dmac, ETH_ALEN);
	if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0) {
		perror("net-peer: PACKET_QDISC_BYPASS");
		return 1;
	}
	return send_for(fd, &iov, &to, sizeof(to), seconds);
}

static int tap_write(const char *ifname, const char *mac, const char *ip, unsigned port,
		     size_t bytes, double seconds)
{
	/* A virtio-net header of VERSION_1 (all zero: no offload), then the frame. */
	static uint8_t buf[VNET_HDR_LEN + ETH_FRAME_LEN];
	struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC), s = udp_socket(), hdr = VNET_HDR_LEN;
	uint8_t smac[ETH_ALEN], dmac[ETH_ALEN];
	unsigned long long sent = 0;
	struct in_addr src;
	in_addr_t dst;
	size_t len;
	double end;

	if (fd < 0) {
		perror("net-peer: /dev/net/tun");
		return 1;
	}
	if (s < 0 || !frame_args(mac, ip, bytes, smac, &src))
		return 1;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		perror("net-peer: TUNSETIFF");
		return 1;
	}
	if (if_addresses(s, ifname, &dst, dmac))
		return 1;
	len =
	    VNET_HDR_LEN + udp_frame(buf + VNET_HDR_LEN, smac, src.s_addr, dmac, dst, port, bytes);
	for (end = now() + seconds; now() < end;) {
		for (unsigned i = 0; i < BATCH; i++)
			sent += write(fd, buf, len) == (ssize_t)len;
	}
	printf("sent %llu\n", sent);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "echo"))
		return echo((unsigned)atoi(argv[2]));
	if (argc == 6 && !strcmp(argv[1], "flood"))
		return flood(argv[2], (unsigned)atoi(argv[3]), (size_t)atol(argv[4]),
			     atof(argv[5]));
	if (argc == 8 && !strcmp(argv[1], "flood-raw"))
		return flood_raw(argv[2], argv[3], argv[4], (unsigned)atoi(argv[5]),
				 (size_t)atol(argv[6]), atof(argv[7]));
	if (argc == 8 && !strcmp(argv[1], "tap-write"))
		return tap_write(argv[2], argv[3], argv[4], (unsigned)atoi(argv[5]),
				 (size_t)atol(argv[6]), atof(argv[7]));
	fprintf(stderr, "usage: net-peer echo PORT | flood IP PORT BYTES SECONDS | "
			"flood-raw IF MAC IP PORT BYTES SECONDS | "
			"tap-write TAP MAC IP PORT BYTES SECONDS\n");
	return 1;
}
