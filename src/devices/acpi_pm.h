/* SPDX-License-Identifier: MIT */
/*
 * ACPI fixed hardware (ACPI 6.x §4.8): the PM1a event block (status and enable), the PM1a
 * control block (SCI_EN, SLP_TYP, SLP_EN: writing S5 powers the machine off) and the 24-bit
 * PM timer at 3.579545 MHz. The system control interrupt is level-triggered on ACPI_SCI_IRQ.
 */
#ifndef YUN_DEVICES_ACPI_PM_H
#define YUN_DEVICES_ACPI_PM_H

#include <stdint.h>

#include "devices/bus.h"
#include "devices/irq.h"

struct snap_writer;
struct snap_reader;

struct acpi_pm;

int acpi_pm_create(struct io_bus *pio, struct irq_host *ih, void (*poweroff)(void *ctx), void *ctx,
		   struct acpi_pm **out);
void acpi_pm_destroy(struct acpi_pm *pm);
/* Press the power button: PWRBTN_STS, and an SCI if the guest enabled it. */
void acpi_pm_power_button(struct acpi_pm *pm);

/* Snapshots (section "acpi_pm"). */
void acpi_pm_save(struct acpi_pm *pm, struct snap_writer *w);
int acpi_pm_load(struct acpi_pm *pm, const struct snap_reader *r);

#endif
