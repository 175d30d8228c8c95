// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for virtio-vsock's packet handling: the transmit parser and the connection
 * state machine behind it, with real Unix sockets on the host side.
 *
 * The input is a script. Its first byte chooses how receive chains are laid out (header and
 * data apart, as Linux 6.1 posts them, or together); then each record is one step:
 *   0: a transmit packet: 44 header bytes as given, a 2-byte payload length, the payload
 *   1: N receive chains made available
 *   2: the host acts: connects to the device's socket and writes a line, writes to, half
 *      closes or closes one of its connections, or drains them all
 *   3: time passes (timeouts), and the device polls its sockets
 * A host listener answers on PATH_1024, so the guest's connections there succeed. Rings are
 * laid out correctly (the virtqueue walker has its own target); guest RAM is a heap buffer of
 * exactly its size, so AddressSanitizer stops the run at the first byte touched outside it.
 * Every packet the device gives the guest must say its length truthfully.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/vsock.h"

#define RAM_SIZE  (256 * 1024)
#define QSZ	  16
#define SLOTS	  8
#define RING(q)	  (0x4000u * (q))
#define RX_BUF	  0x10000u
#define RX_SLOT	  0x800u
#define RX_DATA	  0x600u
#define TX_BUF	  0x20000u
#define TX_SLOT	  0x1400u
#define TX_DATA	  0x1000u
#define HDR	  ((uint32_t)sizeof(struct virtio_vsock_hdr))
#define MAX_HOST  16
#define MAX_STEPS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *ram;
static struct guest_mem mem;
static char uds[64], listen_path[80];
static int listen_fd = -1;
static uint64_t now_ns;

static int host[MAX_HOST];
static unsigned nr_host;
static uint16_t avail_idx[2], used_seen;
static bool split;

static uint64_t fuzz_clock(void)
{
	return now_ns;
}

static void init(void)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	char dir[] = "/tmp/yun-fuzz-vsock-XXXXXX";

	log_set_level(LOG_ERROR);
	signal(SIGPIPE, SIG_IGN);
	ram = malloc(RAM_SIZE);
	mem.memfd = -1;
	if (!ram || gm_add_region(&mem, 0, RAM_SIZE, ram) || !mkdtemp(dir))
		abort();
	snprintf(uds, sizeof(uds), "%s/v.sock", dir);
	snprintf(listen_path, sizeof(listen_path), "%s_1024", uds);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", listen_path);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) ||
	    listen(listen_fd, 64))
		abort();
}

static void desc(unsigned q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	struct virtq_desc d = {addr, len, flags, next};

	memcpy(ram + RING(q) + 16u * i, &d, sizeof(d));
}

static void publish(unsigned q, uint16_t head)
{
	uint16_t *avail = (uint16_t *)(ram + RING(q) + 0x1000);

	avail[2 + avail_idx[q] % QSZ] = head;
	avail_idx[q]++;
	avail[1] = avail_idx[q];
}

static void host_add(int fd)
{
	if (nr_host == MAX_HOST) {
		close(fd);
		return;
	}
	host[nr_host++] = fd;
}

static void accept_all(void)
{
	int fd;

	while ((fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
		host_add(fd);
}

/* Every used receive chain: its length is the header's and fits the chain. */
static void check_rx(void)
{
	const volatile uint16_t *used = (const uint16_t *)(ram + RING(0) + 0x2000);

	for (; used_seen != used[1]; used_seen++) {
		struct virtq_used_elem e;
		struct virtio_vsock_hdr h;
		uint64_t gpa;

		memcpy(&e, ram + RING(0) + 0x2000 + 4 + 8 * (used_seen % QSZ), sizeof(e));
		if (e.id % 2 || e.id >= 2 * SLOTS || e.len < HDR || e.len > HDR + RX_DATA)
			abort();
		gpa = RX_BUF + (e.id / 2) * RX_SLOT;
		memcpy(&h, ram + gpa, HDR);
		if (e.len != HDR + h.len || h.dst_cid != 3)
			abort();
	}
}

static void host_step(const uint8_t *p, size_t n)
{
	unsigned which = n > 1 ? p[1] % (nr_host ? nr_host : 1) : 0;

	if (!n)
		return;
	switch (p[0] % 5) {
	case 0: {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		snprintf(a.sun_path, sizeof(a.sun_path), "%s", uds);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
			if (fd >= 0)
				close(fd);
			return;
		}
		if (n > 1 && send(fd, p + 1, n - 1, MSG_NOSIGNAL) < 0) {
			/* the device may have closed it already */
		}
		host_add(fd);
		break;
	}
	case 1:
		if (nr_host && n > 2 && send(host[which], p + 2, n - 2, MSG_NOSIGNAL) < 0) {
			/* full, or closed by the device */
		}
		break;
	case 2:
		if (nr_host)
			shutdown(host[which], SHUT_WR);
		break;
	case 3:
		if (nr_host) {
			close(host[which]);
			host[which] = host[--nr_host];
		}
		break;
	case 4:
		for (unsigned i = 0; i < nr_host; i++) {
			static uint8_t sink[65536];

			while (recv(host[i], sink, sizeof(sink), MSG_DONTWAIT) > 0)
				;
		}
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vsock_config cfg = {.cid = 3, .uds = uds, .clock = fuzz_clock};
	struct virtio_vsock *vs;
	struct virtio_dev *d;
	unsigned tx_slot = 0;
	uint16_t rx_slot = 0;

	if (!ram)
		init();
	if (size < 1)
		return 0;
	if (virtio_vsock_create(&cfg, "fuzz", &mem, NULL, &vs))
		abort();
	d = virtio_vsock_dev(vs);
	memset(ram, 0, RAM_SIZE);
	avail_idx[0] = avail_idx[1] = used_seen = 0;
	nr_host = 0;
	now_ns = 1;
	split = data[0] & 1;
	d->driver_features = 1ULL << VIRTIO_F_VERSION_1;
	if (data[0] & 2)
		d->driver_features |= 1ULL << VIRTIO_F_EVENT_IDX;
	d->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
		    VIRTIO_STATUS_DRIVER_OK;
	for (unsigned q = 0; q < 2; q++) {
		struct virtq *vq = &d->vqs[q];

		vq->size = QSZ;
		vq->desc_gpa = RING(q);
		vq->avail_gpa = RING(q) + 0x1000;
		vq->used_gpa = RING(q) + 0x2000;
		vq->enabled = true;
		if (virtq_activate(vq, &mem, d->driver_features))
			abort();
	}
	if (d->ops->activate(d))
		abort();

	data++;
	size--;
	for (unsigned step = 0; step < MAX_STEPS && size; step++) {
		uint8_t kind = data[0];
		size_t n;

		data++;
		size--;
		switch (kind % 4) {
		case 0: { /* a transmit packet */
			uint16_t s = (uint16_t)(tx_slot++ % SLOTS);
			uint64_t gpa = TX_BUF + s * TX_SLOT;
			uint32_t len;

			if (size < HDR + 2)
				goto out;
			memcpy(ram + gpa, data, HDR);
			len = (uint32_t)(data[HDR] | data[HDR + 1] << 8) % (TX_DATA + 1);
			data += HDR + 2;
			size -= HDR + 2;
			if (len > size)
				len = (uint32_t)size;
			memcpy(ram + gpa + 0x100, data, len);
			data += len;
			size -= len;
			desc(1, 2 * s, gpa, HDR, len ? VIRTQ_DESC_F_NEXT : 0, 2 * s + 1);
			desc(1, 2 * s + 1, gpa + 0x100, len, 0, 0);
			publish(1, 2 * s);
			d->ops->queue_notify(d, 1);
			accept_all();
			break;
		}
		case 1: /* receive chains */
			n = size ? data[0] % (SLOTS + 1) : 0;
			/* A chain is posted again only once its packet was checked. */
			for (unsigned i = 0; i < n && (uint16_t)(rx_slot - used_seen) < SLOTS;
			     i++) {
				uint16_t s = (uint16_t)(rx_slot++ % SLOTS);
				uint64_t gpa = RX_BUF + s * RX_SLOT;

				if (split) {
					desc(0, 2 * s, gpa, HDR,
					     VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2 * s + 1);
					desc(0, 2 * s + 1, gpa + HDR, RX_DATA, VIRTQ_DESC_F_WRITE,
					     0);
				} else {
					desc(0, 2 * s, gpa, HDR + RX_DATA, VIRTQ_DESC_F_WRITE, 0);
				}
				publish(0, 2 * s);
			}
			if (size) {
				data++;
				size--;
			}
			d->ops->queue_notify(d, 0);
			break;
		case 2: /* the host */
			n = size ? 1 + data[0] % 48 : 0;
			if (n > size)
				n = size;
			host_step(data + 1, n ? n - 1 : 0);
			data += n;
			size -= n;
			break;
		case 3: /* time */
			if (size) {
				now_ns += data[0] * 100000000ULL;
				data++;
				size--;
			}
			break;
		}
		virtio_vsock_poll(vs);
		check_rx();
	}
out:
	virtio_vsock_destroy(vs);
	for (unsigned i = 0; i < nr_host; i++)
		close(host[i]);
	accept_all();
	for (unsigned i = 0; i < nr_host; i++)
		close(host[i]);
	nr_host = 0;
	return 0;
}
