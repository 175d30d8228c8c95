#!/usr/bin/env bash
# virtio-vsock served by yun-vmm itself, proved by Linux's own vsock drivers: Debian's cloud
# kernel with the busybox initramfs (which loads vsock, vmw_vsock_virtio_transport_common and
# vmw_vsock_virtio_transport) and tests/linux/vsock-peer, a static program added to it. The
# guest listens on vsock port 5000; the host connects through yun-vmm's Unix socket with
# "CONNECT 5000" and sends it 2 MiB; then the guest connects to CID 2 port 6000, which is the
# host's socket PATH_6000, and sends 2 MiB the other way. Both ends compare byte counts and
# hashes; 2 MiB is eight times the credit either side advertises, so flow control has to work.
# A CONNECT to a port nobody listens on must be closed without "OK". Needs /dev/kvm with real
# ring-0 virtualization (tests/kvmhost/run.sh provides one) and the guest kit in the cache.
set -u
cd "$(dirname "$0")/../.."
. tests/linux/lib.sh
skip_without_ring0
load_kit
dir=$(mktemp -d)
vmm=
listener=
trap '[ -z "$vmm" ] || kill "$vmm" 2>/dev/null; [ -z "$listener" ] || kill "$listener" 2>/dev/null; rm -rf "$dir"' EXIT
BYTES=$((2 * 1024 * 1024))
# A bound on a hang, not the expected time: about 20 s in the KVM host, more when it is loaded.
WAIT=${YUN_VSOCK_WAIT:-300}

peer=${BUILD:-build}/tests/linux/vsock-peer
if [ ! -x "$peer" ] || [ "$peer" -ot tests/linux/vsock-peer.c ]; then
	peer=$dir/vsock-peer
	gcc -static -O2 -o "$peer" tests/linux/vsock-peer.c || {
		not_ok "vsock-peer builds statically (gcc -static)"
		echo "1..$n"
		exit 1
	}
fi
# The kit's initramfs and a second archive with /bin/vsock-peer: Linux unpacks both, in turn.
# The second must start on a 4-byte boundary; the zeros before it are skipped.
mkdir -p "$dir/extra/bin"
cp "$peer" "$dir/extra/bin/vsock-peer"
cp "$initrd" "$dir/initrd"
truncate -s %512 "$dir/initrd"
(cd "$dir/extra" && find . | cpio -o -H newc --quiet) >>"$dir/initrd"

uds=$dir/v.sock
log=$LOGS/linux-vsock-guest.log
"$peer" uds-listen "${uds}_6000" >"$dir/host-listen.log" 2>&1 &
listener=$!
run="/bin/vsock-peer,listen,5000;/bin/vsock-peer,connect,2,6000,$BYTES"
: >"$log"
start=$(date +%s)
timeout "$TIMEOUT" "$VMM" --kernel "$kdir/vmlinuz" --initrd "$dir/initrd" --memory 256 \
	--vsock "cid=3,uds=$uds" --console "file=$log" --no-reboot \
	--cmdline "console=ttyS0 panic=-1 yun.run=$run" 2>"$log.stderr" &
vmm=$!
for _ in $(seq "$WAIT"); do
	grep -q 'vsock-peer: listening on 5000' "$log" && break
	kill -0 "$vmm" 2>/dev/null || break
	sleep 1
done
echo "# the guest listened after $(($(date +%s) - start)) s"
expect "the guest's vsock driver bound our device and listens" 'vsock-peer: listening on 5000' "$log"

# Closed because the guest answered our REQUEST with RST, well before the device would give up
# waiting (VIRTIO_VSOCK_REQUEST_TIMEOUT_MS, 5 s).
t0=$(date +%s.%N)
out=$("$peer" uds-refused "$uds" 7777 2>&1)
status=$?
secs=$(echo "$t0 $(date +%s.%N)" | awk '{ printf "%.2f", $2 - $1 }')
echo "# $out"
if [ $status -eq 0 ] && awk -v s="$secs" 'BEGIN { exit !(s < 4) }'; then
	ok "CONNECT to a port nobody listens on: closed without OK after $secs s (the guest's RST)"
else
	not_ok "CONNECT to a port nobody listens on: status $status after $secs s"
fi

t0=$(date +%s.%N)
out=$("$peer" uds-connect "$uds" 5000 "$BYTES" 2>&1)
status=$?
t1=$(date +%s.%N)
echo "$out" | sed 's/^/# host: /'
if [ $status -eq 0 ] && echo "$out" | grep -q '^vsock-peer: CONNECT 5000: OK [0-9]'; then
	ok "host to guest: CONNECT 5000 answered OK, $BYTES bytes arrived intact ($(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }') s)"
else
	not_ok "host to guest: status $status"
fi

wait "$vmm"
status=$?
vmm=
echo "# yun-vmm exit status $status after $(($(date +%s) - start)) s; $(grep 'vsock0:' "$log.stderr")"
if [ $status -eq 0 ]; then
	ok "the guest powered off and yun-vmm exited 0"
else
	not_ok "yun-vmm exit status $status # $(head -c 300 "$log.stderr")"
fi
wait "$listener"
listener=
sed 's/^/# host listener: /' "$dir/host-listen.log"
expect "guest: received the host's $BYTES bytes" "^vsock-peer: received $BYTES bytes fnv" "$log"
expect "guest to host: the host's socket ${uds##*/}_6000 received $BYTES bytes" \
	"^vsock-peer: received $BYTES bytes fnv" "$dir/host-listen.log"
expect "guest to host: the guest's hash matches the host's" \
	"^vsock-peer: sent $BYTES bytes fnv ([0-9a-f]+); the peer received $BYTES bytes fnv \\1: match" "$log"
expect "the guest's command finished" 'yun-guest: command exited with status 0' "$log"
expect "yun-vmm counted two host connections and one from the guest" \
	'vsock0: .*connections 2 from the host 1 from the guest' "$log.stderr"
if [ -e "$uds" ]; then
	not_ok "yun-vmm removed its socket at exit"
else
	ok "yun-vmm removed its socket at exit"
fi
echo "1..$n"
