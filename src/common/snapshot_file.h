/* SPDX-License-Identifier: MIT */
/*
 * The state file of a snapshot: a header, then named sections, each one device's (or vCPU's,
 * or the VM's) state as that part of the VMM lays it out. A section is found by name, and its
 * length must be the one this build expects, so a snapshot from a build whose layouts differ is
 * refused by name rather than misread; SNAPSHOT_VERSION changes whenever a layout does.
 *
 *   "YUNSNAP\0", u32 version, u32 0, then { char name[32], u64 length, bytes, pad to 8 }...
 *
 * Byte order and padding are the host's: a snapshot is restored on a host like the one that
 * took it (as Firecracker's are). Writers build the file in memory and write it once.
 */
#ifndef YUN_COMMON_SNAPSHOT_FILE_H
#define YUN_COMMON_SNAPSHOT_FILE_H

#include <stddef.h>
#include <stdint.h>

#define SNAPSHOT_VERSION  1
#define SNAPSHOT_NAME_MAX 32

struct snap_writer {
	uint8_t *buf;
	size_t len, cap;
	int err; /* the first failure; later puts do nothing */
};

struct snap_section {
	char name[SNAPSHOT_NAME_MAX];
	const uint8_t *data;
	uint64_t len;
};

struct snap_reader {
	const char *path; /* for messages */
	uint8_t *buf;
	size_t size;
	struct snap_section *sections;
	unsigned nr;
};

void snap_writer_init(struct snap_writer *w);
/* Append a section; a name longer than SNAPSHOT_NAME_MAX - 1 is a bug (-ENAMETOOLONG). */
void snap_put(struct snap_writer *w, const char *name, const void *data, size_t len);
/* Write the file (created or truncated, then fsync'd) and free the buffer: 0 or -errno. */
int snap_writer_finish(struct snap_writer *w, int dirfd, const char *name);
void snap_writer_free(struct snap_writer *w);

/* Read and index a state file; a bad magic, version or section is one clear log line. */
int snap_reader_open(struct snap_reader *r, int dirfd, const char *name, const char *path);
/* Parse a state file already in memory (tests, fuzzers); buf stays the caller's. */
int snap_reader_parse(struct snap_reader *r, uint8_t *buf, size_t size, const char *path);
void snap_reader_close(struct snap_reader *r);
/* The section `name`, or NULL. */
const struct snap_section *snap_find(const struct snap_reader *r, const char *name);
/*
 * Copy section `name` into data, which must be exactly len bytes: -ENOENT when it is missing,
 * -EPROTO when its length differs (both logged, naming the section).
 */
int snap_get(const struct snap_reader *r, const char *name, void *data, size_t len);

#endif
