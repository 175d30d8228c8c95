// SPDX-License-Identifier: MIT
/*
 * The host's end of bench/net.py, run in the network namespace that holds the tap:
 *   net-peer echo PORT                        every UDP datagram to PORT goes back to its sender
 *   net-peer flood IP PORT BYTES SECONDS      BYTES-byte UDP datagrams to IP:PORT as fast as the
 *                                             stack takes them, for at most SECONDS; then prints
 *                                             how many were sent
 * A small C program rather than Python, so that the host's own cost stays small beside the VMM's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

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

static int flood(const char *ip, unsigned port, size_t bytes, double seconds)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct mmsghdr msgs[BATCH];
	struct iovec iov = {0};
	static char buf[65536];
	unsigned long long sent = 0;
	double end = now() + seconds;
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
	iov.iov_base = buf;
	iov.iov_len = bytes;
	memset(msgs, 0, sizeof(msgs));
	for (unsigned i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
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

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "echo"))
		return echo((unsigned)atoi(argv[2]));
	if (argc == 6 && !strcmp(argv[1], "flood"))
		return flood(argv[2], (unsigned)atoi(argv[3]), (size_t)atol(argv[4]),
			     atof(argv[5]));
	fprintf(stderr, "usage: net-peer echo PORT | flood IP PORT BYTES SECONDS\n");
	return 1;
}
