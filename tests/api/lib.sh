# shellcheck shell=bash
# Shared by the API tests: TAP helpers and one HTTP call over yun-vmm's control socket.
BUILD=${BUILD:-build}
LOGS=${YUN_TEST_LOGS:-$BUILD/test-logs}
mkdir -p "$LOGS"
n=${n:-0}

ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); echo "not ok $n - $*"; }

# call METHOD PATH [BODY]: sets $code (the HTTP status) and $body (the response).
call() {
	local out
	out=$(curl -s --max-time 30 --unix-socket "$SOCK" -X "$1" -w '\n%{http_code}' \
		${3+-H 'Content-Type: application/json' --data-binary "$3"} "http://yun$2")
	code=${out##*$'\n'}
	body=${out%$'\n'*}
}

# expect WHAT METHOD PATH BODY STATUS [PYTHON-EXPR]: the status, and the expression over the
# response's JSON (as `j`) is true. BODY "-" sends none.
expect() {
	local what=$1 method=$2 path=$3 req=$4 want=$5 cond=${6:-True}
	if [ "$req" = - ]; then call "$method" "$path"; else call "$method" "$path" "$req"; fi
	if [ "$code" = "$want" ] && json_true "$cond"; then
		ok "$what"
	else
		not_ok "$what # $method $path: status $code, body: $body$(no_answer_why)"
	fi
}

# After a call without an answer (status 000): whether yun-vmm ($pid) is still there, and the
# last line it wrote to $VMM_STDERR, so that a CI log that shows only failures tells why.
no_answer_why() {
	local state
	[ "$code" = 000 ] && [ -n "${pid:-}" ] || return 0
	state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
	if [ -n "$state" ] && [ "$state" != Z ]; then
		printf '; yun-vmm (pid %s) runs but did not answer in 30 s' "$pid"
	else
		printf '; yun-vmm (pid %s) is gone' "$pid"
	fi
	[ -n "${VMM_STDERR:-}" ] && [ -s "$VMM_STDERR" ] && printf ', its last words: %s' "$(tail -n 1 "$VMM_STDERR")"
	return 0
}

# json_true EXPR: EXPR over the last response's JSON (`j`; None without a body) holds.
json_true() {
	BODY=$body python3 -c '
import json, os, sys
b = os.environ["BODY"]
j = json.loads(b) if b else None
sys.exit(0 if eval(sys.argv[1]) else 1)' "$1" 2>/dev/null
}

# jget EXPR: print EXPR over the last response's JSON.
jget() {
	BODY=$body python3 -c '
import json, os, sys
j = json.loads(os.environ["BODY"])
print(eval(sys.argv[1]))' "$1"
}

# wait_socket: until the control socket answers (5 s at most).
wait_socket() {
	for _ in $(seq 50); do
		[ -S "$SOCK" ] && curl -s --max-time 1 --unix-socket "$SOCK" http://yun/vm >/dev/null && return 0
		sleep 0.1
	done
	return 1
}
