/* SPDX-License-Identifier: MIT */
/*
 * The MC146818 CMOS real-time clock at ports 0x70 (index) and 0x71 (data): the time of day
 * from the host's clock (UTC), in BCD or binary and 12- or 24-hour form as register B asks,
 * and 128 bytes of CMOS RAM. No periodic, alarm or update interrupts: Linux on x86 needs
 * none of them (it keeps time with the TSC, kvmclock and the HPET or PIT).
 */
#ifndef YUN_DEVICES_RTC_H
#define YUN_DEVICES_RTC_H

#include <stdint.h>

#include "devices/bus.h"

struct snap_writer;
struct snap_reader;

struct rtc;

int rtc_create(struct io_bus *pio, struct rtc **out);
void rtc_destroy(struct rtc *r);
/* For tests: the seconds since the epoch that the clock shows (default: the host's time). */
void rtc_set_clock(struct rtc *r, int64_t (*now)(void));

/* Snapshots (section "rtc"). */
void rtc_save(struct rtc *r, struct snap_writer *w);
int rtc_load(struct rtc *r, const struct snap_reader *sr);

#endif
