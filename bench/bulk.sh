#!/usr/bin/env bash
# bench/bulk.sh - one-way bulk TCP bandwidth on loopback, single stream.
#
# Cases (every one a single TCP connection on 127.0.0.1):
#   iperf3 -c -> iperf3 -s                     the reference limit
#   sockit bench --mode bulk -> sockit listen  sockit on both ends
#   sockit bench --mode bulk -> ncat -l        sockit sender, ncat receiver
#   ncat < /dev/zero -> ncat -l                ncat on both ends
#   ncat < /dev/zero -> sockit listen          ncat sender, sockit receiver
# Receivers write to /dev/null. Run from the repo root:
#   bash bench/bulk.sh
# Environment: RUNS (3), DURATION (10s; whole seconds, at least 3),
#   PORT_BASE (29300; uses PORT_BASE..PORT_BASE+4), CLIENT_GRACE (60),
#   SOCKIT_BUILD=0 to skip cargo build.
#
# How each number is measured:
#   - iperf3: its own JSON report (end.sum_received.bits_per_second).
#   - sockit sender: its own JSON report (mb_per_sec, taken as 10^6 bytes/s).
#   - ncat sender: ncat reports nothing, so the kernel's byte count on the
#     receiving socket (bytes_received in `ss -ti`) is sampled 1 s after the
#     data starts and again DURATION s later; rate = bytes / elapsed time.
#     The sender is then stopped. No pipe or extra process sits in the data path.
#   - every case also gets the same kernel count over a window inside the run
#     ("ss check" column) as a cross-check of the tools' own reports.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10s}"
PORT_BASE="${PORT_BASE:-29300}"
CLIENT_GRACE="${CLIENT_GRACE:-60}"
DUR_S=$(duration_secs "$DURATION")
[ "$DUR_S" -ge 3 ] || die "DURATION must be at least 3s"
# window for the cross-check inside a self-timed run: from 1 s to DURATION-1 s
CHECK_WIN=$((DUR_S - 2))

need python3 python3
need iperf3 iperf3
need ncat ncat
need ss iproute2
need timeout coreutils
build_sockit
setup_idle_stdin

CASES=(iperf3 sockit-sockit sockit-ncat ncat-ncat ncat-sockit)
declare -A PORT LABEL
i=0
for c in "${CASES[@]}"; do PORT[$c]=$((PORT_BASE + i)); i=$((i + 1)); done
LABEL[iperf3]="iperf3 -> iperf3 -s"
LABEL[sockit-sockit]="sockit bench (bulk) -> sockit listen"
LABEL[sockit-ncat]="sockit bench (bulk) -> ncat -l"
LABEL[ncat-ncat]="ncat < /dev/zero -> ncat -l"
LABEL[ncat-sockit]="ncat < /dev/zero -> sockit listen"
check_free "${PORT[@]}"

RESULTS="$RAW/bulk.tsv"
: >"$RESULTS"
log "bulk: RUNS=$RUNS DURATION=$DURATION"

# receiver_cmd CASE -> RCMD (stdout goes to /dev/null, stdin is the idle FIFO)
receiver_cmd() {
    local p=${PORT[$1]}
    case "$1" in
        iperf3) RCMD=(iperf3 -s -B 127.0.0.1 -p "$p") ;;
        *-sockit) RCMD=("$SOCKIT" listen "$p") ;;
        *-ncat) RCMD=(ncat -l 127.0.0.1 "$p" --recv-only) ;;
    esac
}

for ((run = 1; run <= RUNS; run++)); do
    for c in "${CASES[@]}"; do
        p=${PORT[$c]}
        receiver_cmd "$c"
        record_line "$(quote "${RCMD[@]}") <bench/out/idle-stdin.fifo >/dev/null"
        start_bg_io "bulk-$c-recv" "$IDLE_FIFO" /dev/null "${RCMD[@]}"
        rpid=$LAST_PID
        wait_port "$p" "$rpid"
        log "run $run/$RUNS: $c"
        out="$RAW/bulk-$c-run$run.json"
        : >"$out"
        tool=n/a
        case "$c" in
            iperf3) scmd=(iperf3 -c 127.0.0.1 -p "$p" -t "$DUR_S" -J) ;;
            sockit-*) scmd=("$SOCKIT" bench echo "127.0.0.1:$p" --mode bulk --connections 1 --duration "$DURATION" --json) ;;
            ncat-*) scmd=(ncat --send-only 127.0.0.1 "$p") ;;
        esac
        case "$c" in
            ncat-*)
                record_line "$(quote "${scmd[@]}") </dev/zero   # stopped after 1 s warm-up + ${DUR_S} s measured"
                start_bg_io "bulk-$c-send" /dev/zero /dev/null "${scmd[@]}"
                spid=$LAST_PID
                wait_established "$p" "$spid"
                # the ncat number: kernel byte count, 1 s warm-up, then DURATION seconds
                check=$(ss_rate_gbit "$p" 1 "$DUR_S")
                tool=$check
                stop_bg "$spid"
                ;;
            *)
                record "${scmd[@]}"
                start_bg_io "bulk-$c-send" /dev/null "$out" timeout -k 5 "$((DUR_S + CLIENT_GRACE))" "${scmd[@]}"
                spid=$LAST_PID
                wait_established "$p" "$spid"
                check=$(ss_rate_gbit "$p" 1 "$CHECK_WIN")
                # the sender stops by itself after DURATION (bounded by timeout)
                rc=0
                wait "$spid" || rc=$?
                forget_bg "$spid"
                [ "$rc" -eq 0 ] || log "warning: sender for $c exited with status $rc (see $LOGS/bulk-$c-send.log)"
                if [ "$c" = iperf3 ]; then
                    tool=$(python3 -c 'import json, sys
try:
    d = json.load(open(sys.argv[1]))
    print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))
except Exception:
    print("n/a")' "$out")
                else
                    mb=$(json_get "$out" mb_per_sec 2>/dev/null || echo n/a)
                    case "$mb" in
                        n/a | None | '') tool=n/a ;;
                        *) tool=$(awk -v m="$mb" 'BEGIN { printf "%.3f\n", m * 8 / 1000 }') ;;
                    esac
                fi
                ;;
        esac
        stop_bg "$rpid"
        printf '%s\t%s\t%s\n' "$c" "$tool" "$check" >>"$RESULTS"
    done
done

col() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$RESULTS" | median; }

{
    echo "### One-way bulk TCP bandwidth on loopback (single stream, $DURATION per run, median of $RUNS runs)"
    echo
    machine_info
    echo
    echo "| sender -> receiver | Gbit/s | ss check (Gbit/s) | ratio to iperf3 |"
    echo "|---|---:|---:|---:|"
    ref=$(col iperf3 2)
    for c in "${CASES[@]}"; do
        g=$(col "$c" 2)
        printf '| %s | %s | %s | %s |\n' "${LABEL[$c]}" "$(fmt "$g" 2)" "$(fmt "$(col "$c" 3)" 2)" "$(ratio "$g" "$ref")"
    done
    echo
    echo "Gbit/s = 10^9 bit/s of payload. iperf3 and sockit: the tool's own report; ncat: bytes the"
    echo "receiving socket got (kernel count from \`ss -ti\`) over ${DUR_S} s after a 1 s warm-up."
    echo "ss check: the same kernel count for every case, over a window inside the run."
    print_commands
    echo
    echo "bench/out/idle-stdin.fifo is a FIFO the script holds open and never writes to, so the listener's"
    echo "stdin gives neither data nor EOF (by hand: \`sleep infinity | CMD >/dev/null\`)."
} | tee "$OUT/bulk.md"
