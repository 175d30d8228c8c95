# The freestanding test guest: a PVH ELF that yun-vmm and QEMU both load with --kernel/-kernel.
GUEST_CFLAGS := -std=gnu11 -O2 -g -ffreestanding -fno-pic -fno-pie -fno-stack-protector \
                -mno-red-zone -mgeneral-regs-only -fno-builtin -nostdlib \
                -Wall -Wextra -Wno-unused-parameter -MMD -MP
ifeq ($(WERROR),1)
GUEST_CFLAGS += -Werror
endif
GUEST_SRC := guest/test/head.S guest/test/lib.c guest/test/main.c guest/test/console.c \
	     guest/test/net.c guest/test/vsock.c guest/test/vq.c
GUEST_OBJ := $(GUEST_SRC:%=$(BUILD)/guest/obj/%.o)

guest: $(BUILD)/guest/test-guest.elf

$(BUILD)/guest/obj/%.o: %
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -c $< -o $@

$(BUILD)/guest/test-guest.elf: $(GUEST_OBJ) guest/test/linker.ld
	$(CC) $(GUEST_CFLAGS) -static -no-pie -Wl,--build-id=none -Wl,-n -Wl,--no-warn-rwx-segments -T guest/test/linker.ld \
		-o $@ $(GUEST_OBJ) -lgcc
