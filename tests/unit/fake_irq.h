/* SPDX-License-Identifier: MIT */
/*
 * A fake irq_host for unit tests: records the level each GSI was last driven to and how many
 * times set_level was called. The MSI, irqfd and ioeventfd operations succeed and do nothing.
 */
#ifndef YUN_TESTS_UNIT_FAKE_IRQ_H
#define YUN_TESTS_UNIT_FAKE_IRQ_H

#include "devices/irq.h"

#define FAKE_IRQ_GSIS 32

struct fake_irq {
	struct irq_host host; /* pass &f->host to devices */
	int level[FAKE_IRQ_GSIS];
	unsigned calls[FAKE_IRQ_GSIS]; /* set_level calls per GSI */
	unsigned bad_gsi;	       /* set_level calls with a GSI out of range */
};

void fake_irq_init(struct fake_irq *f);

#endif
