// SPDX-License-Identifier: MIT
#include "devices/acpi_pm.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/snapshot_file.h"
#include "vmm/layout.h"

/* ACPI 6.x §4.8.3: PM1 status and enable bits, PM1 control bits. */
#define PM1_TMR_STS    0x0001
#define PM1_PWRBTN_STS 0x0100
#define PM1_WAK_STS    0x8000
#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_EN 0x2000
#define PM_TIMER_HZ    3579545ULL

struct acpi_pm {
	pthread_mutex_t lock;
	struct io_bus *pio;
	struct irq_host *ih;
	void (*poweroff)(void *ctx);
	void *ctx;
	uint16_t sts, en, cnt;
	int line;
};

static void update_sci(struct acpi_pm *pm)
{
	int level = (pm->sts & pm->en) && (pm->cnt & PM1_CNT_SCI_EN);

	if (level != pm->line) {
		pm->line = level;
		pm->ih->ops->set_level(pm->ih->ctx, ACPI_SCI_IRQ, level);
	}
}

/* Reads and writes of any width within a block, little-endian, as the registers' bytes. */
static uint32_t get_bytes(uint32_t reg, uint64_t offset, unsigned size)
{
	return (uint32_t)(reg >> (8 * offset)) & (size >= 4 ? 0xffffffffu : (1u << (8 * size)) - 1);
}

static void evt_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;
	uint32_t v;

	pthread_mutex_lock(&pm->lock);
	v = get_bytes(pm->sts | (uint32_t)pm->en << 16, offset, size);
	pthread_mutex_unlock(&pm->lock);
	memset(data, 0, size);
	memcpy(data, &v, size > 4 ? 4 : size);
}

static void evt_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;

	pthread_mutex_lock(&pm->lock);
	for (unsigned i = 0; i < size && offset + i < 4; i++) {
		unsigned at = (unsigned)offset + i;
		uint16_t b = ((const uint8_t *)data)[i];

		if (at < 2) /* status: write one to clear */
			pm->sts &= (uint16_t) ~(b << (8 * at));
		else /* enable */
			pm->en =
			    (uint16_t)((pm->en & ~(0xff << (8 * (at - 2)))) | b << (8 * (at - 2)));
	}
	update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

static void cnt_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;
	uint32_t v;

	pthread_mutex_lock(&pm->lock);
	v = get_bytes(pm->cnt, offset, size);
	pthread_mutex_unlock(&pm->lock);
	memset(data, 0, size);
	memcpy(data, &v, size > 4 ? 4 : size);
}

static void cnt_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
	struct acpi_pm *pm = opaque;
	uint16_t v;
	unsigned slp_typ;
	bool off = false;

	pthread_mutex_lock(&pm->lock);
	v = pm->cnt;
	for (unsigned i = 0; i < size && offset + i < 2; i++) {
		unsigned at = (unsigned)offset + i;

		v = (uint16_t)((v & ~(0xff << (8 * at))) | ((const uint8_t *)data)[i] << (8 * at));
	}
	/* SCI_EN stays set: the FADT has no SMI command port, so ACPI mode is always on. */
	pm->cnt = (uint16_t)((v & ~PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN);
	slp_typ = (v >> 10) & 7;
	if (v & PM1_CNT_SLP_EN) {
		if (slp_typ == ACPI_S5_SLP_TYP)
			off = true;
		else
			log_guest_error("ACPI: sleep type %u is not supported; ignored", slp_typ);
	}
	update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
	if (off) {
		log_info("ACPI: guest powered off (S5)");
		pm->poweroff(pm->ctx);
	}
}

static void tmr_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct timespec ts;
	uint64_t ticks;
	uint32_t v;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* 3.579545 MHz, 24 bits wide (TMR_VAL_EXT clear in the FADT). */
	ticks =
	    (uint64_t)ts.tv_sec * PM_TIMER_HZ + (uint64_t)ts.tv_nsec * PM_TIMER_HZ / 1000000000ULL;
	v = get_bytes((uint32_t)(ticks & 0xffffff), offset, size);
	memset(data, 0, size);
	memcpy(data, &v, size > 4 ? 4 : size);
}

static const struct io_ops evt_ops = {.read = evt_read, .write = evt_write};
static const struct io_ops cnt_ops = {.read = cnt_read, .write = cnt_write};
static const struct io_ops tmr_ops = {.read = tmr_read};

void acpi_pm_power_button(struct acpi_pm *pm)
{
	pthread_mutex_lock(&pm->lock);
	pm->sts |= PM1_PWRBTN_STS;
	update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

int acpi_pm_create(struct io_bus *pio, struct irq_host *ih, void (*poweroff)(void *ctx), void *ctx,
		   struct acpi_pm **out)
{
	struct acpi_pm *pm = calloc(1, sizeof(*pm));
	int err;

	if (!pm)
		return -ENOMEM;
	pthread_mutex_init(&pm->lock, NULL);
	pm->pio = pio;
	pm->ih = ih;
	pm->poweroff = poweroff;
	pm->ctx = ctx;
	pm->cnt = PM1_CNT_SCI_EN;
	err = io_bus_register(pio, PORT_ACPI_PM1_EVT, 4, &evt_ops, pm, "acpi pm1 event");
	if (!err)
		err = io_bus_register(pio, PORT_ACPI_PM1_CNT, 2, &cnt_ops, pm, "acpi pm1 control");
	if (!err)
		err = io_bus_register(pio, PORT_ACPI_PM_TMR, 4, &tmr_ops, pm, "acpi pm timer");
	if (err) {
		acpi_pm_destroy(pm);
		return err;
	}
	*out = pm;
	return 0;
}

void acpi_pm_destroy(struct acpi_pm *pm)
{
	if (!pm)
		return;
	io_bus_unregister(pm->pio, PORT_ACPI_PM1_EVT, pm);
	io_bus_unregister(pm->pio, PORT_ACPI_PM1_CNT, pm);
	io_bus_unregister(pm->pio, PORT_ACPI_PM_TMR, pm);
	pthread_mutex_destroy(&pm->lock);
	free(pm);
}

/* Snapshots: the PM1 event and control registers (the PM timer follows the host's clock). */
struct acpi_pm_state {
	uint16_t sts, en, cnt;
};

void acpi_pm_save(struct acpi_pm *pm, struct snap_writer *w)
{
	struct acpi_pm_state st;

	pthread_mutex_lock(&pm->lock);
	st = (struct acpi_pm_state){pm->sts, pm->en, pm->cnt};
	pthread_mutex_unlock(&pm->lock);
	snap_put(w, "acpi_pm", &st, sizeof(st));
}

int acpi_pm_load(struct acpi_pm *pm, const struct snap_reader *r)
{
	struct acpi_pm_state st;
	int err = snap_get(r, "acpi_pm", &st, sizeof(st));

	if (err)
		return err;
	pthread_mutex_lock(&pm->lock);
	pm->sts = st.sts;
	pm->en = st.en;
	pm->cnt = (uint16_t)((st.cnt & ~PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN);
	pm->line = 0;
	update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
	return 0;
}
