/* SPDX-License-Identifier: MIT */
/*
 * One logger for the whole VMM. Everything goes to stderr (or the file set with log_set_file);
 * stdout belongs to the guest's console. Every line carries the VM's name so that the logs of
 * many VMs, gathered by yund, stay readable.
 */
#ifndef YUN_COMMON_LOG_H
#define YUN_COMMON_LOG_H

#include <stdio.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
void log_set_vm_name(const char *name);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * For messages a guest can trigger at will: at most one line per second per call site, with a
 * count of what was suppressed, so a hostile guest cannot flood the host's logs.
 */
struct log_ratelimit {
	long long last_ns;
	unsigned suppressed;
};
void log_ratelimited(struct log_ratelimit *rl, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* A guest's mistake: rate-limited per call site. */
#define log_guest_error(...)                                  \
	do {                                                  \
		static struct log_ratelimit rl_;              \
		log_ratelimited(&rl_, LOG_WARN, __VA_ARGS__); \
	} while (0)

#endif
