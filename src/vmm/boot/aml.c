// SPDX-License-Identifier: MIT
#include "vmm/boot/aml.h"

#include <string.h>

/* ACPI 6.4 §20.2: opcodes used here. */
#define AML_ZERO	  0x00
#define AML_ONE		  0x01
#define AML_NAME	  0x08
#define AML_BYTE_PREFIX	  0x0a
#define AML_WORD_PREFIX	  0x0b
#define AML_DWORD_PREFIX  0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX  0x0e
#define AML_SCOPE	  0x10
#define AML_BUFFER	  0x11
#define AML_PACKAGE	  0x12
#define AML_EXT_PREFIX	  0x5b
#define AML_DEVICE	  0x82 /* after the extended prefix */
#define AML_ROOT	  0x5c
#define AML_DUAL_NAME	  0x2e
#define AML_MULTI_NAME	  0x2f
#define AML_ONES	  0xff

void aml_init(struct aml *a, void *buf, size_t cap)
{
	a->buf = buf;
	a->len = 0;
	a->cap = cap;
	a->overflow = false;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (a->overflow || n > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

static void put_le(struct aml *a, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		aml_byte(a, (uint8_t)(v >> (8 * i)));
}

static void name_seg(struct aml *a, const char *s, size_t n)
{
	char seg[4] = {'_', '_', '_', '_'};

	memcpy(seg, s, n > 4 ? 4 : n);
	aml_bytes(a, seg, 4);
}

void aml_name(struct aml *a, const char *path)
{
	const char *p = path, *dot;
	unsigned segs = 1;

	while (*p == '\\' || *p == '^')
		aml_byte(a, (uint8_t)*p++);
	for (const char *q = p; *q; q++)
		segs += *q == '.';
	if (!*p) {
		aml_byte(a, AML_ZERO); /* NullName */
		return;
	}
	if (segs == 2) {
		aml_byte(a, AML_DUAL_NAME);
	} else if (segs > 2) {
		aml_byte(a, AML_MULTI_NAME);
		aml_byte(a, (uint8_t)segs);
	}
	while ((dot = strchr(p, '.'))) {
		name_seg(a, p, (size_t)(dot - p));
		p = dot + 1;
	}
	name_seg(a, p, strlen(p));
}

void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0) {
		aml_byte(a, AML_ZERO);
	} else if (v == 1) {
		aml_byte(a, AML_ONE);
	} else if (v == UINT64_MAX) {
		aml_byte(a, AML_ONES);
	} else if (v <= 0xff) {
		aml_byte(a, AML_BYTE_PREFIX);
		put_le(a, v, 1);
	} else if (v <= 0xffff) {
		aml_byte(a, AML_WORD_PREFIX);
		put_le(a, v, 2);
	} else if (v <= 0xffffffffULL) {
		aml_byte(a, AML_DWORD_PREFIX);
		put_le(a, v, 4);
	} else {
		aml_byte(a, AML_QWORD_PREFIX);
		put_le(a, v, 8);
	}
}

void aml_string(struct aml *a, const char *s)
{
	aml_byte(a, AML_STRING_PREFIX);
	aml_bytes(a, s, strlen(s) + 1);
}

void aml_eisaid(struct aml *a, const char *id)
{
	/* Three letters of 5 bits each, then four hex digits; stored big-endian (§19.6.35). */
	uint32_t v = (uint32_t)((id[0] - 0x40) & 0x1f) << 26 |
		     (uint32_t)((id[1] - 0x40) & 0x1f) << 21 |
		     (uint32_t)((id[2] - 0x40) & 0x1f) << 16;
	uint32_t hex = 0;

	for (int i = 3; i < 7; i++) {
		char c = id[i];

		hex = hex << 4 | (uint32_t)(c >= 'A' ? c - 'A' + 10 : c - '0');
	}
	v |= hex;
	aml_byte(a, AML_DWORD_PREFIX);
	aml_byte(a, (uint8_t)(v >> 24));
	aml_byte(a, (uint8_t)(v >> 16));
	aml_byte(a, (uint8_t)(v >> 8));
	aml_byte(a, (uint8_t)v);
}

void aml_name_decl(struct aml *a, const char *name)
{
	aml_byte(a, AML_NAME);
	aml_name(a, name);
}

unsigned aml_pkglen_encode(size_t len, uint8_t out[4])
{
	/* §20.2.4: one byte up to 63; otherwise 1-3 more bytes, the low nibble in the first. */
	if (len + 1 <= 0x3f) {
		out[0] = (uint8_t)(len + 1);
		return 1;
	}
	for (unsigned extra = 1; extra <= 3; extra++) {
		size_t total = len + 1 + extra;

		if (total < (1ULL << (4 + 8 * extra))) {
			out[0] = (uint8_t)((extra << 6) | (total & 0xf));
			for (unsigned i = 0; i < extra; i++)
				out[1 + i] = (uint8_t)(total >> (4 + 8 * i));
			return 1 + extra;
		}
	}
	return 0; /* more than 2^28 bytes: not representable */
}

/* Content starts at the returned offset; the package length is inserted before it on close. */
static size_t open_pkg(struct aml *a)
{
	return a->len;
}

void aml_close(struct aml *a, size_t open)
{
	uint8_t enc[4];
	size_t body;
	unsigned n;

	if (a->overflow)
		return;
	body = a->len - open;
	n = aml_pkglen_encode(body, enc);
	if (n == 0 || n > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	memmove(a->buf + open + n, a->buf + open, body);
	memcpy(a->buf + open, enc, n);
	a->len += n;
}

size_t aml_open_scope(struct aml *a, const char *name)
{
	size_t at;

	aml_byte(a, AML_SCOPE);
	at = open_pkg(a);
	aml_name(a, name);
	return at;
}

size_t aml_open_device(struct aml *a, const char *name)
{
	size_t at;

	aml_byte(a, AML_EXT_PREFIX);
	aml_byte(a, AML_DEVICE);
	at = open_pkg(a);
	aml_name(a, name);
	return at;
}

size_t aml_open_package(struct aml *a, uint8_t nr_elements)
{
	size_t at;

	aml_byte(a, AML_PACKAGE);
	at = open_pkg(a);
	aml_byte(a, nr_elements);
	return at;
}

/* A buffer's size (an integer) comes before its bytes: it is filled in on close. */
size_t aml_open_buffer(struct aml *a)
{
	aml_byte(a, AML_BUFFER);
	return open_pkg(a);
}

void aml_close_buffer(struct aml *a, size_t open)
{
	struct aml size;
	uint8_t enc[9];
	size_t body;

	if (a->overflow)
		return;
	/* A resource template ends with the end tag and a zero checksum (§6.4.2.9). */
	aml_byte(a, 0x79);
	aml_byte(a, 0x00);
	if (a->overflow)
		return;
	body = a->len - open;
	aml_init(&size, enc, sizeof(enc));
	aml_integer(&size, body);
	if (size.len > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	memmove(a->buf + open + size.len, a->buf + open, body);
	memcpy(a->buf + open, enc, size.len);
	a->len += size.len;
	aml_close(a, open);
}

/* Address space descriptors (§6.4.3.5): producer, fixed min and max, positive decode. */
#define ADDR_FLAGS 0x0c

void aml_res_bus_number(struct aml *a, uint16_t min, uint16_t max)
{
	const uint8_t hdr[] = {0x88, 0x0d, 0x00, 0x02, ADDR_FLAGS, 0x00};

	aml_bytes(a, hdr, sizeof(hdr));
	put_le(a, 0, 2);
	put_le(a, min, 2);
	put_le(a, max, 2);
	put_le(a, 0, 2);
	put_le(a, (uint32_t)max - min + 1, 2);
}

void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max)
{
	const uint8_t hdr[] = {0x88, 0x0d, 0x00, 0x01, ADDR_FLAGS, 0x03 /* entire range */};

	aml_bytes(a, hdr, sizeof(hdr));
	put_le(a, 0, 2);
	put_le(a, min, 2);
	put_le(a, max, 2);
	put_le(a, 0, 2);
	put_le(a, (uint32_t)max - min + 1, 2);
}

void aml_res_dword_memory(struct aml *a, uint32_t min, uint32_t max)
{
	const uint8_t hdr[] = {0x87, 0x17, 0x00, 0x00, ADDR_FLAGS, 0x01 /* read/write */};

	aml_bytes(a, hdr, sizeof(hdr));
	put_le(a, 0, 4);
	put_le(a, min, 4);
	put_le(a, max, 4);
	put_le(a, 0, 4);
	put_le(a, (uint64_t)max - min + 1, 4);
}

void aml_res_qword_memory(struct aml *a, uint64_t min, uint64_t max)
{
	const uint8_t hdr[] = {0x8a, 0x2b, 0x00, 0x00, ADDR_FLAGS, 0x01};

	aml_bytes(a, hdr, sizeof(hdr));
	put_le(a, 0, 8);
	put_le(a, min, 8);
	put_le(a, max, 8);
	put_le(a, 0, 8);
	put_le(a, max - min + 1, 8);
}

void aml_res_io(struct aml *a, uint16_t base, uint8_t len)
{
	aml_byte(a, 0x47);
	aml_byte(a, 0x01); /* 16-bit decode */
	put_le(a, base, 2);
	put_le(a, base, 2);
	aml_byte(a, 1);
	aml_byte(a, len);
}

void aml_res_irq(struct aml *a, unsigned irq)
{
	aml_byte(a, 0x22);
	put_le(a, 1u << irq, 2);
}
