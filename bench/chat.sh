#!/usr/bin/env bash
# bench/chat.sh - the chat relay: fan-out to a room of MEMBERS users, and the
# server's memory holding HOLD_TOTAL idle subscribed connections.
#
# One `sockit serve` (framed port only, chat rate limit off, data in
# bench/out/chat-data) for the whole script; the load generator is
# `sockit bench chat`, which registers bench0..benchN the first time (an
# Argon2id hash each, so the first run takes a minute or two) and keeps their
# session tokens in bench/out/chat-tokens.txt.
# Cases:
#   1. fan-out: one sender sends MESSAGES messages of 64 bytes into a room of
#      MEMBERS members, each with its own subscribed connection, at each
#      offered rate in RATES (messages/s; 0 = as fast as acknowledged, 64 in
#      flight). Deliveries/s and the latency from the sender's write to each
#      member's read (p50, p99), medians of RUNS runs.
#   2. idle: MEMBERS users with 1 + HOLD connections each, all subscribed and
#      reading, held for a few seconds; the VmRSS of a freshly started server
#      before and while they are held.
# Client and server share the machine's cores, as everything in bench/ does.
# Run from the repo root:
#   bash bench/chat.sh
# Environment: RUNS (3), MEMBERS (1000), MESSAGES (2000), RATES ("200 300 0"),
#   HOLD (9), PORT (29700), SOCKIT_BUILD=0 to skip cargo build.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MEMBERS="${MEMBERS:-1000}"
MESSAGES="${MESSAGES:-2000}"
RATES="${RATES:-200 300 0}"
HOLD="${HOLD:-9}"
PORT="${PORT:-29700}"
for v in MEMBERS MESSAGES PORT; do
    case "${!v}" in ''|*[!0-9]*|0) die "$v must be a positive integer (got '${!v}')" ;; esac
done
HOLD_TOTAL=$((MEMBERS * (HOLD + 1) + 1))

ulimit -n "$(ulimit -Hn)"
record_line "ulimit -n $(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((HOLD_TOTAL + 100)) ] || die "ulimit -n $(ulimit -n) is too low for $HOLD_TOTAL connections"

need timeout coreutils
need python3 python3
build_sockit
check_free "$PORT"

DATA="$OUT/chat-data"
TOKENS="$OUT/chat-tokens.txt"
unset SOCKIT_CONFIG
export SOCKIT_CONFIG_DIR="$OUT/chat-client"   # the pinned certificate
mkdir -p "$SOCKIT_CONFIG_DIR"
mkdir -p "$DATA"
CONFIG="$DATA/sockit.toml"
cat >"$CONFIG" <<EOF2
[limits]
max_connections = $((HOLD_TOTAL + 1024))
[echo]
enabled = false
[web]
enabled = false
[chat]
rate = 0.0
EOF2
# Tokens belong to this data directory's accounts.
[ -s "$DATA/sockit.db" ] || rm -f "$TOKENS"

record "$SOCKIT" serve --config bench/out/chat-data/sockit.toml --data-dir bench/out/chat-data --framed-bind "127.0.0.1:$PORT"
start_bg chat-server "$SOCKIT" serve --config "$CONFIG" --data-dir "$DATA" --framed-bind "127.0.0.1:$PORT"
SERVER=$LAST_PID
wait_port "$PORT" "$SERVER"
trust_server "$DATA" "$PORT"

RESULTS="$RAW/chat.tsv"
: >"$RESULTS"
bench_chat() { timeout 900 "$SOCKIT" bench chat "127.0.0.1:$PORT" --members "$MEMBERS" --token-cache "$TOKENS" "$@"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

log "setting up $((MEMBERS + 1)) users (registration the first time)"
bench_chat --messages 10 --rate 50 --json >/dev/null 2>>"$LOGS/chat-bench.log"

for rate in $RATES; do
    record_line "sockit bench chat 127.0.0.1:$PORT --members $MEMBERS --messages $MESSAGES --rate $rate --token-cache bench/out/chat-tokens.txt --json"
    for ((run = 1; run <= RUNS; run++)); do
        log "fan-out: rate $rate, run $run/$RUNS"
        j=$(bench_chat --messages "$MESSAGES" --rate "$rate" --json 2>>"$LOGS/chat-bench.log")
        printf 'fanout-%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rate" "$run" \
            "$(field deliveries_per_sec <<<"$j")" "$(field p50_ms <<<"$j")" "$(field p99_ms <<<"$j")" \
            "$(field sent_per_sec <<<"$j")" "$(field missing <<<"$j")" >>"$RESULTS"
    done
done

record_line "sockit bench chat 127.0.0.1:$PORT --members $MEMBERS --hold $HOLD --messages 10 --rate 5 --linger 6s --token-cache bench/out/chat-tokens.txt"
stop_bg "$SERVER"
for ((run = 1; run <= RUNS; run++)); do
    log "idle: $HOLD_TOTAL subscribed connections, run $run/$RUNS (a fresh server)"
    start_bg chat-server-idle "$SOCKIT" serve --config "$CONFIG" --data-dir "$DATA" --framed-bind "127.0.0.1:$PORT"
    SERVER=$LAST_PID
    wait_port "$PORT" "$SERVER"
    before=$(rss_kib "$SERVER")
    err="$LOGS/chat-idle-$run.log"
    bench_chat --hold "$HOLD" --messages 10 --rate 5 --linger 6s >/dev/null 2>"$err" &
    client=$!
    for ((i = 0; i < 3000; i++)); do
        grep -q '^holding' "$err" && break
        alive "$client" || die "the idle client ended early: $(tail -1 "$err")"
        sleep 0.1
    done
    sleep 3
    held=$(rss_kib "$SERVER")
    wait "$client"
    printf 'idle\t%s\t%s\t%s\n' "$run" "$before" "$held" >>"$RESULTS"
    stop_bg "$SERVER"
done

col() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n { print $c }' "$RESULTS" | median; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }'; }
{
    echo "### Chat: fan-out to a room of $MEMBERS, and $HOLD_TOTAL idle connections (median of $RUNS runs)"
    echo
    machine_info
    echo
    echo "| offered | sent messages/s | deliveries/s | latency p50 | latency p99 | missing |"
    echo "|---|---:|---:|---:|---:|---:|"
    for rate in $RATES; do
        label="$rate messages/s"
        [ "$rate" = 0 ] && label="as fast as acknowledged"
        printf '| %s | %s | %s | %s ms | %s ms | %s |\n' "$label" "$(fmt "$(col "fanout-$rate" 6)")" \
            "$(fmt "$(col "fanout-$rate" 3)")" "$(fmt "$(col "fanout-$rate" 4)" 1)" \
            "$(fmt "$(col "fanout-$rate" 5)" 1)" "$(fmt "$(col "fanout-$rate" 7)")"
    done
    echo
    echo "| idle | server VmRSS before | while holding $HOLD_TOTAL subscribed connections | per connection |"
    echo "|---|---:|---:|---:|"
    b=$(col idle 3); h=$(col idle 4)
    printf '| %s users x %s connections | %s MiB | %s MiB | %s KiB |\n' "$MEMBERS" "$((HOLD + 1))" "$(mib "$b")" "$(mib "$h")" \
        "$(awk -v b="$b" -v h="$h" -v n="$HOLD_TOTAL" 'BEGIN { printf "%.1f", (h - b) / n }')"
    echo
    echo "Latency: from the sender's write of a message to a member's read of it (the send"
    echo "time travels in the text), over every delivery. Deliveries/s: messages x members"
    echo "over the time from the first send to the last delivery. The load generator's"
    echo "1 000 readers run on the same 2 cores as the server. Raw: bench/out/raw/chat.tsv."
    print_commands
} | tee "$OUT/chat.md"
