# yun: top-level build. `make` builds everything into build/; `make check` runs the whole suite.
#
#   build/yun-vmm                 the hypervisor
#   build/libyun.a                every module of src/ but main.c (what the unit tests link)
#   build/tests/unit/test_*       unit tests (cmocka), plain
#   build/asan/tests/unit/test_*  the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   build/fuzz/fuzz_*             libFuzzer targets (clang)
#   build/guest/test-guest.elf    the freestanding test guest (PVH ELF)
#   build/bench/net-peer          the host's end of bench/net.py
#
# WERROR=1 (set by CI) turns warnings into errors.

CC       ?= gcc
CLANG    ?= clang
BUILD    := build
WERROR   ?= 0

WARN     := -Wall -Wextra -Wformat=2 -Wshadow -Wvla -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter -Wno-missing-field-initializers
ifeq ($(WERROR),1)
WARN     += -Werror
endif
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -pthread $(WARN) -Isrc -MMD -MP
LDLIBS   := -pthread -luring -lmicrohttpd -ljansson -lseccomp

# The modules and the program.
LIB_SRC  := $(sort $(shell find src -name '*.c' ! -path 'src/vmm/main.c'))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%)
UNIT_HELPERS := $(filter-out tests/unit/test_%.c,$(wildcard tests/unit/*.c))

# Sanitized copies of the same.
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
ASAN_OBJ := $(LIB_SRC:%.c=$(BUILD)/asan/obj/%.o)
ASAN_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/asan/tests/unit/%)

FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_OBJ := $(LIB_SRC:%.c=$(BUILD)/fuzz/obj/%.o)

.PHONY: all vmm unit asan fuzz guest bench check format format-check clean
all: vmm unit asan guest bench

vmm: $(BUILD)/yun-vmm $(BUILD)/yun-vmm-sandbox-test
unit: $(UNIT_BIN)
asan: $(ASAN_BIN)
fuzz: $(FUZZ_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libyun.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/yun-vmm: $(BUILD)/obj/src/vmm/main.o $(BUILD)/libyun.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# A test-only yun-vmm whose threads can be told to break their sandbox (tests/cli, api-vm).
$(BUILD)/selftest/sandbox.o: src/vmm/sandbox.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DYUN_SANDBOX_SELFTEST -c $< -o $@

$(BUILD)/yun-vmm-sandbox-test: $(BUILD)/obj/src/vmm/main.o $(BUILD)/selftest/sandbox.o $(BUILD)/libyun.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(UNIT_HELPERS) $(BUILD)/libyun.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(UNIT_HELPERS) $(BUILD)/libyun.a -lcmocka $(LDLIBS)

$(BUILD)/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) -c $< -o $@

$(BUILD)/asan/libyun.a: $(ASAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/asan/tests/unit/%: tests/unit/%.c $(UNIT_HELPERS) $(BUILD)/asan/libyun.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) -Itests/unit -o $@ $< $(UNIT_HELPERS) $(BUILD)/asan/libyun.a -lcmocka $(LDLIBS)

# libFuzzer needs clang; the modules are rebuilt with coverage instrumentation.
FUZZ_FLAGS := -O1 -g -std=c11 -D_GNU_SOURCE -pthread -Isrc -fsanitize=fuzzer-no-link,address,undefined
FUZZ_DEPS := -MMD -MP
$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_FLAGS) $(FUZZ_DEPS) -c $< -o $@

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

# A static program that Linux guests run: tests/linux/vsock.sh puts it into the initramfs.
all: $(BUILD)/tests/linux/vsock-peer
$(BUILD)/tests/linux/vsock-peer: tests/linux/vsock-peer.c
	@mkdir -p $(dir $@)
	$(CC) -static -O2 -std=c11 -D_GNU_SOURCE $(WARN) -o $@ $<

# The benchmarks' host-side programs.
bench: $(BUILD)/bench/net-peer

$(BUILD)/bench/%: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $<

# The freestanding guests have their own rules.
-include guest/test/guest.mk

check: all fuzz
	tests/run $(SUITES)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
