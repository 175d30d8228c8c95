// SPDX-License-Identifier: MIT
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"

static enum log_level max_level = LOG_INFO;
static char vm_name[64] = "yun-vmm";
static const char *const level_names[] = {"error", "warning", "info", "debug"};

void log_set_level(enum log_level level)
{
	max_level = level;
}

void log_set_vm_name(const char *name)
{
	snprintf(vm_name, sizeof(vm_name), "%s", name);
}

static void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	n = snprintf(line, sizeof(line), "%s: %s: ", vm_name, level_names[level]);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	/* One write per line, so that lines from several threads never interleave. */
	fprintf(stderr, "%s\n", line);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

void log_ratelimited(struct log_ratelimit *rl, enum log_level level, const char *fmt, ...)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	unsigned suppressed;
	long long now = (long long)monotonic_ns();
	va_list ap;

	if (level > max_level)
		return;
	pthread_mutex_lock(&lock);
	if (rl->last_ns && now - rl->last_ns < 1000000000LL) {
		rl->suppressed++;
		pthread_mutex_unlock(&lock);
		return;
	}
	suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->last_ns = now;
	pthread_mutex_unlock(&lock);

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
	if (suppressed)
		log_msg(level, "(%u similar messages suppressed)", suppressed);
}
