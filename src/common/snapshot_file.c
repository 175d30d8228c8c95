// SPDX-License-Identifier: MIT
#include "common/snapshot_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

static const char magic[8] = "YUNSNAP";

struct header {
	char magic[8];
	uint32_t version;
	uint32_t reserved;
};

struct section_header {
	char name[SNAPSHOT_NAME_MAX];
	uint64_t len;
};

/* A state file holds a few dozen small sections; this bounds what a reader will index. */
#define MAX_SECTIONS 4096

static size_t pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static void append(struct snap_writer *w, const void *data, size_t len)
{
	if (w->err)
		return;
	if (len > w->cap - w->len) {
		size_t cap = w->cap ? w->cap : 4096;
		uint8_t *buf;

		while (cap - w->len < len)
			cap *= 2;
		buf = realloc(w->buf, cap);
		if (!buf) {
			w->err = -ENOMEM;
			return;
		}
		w->buf = buf;
		w->cap = cap;
	}
	if (data)
		memcpy(w->buf + w->len, data, len);
	else
		memset(w->buf + w->len, 0, len);
	w->len += len;
}

void snap_writer_init(struct snap_writer *w)
{
	struct header h = {.version = SNAPSHOT_VERSION};

	memset(w, 0, sizeof(*w));
	memcpy(h.magic, magic, sizeof(magic));
	append(w, &h, sizeof(h));
}

void snap_put(struct snap_writer *w, const char *name, const void *data, size_t len)
{
	struct section_header sh = {.len = len};

	if (strlen(name) >= SNAPSHOT_NAME_MAX) {
		if (!w->err)
			w->err = -ENAMETOOLONG;
		return;
	}
	strcpy(sh.name, name);
	append(w, &sh, sizeof(sh));
	append(w, data, len);
	append(w, NULL, pad8(len) - len);
}

void snap_writer_free(struct snap_writer *w)
{
	free(w->buf);
	w->buf = NULL;
	w->len = w->cap = 0;
}

int snap_writer_finish(struct snap_writer *w, int dirfd, const char *name)
{
	int err = w->err, fd = -1;

	if (!err) {
		fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			err = -errno;
	}
	for (size_t off = 0; !err && off < w->len;) {
		ssize_t n = write(fd, w->buf + off, w->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			err = n < 0 ? -errno : -EIO;
		else
			off += (size_t)n;
	}
	if (!err && fsync(fd) < 0)
		err = -errno;
	if (fd >= 0)
		close(fd);
	snap_writer_free(w);
	return err;
}

int snap_reader_parse(struct snap_reader *r, uint8_t *buf, size_t size, const char *path)
{
	struct header h;
	size_t off = sizeof(h);

	memset(r, 0, sizeof(*r));
	r->path = path;
	if (size < sizeof(h) || memcmp(buf, magic, sizeof(magic))) {
		log_error("%s: not a yun snapshot", path);
		return -EINVAL;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.version != SNAPSHOT_VERSION) {
		log_error("%s: snapshot format version %u, but this build of yun-vmm reads version "
			  "%u only: take the snapshot again with this build",
			  path, h.version, SNAPSHOT_VERSION);
		return -EPROTO;
	}
	while (off < size) {
		struct section_header sh;
		struct snap_section *s;

		if (size - off < sizeof(sh)) {
			log_error("%s: truncated at byte %zu", path, off);
			goto bad;
		}
		memcpy(&sh, buf + off, sizeof(sh));
		off += sizeof(sh);
		if (memchr(sh.name, 0, sizeof(sh.name)) == NULL || sh.len > size - off) {
			log_error("%s: bad section header at byte %zu", path, off - sizeof(sh));
			goto bad;
		}
		if (r->nr == MAX_SECTIONS) {
			log_error("%s: more than %d sections", path, MAX_SECTIONS);
			goto bad;
		}
		s = realloc(r->sections, (r->nr + 1) * sizeof(*s));
		if (!s)
			goto bad;
		r->sections = s;
		s = &r->sections[r->nr++];
		memcpy(s->name, sh.name, sizeof(s->name));
		s->data = buf + off;
		s->len = sh.len;
		/* The padding may be missing at the very end; anything else is whole. */
		off += sh.len < size - off ? pad8(sh.len) : sh.len;
		if (off > size)
			off = size;
	}
	return 0;
bad:
	free(r->sections);
	r->sections = NULL;
	r->nr = 0;
	return -EINVAL;
}

int snap_reader_open(struct snap_reader *r, int dirfd, const char *name, const char *path)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t off = 0;
	int fd, err = 0;

	memset(r, 0, sizeof(*r));
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		err = -errno;
		log_error("%s: %s", path, strerror(errno));
		goto out;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	while (off < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + off, (size_t)st.st_size - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			log_error("%s: read: %s", path, strerror(-err));
			goto out;
		}
		off += (size_t)n;
	}
	err = snap_reader_parse(r, buf, off, path);
	if (!err) {
		r->buf = buf;
		r->size = off;
		buf = NULL;
	}
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return err;
}

void snap_reader_close(struct snap_reader *r)
{
	free(r->sections);
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

const struct snap_section *snap_find(const struct snap_reader *r, const char *name)
{
	for (unsigned i = 0; i < r->nr; i++) {
		if (!strcmp(r->sections[i].name, name))
			return &r->sections[i];
	}
	return NULL;
}

int snap_get(const struct snap_reader *r, const char *name, void *data, size_t len)
{
	const struct snap_section *s = snap_find(r, name);

	if (!s) {
		log_error("%s: no state for %s: the snapshot was taken of another machine "
			  "configuration",
			  r->path, name);
		return -ENOENT;
	}
	if (s->len != len) {
		log_error("%s: %s: %llu bytes of state where this build expects %zu: the snapshot "
			  "comes from an incompatible build",
			  r->path, name, (unsigned long long)s->len, len);
		return -EPROTO;
	}
	memcpy(data, s->data, len);
	return 0;
}
