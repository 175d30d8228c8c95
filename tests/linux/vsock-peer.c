// SPDX-License-Identifier: MIT
/*
 * Both ends of tests/linux/vsock.sh, one static binary (busybox has no vsock tool): in the
 * guest over AF_VSOCK, on the host over yun-vmm's Unix sockets.
 *
 *   vsock-peer listen PORT                 guest: take one connection on vsock PORT
 *   vsock-peer connect CID PORT BYTES      guest: connect to CID:PORT and send BYTES
 *   vsock-peer uds-listen PATH             host: take one connection on the Unix socket PATH
 *   vsock-peer uds-connect PATH PORT BYTES host: "CONNECT PORT" on PATH, then send BYTES
 *   vsock-peer uds-refused PATH PORT       host: "CONNECT PORT" must be closed without "OK"
 *
 * The receiving end reads to EOF, prints what it got (bytes and an FNV-1a hash) and writes the
 * same back as one line; the sending end sends a pseudo-random stream, half-closes, reads that
 * line and compares it with what it sent. Everything gives up after a minute.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

#define FNV_INIT 0xcbf29ce484222325ULL

static void die(const char *what)
{
	printf("vsock-peer: %s: %s\n", what, strerror(errno));
	exit(2);
}

/* Read to EOF, then answer with "BYTES HASH\n". */
static int serve(int fd)
{
	static uint8_t buf[65536];
	uint64_t h = FNV_INIT, total = 0;
	char line[64];
	ssize_t n;
	int len;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		h = fnv(h, buf, (size_t)n);
		total += (uint64_t)n;
	}
	if (n < 0)
		die("read");
	printf("vsock-peer: received %" PRIu64 " bytes fnv %016" PRIx64 "\n", total, h);
	fflush(stdout);
	len = snprintf(line, sizeof(line), "%" PRIu64 " %016" PRIx64 "\n", total, h);
	if (write(fd, line, (size_t)len) != len)
		die("write");
	close(fd);
	return 0;
}

/* Send `bytes` of a xorshift stream, half-close, and compare the peer's line with it. */
static int send_and_check(int fd, uint64_t bytes)
{
	static uint8_t buf[65536];
	uint64_t h = FNV_INIT, sent = 0, got_bytes = 0, got_h = 0;
	uint32_t x = 2463534242u;
	char line[64] = "";
	size_t have = 0;
	ssize_t n;

	while (sent < bytes) {
		size_t chunk = bytes - sent < sizeof(buf) ? (size_t)(bytes - sent) : sizeof(buf);

		for (size_t i = 0; i < chunk; i++) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			buf[i] = (uint8_t)x;
		}
		h = fnv(h, buf, chunk);
		for (size_t off = 0; off < chunk; off += (size_t)n) {
			n = write(fd, buf + off, chunk - off);
			if (n <= 0)
				die("write");
		}
		sent += chunk;
	}
	if (shutdown(fd, SHUT_WR) < 0)
		die("shutdown");
	while (have < sizeof(line) - 1 && (n = read(fd, line + have, sizeof(line) - 1 - have)) > 0)
		have += (size_t)n;
	line[have] = '\0';
	if (sscanf(line, "%" SCNu64 " %" SCNx64, &got_bytes, &got_h) != 2) {
		printf("vsock-peer: sent %" PRIu64 " bytes; no answer from the peer ('%s')\n", sent,
		       line);
		return 1;
	}
	printf("vsock-peer: sent %" PRIu64 " bytes fnv %016" PRIx64 "; the peer received %" PRIu64
	       " bytes fnv %016" PRIx64 ": %s\n",
	       sent, h, got_bytes, got_h, got_bytes == sent && got_h == h ? "match" : "MISMATCH");
	close(fd);
	return got_bytes == sent && got_h == h ? 0 : 1;
}

static int uds_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die(path);
	return fd;
}

/* "CONNECT port\n", then the device's answer line, read a byte at a time (data follows it). */
static int connect_line(int fd, const char *port, char *answer, size_t size)
{
	char line[32];
	int len = snprintf(line, sizeof(line), "CONNECT %s\n", port);
	size_t have = 0;

	if (write(fd, line, (size_t)len) != len)
		die("write");
	while (have < size - 1) {
		ssize_t n = read(fd, answer + have, 1);

		if (n <= 0)
			break;
		if (answer[have++] == '\n')
			break;
	}
	answer[have] = '\0';
	return strncmp(answer, "OK ", 3) ? -1 : 0;
}

int main(int argc, char **argv)
{
	char answer[64];
	int fd, lfd;

	alarm(60);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && !strcmp(argv[1], "listen")) {
		struct sockaddr_vm a = {.svm_family = AF_VSOCK,
					.svm_cid = VMADDR_CID_ANY,
					.svm_port = (unsigned)atoi(argv[2])};

		lfd = socket(AF_VSOCK, SOCK_STREAM, 0);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
		    listen(lfd, 4) < 0)
			die("vsock listen");
		printf("vsock-peer: listening on %s\n", argv[2]);
		fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			die("accept");
		return serve(fd);
	}
	if (argc == 5 && !strcmp(argv[1], "connect")) {
		struct sockaddr_vm a = {.svm_family = AF_VSOCK,
					.svm_cid = (unsigned)atoi(argv[2]),
					.svm_port = (unsigned)atoi(argv[3])};

		fd = socket(AF_VSOCK, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("vsock connect");
		return send_and_check(fd, strtoull(argv[4], NULL, 0));
	}
	if (argc == 3 && !strcmp(argv[1], "uds-listen")) {
		struct sockaddr_un a = {.sun_family = AF_UNIX};

		snprintf(a.sun_path, sizeof(a.sun_path), "%s", argv[2]);
		alarm(600); /* the guest connects once it has booted */
		lfd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
		    listen(lfd, 4) < 0)
			die(argv[2]);
		printf("vsock-peer: listening on %s\n", argv[2]);
		fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			die("accept");
		alarm(60);
		return serve(fd);
	}
	if (argc == 5 && !strcmp(argv[1], "uds-connect")) {
		fd = uds_connect(argv[2]);
		if (connect_line(fd, argv[3], answer, sizeof(answer))) {
			printf("vsock-peer: CONNECT %s: no OK ('%s')\n", argv[3], answer);
			return 1;
		}
		printf("vsock-peer: CONNECT %s: %s", argv[3], answer);
		return send_and_check(fd, strtoull(argv[4], NULL, 0));
	}
	if (argc == 4 && !strcmp(argv[1], "uds-refused")) {
		fd = uds_connect(argv[2]);
		if (!connect_line(fd, argv[3], answer, sizeof(answer))) {
			printf("vsock-peer: CONNECT %s: %s", argv[3], answer);
			return 1;
		}
		printf("vsock-peer: CONNECT %s: closed without OK\n", argv[3]);
		return 0;
	}
	fprintf(stderr, "usage: see tests/linux/vsock-peer.c\n");
	return 2;
}
