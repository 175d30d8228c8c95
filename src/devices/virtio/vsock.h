/* SPDX-License-Identifier: MIT */
/*
 * virtio-vsock (virtio 1.2 §5.10) served in user space onto host Unix sockets, as Firecracker's
 * vsock muxer does (these hosts have no vhost-vsock). Stream sockets only. Three queues: rx
 * (device to guest), tx (guest to device) and event (unused: no transport reset is ever sent).
 *
 * The host is CID 2. Host to guest: a program connects to the Unix socket PATH and writes
 * "CONNECT <port>\n"; the device sends the guest a REQUEST from a host port it allocates, and on
 * the guest's RESPONSE writes "OK <hostport>\n" to the Unix connection and relays bytes both
 * ways (on RST it closes the connection). Guest to host: a connection to CID 2 port P is a
 * connection to the Unix socket PATH_P.
 *
 * Flow control is the spec's credit (§5.10.6.3) on both sides: the device reads a Unix socket
 * only while the guest has credit and receive buffers, leaving the rest in the socket; guest
 * data the host does not take at once waits in the connection's buffer, which is exactly as big
 * as the buf_alloc the device advertises, so a guest that sends beyond its credit gets RST and
 * the device never buffers more than that. Connections are bounded in number.
 *
 * All host sockets sit in the device's own epoll set; the VMM's event loop watches that set and
 * calls virtio_vsock_poll() (tests call it themselves).
 */
#ifndef YUN_DEVICES_VIRTIO_VSOCK_H
#define YUN_DEVICES_VIRTIO_VSOCK_H

#include <stdint.h>

#include "common/event_loop.h"
#include "devices/virtio/virtio.h"

#define VSOCK_HOST_CID 2
/* A guest CID: 0-2 are reserved, and 0xffffffff is VMADDR_CID_ANY. */
#define VSOCK_MIN_GUEST_CID 3
#define VSOCK_MAX_GUEST_CID 0xfffffffeULL

/* What the device advertises as its receive buffer, per connection: all it ever holds. */
#define VIRTIO_VSOCK_BUF_ALLOC (256 * 1024)
#define VIRTIO_VSOCK_MAX_CONNS 1024
/* "CONNECT 4294967295\n" and some slack; a longer line closes the connection. */
#define VIRTIO_VSOCK_LINE_MAX 32
/* The longest socket path: sun_path (108 bytes with its NUL) less "_4294967295". */
#define VIRTIO_VSOCK_PATH_MAX (108 - 1 - 11)
/* The guest's RESPONSE to our REQUEST, and its RST after our SHUTDOWN, are awaited this long. */
#define VIRTIO_VSOCK_REQUEST_TIMEOUT_MS 5000
#define VIRTIO_VSOCK_CLOSE_TIMEOUT_MS	2000

/* virtio 1.2 §5.10.6 */
struct virtio_vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
} __attribute__((packed));

#define VIRTIO_VSOCK_TYPE_STREAM    1
#define VIRTIO_VSOCK_TYPE_SEQPACKET 2

#define VIRTIO_VSOCK_OP_INVALID	       0
#define VIRTIO_VSOCK_OP_REQUEST	       1
#define VIRTIO_VSOCK_OP_RESPONSE       2
#define VIRTIO_VSOCK_OP_RST	       3
#define VIRTIO_VSOCK_OP_SHUTDOWN       4
#define VIRTIO_VSOCK_OP_RW	       5
#define VIRTIO_VSOCK_OP_CREDIT_UPDATE  6
#define VIRTIO_VSOCK_OP_CREDIT_REQUEST 7

/* §5.10.6.5: the sender of SHUTDOWN will receive, or send, no more. */
#define VIRTIO_VSOCK_SHUTDOWN_RCV  1
#define VIRTIO_VSOCK_SHUTDOWN_SEND 2

struct vsock_config {
	uint64_t cid;	 /* the guest's */
	const char *uds; /* the Unix socket the host connects to; PATH_<port> the other way */
	uint64_t (*clock)(void); /* tests' own clock in ns; NULL: CLOCK_MONOTONIC */
};

struct vsock_stats {
	uint64_t rx_packets, rx_bytes; /* to the guest: packets, payload bytes */
	uint64_t tx_packets, tx_bytes; /* from the guest: packets, payload bytes forwarded */
	uint64_t host_conns;	       /* connections the host asked for (CONNECT lines) */
	uint64_t guest_conns;	       /* connections the guest made to a host socket */
	uint64_t rsts;		       /* RSTs sent to the guest */
	uint64_t dropped;	       /* guest packets dropped (a source CID not the guest's) */
	uint32_t open_conns;	       /* connections now */
};

struct virtio_vsock;

/* Listens on cfg->uds (a stale socket there is replaced; any other file is an error). */
int virtio_vsock_create(const struct vsock_config *cfg, const char *id, const struct guest_mem *mem,
			struct event_loop *loop, struct virtio_vsock **out);
struct virtio_dev *virtio_vsock_dev(struct virtio_vsock *vs);
/* Serve the host's sockets and the timeouts, as the event loop does when they are ready. */
void virtio_vsock_poll(struct virtio_vsock *vs);
void virtio_vsock_stats(struct virtio_vsock *vs, struct vsock_stats *out);
/* Closes every connection and removes the listening socket's file. */
void virtio_vsock_destroy(struct virtio_vsock *vs);

#endif
