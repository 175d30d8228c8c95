/* SPDX-License-Identifier: MIT */
/*
 * A small emitter of ACPI Machine Language (ACPI 6.4 §20.2), enough for the DSDT of a yun
 * machine: names, integers, strings, packages, buffers, scopes, devices, and resource
 * templates. Nested objects are opened with aml_open_*() and closed with aml_close(), which
 * writes their package length.
 */
#ifndef YUN_VMM_BOOT_AML_H
#define YUN_VMM_BOOT_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aml {
	uint8_t *buf;
	size_t len, cap;
	bool overflow; /* set once anything did not fit; every later call is a no-op */
};

void aml_init(struct aml *a, void *buf, size_t cap);
void aml_byte(struct aml *a, uint8_t b);
void aml_bytes(struct aml *a, const void *p, size_t n);
/* A name string: "\\_SB_.PCI0", "_HID", "COM1"; segments shorter than 4 are padded with '_'. */
void aml_name(struct aml *a, const char *path);
/* An integer in its shortest encoding (ZeroOp, OneOp, Byte/Word/DWord/QWord prefix). */
void aml_integer(struct aml *a, uint64_t v);
void aml_string(struct aml *a, const char *s);
/* A compressed EISA ID ("PNP0A03") as a DWord. */
void aml_eisaid(struct aml *a, const char *id);
/* Name(NAME, ...): the value is emitted by the caller right after. */
void aml_name_decl(struct aml *a, const char *name);

/* Open objects with a package length; aml_close() takes the value they returned. */
size_t aml_open_scope(struct aml *a, const char *name);
size_t aml_open_device(struct aml *a, const char *name);
size_t aml_open_package(struct aml *a, uint8_t nr_elements);
size_t aml_open_buffer(struct aml *a); /* a resource template: close with aml_close_buffer */
void aml_close(struct aml *a, size_t open);
void aml_close_buffer(struct aml *a, size_t open);

/* Resource descriptors (ACPI 6.4 §6.4), inside an open buffer. */
void aml_res_bus_number(struct aml *a, uint16_t min, uint16_t max);
void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max);
void aml_res_dword_memory(struct aml *a, uint32_t min, uint32_t max);
void aml_res_qword_memory(struct aml *a, uint64_t min, uint64_t max);
void aml_res_io(struct aml *a, uint16_t base, uint8_t len);
void aml_res_irq(struct aml *a, unsigned irq);

/* The PkgLength of a package whose contents after it are `len` bytes; returns its size. */
unsigned aml_pkglen_encode(size_t len, uint8_t out[4]);

#endif
