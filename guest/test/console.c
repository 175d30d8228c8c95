// SPDX-License-Identifier: MIT
/*
 * virtio-console (virtio 1.2 §5.3), driven the way Linux's virtio_console drives a device
 * without MULTIPORT: features SIZE and EMERG_WRITE where offered, never MULTIPORT; port 0's
 * receiveq (0) and transmitq (1), both on one MSI-X vector beside the configuration's (what
 * Linux falls back to, and all that QEMU's two default vectors allow); DRIVER_OK, then receive
 * buffers posted.
 *
 * vcon=1 asks for the checks: a line sent on the transmit queue and two emergency writes (one
 * before the features are negotiated, which §5.3.5 allows, one after DRIVER_OK) for the host
 * to find in the console's output; vcon_in=LINE is the line the host types, which the guest
 * must receive. vcon=console says the virtio-console is the VM's only console (yun-vmm's
 * --console-device virtio, which discards COM1's output): the guest then relays everything it
 * printed through the transmit queue before it powers off.
 */
#include "vq.h"

#define VIRTIO_CONSOLE_F_SIZE	     0
#define VIRTIO_CONSOLE_F_MULTIPORT   1
#define VIRTIO_CONSOLE_F_EMERG_WRITE 2

/* struct virtio_console_config (§5.3.4), little-endian. */
#define CFG_COLS	 0
#define CFG_ROWS	 2
#define CFG_MAX_NR_PORTS 4
#define CFG_EMERG_WR	 8

#define RXQ	   0
#define TXQ	   1
#define VQ_SIZE	   16
#define RX_BUFS	   4
#define RX_BUF_LEN 256
#define TX_BUF_LEN 4096

#define LAPIC_ID_REG 0xfee00020ull

/* What the host looks for in the console's output; printed nowhere else, so that a relayed
 * copy of this guest's log cannot stand in for them. */
#define HELLO_LINE "yun-vcon-hello\n"
#define EARLY_LINE "yun-vcon-early\n"
#define EMERG_LINE "yun-vcon-emerg\n"

VQ_DEFINE(rxq, VQ_SIZE);
VQ_DEFINE(txq, VQ_SIZE);
static uint8_t rx_buf[RX_BUFS][RX_BUF_LEN];
static char tx_buf[TX_BUF_LEN];
static struct vpci con = {.name = "virtio-console"};
static volatile uint8_t *ccfg, *dcfg;
static bool relay;

/* Queue index on q, its interrupts on MSI-X entry vector; false (and a failed check) when the
 * device has no such queue. */
static bool setup_queue(struct vq *q, uint16_t index, uint16_t vector)
{
	uint16_t max;

	if (!vq_setup(q, &con, index, vector, &max)) {
		tap(false, "%s: queue %u has a size, a power of 2 (%u)", con.name, index, max);
		return false;
	}
	tap(CC16(ccfg, CC_QMSIX) == vector, "%s: queue %u (size %u of %u) takes MSI-X entry %u",
	    con.name, index, q->size, max, vector);
	return true;
}

/* Whether the queues' MSI-X vector fired since its count was before. */
static bool queue_irq(unsigned before)
{
	for (unsigned i = 0; i < 1000 && irq_count[VEC_QUEUE] == before; i++)
		delay_us(100);
	return irq_count[VEC_QUEUE] != before;
}

/* len bytes of s as one device-readable buffer; false when the device did not use it. */
static bool transmit(const char *s, size_t len, uint32_t *used_len)
{
	uint32_t id;

	if (len > sizeof(tx_buf))
		len = sizeof(tx_buf);
	memcpy(tx_buf, s, len);
	vq_post(&txq, 0, tx_buf, (uint32_t)len, 0);
	vq_kick(&txq);
	return vq_wait(&txq, 5000, &id, used_len) && id == 0;
}

/* One character at a time through emerg_wr, a 32-bit field of which the device takes the
 * low byte (§5.3.4). */
static void emergency_write(const char *s)
{
	for (; *s; s++)
		*(volatile uint32_t *)(dcfg + CFG_EMERG_WR) = (uint8_t)*s;
}

static void check_receive(void)
{
	char want[64], got[RX_BUFS * RX_BUF_LEN];
	unsigned before = irq_count[VEC_QUEUE];
	size_t n = 0, wlen;
	uint32_t id, len;
	bool ok = true;

	if (!arg("vcon_in", want, sizeof(want) - 1)) {
		tap_skip("%s: receive (no vcon_in= given)", con.name);
		return;
	}
	wlen = strlen(want);
	want[wlen++] = '\n';
	for (uint16_t i = 0; i < RX_BUFS; i++)
		vq_post(&rxq, i, rx_buf[i], RX_BUF_LEN, VRING_DESC_F_WRITE);
	vq_kick(&rxq);
	/* The host's line may come in pieces, each in a buffer of its own. */
	while (ok && n < wlen && vq_wait(&rxq, 5000, &id, &len)) {
		ok = id < RX_BUFS && len <= RX_BUF_LEN && n + len <= sizeof(got);
		if (ok) {
			memcpy(got + n, rx_buf[id], len);
			n += len;
		}
	}
	got[n < sizeof(got) ? n : sizeof(got) - 1] = 0;
	tap(ok, "%s: used receive buffers are ours and within their lengths", con.name);
	tap(n == wlen && !memcmp(got, want, wlen), "%s: received the host's line (%u bytes)",
	    con.name, (unsigned)n);
	tap(queue_irq(before), "%s: receive signalled by MSI-X vector %#x", con.name, VEC_QUEUE);
}

void check_virtio_console(void)
{
	uint32_t apic = mmio_read32(LAPIC_ID_REG) >> 24, used_len = 0;
	uint64_t offered, features;
	unsigned before;
	char mode[16];
	bool sent;

	if (!arg("vcon", mode, sizeof(mode))) {
		tap_skip("virtio-console: not asked for (vcon=1)");
		return;
	}
	if (!find_virtio(&con, 3, 0x0780) || !read_caps(&con, true))
		return;
	ccfg = (volatile uint8_t *)con.common.addr;
	dcfg = (volatile uint8_t *)con.device.addr;

	/* virtio 1.2 §3.1.1 */
	CC8(ccfg, CC_STATUS) = 0;
	tap(CC8(ccfg, CC_STATUS) == 0, "%s: reset (status reads 0)", con.name);
	CC8(ccfg, CC_STATUS) = VIRTIO_STATUS_ACK;
	CC8(ccfg, CC_STATUS) = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER;
	offered = cc_device_features(ccfg);
	print("# %s features %#lx (SIZE %u, MULTIPORT %u, EMERG_WRITE %u)\n", con.name, offered,
	      (unsigned)(offered >> VIRTIO_CONSOLE_F_SIZE) & 1,
	      (unsigned)(offered >> VIRTIO_CONSOLE_F_MULTIPORT) & 1,
	      (unsigned)(offered >> VIRTIO_CONSOLE_F_EMERG_WRITE) & 1);
	tap(offered & (1ull << VIRTIO_F_VERSION_1), "%s: device offers VERSION_1", con.name);
	/* §5.3.5: with EMERG_WRITE offered, emerg_wr may be written at any time: before the
	 * features are negotiated too. */
	if (offered & (1ull << VIRTIO_CONSOLE_F_EMERG_WRITE))
		emergency_write(EARLY_LINE);

	features = offered & (1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_CONSOLE_F_SIZE |
			      1ull << VIRTIO_CONSOLE_F_EMERG_WRITE);
	cc_driver_features(ccfg, features);
	CC8(ccfg, CC_STATUS) = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	if (!(CC8(ccfg, CC_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
		tap(false, "%s: FEATURES_OK accepted with %#lx", con.name, features);
		return;
	}
	tap(true, "%s: FEATURES_OK accepted with %#lx, without MULTIPORT", con.name, features);

	/* MSI-X: entry 0 for configuration changes, entry 1 for both queues. */
	pci_write16(con.dev, con.msix_cap + 2,
		    (uint16_t)(pci_read16(con.dev, con.msix_cap + 2) | 0x8000));
	msix_entry(con.msix_table, 0, VEC_CONFIG, apic);
	msix_entry(con.msix_table, 1, VEC_QUEUE, apic);
	CC16(ccfg, CC_MSIX) = 0;
	tap(CC16(ccfg, CC_MSIX) == 0, "%s: config vector 0 accepted", con.name);
	/* §5.3.2: without MULTIPORT, port 0's two queues are all the driver uses. */
	tap(CC16(ccfg, CC_NUMQ) >= 2, "%s: %u queues, receiveq and transmitq among them", con.name,
	    CC16(ccfg, CC_NUMQ));
	if (!setup_queue(&rxq, RXQ, 1) || !setup_queue(&txq, TXQ, 1))
		return;
	CC8(ccfg, CC_STATUS) = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER |
			       VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	tap(CC8(ccfg, CC_STATUS) == 0xf, "%s: DRIVER_OK (status %#x)", con.name,
	    CC8(ccfg, CC_STATUS));

	print("# %s config: cols %u rows %u max_nr_ports %u\n", con.name,
	      *(volatile uint16_t *)(dcfg + CFG_COLS), *(volatile uint16_t *)(dcfg + CFG_ROWS),
	      *(volatile uint32_t *)(dcfg + CFG_MAX_NR_PORTS));
	if (features & (1ull << VIRTIO_CONSOLE_F_SIZE))
		tap(*(volatile uint16_t *)(dcfg + CFG_COLS) &&
			*(volatile uint16_t *)(dcfg + CFG_ROWS),
		    "%s: F_SIZE: the console has columns and rows", con.name);
	else
		tap_skip("%s: console size (F_SIZE not offered)", con.name);

	before = irq_count[VEC_QUEUE];
	sent = transmit(HELLO_LINE, sizeof(HELLO_LINE) - 1, &used_len);
	tap(sent, "%s: the device used the transmit buffer", con.name);
	/* §2.7.8.2: len counts the bytes written into the buffer: none into a device-readable
	 * one. */
	tap(sent && used_len == 0, "%s: used length %u for a transmit buffer", con.name, used_len);
	tap(sent && queue_irq(before), "%s: transmit signalled by MSI-X vector %#x", con.name,
	    VEC_QUEUE);
	check_receive();

	if (features & (1ull << VIRTIO_CONSOLE_F_EMERG_WRITE))
		emergency_write(EMERG_LINE);
	else
		tap_skip("%s: emergency write (EMERG_WRITE not offered)", con.name);
	tap(!(CC8(ccfg, CC_STATUS) & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)),
	    "%s: device still healthy (status %#x)", con.name, CC8(ccfg, CC_STATUS));
	relay = !strcmp(mode, "console") && sent;
	if (relay)
		return;
	CC8(ccfg, CC_STATUS) = 0;
	tap(CC8(ccfg, CC_STATUS) == 0, "%s: reset after use (status reads 0)", con.name);
}

void virtio_console_relay(void)
{
	size_t len, chunk;
	const char *log = print_log(&len);
	uint32_t used_len;

	if (!relay)
		return;
	for (size_t off = 0; off < len; off += chunk) {
		chunk = len - off < TX_BUF_LEN ? len - off : TX_BUF_LEN;
		if (!transmit(log + off, chunk, &used_len))
			return;
	}
}
