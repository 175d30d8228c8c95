/* SPDX-License-Identifier: MIT */
/* The test guest's little freestanding library: port I/O, MMIO, the serial port, TAP. */
#ifndef YUN_GUEST_TEST_GUEST_H
#define YUN_GUEST_TEST_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint16_t inw(uint16_t port)
{
	uint16_t v;

	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)addr;
}

static inline void mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)addr = v;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

static inline void barrier(void)
{
	__asm__ volatile("mfence" ::: "memory");
}

/* Keep the compiler from moving memory accesses across it: enough between a used index's read
 * and the ring's (x86 keeps loads in order itself). */
static inline void compiler_barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);

void serial_init(void);
void print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vprint(const char *fmt, va_list ap);
/* What print() wrote to COM1 so far (its first 64 KiB), for a run where COM1 goes nowhere. */
const char *print_log(size_t *len);

/* TAP: each check is one line; the plan comes at the end. */
void tap(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tap_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern unsigned tap_passed, tap_failed, tap_count;
extern bool quiet; /* no output at all (the benchmark's shortest path) */

/* PCI configuration mechanism #1, bus 0. */
uint32_t pci_read32(unsigned dev, unsigned off);
uint16_t pci_read16(unsigned dev, unsigned off);
uint8_t pci_read8(unsigned dev, unsigned off);
void pci_write16(unsigned dev, unsigned off, uint16_t v);
void pci_write32(unsigned dev, unsigned off, uint32_t v);

#endif
