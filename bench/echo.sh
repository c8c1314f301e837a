#!/usr/bin/env bash
# bench/echo.sh - TCP echo round trips: sockit echo vs a C epoll server and the
# classic Python threaded server.
#
# Each client connection sends a 64-byte message, waits for the 64-byte reply,
# and repeats for DURATION (sockit bench echo --mode rr). Run from the repo root:
#   bash bench/echo.sh
# Environment: RUNS (3), DURATION (10s), CONNS ("50 500"), SIZE (64),
#   PORT_BASE (29100; uses PORT_BASE..PORT_BASE+5), CLIENT_GRACE (120, seconds
#   allowed beyond DURATION before a client run is killed), SOCKIT_BUILD=0 to
#   skip cargo build, LAYOUTS ("shared pinned").
#
# Two layouts. "Shared": server and load generator share every core, as the
# kernel schedules them. "A core each" (machines with 2+ cores): the C server
# and sockit echo run on core 0 and the load generator on core 1 (taskset), so
# neither waits for the other's time slice; sockit then sees one core.

set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10s}"
CONNS="${CONNS:-50 500}"
SIZE="${SIZE:-64}"
PORT_BASE="${PORT_BASE:-29100}"
CLIENT_GRACE="${CLIENT_GRACE:-120}"
DUR_S=$(duration_secs "$DURATION")

ulimit -n "$(ulimit -Hn)"
record_line "ulimit -n $(ulimit -Hn)"
need python3 python3
build_c epoll_echo
build_sockit

# server key -> port, label, command
LAYOUTS="${LAYOUTS:-shared pinned}"
SERVERS=()
PINNED_SERVERS=() # the same servers with a core each: key "NAME@pin"
for layout in $LAYOUTS; do
    case "$layout" in
        shared) SERVERS=(c sockit-echo py sockit-upper) ;;
        pinned)
            if [[ $(nproc) -ge 2 ]]; then
                need taskset util-linux
                PINNED_SERVERS=(c@pin sockit-echo@pin)
            else
                log "one core: skipping the pinned layout"
            fi
            ;;
        *) die "unknown layout $layout (shared, pinned)" ;;
    esac
done
declare -A PORT LABEL
PORT[c]=$PORT_BASE
PORT[sockit-echo]=$((PORT_BASE + 1))
PORT[py]=$((PORT_BASE + 2))
PORT[sockit-upper]=$((PORT_BASE + 3))
PORT[c@pin]=$((PORT_BASE + 4))
PORT[sockit-echo@pin]=$((PORT_BASE + 5))
LABEL[c]="C epoll (epoll_echo.c)"
LABEL[sockit-echo]="sockit echo --mode echo"
LABEL[py]="Python ThreadingTCPServer (upper)"
LABEL[sockit-upper]="sockit echo --mode upper"
LABEL[c@pin]="C epoll, core 0 (load generator: core 1)"
LABEL[sockit-echo@pin]="sockit echo, core 0 (load generator: core 1)"
check_free "${PORT[@]}"

server_cmd() { # sets CMD for server $1 and CLIENT_PREFIX for its load generator
    local p=${PORT[$1]} pin=()
    CLIENT_PREFIX=()
    if [[ $1 == *@pin ]]; then
        pin=(taskset -c 0)
        CLIENT_PREFIX=(taskset -c 1)
    fi
    case "${1%@pin}" in
        c) CMD=("${pin[@]}" "$OUT/epoll_echo" "$p") ;;
        sockit-echo) CMD=("${pin[@]}" "$SOCKIT" echo --bind "127.0.0.1:$p" --mode echo --tcp-only) ;;
        sockit-upper) CMD=("$SOCKIT" echo --bind "127.0.0.1:$p" --mode upper --tcp-only) ;;
        py) CMD=(python3 "$BENCH_DIR/py/threaded_upper.py" "$p") ;;
    esac
}

RESULTS="$RAW/echo.tsv"
: >"$RESULTS"
log "echo: RUNS=$RUNS DURATION=$DURATION CONNS=($CONNS) SIZE=$SIZE LAYOUTS=($LAYOUTS)"

for ((run = 1; run <= RUNS; run++)); do
    for s in "${SERVERS[@]}" "${PINNED_SERVERS[@]}"; do
        server_cmd "$s"
        record "${CMD[@]}"
        start_bg "echo-$s" "${CMD[@]}"
        spid=$LAST_PID
        wait_port "${PORT[$s]}" "$spid"
        for n in $CONNS; do
            client=("${CLIENT_PREFIX[@]}" "$SOCKIT" bench echo "127.0.0.1:${PORT[$s]}" --connections "$n" --duration "$DURATION"
                --size "$SIZE" --mode rr --json)
            record "${client[@]}"
            json="$RAW/echo-$s-c$n-run$run.json"
            log "run $run/$RUNS: $s, $n connections"
            if ! run_fg echo-client "$json" timeout -k 5 "$((DUR_S + CLIENT_GRACE))" "${client[@]}"; then
                log "warning: client failed for $s/$n (see $LOGS/echo-client.log)"
            fi
            if vals=$(json_get "$json" rt_per_sec p50_us p99_us max_us errors 2>/dev/null); then
                printf '%s\t%s\t%s\n' "$s" "$n" "${vals// /$'\t'}" >>"$RESULTS"
            else
                printf '%s\t%s\tn/a\tn/a\tn/a\tn/a\tn/a\n' "$s" "$n" >>"$RESULTS"
            fi
            alive "$spid" || die "server $s died during the run (see $LOGS/echo-$s.log)"
        done
        stop_bg "$spid"
    done
done

col() { # col SERVER CONNS FIELD_INDEX -> median over runs
    awk -F'\t' -v s="$1" -v n="$2" -v c="$3" '$1 == s && $2 == n { print $c }' "$RESULTS" | median
}

table() { # table REFERENCE SERVER... -> one Markdown table, ratios to REFERENCE
    local ref=$1 n s rt c_rt
    shift
    echo "| server | connections | round trips/s | p50 (µs) | p99 (µs) | max (µs) | ratio to C | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for n in $CONNS; do
        c_rt=$(col "$ref" "$n" 3)
        for s in "$@"; do
            rt=$(col "$s" "$n" 3)
            printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$s]}" "$n" "$(fmt "$rt")" \
                "$(fmt "$(col "$s" "$n" 4)")" "$(fmt "$(col "$s" "$n" 5)")" "$(fmt "$(col "$s" "$n" 6)")" \
                "$(ratio "$rt" "$c_rt")" "$(fmt "$(col "$s" "$n" 7)")"
        done
    done
}

{
    echo "### TCP echo round trips (${SIZE}-byte messages, $DURATION per run, median of $RUNS runs)"
    echo
    machine_info
    if ((${#SERVERS[@]})); then
        echo
        echo "Shared: server and load generator on every core, as the kernel schedules them."
        echo
        table c "${SERVERS[@]}"
        echo
        for n in $CONNS; do
            echo "- sockit upper / Python threaded at $n connections: $(ratio "$(col sockit-upper "$n" 3)" "$(col py "$n" 3)")x round trips/s"
        done
    fi
    if ((${#PINNED_SERVERS[@]})); then
        echo
        echo "A core each: server on core 0, load generator on core 1 (taskset)."
        echo
        table c@pin "${PINNED_SERVERS[@]}"
    fi
    echo
    echo "Each column is the median of that column over the runs. The load generator runs on the same"
    echo "$(nproc)-core machine as the server. Raw JSON: bench/out/raw/echo-*.json."
    print_commands
} | tee "$OUT/echo.md"
