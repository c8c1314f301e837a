#!/usr/bin/env bash
# bench/idle.sh - many idle TCP connections: server memory and threads, and
# the latency of new clients while the idle connections are held.
#
# sockit bench echo --mode connect --hold N opens N idle connections, keeps
# them open, and for DURATION measures new clients (connect + one 64-byte
# round trip + close). Meanwhile the server's VmRSS and thread count are
# sampled from /proc/PID/status every 0.25 s; the table shows the maximum.
# Servers: the C epoll server, sockit echo, and the Python threaded server
# (one thread per connection, so it holds PY_HOLD connections, 1000 unless
# raised). Run from the repo root:
#   bash bench/idle.sh
# Environment: RUNS (3), DURATION (10s), HOLD (10000), PY_HOLD (1000), PROBES (1),
#   PORT_BASE (29400; uses PORT_BASE..PORT_BASE+2), CLIENT_GRACE (180, seconds
#   allowed beyond DURATION for opening the idle connections), SOCKIT_MAX_CONN
#   (HOLD+1024: sockit echo --max-connections), SOCKIT_BUILD=0.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10s}"
# New clients probing while the idle connections are held: one at a time by
# default, so the latency is that of "a new client", not of a connect storm.
PROBES="${PROBES:-1}"
HOLD="${HOLD:-10000}"
PY_HOLD="${PY_HOLD:-1000}"
PORT_BASE="${PORT_BASE:-29400}"
# sockit echo refuses connections beyond --max-connections (default 10000);
# the held connections plus the measured new clients must fit under it, as
# they do in the C and Python servers, which have no such limit.
SOCKIT_MAX_CONN="${SOCKIT_MAX_CONN:-$((HOLD + 1024))}"
CLIENT_GRACE="${CLIENT_GRACE:-180}"
DUR_S=$(duration_secs "$DURATION")

# Each held connection needs a descriptor in the client and one in the server.
ulimit -n "$(ulimit -Hn)"
record_line "ulimit -n $(ulimit -Hn)"
nofile=$(ulimit -n)
log "open files limit (ulimit -n): $nofile"
for h in "$HOLD" "$PY_HOLD"; do
    [ "$nofile" = unlimited ] || [ "$nofile" -ge $((h + 1024)) ] ||
        die "ulimit -n hard limit $nofile is too low to hold $h connections (need $((h + 1024)))"
done

need python3 python3
build_c epoll_echo
build_sockit

SERVERS=(c sockit py)
declare -A PORT LABEL NHOLD
PORT[c]=$PORT_BASE
PORT[sockit]=$((PORT_BASE + 1))
PORT[py]=$((PORT_BASE + 2))
LABEL[c]="C epoll (epoll_echo.c)"
LABEL[sockit]="sockit echo"
LABEL[py]="Python ThreadingTCPServer"
NHOLD[c]=$HOLD
NHOLD[sockit]=$HOLD
NHOLD[py]=$PY_HOLD
check_free "${PORT[@]}"

server_cmd() {
    local p=${PORT[$1]}
    case "$1" in
        c) CMD=("$OUT/epoll_echo" "$p") ;;
        sockit) CMD=("$SOCKIT" echo --bind "127.0.0.1:$p" --mode echo --tcp-only --max-connections "$SOCKIT_MAX_CONN") ;;
        py) CMD=(python3 "$BENCH_DIR/py/threaded_upper.py" "$p") ;;
    esac
}

RESULTS="$RAW/idle.tsv"
: >"$RESULTS"
log "idle: RUNS=$RUNS DURATION=$DURATION HOLD=$HOLD PY_HOLD=$PY_HOLD"

for ((run = 1; run <= RUNS; run++)); do
    for s in "${SERVERS[@]}"; do
        server_cmd "$s"
        record "${CMD[@]}"
        start_bg "idle-$s" "${CMD[@]}"
        spid=$LAST_PID
        wait_port "${PORT[$s]}" "$spid"
        rss0=$(rss_kib "$spid")
        fd0=$(fd_count "$spid")
        client=("$SOCKIT" bench echo "127.0.0.1:${PORT[$s]}" --mode connect --hold "${NHOLD[$s]}"
            --connections "$PROBES" --duration "$DURATION" --json)
        record "${client[@]}"
        json="$RAW/idle-$s-run$run.json"
        samples="$RAW/idle-$s-run$run.samples"
        limit=$((DUR_S + CLIENT_GRACE))
        start_sampler "$samples" "$spid" "$((limit + 10))"
        sampler=$LAST_PID
        log "run $run/$RUNS: $s, holding ${NHOLD[$s]}"
        if ! run_fg idle-client "$json" timeout -k 5 "$limit" "${client[@]}"; then
            log "warning: client failed for $s (see $LOGS/idle-client.log)"
        fi
        stop_bg "$sampler"
        alive "$spid" || log "warning: server $s exited during the run (see $LOGS/idle-$s.log)"
        rss_max=$(column_max "$samples" 1)
        thr_max=$(column_max "$samples" 2)
        fd_max=$(column_max "$samples" 3)
        if vals=$(json_get "$json" held rt_per_sec p50_us p99_us max_us errors 2>/dev/null); then
            read -r held rt p50 p99 mx err <<<"$vals"
        else
            held=n/a rt=n/a p50=n/a p99=n/a mx=n/a err=n/a
        fi
        # per connection the server really had: open descriptors beyond those it had before
        per_conn=$(awk -v a="$rss_max" -v b="$rss0" -v f="$fd_max" -v f0="$fd0" \
            'BEGIN { if (f - f0 > 0) printf "%.2f\n", (a - b) / (f - f0); else print "n/a" }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$held" "$rt" "$p50" "$p99" "$mx" "$err" \
            "$rss0" "$rss_max" "$per_conn" "$thr_max" "$fd_max" >>"$RESULTS"
        stop_bg "$spid"
    done
done

col() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$RESULTS" | median; }
mib() { case "$1" in n/a) echo n/a ;; *) awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }' ;; esac; }

{
    echo "### Idle connections held + new clients (connect, one 64-byte round trip, close), $DURATION per run, median of $RUNS runs"
    echo
    machine_info
    echo
    echo "| server | idle connections held | new clients/s | p50 (µs) | p99 (µs) | max (µs) | errors | RSS before (MiB) | max RSS while holding (MiB) | KiB per server connection | max threads | max open fds |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${SERVERS[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$s]}" \
            "$(fmt "$(col "$s" 2)")" "$(fmt "$(col "$s" 3)")" "$(fmt "$(col "$s" 4)")" "$(fmt "$(col "$s" 5)")" \
            "$(fmt "$(col "$s" 6)")" "$(fmt "$(col "$s" 7)")" "$(mib "$(col "$s" 8)")" "$(mib "$(col "$s" 9)")" \
            "$(fmt "$(col "$s" 10)" 2)" "$(fmt "$(col "$s" 11)")" "$(fmt "$(col "$s" 12)")"
    done
    echo
    echo "idle connections held: as reported by the client (\"held\"); requested: $HOLD (Python: $PY_HOLD,"
    echo "raise with PY_HOLD). RSS is VmRSS of the server process, sampled every 0.25 s during the run;"
    echo "max threads and max open fds (from /proc/PID/status and /proc/PID/fd, sampled likewise) show how"
    echo "many connections the server itself had accepted: a server with a small listen backlog (Python: 5)"
    echo "can lag far behind what the client counts as connected. KiB per server connection ="
    echo "(max RSS - RSS before) / (max open fds - open fds before). Open files limit: $nofile."
    echo "Raw JSON and samples: bench/out/raw/idle-*."
    print_commands
} | tee "$OUT/idle.md"
