// SPDX-License-Identifier: MIT
#include "fake_irq.h"

#include <string.h>

static int fake_set_level(void *ctx, unsigned gsi, int level)
{
	struct fake_irq *f = ctx;

	if (gsi >= FAKE_IRQ_GSIS) {
		f->bad_gsi++;
		return -1;
	}
	f->level[gsi] = level;
	f->calls[gsi]++;
	return 0;
}

static int fake_send_msi(void *ctx, uint64_t addr, uint32_t data)
{
	(void)ctx, (void)addr, (void)data;
	return 0;
}

static int fake_msi_route(void *ctx, int *gsi, uint64_t addr, uint32_t data)
{
	(void)ctx, (void)addr, (void)data;
	if (*gsi < 0)
		*gsi = FAKE_IRQ_GSIS - 1;
	return 0;
}

static int fake_msi_route_free(void *ctx, int gsi)
{
	(void)ctx, (void)gsi;
	return 0;
}

static int fake_irqfd(void *ctx, unsigned gsi, int fd, bool assign)
{
	(void)ctx, (void)gsi, (void)fd, (void)assign;
	return 0;
}

static int fake_ioeventfd(void *ctx, uint64_t addr, unsigned len, int fd, bool pio, bool assign)
{
	(void)ctx, (void)addr, (void)len, (void)fd, (void)pio, (void)assign;
	return 0;
}

static const struct irq_host_ops fake_irq_ops = {
    .set_level = fake_set_level,
    .send_msi = fake_send_msi,
    .msi_route = fake_msi_route,
    .msi_route_free = fake_msi_route_free,
    .irqfd = fake_irqfd,
    .ioeventfd = fake_ioeventfd,
};

void fake_irq_init(struct fake_irq *f)
{
	memset(f, 0, sizeof(*f));
	f->host.ops = &fake_irq_ops;
	f->host.ctx = f;
}
