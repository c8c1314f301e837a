#!/usr/bin/env bash
# bench/latency.sh - TCP echo latency at a fixed offered load: sockit echo vs
# the C epoll server, 500 connections, paced (`sockit bench echo --rate`).
#
# echo.sh drives each connection as fast as replies come back, which
# saturates both cores (client and server share them) and measures queueing.
# This script offers a fixed total rate, spread evenly over the connections
# (as wrk2 does), and reports the latency distribution at that load. Run
# from the repo root:
#   bash bench/latency.sh
# Environment: RUNS (3), DURATION (10s), CONNS (500), RATES ("80000 100000"),
#   SIZE (64), PORT_BASE (29600; uses PORT_BASE..PORT_BASE+1),
#   CLIENT_GRACE (60), SOCKIT_BUILD=0 to skip cargo build.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10s}"
CONNS="${CONNS:-500}"
read -r -a RATES <<<"${RATES:-80000 100000}"
SIZE="${SIZE:-64}"
PORT_BASE="${PORT_BASE:-29600}"
CLIENT_GRACE="${CLIENT_GRACE:-60}"
DUR_S=$(duration_secs "$DURATION")

need python3 python3
build_c epoll_echo
build_sockit
ulimit -n "$(ulimit -Hn)"
record_line "ulimit -n $(ulimit -Hn)"

SERVERS=(c sockit)
declare -A PORT LABEL
PORT[c]=$PORT_BASE
PORT[sockit]=$((PORT_BASE + 1))
LABEL[c]="C epoll (epoll_echo.c)"
LABEL[sockit]="sockit echo"
check_free "${PORT[@]}"

server_cmd() {
    local p=${PORT[$1]}
    case "$1" in
        c) CMD=("$OUT/epoll_echo" "$p") ;;
        sockit) CMD=("$SOCKIT" echo --bind "127.0.0.1:$p" --mode echo --tcp-only) ;;
    esac
}

RESULTS="$RAW/latency.tsv"
: >"$RESULTS"
log "latency: RUNS=$RUNS DURATION=$DURATION CONNS=$CONNS RATES=(${RATES[*]}) SIZE=$SIZE"

for ((run = 1; run <= RUNS; run++)); do
    for rate in "${RATES[@]}"; do
        for s in "${SERVERS[@]}"; do
            server_cmd "$s"
            record "${CMD[@]}"
            start_bg "latency-$s" "${CMD[@]}"
            spid=$LAST_PID
            wait_port "${PORT[$s]}" "$spid"
            client=("$SOCKIT" bench echo "127.0.0.1:${PORT[$s]}" --connections "$CONNS"
                --duration "$DURATION" --size "$SIZE" --mode rr --rate "$rate" --json)
            record "${client[@]}"
            json="$RAW/latency-$s-$rate-run$run.json"
            log "run $run/$RUNS: $s at $rate/s"
            if ! run_fg latency-client "$json" timeout -k 5 "$((DUR_S + CLIENT_GRACE))" "${client[@]}"; then
                log "warning: client failed for $s (see $LOGS/latency-client.log)"
            fi
            if vals=$(json_get "$json" rt_per_sec p50_us p90_us p99_us max_us errors 2>/dev/null); then
                printf '%s\t%s\t%s\n' "$s" "$rate" "${vals// /$'\t'}" >>"$RESULTS"
            else
                printf '%s\t%s\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\n' "$s" "$rate" >>"$RESULTS"
            fi
            alive "$spid" || die "server $s died during the run (see $LOGS/latency-$s.log)"
            stop_bg "$spid"
        done
    done
done

col() { awk -F'\t' -v s="$1" -v r="$2" -v c="$3" '$1 == s && $2 == r { print $c }' "$RESULTS" | median; }

{
    echo "### TCP echo latency at a fixed offered load (${SIZE}-byte messages, $CONNS connections, $DURATION per run, median of $RUNS runs)"
    echo
    machine_info
    echo
    echo "| server | offered/s | achieved round trips/s | p50 (µs) | p90 (µs) | p99 (µs) | max (µs) | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for rate in "${RATES[@]}"; do
        for s in "${SERVERS[@]}"; do
            printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$s]}" "$rate" \
                "$(fmt "$(col "$s" "$rate" 3)")" "$(fmt "$(col "$s" "$rate" 4)")" "$(fmt "$(col "$s" "$rate" 5)")" \
                "$(fmt "$(col "$s" "$rate" 6)")" "$(fmt "$(col "$s" "$rate" 7)")" "$(fmt "$(col "$s" "$rate" 8)")"
        done
    done
    echo
    echo "Each connection sends every CONNS/rate seconds (tokio timers, 1 ms resolution) from a phase of"
    echo "its own; latency is from the actual send to the full reply. Each column is the median of that"
    echo "column over the runs; the load generator shares the $(nproc)-core machine. Raw JSON: bench/out/raw/latency-*.json."
    print_commands
} | tee "$OUT/latency.md"
