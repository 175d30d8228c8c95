/* SPDX-License-Identifier: MIT */
/* The host's monotonic clock, for timings and timeouts. */
#ifndef YUN_COMMON_CLOCK_H
#define YUN_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

#endif
