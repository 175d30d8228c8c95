# shellcheck shell=bash disable=SC2154 # $dir, $err: preboot.sh's
# --jail DIR --uid U --gid G before a VM exists (no KVM needed); sourced by preboot.sh, whose
# $dir, $pid and trap it shares. Bad jail options get one clear line and status 1; a jailed
# yun-vmm waiting for the API is chrooted into DIR as U:G with no capability, answers on a
# socket inside DIR, made DIR's device nodes, and looks for the files it is given inside DIR.

# jail_refused DESCRIPTION PATTERN ARGS...: status 1 and one line on stderr matching PATTERN.
jail_refused() {
	local what=$1 pattern=$2 out status
	shift 2
	out=$("$BUILD/yun-vmm" "$@" --console none 2>&1 </dev/null)
	status=$?
	if [ $status = 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && [[ $out =~ $pattern ]]; then
		ok "$what"
	else
		not_ok "$what # status $status: $out"
	fi
}

if [ "$(id -u)" != 0 ]; then
	ok "jail: # SKIP entering a jail needs root"
	return 0
fi
JAIL=$dir/jail
JUID=12345
JGID=12346
mkdir -p "$JAIL/run"
chown $JUID:$JGID "$JAIL/run"
jail=(--jail "$JAIL" --uid "$JUID" --gid "$JGID")

jail_refused "--uid without --jail" 'uid: only with --jail' --uid $JUID --api-socket "$dir/j.sock"
jail_refused "--gid without --jail" 'gid: only with --jail' --gid $JGID --api-socket "$dir/j.sock"
jail_refused "--jail without --uid and --gid" 'jail needs --uid and --gid' --jail "$JAIL" --uid $JUID \
	--api-socket /run/api.sock
jail_refused "--uid 0 (root) is refused" 'uid 0: the jail runs unprivileged' --jail "$JAIL" --uid 0 --gid $JGID
jail_refused "--gid 0 is refused" 'gid 0: the jail runs unprivileged' --jail "$JAIL" --uid $JUID --gid 0
jail_refused "--uid that is not a number" 'uid 1x: want a number' --jail "$JAIL" --uid 1x --gid $JGID
jail_refused "a jail directory that does not exist" "jail $dir/nowhere: open: No such file" \
	--jail "$dir/nowhere" --uid $JUID --gid $JGID --api-socket /run/api.sock
mkdir -m 700 "$dir/closed"
jail_refused "a jail directory its user cannot search" "user $JUID cannot search it" \
	--jail "$dir/closed" --uid $JUID --gid $JGID --api-socket /run/api.sock
mkdir -p "$dir/odd/dev"
touch "$dir/odd/dev/kvm"
jail_refused "a DIR/dev/kvm that is not KVM's device node" 'dev/kvm exists and is not the character device 10:232' \
	--jail "$dir/odd" --uid $JUID --gid $JGID --api-socket /run/api.sock
echo '{"jail": "/"}' >"$dir/jail.json"
jail_refused "--jail in a --config file: give it on the command line" 'jail: give it on the command line' \
	--config "$dir/jail.json"
# The host's path of the guest, which the jail does not hold.
jail_refused "jailed, --kernel is looked for inside the jail" "kernel $PWD/$BUILD/guest/test-guest.elf: No such file" \
	"${jail[@]}" --kernel "$PWD/$BUILD/guest/test-guest.elf"

SOCK=$JAIL/run/api.sock
"$BUILD/yun-vmm" "${jail[@]}" --api-socket /run/api.sock --console none 2>"$LOGS/api-jail.stderr" &
pid=$!
if wait_socket; then ok "jailed, --api-socket /run/api.sock serves DIR/run/api.sock"; else
	not_ok "jailed, --api-socket /run/api.sock serves DIR/run/api.sock # see $LOGS/api-jail.stderr"
fi
status_of() { awk -v k="$1:" '$1 == k {$1 = ""; print substr($0, 2)}' "/proc/$pid/status"; }
ids="$(status_of Uid) / $(status_of Gid) / $(status_of Groups)"
[ "$ids" = "$JUID $JUID $JUID $JUID / $JGID $JGID $JGID $JGID / " ] &&
	ok "jailed: every uid $JUID, every gid $JGID, no supplementary group" || not_ok "jailed: uids and gids # $ids"
caps="$(status_of CapPrm) $(status_of CapEff) $(status_of CapBnd) $(status_of CapAmb)"
[ "$caps" = "0000000000000000 0000000000000000 0000000000000000 0000000000000000" ] &&
	ok "jailed: no capability, the bounding set empty" || not_ok "jailed: no capability # $caps"
root=$(readlink "/proc/$pid/root")
[ "$root" = "$(realpath "$JAIL")" ] && ok "jailed: the process's root is DIR" || not_ok "jailed: the process's root # $root"
nodes=$(stat -c '%n %F %t:%T %u:%g %a' "$JAIL/dev/kvm" "$JAIL/dev/urandom" "$JAIL/dev/net/tun" |
	sed "s|$JAIL/||; s/character special file/c/" | tr '\n' ';')
[ "$nodes" = "dev/kvm c a:e8 $JUID:$JGID 600;dev/urandom c 1:9 $JUID:$JGID 600;dev/net/tun c a:c8 $JUID:$JGID 600;" ] &&
	ok "DIR/dev/kvm (10:232), DIR/dev/urandom (1:9), DIR/dev/net/tun (10:200) made, the jail user's, 0600" ||
	not_ok "DIR's device nodes # $nodes"
[ "$(stat -c %u:%g "$SOCK")" = "$JUID:$JGID" ] && ok "the socket is the jail user's" ||
	not_ok "the socket is the jail user's # $(stat -c %u:%g "$SOCK")"
expect "jailed: GET /vm answers, NotStarted" GET /vm - 200 'j["state"] == "NotStarted"'
expect "the jail cannot be given through the API: 400" PUT /vm/config '{"uid": 1}' 400 \
	"$err and 'command line' in j['error']"
expect "jailed: a configuration naming a host path" PUT /vm/config \
	'{"kernel": "'"$PWD/$BUILD/guest/test-guest.elf"'"}' 204
expect "... fails at InstanceStart: not found inside the jail" PUT /actions '{"action_type": "InstanceStart"}' 400 \
	"$err and 'No such file' in j['error']"
expect "jailed: Stop: 204" PUT /actions '{"action_type": "Stop"}' 204
for _ in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
wait $pid
status=$?
[ $status = 0 ] && [ ! -e "$SOCK" ] && ok "jailed: exits 0 after Stop, its socket removed" ||
	not_ok "jailed: exits 0 after Stop, its socket removed # status $status"
