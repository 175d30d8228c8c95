#!/usr/bin/env bash
# Debian's unmodified cloud kernel on yun-vmm, booted as a bzImage and as the ELF vmlinux
# through PVH, with 2 vCPUs and 256 MiB: its log must show our e820 map, our ACPI tables,
# both CPUs, and the PCI host bridge. Needs /dev/kvm (run it through tests/kvmhost/run.sh) and
# the kernel in the cache (guest/kit/debian-kernel.sh, run beforehand on a host with apt).
#
# The kernel is given no root file system: after early boot it panics, and with panic=-1 it
# reboots at once, which --no-reboot turns into exit status 2. On hosts whose KVM emulates
# ring 0 (kvm_pvm) it stops earlier, at an instruction KVM cannot run (status 3): the lines
# checked here come before that point.
set -u
cd "$(dirname "$0")/../.."
. tests/linux/lib.sh
load_kit kernel-only

# Lines that prove the kernel saw the machine yun-vmm describes.
check_log() {
	local what=$1 log=$2 bios=$3
	local -a want=(
		'BIOS-e820: \[mem 0x0000000000000000-0x000000000009ffff\] usable'
		"BIOS-e820: \\[mem 0x00000000000${bios}0000-0x00000000000fffff\\] reserved"
		'BIOS-e820: \[mem 0x0000000000100000-0x000000000fffffff\] usable'
		'ACPI: RSDP 0x00000000000E0000 000024 \(v02 YUN'
		'ACPI: XSDT 0x[0-9A-F]+ [0-9A-F]+ \(v01 YUN'
		'ACPI: FACP 0x[0-9A-F]+ 000114 \(v06 YUN'
		'ACPI: DSDT 0x[0-9A-F]+ [0-9A-F]+ \(v02 YUN'
		'ACPI: APIC 0x[0-9A-F]+ [0-9A-F]+ \(v0[0-9] YUN'
		'IOAPIC\[0\]: apic_id 2, version [0-9]+, address 0xfec00000, GSI 0-23'
		'ACPI: INT_SRC_OVR \(bus 0 bus_irq 0 global_irq 2 high edge\)'
		'ACPI: INT_SRC_OVR \(bus 0 bus_irq 9 global_irq 9 high level\)'
		'smpboot: Allowing 2 CPUs, 0 hotplug CPUs'
		'PCI host bridge to bus 0000:00'
	)
	for re in "${want[@]}"; do
		if grep -qE -- "$re" "$log"; then
			ok "$what: log shows /$re/"
		else
			not_ok "$what: log shows /$re/ # see $log"
		fi
	done
}

for kernel in vmlinuz vmlinux; do
	what="Debian $(cat "$kdir/version") $kernel"
	log=$LOGS/linux-early-$kernel.log
	start=$(date +%s)
	timeout "$TIMEOUT" "$VMM" --kernel "$kdir/$kernel" --cpus 2 --memory 256 --no-reboot \
		--console "file=$log" \
		--cmdline "earlycon=uart8250,io,0x3f8 console=ttyS0 panic=-1 mitigations=off" \
		2>"$log.stderr"
	status=$?
	echo "# $what: exit status $status after $(($(date +%s) - start)) s"
	case $status in
	2) ok "$what: the kernel ran to its panic and yun-vmm ended with the reboot status" ;;
	3)
		# Only a host whose KVM emulates ring 0 (kvm_pvm) may stop the kernel early.
		if [ -d /sys/module/kvm_pvm ]; then
			ok "$what: KVM stopped the kernel; yun-vmm reported it: $(head -n1 "$log.stderr") # kvm_pvm emulates ring 0"
		else
			not_ok "$what: the guest crashed: $(head -c 300 "$log.stderr")"
		fi
		;;
	*) not_ok "$what: yun-vmm exit status $status # $(head -c 300 "$log.stderr")" ;;
	esac
	# Our map reserves 0xE0000-0xFFFFF (the ACPI tables); Linux's own PVH entry reserves the
	# whole ISA hole from 0xA0000 on top of what the start info says.
	bios=e
	[ "$kernel" = vmlinux ] && bios=a
	check_log "$what" "$log" "$bios"
done
echo "1..$n"
