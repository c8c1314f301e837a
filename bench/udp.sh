#!/usr/bin/env bash
# bench/udp.sh - UDP echo datagrams/s: sockit echo --udp-only vs a C
# recvfrom/sendto server.
#
# 50 client sockets each send a 64-byte datagram, wait for the echo, and repeat
# for DURATION (sockit bench echo --udp). Run from the repo root:
#   bash bench/udp.sh
# Environment: RUNS (3), DURATION (10s), SOCKETS (50), SIZE (64),
#   PORT_BASE (29200; uses PORT_BASE..PORT_BASE+1), CLIENT_GRACE (60),
#   SOCKIT_BUILD=0 to skip cargo build.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10s}"
SOCKETS="${SOCKETS:-50}"
SIZE="${SIZE:-64}"
PORT_BASE="${PORT_BASE:-29200}"
CLIENT_GRACE="${CLIENT_GRACE:-60}"
DUR_S=$(duration_secs "$DURATION")

need python3 python3
build_c udp_echo
build_sockit

SERVERS=(c sockit)
declare -A PORT LABEL
PORT[c]=$PORT_BASE
PORT[sockit]=$((PORT_BASE + 1))
LABEL[c]="C recvfrom/sendto (udp_echo.c)"
LABEL[sockit]="sockit echo --udp-only"
check_free "${PORT[@]}"

server_cmd() {
    local p=${PORT[$1]}
    case "$1" in
        c) CMD=("$OUT/udp_echo" "$p") ;;
        sockit) CMD=("$SOCKIT" echo --bind "127.0.0.1:$p" --mode echo --udp-only) ;;
    esac
}

RESULTS="$RAW/udp.tsv"
: >"$RESULTS"
log "udp: RUNS=$RUNS DURATION=$DURATION SOCKETS=$SOCKETS SIZE=$SIZE"

for ((run = 1; run <= RUNS; run++)); do
    for s in "${SERVERS[@]}"; do
        server_cmd "$s"
        record "${CMD[@]}"
        start_bg "udp-$s" "${CMD[@]}"
        spid=$LAST_PID
        wait_udp_port "${PORT[$s]}" "$spid"
        client=("$SOCKIT" bench echo "127.0.0.1:${PORT[$s]}" --udp --connections "$SOCKETS"
            --duration "$DURATION" --size "$SIZE" --mode rr --json)
        record "${client[@]}"
        json="$RAW/udp-$s-run$run.json"
        log "run $run/$RUNS: $s"
        if ! run_fg udp-client "$json" timeout -k 5 "$((DUR_S + CLIENT_GRACE))" "${client[@]}"; then
            log "warning: client failed for $s (see $LOGS/udp-client.log)"
        fi
        if vals=$(json_get "$json" rt_per_sec p50_us p99_us max_us lost errors 2>/dev/null); then
            printf '%s\t%s\n' "$s" "${vals// /$'\t'}" >>"$RESULTS"
        else
            printf '%s\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\n' "$s" >>"$RESULTS"
        fi
        alive "$spid" || die "server $s died during the run (see $LOGS/udp-$s.log)"
        stop_bg "$spid"
    done
done

col() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$RESULTS" | median; }

{
    echo "### UDP echo (${SIZE}-byte datagrams, $SOCKETS sockets, $DURATION per run, median of $RUNS runs)"
    echo
    machine_info
    echo
    echo "| server | sockets | datagrams/s (round trips) | p50 (µs) | p99 (µs) | max (µs) | lost | errors | ratio to C |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    c_rt=$(col c 2)
    for s in "${SERVERS[@]}"; do
        rt=$(col "$s" 2)
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$s]}" "$SOCKETS" "$(fmt "$rt")" \
            "$(fmt "$(col "$s" 3)")" "$(fmt "$(col "$s" 4)")" "$(fmt "$(col "$s" 5)")" \
            "$(fmt "$(col "$s" 6)")" "$(fmt "$(col "$s" 7)")" "$(ratio "$rt" "$c_rt")"
    done
    echo
    echo "datagrams/s counts echoed datagrams (one round trip each). Each column is the median of that"
    echo "column over the runs; the load generator shares the $(nproc)-core machine. Raw JSON: bench/out/raw/udp-*.json."
    print_commands
} | tee "$OUT/udp.md"
