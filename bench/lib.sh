# shellcheck shell=bash
# bench/lib.sh - helpers shared by the benchmark scripts in bench/.
# Source it from a script that runs with `set -euo pipefail`:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# It changes directory to the repository root.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
OUT="$BENCH_DIR/out"          # gitignored: binaries, logs, raw JSON
LOGS="$OUT/logs"
RAW="$OUT/raw"
cd "$ROOT" || exit 1
mkdir -p "$OUT" "$LOGS" "$RAW"

RUNS="${RUNS:-3}"
case "$RUNS" in ''|*[!0-9]*|0) echo "RUNS must be a positive integer (got '$RUNS')" >&2; exit 2 ;; esac

SOCKIT="${SOCKIT:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sockit}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
_APT_UPDATED=0
# need TOOL PKG: install Debian package PKG with apt-get if TOOL is not on PATH.
need() {
    local tool=$1 pkg=$2
    command -v "$tool" >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "$tool is missing and apt-get is not available (install $pkg)"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    if [ "$_APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        "${sudo[@]}" apt-get update -qq >&2
        _APT_UPDATED=1
    fi
    log "installing $pkg (for $tool)"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$pkg" >&2
    command -v "$tool" >/dev/null 2>&1 || die "$tool still missing after installing $pkg"
}

# ---------------------------------------------------------------- builds
# build_c NAME: compile bench/c/NAME.c to bench/out/NAME.
build_c() {
    local name=$1
    need cc gcc
    log "cc -O2 -o bench/out/$name bench/c/$name.c"
    record_line "cc -O2 -o bench/out/$name bench/c/$name.c"
    cc -O2 -o "$OUT/$name" "$BENCH_DIR/c/$name.c"
}

# build_sockit: cargo build --release --locked (skip with SOCKIT_BUILD=0).
build_sockit() {
    if [ "${SOCKIT_BUILD:-1}" != 0 ]; then
        log "cargo build --release --locked"
        cargo build --release --locked >&2
    fi
    record_line "cargo build --release --locked"
    [ -x "$SOCKIT" ] || die "sockit binary not found at $SOCKIT"
}

# ---------------------------------------------------------------- processes
BG_PIDS=()
LAST_PID=

# cleanup: kill (TERM, then KILL after 3 s) every process started by start_bg
# that still runs.
cleanup() {
    local pid live=() i
    for pid in "${BG_PIDS[@]}"; do
        if alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            live+=("$pid")
        fi
    done
    for ((i = 0; i < 30 && ${#live[@]} > 0; i++)); do
        local still=()
        for pid in "${live[@]}"; do
            if alive "$pid"; then still+=("$pid"); fi
        done
        live=("${still[@]}")
        if [ ${#live[@]} -gt 0 ]; then sleep 0.1; fi
    done
    for pid in "${live[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    BG_PIDS=()
}
trap 'cleanup' EXIT
# with set -e, say which command failed instead of exiting silently
set -o errtrace
trap 'log "error: exit status $? from: $BASH_COMMAND (${BASH_SOURCE[0]##*/}:$LINENO, in ${FUNCNAME[0]:-main})"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg_io NAME STDIN STDOUT CMD...: run CMD in the background with stdin
# from STDIN and stdout to STDOUT; stderr goes to bench/out/logs/NAME.log
# (stdout too when STDOUT is "-"). Its pid is in LAST_PID; it is killed on exit.
start_bg_io() {
    local name=$1 in=$2 out=$3; shift 3
    local log="$LOGS/$name.log"
    if [ "$out" = - ]; then
        "$@" <"$in" >"$log" 2>&1 &
    else
        "$@" <"$in" >"$out" 2>"$log" &
    fi
    LAST_PID=$!
    BG_PIDS+=("$LAST_PID")
}

# start_bg NAME CMD...: run CMD in the background, stdin from /dev/null,
# stdout+stderr to bench/out/logs/NAME.log; pid in LAST_PID.
start_bg() { local name=$1; shift; start_bg_io "$name" /dev/null - "$@"; }

# run_fg NAME STDOUT CMD...: run CMD (stdin /dev/null, stdout to STDOUT,
# stderr to bench/out/logs/NAME.log) and return its exit status. It runs as a
# background job waited for with `wait`, so INT/TERM sent to the script stop
# it at once (the exit trap kills CMD) instead of after CMD finishes.
run_fg() {
    local name=$1 out=$2; shift 2
    start_bg_io "$name" /dev/null "$out" "$@"
    local pid=$LAST_PID rc=0
    wait "$pid" || rc=$?
    forget_bg "$pid"
    return "$rc"
}

# isleep SECONDS: sleep that INT/TERM to the script interrupt at once.
isleep() { sleep "$1" & wait $!; }

# stop_bg PID: TERM, wait up to 3 s, then KILL; reaps the process.
stop_bg() {
    local pid=$1 i
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    wait "$pid" 2>/dev/null || true
    forget_bg "$pid"
}

# forget_bg PID: drop PID from the processes killed on exit (after waiting for it).
forget_bg() {
    local keep=() p
    for p in "${BG_PIDS[@]}"; do
        if [ "$p" != "$1" ]; then keep+=("$p"); fi
    done
    BG_PIDS=("${keep[@]}")
}


# alive PID: true while PID is a running child of this script (not exited,
# not a zombie). Checking the parent guards against a recycled PID after the
# shell has reaped the child.
alive() {
    local st
    st=$(awk '/^State:/ { s = $2 } /^PPid:/ { p = $2 } END { print s, p }' "/proc/$1/status" 2>/dev/null) || return 1
    [ "$st" != "" ] && [ "${st%% *}" != Z ] && [ "${st#* }" = "$$" ]
}

# ---------------------------------------------------------------- ports
# Ports are looked up in /proc/net/{tcp,tcp6,udp,udp6} so that checking never
# opens a connection (a probe would use up the single accept of `sockit listen`
# or `ncat -l`).

# _port_in_table PORT FILES STATE: true if a socket with local port PORT and
# state STATE (hex, e.g. 0A = LISTEN, 07 = UDP bound) is listed.
_port_in_table() {
    local hex
    hex=$(printf '%04X' "$1")
    # shellcheck disable=SC2086  # $2 is a list of files
    awk -v p="$hex" -v st="$3" 'FNR > 1 { split($2, a, ":"); if (a[2] == p && $4 == st) { found = 1; exit } }
        END { exit !found }' $2 2>/dev/null
}
tcp_listening() { _port_in_table "$1" "/proc/net/tcp /proc/net/tcp6" 0A; }
udp_bound() { _port_in_table "$1" "/proc/net/udp /proc/net/udp6" 07; }

# port_free PORT: nothing listens on TCP PORT and nothing is bound to UDP PORT.
port_free() { ! tcp_listening "$1" && ! udp_bound "$1"; }

# check_free PORT...: fail unless every port is free.
check_free() {
    local p
    for p in "$@"; do
        port_free "$p" || die "port $p is in use on this machine; set PORT_BASE to another value (below $(ephemeral_low))"
    done
}

ephemeral_low() { awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768; }

# wait_port PORT [PID]: poll (every 50 ms, at most 10 s) until TCP PORT is
# listening, i.e. accepts connections. Fails early if PID exits.
wait_port() {
    local port=$1 pid=${2:-} i
    for ((i = 0; i < 200; i++)); do
        tcp_listening "$port" && return 0
        if [ -n "$pid" ] && ! alive "$pid"; then die "server (pid $pid) exited before listening on port $port"; fi
        sleep 0.05
    done
    die "nothing listening on TCP port $port after 10 s"
}

# wait_udp_port PORT [PID]: same for a bound UDP port.
wait_udp_port() {
    local port=$1 pid=${2:-} i
    for ((i = 0; i < 200; i++)); do
        udp_bound "$port" && return 0
        if [ -n "$pid" ] && ! alive "$pid"; then die "server (pid $pid) exited before binding UDP port $port"; fi
        sleep 0.05
    done
    die "nothing bound to UDP port $port after 10 s"
}

# ---------------------------------------------------------------- measuring
# duration_secs DURATION: seconds in a duration such as 10s, 10, 1m, 500ms
# (rounded up to a whole second).
duration_secs() {
    local d=$1
    case "$d" in
        *ms) awk -v v="${d%ms}" 'BEGIN { s = v / 1000; print (s == int(s)) ? s : int(s) + 1 }' ;;
        *s) echo "${d%s}" ;;
        *m) echo $(( ${d%m} * 60 )) ;;
        *[!0-9]*|'') die "cannot parse duration '$d' (use e.g. 10s, 1m)" ;;
        *) echo "$d" ;;
    esac
}

# rss_kib PID: resident set size in KiB (VmRSS from /proc/PID/status).
rss_kib() { awk '/^VmRSS:/{print $2; f=1} END{if(!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# threads_of PID: number of threads (Threads: in /proc/PID/status).
threads_of() { awk '/^Threads:/{print $2; f=1} END{if(!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# fd_count PID: number of open file descriptors of PID.
# shellcheck disable=SC2012  # the names are numbers
fd_count() { ls -U "/proc/$1/fd" 2>/dev/null | wc -l; }

# start_sampler FILE PID SECONDS: in the background, append
# "RSS_KiB THREADS FDS" for PID to FILE every 0.25 s, for at most SECONDS (or
# until PID exits).
# The sampler's pid is in LAST_PID; stop it with stop_bg.
start_sampler() {
    local file=$1 pid=$2 secs=$3
    : >"$file"
    (
        for ((i = 0; i < secs * 4; i++)); do
            alive "$pid" || break
            echo "$(rss_kib "$pid") $(threads_of "$pid") $(fd_count "$pid")" >>"$file"
            sleep 0.25
        done
    ) &
    LAST_PID=$!
    BG_PIDS+=("$LAST_PID")
}

# column_max FILE N: maximum of whitespace-separated column N in FILE (0 if empty).
column_max() { awk -v c="$2" 'BEGIN { m = 0 } $c + 0 > m { m = $c + 0 } END { print m }' "$1" 2>/dev/null || echo 0; }

# io_wchar PID: bytes PID has passed to write/send system calls so far
# (wchar in /proc/PID/io; includes bytes written to sockets).
io_wchar() { awk '/^wchar:/{print $2}' "/proc/$1/io" 2>/dev/null; }

# ss_rx_bytes PORT: payload bytes received so far by the established TCP
# sockets whose local port is PORT (sum of bytes_received from `ss -ti`).
# Counted by the kernel, so it does not depend on the programs measured.
ss_rx_bytes() {
    ss -tinH state established "( sport = :$1 )" 2>/dev/null |
        grep -o 'bytes_received:[0-9]*' | awk -F: '{ s += $2 } END { printf "%.0f\n", s }'
}

# wait_established PORT PID: poll (50 ms, at most 10 s) until a connection to
# local port PORT has received data; fails early if PID exits.
wait_established() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 200; i++)); do
        [ "$(ss_rx_bytes "$port")" -gt 0 ] && return 0
        alive "$pid" || die "sender (pid $pid) exited before any data reached port $port"
        sleep 0.05
    done
    die "no data received on port $port after 10 s"
}

# ss_rate_gbit PORT WARMUP WINDOW: after WARMUP seconds, count the bytes
# received on local port PORT over WINDOW seconds; print Gbit/s (n/a if the
# connection went away during the window).
ss_rate_gbit() {
    local port=$1 warm=$2 win=$3 b0 t0 b1 t1
    isleep "$warm"
    t0=$EPOCHREALTIME; b0=$(ss_rx_bytes "$port")
    isleep "$win"
    t1=$EPOCHREALTIME; b1=$(ss_rx_bytes "$port")
    awk -v b0="$b0" -v b1="$b1" -v t0="$t0" -v t1="$t1" \
        'BEGIN { if (b1 <= b0 || t1 <= t0) print "n/a"; else printf "%.3f\n", (b1 - b0) * 8 / (t1 - t0) / 1e9 }'
}

# setup_idle_stdin: create IDLE_FIFO, a FIFO that this shell keeps open for
# writing and never writes to: a program reading it as stdin gets neither data
# nor EOF (for netcat-style listeners, which would otherwise read the terminal
# or stop at EOF on /dev/null). Call it directly, not in $(...).
IDLE_FIFO=
IDLE_FD=
setup_idle_stdin() {
    [ -n "$IDLE_FD" ] && return 0
    IDLE_FIFO="$OUT/idle-stdin.fifo"
    rm -f "$IDLE_FIFO"
    mkfifo "$IDLE_FIFO"
    exec {IDLE_FD}<>"$IDLE_FIFO"
}

# median: read numbers (one per line, or whitespace separated) on stdin and
# print their median (mean of the two middle values for an even count).
# Prints "n/a" when there is no number.
median() {
    tr -s ' \t' '\n' | awk '/^-?[0-9.eE+-]+$/' | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "n/a"; exit }
            if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
            if (m == int(m)) printf "%.0f\n", m; else printf "%.6g\n", m
        }'
}

# json_get FILE KEY...: print the values of KEYs (space separated) from the
# JSON object on the last line of FILE that starts with '{'.
json_get() {
    local file=$1; shift
    python3 - "$file" "$@" <<'PY'
import json, sys
path, keys = sys.argv[1], sys.argv[2:]
obj = None
with open(path) as f:
    for line in f:
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                pass
if obj is None:
    sys.exit("no JSON object in " + path)
print(" ".join(str(obj.get(k, "n/a")) for k in keys))
PY
}

# fmt NUMBER [DECIMALS]: format a number (n/a passes through).
fmt() {
    local v=$1 d=${2:-0}
    case "$v" in n/a|'') echo "n/a" ;; *) awk -v v="$v" -v d="$d" 'BEGIN { printf "%.*f\n", d, v }' ;; esac
}

# ratio A B [DECIMALS]: A/B, or n/a.
ratio() {
    local a=$1 b=$2 d=${3:-2}
    case "$a$b" in *n/a*) echo "n/a"; return ;; esac
    awk -v a="$a" -v b="$b" -v d="$d" 'BEGIN { if (b == 0) print "n/a"; else printf "%.*f\n", d, a / b }'
}

# trust_server DATA PORT: pin the certificate of the `sockit serve` whose data
# directory is DATA, listening on 127.0.0.1:PORT, in $SOCKIT_CONFIG_DIR: what
# a user's "yes" on the first connection does (the framed port speaks TLS).
trust_server() {
    local fp
    fp=$("$SOCKIT" tls fingerprint --data-dir "$1") || die "no certificate in $1/tls"
    "$SOCKIT" tls trust "127.0.0.1:$2" "$fp" 2>/dev/null || die "cannot pin 127.0.0.1:$2"
    record_line "sockit tls trust 127.0.0.1:$2 \"\$(sockit tls fingerprint --data-dir ${1//"$ROOT/"/})\""
}

# ---------------------------------------------------------------- commands log
CMDS=()
# quote CMD...: the command line shell-quoted, repository root stripped.
quote() {
    local line
    line=$(printf '%q ' "$@")
    line=${line% }
    echo "${line//"$ROOT/"/}"
}

# record_line LINE: remember a command line for the report (once).
record_line() {
    local c
    for c in "${CMDS[@]}"; do [ "$c" = "$1" ] && return 0; done
    CMDS+=("$1")
}

# record CMD...: remember a command (shell-quoted) for the report.
record() { record_line "$(quote "$@")"; }

# print_commands: the recorded command lines as a Markdown code block.
print_commands() {
    echo
    echo "Commands (run from the repository root; every case was run $RUNS times):"
    echo
    echo '```sh'
    local c
    for c in "${CMDS[@]}"; do echo "$c"; done
    echo '```'
}

# machine_info: one line describing the machine, for the report.
machine_info() {
    local cpu
    cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null)
    echo "Machine: ${cpu:-unknown CPU}, $(nproc) cores, Linux $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
}
