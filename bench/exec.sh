#!/usr/bin/env bash
# bench/exec.sh - remote commands (`sockit exec`) on the framed port of
# `sockit serve`: bulk throughput through the program's pipes, and the cost of
# one whole command (process start, connect, login token check, spawn, exit).
#
# Cases (one `sockit serve` for the whole script, data in bench/out/exec-data):
#   1. SIZE_MB (1024) MiB through stdin and stdout, counted by `wc -c`:
#        head -c N /dev/zero | cat | wc -c                      (local pipe, reference)
#        head -c N /dev/zero | sockit exec -- cat | wc -c        (both directions over loopback)
#        sockit exec -n -- head -c N /dev/zero | wc -c           (output only)
#      VmRSS of the server is sampled every 0.25 s during the sockit cases (max shown).
#   2. COUNT (200) commands one after another:
#        /bin/true run COUNT times by bash                       (local fork + exec, reference)
#        sockit exec -n -- true run COUNT times                  (a new client process each)
# Run from the repo root:
#   bash bench/exec.sh
# Environment: RUNS (3), SIZE_MB (1024), COUNT (200), PORT_BASE (29600),
#   CMD_TIMEOUT (300: seconds any one timed step may take before it is killed),
#   SOCKIT_BUILD=0 to skip cargo build, SOCKIT (path of the binary).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C   # decimal point in $EPOCHREALTIME

SIZE_MB="${SIZE_MB:-1024}"
COUNT="${COUNT:-200}"
PORT_BASE="${PORT_BASE:-29600}"
CMD_TIMEOUT="${CMD_TIMEOUT:-300}"
for v in SIZE_MB COUNT PORT_BASE CMD_TIMEOUT; do
    case "${!v}" in ''|*[!0-9]*|0) die "$v must be a positive integer (got '${!v}')" ;; esac
done

need timeout coreutils
build_sockit

PORT=$PORT_BASE
check_free "$PORT"
BYTES=$((SIZE_MB * 1048576))
DATA="$OUT/exec-data"
CLIENT_DIR="$OUT/exec-client"
unset SOCKIT_CONFIG
export SOCKIT_CONFIG_DIR="$CLIENT_DIR"
export SOCKIT_SERVER="127.0.0.1:$PORT"
export SOCKIT_PASSWORD=bench-password
rm -rf "$DATA" "$CLIENT_DIR"
mkdir -p "$DATA" "$CLIENT_DIR"
CONFIG="$DATA/sockit.toml"
cat >"$CONFIG" <<EOF
[exec]
enabled = true
allow = ["cat", "head", "true"]
max_output = $((BYTES + 1))
timeout = "${CMD_TIMEOUT}s"
EOF

RESULTS="$RAW/exec.tsv"
: >"$RESULTS"
log "exec: RUNS=$RUNS SIZE_MB=$SIZE_MB COUNT=$COUNT"

now() { echo "$EPOCHREALTIME"; }

# start_rss FILE PID: in the background, append the VmRSS (KiB) of PID to FILE
# every 0.25 s, for at most CMD_TIMEOUT + 10 s; shell builtins only, so
# stopping it never cuts a pipeline. Pid in LAST_PID; stop it with stop_bg.
start_rss() {
    local file=$1 pid=$2
    : >"$file"
    (
        trap - ERR
        for ((i = 0; i < (CMD_TIMEOUT + 10) * 4; i++)); do
            r=0
            { while read -r k v _; do
                if [ "$k" = VmRSS: ]; then r=$v; break; fi
            done <"/proc/$pid/status"; } 2>/dev/null || true
            echo "$r" >>"$file"
            sleep 0.25
        done
    ) &
    LAST_PID=$!
    BG_PIDS+=("$LAST_PID")
}
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f\n", b - a }'; }

record "$SOCKIT" admin add-user bench --data-dir "$DATA"
"$SOCKIT" admin add-user bench --data-dir "$DATA" 2>>"$LOGS/exec-admin.log"
record "$SOCKIT" admin grant bench exec --data-dir "$DATA"
"$SOCKIT" admin grant bench exec --data-dir "$DATA" 2>>"$LOGS/exec-admin.log"
record "$SOCKIT" serve --config "$CONFIG" --data-dir "$DATA" --framed-bind "127.0.0.1:$PORT" \
    --echo-bind 127.0.0.1:0 --web-bind 127.0.0.1:0
start_bg exec-server "$SOCKIT" serve --config "$CONFIG" --data-dir "$DATA" \
    --framed-bind "127.0.0.1:$PORT" --echo-bind 127.0.0.1:0 --web-bind 127.0.0.1:0
SERVER=$LAST_PID
wait_port "$PORT" "$SERVER"
trust_server "$DATA" "$PORT"
record "$SOCKIT" login --user bench
"$SOCKIT" login --user bench 2>>"$LOGS/exec-admin.log"

# timed_bytes NAME CMD RUN: run the shell pipeline CMD under `timeout`, check that it
# printed BYTES (wc -c), and append "NAME run seconds GB/s maxRSS_KiB".
timed_bytes() {
    local name=$1 cmd=$2 run=$3 t0 t1 got s rss=0 sampler=
    if [ "$name" != pipe ]; then
        start_rss "$RAW/exec-$name-$run.rss" "$SERVER"
        sampler=$LAST_PID
    fi
    t0=$(now)
    got=$(timeout "$CMD_TIMEOUT" bash -c "$cmd") || die "$name failed"
    t1=$(now)
    if [ -n "$sampler" ]; then
        stop_bg "$sampler"
        rss=$(column_max "$RAW/exec-$name-$run.rss" 1)
    fi
    [ "$got" = "$BYTES" ] || die "$name: wc -c counted $got bytes, expected $BYTES"
    s=$(secs_between "$t0" "$t1")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "$s" "$(awk -v n="$BYTES" -v s="$s" 'BEGIN { printf "%.4f", n / s / 1e9 }')" "$rss" >>"$RESULTS"
}

# timed_count NAME CMD RUN: run CMD COUNT times in a row; append "NAME run seconds per_sec".
timed_count() {
    local name=$1 cmd=$2 run=$3 t0 t1 s
    t0=$(now)
    timeout "$CMD_TIMEOUT" bash -c "for ((i = 0; i < $COUNT; i++)); do $cmd || exit 1; done" || die "$name failed"
    t1=$(now)
    s=$(secs_between "$t0" "$t1")
    printf '%s\t%s\t%s\t%s\n' "$name" "$run" "$s" "$(awk -v n="$COUNT" -v s="$s" 'BEGIN { printf "%.2f", n / s }')" >>"$RESULTS"
}

PIPE="head -c $BYTES /dev/zero | cat | wc -c"
BOTH="head -c $BYTES /dev/zero | $SOCKIT exec -- cat | wc -c"
OUTPUT="$SOCKIT exec -n -- head -c $BYTES /dev/zero | wc -c"
TRUE_LOCAL="/bin/true"
TRUE_EXEC="$SOCKIT exec -n -- true"
for c in "$PIPE" "$BOTH" "$OUTPUT"; do record_line "${c//"$ROOT/"/}"; done
record_line "for ((i = 0; i < $COUNT; i++)); do $TRUE_LOCAL; done"
record_line "for ((i = 0; i < $COUNT; i++)); do ${TRUE_EXEC//"$ROOT/"/}; done"

for ((run = 1; run <= RUNS; run++)); do
    log "run $run/$RUNS: $SIZE_MB MiB through a local pipe, sockit exec -- cat, sockit exec -- head"
    timed_bytes pipe "$PIPE" "$run"
    timed_bytes both "$BOTH" "$run"
    timed_bytes output "$OUTPUT" "$run"
    log "run $run/$RUNS: $COUNT x true, locally and through sockit exec"
    timed_count true-local "$TRUE_LOCAL" "$run"
    timed_count true-exec "$TRUE_EXEC" "$run"
done
SRSS=$(rss_kib "$SERVER")
stop_bg "$SERVER"

col() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n { print $c }' "$RESULTS" | median; }
mib() { case "$1" in n/a|'') echo n/a ;; *) awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }' ;; esac; }

{
    echo "### Remote commands: ${SIZE_MB} MiB through the pipes, $COUNT commands in a row (median of $RUNS runs)"
    echo
    machine_info
    echo
    echo "| ${SIZE_MB} MiB | seconds | GB/s | ratio to the local pipe | sockit server max RSS (MiB) |"
    echo "|---|---:|---:|---:|---:|"
    ref=$(col pipe 4)
    printf '| %s | %s | %s | %s | %s |\n' "\`head -c N /dev/zero \\| cat \\| wc -c\` (local pipe, reference)" \
        "$(fmt "$(col pipe 3)" 2)" "$(fmt "$ref" 2)" "1.00" "n/a"
    printf '| %s | %s | %s | %s | %s |\n' "\`head -c N /dev/zero \\| sockit exec -- cat \\| wc -c\` (stdin and stdout over loopback)" \
        "$(fmt "$(col both 3)" 2)" "$(fmt "$(col both 4)" 2)" "$(ratio "$(col both 4)" "$ref")" "$(mib "$(col both 5)")"
    printf '| %s | %s | %s | %s | %s |\n' "\`sockit exec -n -- head -c N /dev/zero \\| wc -c\` (stdout only)" \
        "$(fmt "$(col output 3)" 2)" "$(fmt "$(col output 4)" 2)" "$(ratio "$(col output 4)" "$ref")" "$(mib "$(col output 5)")"
    echo
    echo "| $COUNT commands, one after another | seconds | commands/s |"
    echo "|---|---:|---:|"
    printf '| %s | %s | %s |\n' "\`/bin/true\` forked by bash (reference)" "$(fmt "$(col true-local 3)" 3)" "$(fmt "$(col true-local 4)")"
    printf '| %s | %s | %s |\n' "\`sockit exec -n -- true\` (client start, connect, hello, auth, spawn, exit, audit line)" \
        "$(fmt "$(col true-exec 3)" 3)" "$(fmt "$(col true-exec 4)")"
    echo
    echo "GB/s = 10^9 bytes/s of data (${SIZE_MB} MiB = $BYTES bytes), wall clock around each pipeline"
    echo "(\`\$EPOCHREALTIME\`), every byte counted by \`wc -c\`. RSS: VmRSS of the server from"
    echo "/proc/PID/status every 0.25 s during the case, maximum; at the end of the script: $(mib "$SRSS") MiB."
    echo "Each column is the median of that column over the runs; the ratios are of the medians."
    echo "Raw timings: bench/out/raw/exec.tsv."
    print_commands
    echo
    echo "The client commands run with SOCKIT_CONFIG_DIR=bench/out/exec-client,"
    echo "SOCKIT_SERVER=127.0.0.1:$PORT and SOCKIT_PASSWORD set; the server's config"
    echo "(bench/out/exec-data/sockit.toml) enables exec for cat, head and true."
} | tee "$OUT/exec.md"
