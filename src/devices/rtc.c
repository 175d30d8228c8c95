// SPDX-License-Identifier: MIT
#include "devices/rtc.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/snapshot_file.h"
#include "vmm/layout.h"

/* Register indices (MC146818A datasheet; the century byte is the PC's convention). */
enum {
	RTC_SECONDS = 0x00,
	RTC_MINUTES = 0x02,
	RTC_HOURS = 0x04,
	RTC_WEEKDAY = 0x06,
	RTC_DAY = 0x07,
	RTC_MONTH = 0x08,
	RTC_YEAR = 0x09,
	RTC_REG_A = 0x0a,
	RTC_REG_B = 0x0b,
	RTC_REG_C = 0x0c,
	RTC_REG_D = 0x0d,
	RTC_CENTURY = 0x32,
};

#define REG_B_24H    0x02
#define REG_B_BINARY 0x04
#define REG_D_VRT    0x80 /* valid RAM and time */

struct rtc {
	pthread_mutex_t lock;
	struct io_bus *pio;
	uint8_t index;
	uint8_t cmos[128];
	int64_t (*now)(void);
};

static int64_t host_now(void)
{
	return (int64_t)time(NULL);
}

static uint8_t encode(const struct rtc *r, unsigned v)
{
	if (r->cmos[RTC_REG_B] & REG_B_BINARY)
		return (uint8_t)v;
	return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t encode_hour(const struct rtc *r, unsigned h)
{
	unsigned h12;

	if (r->cmos[RTC_REG_B] & REG_B_24H)
		return encode(r, h);
	/* 12-hour form: 1..12, bit 7 set for PM. */
	h12 = h % 12 ? h % 12 : 12;
	return (uint8_t)(encode(r, h12) | (h >= 12 ? 0x80 : 0));
}

static uint8_t read_reg(struct rtc *r, uint8_t idx)
{
	time_t t = (time_t)r->now();
	struct tm tm;

	if (idx > RTC_YEAR && idx != RTC_CENTURY) {
		if (idx == RTC_REG_C)
			return 0; /* no interrupt flags: none are ever raised */
		return r->cmos[idx];
	}
	gmtime_r(&t, &tm);
	switch (idx) {
	case RTC_SECONDS:
		return encode(r, (unsigned)tm.tm_sec);
	case RTC_MINUTES:
		return encode(r, (unsigned)tm.tm_min);
	case RTC_HOURS:
		return encode_hour(r, (unsigned)tm.tm_hour);
	case RTC_WEEKDAY:
		return encode(r, (unsigned)tm.tm_wday + 1);
	case RTC_DAY:
		return encode(r, (unsigned)tm.tm_mday);
	case RTC_MONTH:
		return encode(r, (unsigned)tm.tm_mon + 1);
	case RTC_YEAR:
		return encode(r, (unsigned)(tm.tm_year % 100));
	case RTC_CENTURY:
		return encode(r, (unsigned)((tm.tm_year + 1900) / 100));
	default:
		/* Alarm registers. */
		return r->cmos[idx];
	}
}

static void write_reg(struct rtc *r, uint8_t idx, uint8_t v)
{
	switch (idx) {
	case RTC_REG_A:
		/* UIP (bit 7) is read-only and never set: the clock is read atomically. */
		r->cmos[idx] = v & 0x7f;
		break;
	case RTC_REG_C:
	case RTC_REG_D:
		break; /* read-only */
	case RTC_SECONDS:
	case RTC_MINUTES:
	case RTC_HOURS:
	case RTC_WEEKDAY:
	case RTC_DAY:
	case RTC_MONTH:
	case RTC_YEAR:
	case RTC_CENTURY:
		/* The guest may not set the host's clock; the write is dropped. */
		break;
	default:
		r->cmos[idx] = v;
		break;
	}
}

static void rtc_io_read(void *opaque, uint64_t offset, void *data, unsigned size)
{
	struct rtc *r = opaque;

	memset(data, 0xff, size);
	pthread_mutex_lock(&r->lock);
	*(uint8_t *)data = offset == 0 ? r->index : read_reg(r, r->index);
	pthread_mutex_unlock(&r->lock);
}

static void rtc_io_write(void *opaque, uint64_t offset, const void *data, unsigned size)
{
	struct rtc *r = opaque;
	uint8_t v = *(const uint8_t *)data;

	pthread_mutex_lock(&r->lock);
	if (offset == 0)
		r->index = v & 0x7f; /* bit 7 is the NMI mask, not part of the index */
	else
		write_reg(r, r->index, v);
	pthread_mutex_unlock(&r->lock);
}

static const struct io_ops rtc_ops = {
    .read = rtc_io_read,
    .write = rtc_io_write,
};

void rtc_set_clock(struct rtc *r, int64_t (*now)(void))
{
	r->now = now ? now : host_now;
}

int rtc_create(struct io_bus *pio, struct rtc **out)
{
	struct rtc *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->lock, NULL);
	r->pio = pio;
	r->now = host_now;
	r->cmos[RTC_REG_A] = 0x26; /* 32.768 kHz time base, 1.024 kHz rate */
	r->cmos[RTC_REG_B] = REG_B_24H;
	r->cmos[RTC_REG_D] = REG_D_VRT;
	err = io_bus_register(pio, PORT_RTC, 2, &rtc_ops, r, "rtc");
	if (err) {
		pthread_mutex_destroy(&r->lock);
		free(r);
		return err;
	}
	*out = r;
	return 0;
}

void rtc_destroy(struct rtc *r)
{
	if (!r)
		return;
	io_bus_unregister(r->pio, PORT_RTC, r);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/*
 * Snapshots: the index and the CMOS bytes. The time itself is read from the host's clock, so
 * a restored guest sees the time of day move on (as its wall clock would).
 */
struct rtc_state {
	uint8_t index;
	uint8_t cmos[128];
};

void rtc_save(struct rtc *r, struct snap_writer *w)
{
	struct rtc_state st;

	pthread_mutex_lock(&r->lock);
	st.index = r->index;
	memcpy(st.cmos, r->cmos, sizeof(st.cmos));
	pthread_mutex_unlock(&r->lock);
	snap_put(w, "rtc", &st, sizeof(st));
}

int rtc_load(struct rtc *r, const struct snap_reader *sr)
{
	struct rtc_state st;
	int err = snap_get(sr, "rtc", &st, sizeof(st));

	if (err)
		return err;
	pthread_mutex_lock(&r->lock);
	r->index = st.index & 0x7f;
	memcpy(r->cmos, st.cmos, sizeof(r->cmos));
	pthread_mutex_unlock(&r->lock);
	return 0;
}
