// SPDX-License-Identifier: MIT
#include "guest.h"

#define COM1 0x3f8

unsigned tap_passed, tap_failed, tap_count;
bool quiet;

void *memset(void *d, int c, size_t n)
{
	uint8_t *p = d;

	while (n--)
		*p++ = (uint8_t)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	uint8_t *p = d;
	const uint8_t *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *p = a, *q = b;

	for (; n; n--, p++, q++) {
		if (*p != *q)
			return *p - *q;
	}
	return 0;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (uint8_t)*a - (uint8_t)*b;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

void serial_init(void)
{
	outb(COM1 + 1, 0x00); /* no interrupts */
	outb(COM1 + 3, 0x80); /* DLAB */
	outb(COM1 + 0, 0x01); /* 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03); /* 8N1 */
	outb(COM1 + 2, 0x07); /* FIFOs on and cleared */
	outb(COM1 + 4, 0x03); /* DTR, RTS */
}

/* Everything written to COM1, kept for print_log(). */
static char log_buf[64 * 1024];
static size_t log_len;

const char *print_log(size_t *len)
{
	*len = log_len;
	return log_buf;
}

static void putc_serial(char c)
{
	if (quiet)
		return;
	if (log_len < sizeof(log_buf))
		log_buf[log_len++] = c;
	/* Wait for THRE (LSR bit 5), bounded so that a broken UART cannot hang the guest. */
	for (unsigned i = 0; i < 1000000 && !(inb(COM1 + 5) & 0x20); i++)
		cpu_relax();
	outb(COM1, (uint8_t)c);
}

static void puts_serial(const char *s)
{
	while (*s) {
		if (*s == '\n')
			putc_serial('\r');
		putc_serial(*s++);
	}
}

static void put_num(uint64_t v, unsigned base, int width, char pad)
{
	char buf[24];
	int n = 0;

	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (n < width--)
		putc_serial(pad);
	while (n)
		putc_serial(buf[--n]);
}

void vprint(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		int width = 0, longs = 0;
		char pad = ' ';

		if (*fmt != '%') {
			if (*fmt == '\n')
				putc_serial('\r');
			putc_serial(*fmt);
			continue;
		}
		fmt++;
		if (*fmt == '#') {
			puts_serial("0x");
			fmt++;
		}
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l') {
			longs++;
			fmt++;
		}
		switch (*fmt) {
		case 'd': {
			int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);

			if (v < 0) {
				putc_serial('-');
				v = -v;
			}
			put_num((uint64_t)v, 10, width, pad);
			break;
		}
		case 'u':
			put_num(longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width,
				pad);
			break;
		case 'x':
			put_num(longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width,
				pad);
			break;
		case 's':
			puts_serial(va_arg(ap, const char *));
			break;
		case 'c':
			putc_serial((char)va_arg(ap, int));
			break;
		default:
			putc_serial('%');
			putc_serial(*fmt);
			break;
		}
	}
}

void print(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprint(fmt, ap);
	va_end(ap);
}

void tap(bool ok, const char *fmt, ...)
{
	va_list ap;

	print("%sok %u - ", ok ? "" : "not ", ++tap_count);
	va_start(ap, fmt);
	vprint(fmt, ap);
	va_end(ap);
	print("\n");
	if (ok)
		tap_passed++;
	else
		tap_failed++;
}

void tap_skip(const char *fmt, ...)
{
	va_list ap;

	print("ok %u - ", ++tap_count);
	va_start(ap, fmt);
	vprint(fmt, ap);
	va_end(ap);
	print(" # SKIP\n");
}

static void pci_select(unsigned dev, unsigned off)
{
	outl(0xcf8, 0x80000000u | dev << 11 | (off & 0xfc));
}

uint32_t pci_read32(unsigned dev, unsigned off)
{
	pci_select(dev, off);
	return inl(0xcfc);
}

uint16_t pci_read16(unsigned dev, unsigned off)
{
	pci_select(dev, off);
	return inw((uint16_t)(0xcfc + (off & 2)));
}

uint8_t pci_read8(unsigned dev, unsigned off)
{
	pci_select(dev, off);
	return inb((uint16_t)(0xcfc + (off & 3)));
}

void pci_write16(unsigned dev, unsigned off, uint16_t v)
{
	pci_select(dev, off);
	outw((uint16_t)(0xcfc + (off & 2)), v);
}

void pci_write32(unsigned dev, unsigned off, uint32_t v)
{
	pci_select(dev, off);
	outl(0xcfc, v);
}
