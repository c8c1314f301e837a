#!/usr/bin/env bash
# bench/files.sh - the file service of `sockit serve` (framed port): big
# transfers with durability, many small files, many clients at once.
#
# Cases (one `sockit serve` for the whole script, data in bench/out/files-data):
#   1. BIG_MB (1024) MiB, durability included, on the filesystem of the data dir:
#        ncat --send-only -> ncat -l --recv-only > DEST, then `sync DEST` (reference);
#        the same ncat transfer without the sync;
#        sockit put -q SRC            (server: BLAKE3, fsync, atomic rename);
#        sockit get -q --force big.bin DEST2 (client: BLAKE3, fsync, rename).
#      VmRSS of the sockit server and client is sampled every 0.1 s (max shown).
#   2. SMALL_COUNT (1000) files of SMALL_KB (4) KiB: `sockit put -q -r DIR` (one connection)
#      versus one `sockit put -q FILE REMOTE` process per file, run one after another.
#   3. CLIENTS (50) processes at once, each `sockit put -q` a distinct CLIENT_MB
#      (20) MiB file and then `sockit get -q` it back; every download is
#      compared with its source (`cmp`; a mismatch fails the script).
# Run from the repo root:
#   bash bench/files.sh
# Environment: RUNS (3), BIG_MB (1024), SMALL_COUNT (1000), SMALL_KB (4),
#   CLIENTS (50), CLIENT_MB (20), PORT_BASE (29500; uses PORT_BASE..PORT_BASE+1),
#   CMD_TIMEOUT (600: seconds any one timed step may take before it is killed),
#   STALL_TIMEOUT (30: the one-process-per-file loop is stopped when no file
#   has arrived for this many seconds),
#   SOCKIT_BUILD=0 to skip cargo build, SOCKIT (path of the binary).
#
# The page cache is not dropped (that needs root and would measure the disk):
# every source file is written, synced and read once before anything is timed,
# so all tools read warm sources. Before each timed step the script runs
# `sync -f` on the work filesystem (not timed) so that one step's writeback does
# not spill into the next.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C   # decimal point in $EPOCHREALTIME

BIG_MB="${BIG_MB:-1024}"
SMALL_COUNT="${SMALL_COUNT:-1000}"
SMALL_KB="${SMALL_KB:-4}"
STALL_TIMEOUT="${STALL_TIMEOUT:-30}"
CLIENTS="${CLIENTS:-50}"
CLIENT_MB="${CLIENT_MB:-20}"
PORT_BASE="${PORT_BASE:-29500}"
CMD_TIMEOUT="${CMD_TIMEOUT:-600}"
for v in BIG_MB SMALL_COUNT SMALL_KB STALL_TIMEOUT CLIENTS CLIENT_MB PORT_BASE CMD_TIMEOUT; do
    case "${!v}" in ''|*[!0-9]*|0) die "$v must be a positive integer (got '${!v}')" ;; esac
done

need python3 python3
need ncat ncat
need timeout coreutils
need cmp diffutils
build_sockit
setup_idle_stdin

PORT=$PORT_BASE          # sockit serve, framed port
NCAT_PORT=$((PORT_BASE + 1))
check_free "$PORT" "$NCAT_PORT"

DATA="$OUT/files-data"       # server state (accounts, files)
CLIENT_DIR="$OUT/files-client"   # client credentials.json
WORK="$OUT/files-work"       # sources and downloads, same filesystem as DATA
STORE="$DATA/files/bench"    # the user's space on the server
BIG_BYTES=$((BIG_MB * 1048576))
CLIENT_BYTES=$((CLIENT_MB * 1048576))
SMALL_BYTES=$((SMALL_KB * 1024))

# Client environment, exported for every sockit client command; a config file
# from the caller's environment would change what the printed commands do.
unset SOCKIT_CONFIG
export SOCKIT_CONFIG_DIR="$CLIENT_DIR"
export SOCKIT_SERVER="127.0.0.1:$PORT"
export SOCKIT_PASSWORD=bench-password

rm -rf "$DATA" "$CLIENT_DIR" "$WORK"
mkdir -p "$DATA" "$CLIENT_DIR" "$WORK"

FS_TYPE=$(stat -f -c %T "$WORK")
[ "$(stat -f -c %i "$WORK")" = "$(stat -f -c %i "$DATA")" ] || die "$WORK and $DATA are on different filesystems"
case "$FS_TYPE" in tmpfs|ramfs) log "warning: $WORK is on $FS_TYPE: fsync and sync cost nothing there" ;; esac
# sources + ncat copy + server copy + download, and the concurrent files twice
need_kib=$(( (BIG_BYTES * 4 + CLIENTS * CLIENT_BYTES * 3 + SMALL_COUNT * SMALL_BYTES * 3) / 1024 + 1048576 ))
avail_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
[ "$avail_kib" -ge "$need_kib" ] || die "not enough space in $WORK: $((avail_kib / 1024)) MiB free, need $((need_kib / 1024)) MiB"

RESULTS="$RAW/files.tsv"
: >"$RESULTS"
log "files: RUNS=$RUNS BIG_MB=$BIG_MB SMALL_COUNT=$SMALL_COUNT CLIENTS=$CLIENTS CLIENT_MB=$CLIENT_MB on $FS_TYPE"

# ---------------------------------------------------------------- helpers
# now: seconds since the epoch, microsecond resolution (no fork).
now() { echo "$EPOCHREALTIME"; }
# secs_between T0 T1: T1 - T0 in seconds, 4 decimals.
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f\n", b - a }'; }
# rate BYTES SECONDS SCALE: BYTES / SECONDS / SCALE (e.g. 1e9 for GB/s).
rate() { awk -v n="$1" -v s="$2" -v k="$3" 'BEGIN { if (s > 0) printf "%.4f\n", n / s / k; else print "n/a" }'; }

# wait_job PID: wait for a start_bg job (bounded: every job runs under
# `timeout`), forget it and return its exit status.
wait_job() {
    local rc=0
    wait "$1" || rc=$?
    forget_bg "$1"
    return "$rc"
}

# child_of PID: the pid of PID's child (the command `timeout` runs), waiting
# up to 5 s for it to appear; 0 if there is none.
child_of() {
    local c i
    for ((i = 0; i < 500; i++)); do
        c=
        read -r c _ <"/proc/$1/task/$1/children" 2>/dev/null || true
        if [ -n "$c" ]; then echo "$c"; return 0; fi
        alive "$1" || break
        sleep 0.01
    done
    echo 0
}

# start_rss_sampler FILE PID...: in the background, append one line with the
# VmRSS (KiB, 0 once gone) of each PID to FILE every 0.1 s, for at most
# CMD_TIMEOUT + 10 s. Reads /proc with shell builtins only (no fork per
# sample but the sleep). Pid in LAST_PID; stop it with stop_bg.
start_rss_sampler() {
    local file=$1; shift
    : >"$file"
    (
        for ((i = 0; i < (CMD_TIMEOUT + 10) * 10; i++)); do
            line=
            for p in "$@"; do
                r=0
                { while read -r k v _; do
                    if [ "$k" = VmRSS: ]; then r=$v; break; fi
                done <"/proc/$p/status"; } 2>/dev/null || true
                line+="$r "
            done
            echo "${line% }" >>"$file"
            sleep 0.1
        done
    ) &
    LAST_PID=$!
    BG_PIDS+=("$LAST_PID")
}

mib() { case "$1" in n/a|'') echo n/a ;; *) awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }' ;; esac; }

# client NAME CMD...: run a sockit client command (not timed) under timeout;
# fail with its error line if it fails.
client() {
    local name=$1; shift
    if ! run_fg "$name" /dev/null timeout -k 5 "$CMD_TIMEOUT" "$@"; then
        die "$(quote "$@") failed: $(tail -n 3 "$LOGS/$name.log" | tr '\n' ' ')"
    fi
}

settle() { sync -f "$WORK"; }

# result CASE RUN SECONDS RATE [SERVER_RSS_KIB CLIENT_RSS_KIB]
result() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-n/a}" "${6:-n/a}" >>"$RESULTS"; }

# ---------------------------------------------------------------- test data
SRC="$WORK/big.bin"
NCAT_DEST="$WORK/big.ncat.bin"
GET_DEST="$WORK/big.get.bin"
SMALL_DIR="$WORK/small"
CONC_SRC="$WORK/conc"
CONC_GET="$WORK/conc-get"

log "writing test data: ${BIG_MB} MiB, $SMALL_COUNT x $SMALL_KB KiB, $CLIENTS x ${CLIENT_MB} MiB"
head -c "$BIG_BYTES" /dev/urandom >"$SRC"
record_line "head -c $BIG_BYTES /dev/urandom > bench/out/files-work/big.bin"
mkdir -p "$SMALL_DIR" "$CONC_SRC" "$CONC_GET"
# SMALL_COUNT files f0001.bin ... of SMALL_BYTES pseudo-random bytes (seeded)
GEN_SMALL='import random, sys; d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]); rng = random.Random(4096); [open("%s/f%04d.bin" % (d, i), "wb").write(rng.randbytes(size)) for i in range(1, n + 1)]'
python3 -c "$GEN_SMALL" "$SMALL_DIR" "$SMALL_COUNT" "$SMALL_BYTES"
record_line "python3 -c '$GEN_SMALL' bench/out/files-work/small $SMALL_COUNT $SMALL_BYTES"
for ((i = 1; i <= CLIENTS; i++)); do
    head -c "$CLIENT_BYTES" /dev/urandom >"$CONC_SRC/c$i.bin"
done
record_line "head -c $CLIENT_BYTES /dev/urandom > bench/out/files-work/conc/cI.bin   # I = 1..$CLIENTS"
# written once (and synced), read once: warm, clean cache for every tool
sync -f "$WORK"
cat "$SRC" "$SMALL_DIR"/* "$CONC_SRC"/* >/dev/null
record_line "sync -f bench/out/files-work; cat bench/out/files-work/{big.bin,small/*,conc/*} > /dev/null"

# ---------------------------------------------------------------- server, account
# A fresh server process for every run (same data dir, so the account and the
# session stay), so that each run's RSS numbers start from a new process.
# Run 0 is only for register and login.
SERVER=("$SOCKIT" serve --data-dir "$DATA" --echo-bind 127.0.0.1:0 --framed-bind "127.0.0.1:$PORT")
SPID=
SRSS0_ALL=()
start_server() {
    record "${SERVER[@]}"
    start_bg "files-server-run$1" "${SERVER[@]}"
    SPID=$LAST_PID
    wait_port "$PORT" "$SPID"
}

# register and log in on a server of its own: the password hashing (Argon2id)
# leaves memory behind in that process, which would inflate run 1's RSS
start_server 0
record_line "export SOCKIT_CONFIG_DIR=bench/out/files-client SOCKIT_SERVER=127.0.0.1:$PORT SOCKIT_PASSWORD=bench-password"
trust_server "$DATA" "$PORT"
record "$SOCKIT" register --user bench
client files-register "$SOCKIT" register --user bench
record "$SOCKIT" login --user bench
client files-login "$SOCKIT" login --user bench
stop_bg "$SPID"

server_check() { alive "$SPID" || die "sockit serve exited (see $LOGS/files-server-run*.log)"; }

# ---------------------------------------------------------------- 1. big file
big_run() {
    local run=$1 t0 t1 t2 rc spid_recv spid_send tpid cpid sampler samples s
    local ncat_recv=(ncat -l 127.0.0.1 "$NCAT_PORT" --recv-only)
    local ncat_send=(ncat --send-only 127.0.0.1 "$NCAT_PORT")

    # ncat -> ncat -l > DEST, then sync DEST
    rm -f "$NCAT_DEST" "$GET_DEST"
    settle
    record_line "$(quote "${ncat_recv[@]}") <bench/out/idle-stdin.fifo >bench/out/files-work/big.ncat.bin"
    record_line "$(quote "${ncat_send[@]}") <bench/out/files-work/big.bin"
    record_line "sync bench/out/files-work/big.ncat.bin"
    start_bg_io files-ncat-recv "$IDLE_FIFO" "$NCAT_DEST" timeout -k 5 "$CMD_TIMEOUT" "${ncat_recv[@]}"
    spid_recv=$LAST_PID
    wait_port "$NCAT_PORT" "$spid_recv"
    log "run $run/$RUNS: ${BIG_MB} MiB ncat -> ncat -l, sync"
    t0=$(now)
    start_bg_io files-ncat-send "$SRC" /dev/null timeout -k 5 "$CMD_TIMEOUT" "${ncat_send[@]}"
    spid_send=$LAST_PID
    wait_job "$spid_send" || die "ncat sender failed (see $LOGS/files-ncat-send.log)"
    wait_job "$spid_recv" || die "ncat receiver failed (see $LOGS/files-ncat-recv.log)"
    t1=$(now)
    timeout -k 5 "$CMD_TIMEOUT" sync "$NCAT_DEST"
    t2=$(now)
    [ "$(stat -c %s "$NCAT_DEST")" -eq "$BIG_BYTES" ] || die "ncat delivered $(stat -c %s "$NCAT_DEST") bytes, not $BIG_BYTES"
    s=$(secs_between "$t0" "$t2"); result ncat-sync "$run" "$s" "$(rate "$BIG_BYTES" "$s" 1e9)"
    s=$(secs_between "$t0" "$t1"); result ncat "$run" "$s" "$(rate "$BIG_BYTES" "$s" 1e9)"
    rm -f "$NCAT_DEST"

    # sockit put
    settle
    local put=("$SOCKIT" put -q "$SRC")
    record "${put[@]}"
    log "run $run/$RUNS: ${BIG_MB} MiB sockit put"
    samples="$RAW/files-put-run$run.rss"
    t0=$(now)
    start_bg files-put timeout -k 5 "$CMD_TIMEOUT" "${put[@]}"
    tpid=$LAST_PID
    cpid=$(child_of "$tpid")
    start_rss_sampler "$samples" "$SPID" "$cpid"
    sampler=$LAST_PID
    rc=0
    wait_job "$tpid" || rc=$?
    t1=$(now)
    stop_bg "$sampler"
    [ "$rc" -eq 0 ] || die "sockit put failed with status $rc: $(tail -n 3 "$LOGS/files-put.log" | tr '\n' ' ')"
    server_check
    s=$(secs_between "$t0" "$t1")
    result put "$run" "$s" "$(rate "$BIG_BYTES" "$s" 1e9)" "$(column_max "$samples" 1)" "$(column_max "$samples" 2)"
    cmp -s "$SRC" "$STORE/big.bin" || die "the server's big.bin differs from the source"

    # sockit get
    settle
    local get=("$SOCKIT" get -q --force big.bin "$GET_DEST")
    record "${get[@]}"
    log "run $run/$RUNS: ${BIG_MB} MiB sockit get"
    samples="$RAW/files-get-run$run.rss"
    t0=$(now)
    start_bg files-get timeout -k 5 "$CMD_TIMEOUT" "${get[@]}"
    tpid=$LAST_PID
    cpid=$(child_of "$tpid")
    start_rss_sampler "$samples" "$SPID" "$cpid"
    sampler=$LAST_PID
    rc=0
    wait_job "$tpid" || rc=$?
    t1=$(now)
    stop_bg "$sampler"
    [ "$rc" -eq 0 ] || die "sockit get failed with status $rc: $(tail -n 3 "$LOGS/files-get.log" | tr '\n' ' ')"
    server_check
    s=$(secs_between "$t0" "$t1")
    result get "$run" "$s" "$(rate "$BIG_BYTES" "$s" 1e9)" "$(column_max "$samples" 1)" "$(column_max "$samples" 2)"
    cmp -s "$SRC" "$GET_DEST" || die "the downloaded big.bin differs from the source"
    rm -f "$GET_DEST"
    record "$SOCKIT" rm big.bin
    client files-rm "$SOCKIT" rm big.bin
}

# ---------------------------------------------------------------- 2. small files
# check_remote_dir REMOTE: the server's copy of the small files is complete and identical.
check_small() {
    local d="$STORE/$1" n
    [ -d "$d" ] || die "remote folder $1 was not created"
    n=$(find "$d" -type f | wc -l)
    [ "$n" -eq "$SMALL_COUNT" ] || die "remote folder $1 holds $n files, not $SMALL_COUNT"
    diff -rq "$SMALL_DIR" "$d" >/dev/null || die "remote folder $1 differs from $SMALL_DIR"
}

# start_stall_watchdog PID DIR: in the background, once a second count the
# files in DIR; when the count has not grown for STALL_TIMEOUT seconds, write
# it to bench/out/files-stalled and stop PID (a `timeout`, which stops its
# command). Pid in LAST_PID; stop it with stop_bg.
start_stall_watchdog() {
    local pid=$1 dir=$2
    rm -f "$OUT/files-stalled"
    (
        last=-1 same=0
        while sleep 1; do
            n=0
            if [ -d "$dir" ]; then n=$(find "$dir" -type f 2>/dev/null | wc -l) || n=0; fi
            if [ "$n" -gt "$last" ]; then last=$n same=0; else same=$((same + 1)); fi
            if [ "$same" -ge "$STALL_TIMEOUT" ]; then
                echo "$n" >"$OUT/files-stalled"
                kill -TERM "$pid" 2>/dev/null || true
                exit 0
            fi
        done
    ) &
    LAST_PID=$!
    BG_PIDS+=("$LAST_PID")
}

small_run() {
    local run=$1 t0 t1 rc s remote tpid dog
    remote="small-r-run$run"
    local putr=("$SOCKIT" put -q -r "$SMALL_DIR" "$remote")
    settle
    record "${putr[@]}"
    log "run $run/$RUNS: $SMALL_COUNT x $SMALL_KB KiB, sockit put -r"
    t0=$(now)
    rc=0
    run_fg files-put-r /dev/null timeout -k 5 "$CMD_TIMEOUT" "${putr[@]}" || rc=$?
    t1=$(now)
    [ "$rc" -eq 0 ] || die "sockit put -r failed with status $rc: $(tail -n 3 "$LOGS/files-put-r.log" | tr '\n' ' ')"
    server_check
    check_small "$remote"
    s=$(secs_between "$t0" "$t1"); result small-r "$run" "$s" "$(rate "$SMALL_COUNT" "$s" 1)"
    record "$SOCKIT" rm -r "$remote"
    client files-rm "$SOCKIT" rm -r "$remote"

    # one process (connection, authentication) per file, one after another;
    # the loop runs in one bash under one timeout
    remote="small-sep-run$run"
    # shellcheck disable=SC2016  # expanded by the inner bash
    local loop='for f in "$1"/*; do "$0" put -q "$f" "$2/${f##*/}" || exit; done'
    settle
    record_line "for f in bench/out/files-work/small/*; do $(quote "$SOCKIT") put -q \"\$f\" \"$remote/\${f##*/}\"; done"
    log "run $run/$RUNS: $SMALL_COUNT x $SMALL_KB KiB, one sockit put per file"
    t0=$(now)
    start_bg files-put-sep timeout -k 5 "$((CMD_TIMEOUT + SMALL_COUNT))" bash -c "$loop" "$SOCKIT" "$SMALL_DIR" "$remote"
    tpid=$LAST_PID
    start_stall_watchdog "$tpid" "$STORE/$remote"
    dog=$LAST_PID
    rc=0
    wait_job "$tpid" || rc=$?
    t1=$(now)
    stop_bg "$dog"
    if [ -e "$OUT/files-stalled" ]; then
        die "one sockit put per file: no file arrived for ${STALL_TIMEOUT} s (after $(cat "$OUT/files-stalled") of $SMALL_COUNT); stopped. Log: $(tail -n 3 "$LOGS/files-put-sep.log" | tr '\n' ' ')"
    fi
    [ "$rc" -eq 0 ] || die "a separate sockit put failed with status $rc: $(tail -n 3 "$LOGS/files-put-sep.log" | tr '\n' ' ')"
    server_check
    check_small "$remote"
    s=$(secs_between "$t0" "$t1"); result small-sep "$run" "$s" "$(rate "$SMALL_COUNT" "$s" 1)"
    record "$SOCKIT" rm -r "$remote"
    client files-rm "$SOCKIT" rm -r "$remote"
}

# ---------------------------------------------------------------- 3. many clients
conc_run() {
    local run=$1 t0 t1 i s bad=0 samples sampler remote
    remote="conc-run$run"
    local pids=()
    # shellcheck disable=SC2016  # expanded by the inner bash
    local job='"$0" put -q "$1" "$2" && "$0" get -q "$2" "$3"'
    rm -f "$CONC_GET"/*
    settle
    record_line "$(quote "$SOCKIT") put -q bench/out/files-work/conc/cI.bin $remote/cI.bin && $(quote "$SOCKIT") get -q $remote/cI.bin bench/out/files-work/conc-get/cI.bin   # $CLIENTS at once, I = 1..$CLIENTS, then wait"
    log "run $run/$RUNS: $CLIENTS clients at once, put + get ${CLIENT_MB} MiB each"
    samples="$RAW/files-conc-run$run.rss"
    start_rss_sampler "$samples" "$SPID"
    sampler=$LAST_PID
    t0=$(now)
    for ((i = 1; i <= CLIENTS; i++)); do
        start_bg "files-conc-$i" timeout -k 5 "$CMD_TIMEOUT" bash -c "$job" "$SOCKIT" \
            "$CONC_SRC/c$i.bin" "$remote/c$i.bin" "$CONC_GET/c$i.bin"
        pids+=("$LAST_PID")
    done
    for ((i = 1; i <= CLIENTS; i++)); do
        if ! wait_job "${pids[i - 1]}"; then
            log "client $i failed: $(tail -n 3 "$LOGS/files-conc-$i.log" | tr '\n' ' ')"
            bad=$((bad + 1))
        fi
    done
    t1=$(now)
    stop_bg "$sampler"
    server_check
    [ "$bad" -eq 0 ] || die "$bad of $CLIENTS clients failed (logs: $LOGS/files-conc-*.log)"
    for ((i = 1; i <= CLIENTS; i++)); do
        cmp -s "$CONC_SRC/c$i.bin" "$CONC_GET/c$i.bin" || die "client $i: downloaded file differs from its source"
    done
    s=$(secs_between "$t0" "$t1")
    result conc "$run" "$s" "$(rate "$((CLIENTS * CLIENT_BYTES * 2))" "$s" 1e6)" "$(column_max "$samples" 1)"
    rm -f "$CONC_GET"/*
    record "$SOCKIT" rm -r "$remote"
    client files-rm "$SOCKIT" rm -r "$remote"
}

for ((run = 1; run <= RUNS; run++)); do
    start_server "$run"
    SRSS0_ALL+=("$(rss_kib "$SPID")")
    big_run "$run"
    small_run "$run"
    conc_run "$run"
    stop_bg "$SPID"
done
SRSS0=$(printf '%s\n' "${SRSS0_ALL[@]}" | median)

# ---------------------------------------------------------------- report
col() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$RESULTS" | median; }

{
    echo "### File service: ${BIG_MB} MiB put/get with durability, $SMALL_COUNT small files, $CLIENTS clients at once (median of $RUNS runs)"
    echo
    machine_info
    echo "Filesystem of bench/out/files-data and bench/out/files-work: $FS_TYPE (same filesystem)."
    echo
    echo "#### ${BIG_MB} MiB file, written to disk durably"
    echo
    echo "| transfer | seconds | GB/s | ratio to ncat + sync | sockit server max RSS (MiB) | sockit client max RSS (MiB) |"
    echo "|---|---:|---:|---:|---:|---:|"
    ref=$(col ncat-sync 4)
    declare -A BIGLABEL=(
        [ncat-sync]="ncat --send-only -> ncat -l > DEST, then \`sync DEST\` (reference)"
        [ncat]="the same ncat transfer, without the sync"
        [put]="\`sockit put -q SRC\` (server: BLAKE3, fsync, atomic rename)"
        [get]="\`sockit get -q --force big.bin DEST\` (client: BLAKE3, fsync, rename)"
    )
    for c in ncat-sync ncat put get; do
        g=$(col "$c" 4)
        case "$c" in ncat*) srss=n/a crss=n/a ;; *) srss=$(mib "$(col "$c" 5)") crss=$(mib "$(col "$c" 6)") ;; esac
        printf '| %s | %s | %s | %s | %s | %s |\n' "${BIGLABEL[$c]}" "$(fmt "$(col "$c" 3)" 2)" "$(fmt "$g" 2)" \
            "$(ratio "$g" "$ref")" "$srss" "$crss"
    done
    echo
    echo "#### $SMALL_COUNT files of $SMALL_KB KiB"
    echo
    echo "| upload | seconds | files/s | speed-up |"
    echo "|---|---:|---:|---:|"
    sep=$(col small-sep 4)
    printf '| %s | %s | %s | %s |\n' "\`sockit put -q -r DIR\` (one connection, pipelined)" \
        "$(fmt "$(col small-r 3)" 2)" "$(fmt "$(col small-r 4)")" "$(ratio "$(col small-r 4)" "$sep")"
    printf '| %s | %s | %s | %s |\n' "$SMALL_COUNT x \`sockit put -q FILE REMOTE\` (one process, connection and login token check each)" \
        "$(fmt "$(col small-sep 3)" 2)" "$(fmt "$sep")" "1.00"
    echo
    echo "#### $CLIENTS clients at once"
    echo
    echo "| clients | file size (MiB) | wall time (s) | aggregate MB/s | downloads verified with cmp | sockit server max RSS (MiB) |"
    echo "|---:|---:|---:|---:|---|---:|"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$CLIENTS" "$CLIENT_MB" "$(fmt "$(col conc 3)" 2)" \
        "$(fmt "$(col conc 4)")" "all $CLIENTS identical, every run" "$(mib "$(col conc 5)")"
    echo
    echo "GB/s = 10^9 bytes/s and MB/s = 10^6 bytes/s of file data (${BIG_MB} MiB = $BIG_BYTES bytes). Times are"
    echo "wall clock around the commands (\`\$EPOCHREALTIME\` in the script). ncat + sync: from starting the"
    echo "sender to the end of \`sync DEST\` (coreutils: fsync of that one file); without the sync: until"
    echo "the receiver exited. Aggregate = $CLIENTS x ${CLIENT_MB} MiB x 2 (put and get) / wall time from"
    echo "starting the first client to the end of the last one. RSS: VmRSS from /proc/PID/status sampled"
    echo "every 0.1 s during the transfer, maximum. Every run starts a new server process (same data"
    echo "dir; register and login ran on a server of their own); its RSS before the run's first"
    echo "transfer: $(mib "$SRSS0") MiB. The cases run in the order of the tables, so the server RSS of a"
    echo "later case includes what the earlier ones left behind."
    echo "The page cache is not dropped; every source was written, synced and read once before timing,"
    echo "and \`sync -f\` ran (untimed) before each timed step. Each column is the median of that"
    echo "column over the runs; the ratios are of the medians."
    echo "Raw timings: bench/out/raw/files.tsv; RSS samples: bench/out/raw/files-*.rss."
    print_commands
    echo
    echo "Every sockit client command runs with the exported variables above (the password comes from"
    echo "SOCKIT_PASSWORD). Between timed steps, untimed: \`sync -f bench/out/files-work\`, removal of the"
    echo "local copies, and the removal of the uploaded files with \`sockit rm\`."
} | tee "$OUT/files.md"
