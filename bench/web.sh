#!/usr/bin/env bash
# bench/web.sh - static file serving over HTTP/1.1: sockit web vs nginx,
# static-web-server and python3 -m http.server, measured with wrk.
#
# The script writes 1 KiB, 100 KiB and 100 MiB files of random bytes to a
# temporary document root and serves it with each server on 127.0.0.1. For
# each (server, file) wrk runs `-t1 -c50 -d10s --latency` RUNS times (Python:
# 1 KiB only, PY_DURATION). Then, for sockit and nginx, bench/py/hold_http.py
# opens HOLD (10000) keep-alive connections that each GET the 1 KiB file once
# and stay idle, and the 1 KiB wrk run is repeated while they are held.
# Server RSS (VmRSS, summed over nginx's master and workers) is taken after
# the load runs, while holding the idle connections, and after they close.
# Run from the repo root:
#   bash bench/web.sh
# Environment: RUNS (3), DURATION (10s), PY_DURATION (5s), THREADS (1),
#   CONNS (50), WRK_TIMEOUT (60s), HOLD (10000), HOLD_TIMEOUT (180, seconds
#   allowed to open the idle connections), SERVERS ("sockit nginx sws py"),
#   IDLE_SERVERS ("sockit nginx"), PORT_BASE (29700; uses
#   PORT_BASE..PORT_BASE+3), SWS (/opt/sws/bin/static-web-server),
#   SWS_VERSION (version cargo install picks when SWS is missing),
#   SOCKIT_MAX_CONN (HOLD + 1024, passed as --max-connections if sockit web
#   has that option), SOCKIT_BUILD=0 to skip cargo build, SOCKIT.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10s}"
PY_DURATION="${PY_DURATION:-5s}"
THREADS="${THREADS:-1}"
CONNS="${CONNS:-50}"
WRK_TIMEOUT="${WRK_TIMEOUT:-60s}"
HOLD="${HOLD:-10000}"
HOLD_TIMEOUT="${HOLD_TIMEOUT:-180}"
SERVERS_WANTED="${SERVERS:-sockit nginx sws py}"
IDLE_SERVERS="${IDLE_SERVERS:-sockit nginx}"
PORT_BASE="${PORT_BASE:-29700}"
SWS="${SWS:-/opt/sws/bin/static-web-server}"
SWS_VERSION="${SWS_VERSION:-2.44.1}"
SOCKIT_MAX_CONN="${SOCKIT_MAX_CONN:-$((HOLD + 1024))}"
DUR_S=$(duration_secs "$DURATION")
duration_secs "$PY_DURATION" >/dev/null   # validates it

# Every server and the idle holder need a descriptor per connection.
ulimit -n "$(ulimit -Hn)"
record_line "ulimit -n $(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
log "open files limit (ulimit -n): $NOFILE"
[ "$NOFILE" -ge $((HOLD + CONNS + 1024)) ] ||
    die "ulimit -n hard limit $NOFILE is too low to hold $HOLD connections (need $((HOLD + CONNS + 1024)))"

need python3 python3
need curl curl
need wrk wrk
# (nginx is in /usr/sbin, which a non-root PATH may lack)
[ -x /usr/sbin/nginx ] || need nginx nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# static-web-server from crates.io, built outside the repository.
if [[ " $SERVERS_WANTED " == *" sws "* ]] && [ ! -x "$SWS" ]; then
    [ "$SWS" = /opt/sws/bin/static-web-server ] || die "static-web-server not found at $SWS"
    log "cargo install static-web-server@$SWS_VERSION --locked --root /opt/sws (takes a few minutes)"
    CARGO_TARGET_DIR="${SWS_TARGET_DIR:-/tmp/sws-target}" \
        cargo install static-web-server --version "$SWS_VERSION" --locked --root /opt/sws >&2 ||
        die "cargo install static-web-server failed"
fi

build_sockit

# ---------------------------------------------------------------- servers
SERVERS=()
for s in $SERVERS_WANTED; do
    case "$s" in
        sockit)
            if "$SOCKIT" web --help >/dev/null 2>&1; then
                SERVERS+=(sockit)
            else
                log "warning: sockit web not available ($SOCKIT web --help failed); skipping sockit"
            fi ;;
        nginx|sws|py) SERVERS+=("$s") ;;
        *) die "unknown server '$s' in SERVERS (use sockit nginx sws py)" ;;
    esac
done
[ ${#SERVERS[@]} -gt 0 ] || die "no server to measure"

SOCKIT_EXTRA=()
if [[ " ${SERVERS[*]} " == *" sockit "* ]]; then
    sockit_help=$("$SOCKIT" web --help 2>&1 || true)
    # compression off, as for static-web-server (wrk sends no Accept-Encoding anyway)
    if grep -q -- '--no-compress' <<<"$sockit_help"; then SOCKIT_EXTRA+=(--no-compress); fi
    # sockit web refuses connections beyond --max-connections (default 10000):
    # the held connections plus wrk's must fit, as they do in nginx
    # (worker_connections below)
    if grep -q -- '--max-connections' <<<"$sockit_help"; then
        SOCKIT_EXTRA+=(--max-connections "$SOCKIT_MAX_CONN")
    fi
fi

declare -A PORT LABEL
PORT[sockit]=$PORT_BASE
PORT[nginx]=$((PORT_BASE + 1))
PORT[sws]=$((PORT_BASE + 2))
PORT[py]=$((PORT_BASE + 3))
LABEL[sockit]="sockit web"
LABEL[nginx]="nginx"
LABEL[sws]="static-web-server"
LABEL[py]="python3 -m http.server"
check_free "${PORT[@]}"

# ---------------------------------------------------------------- files
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sockit-web.XXXXXX")
trap 'cleanup; rm -rf -- "$WORK"' EXIT
DOCROOT="$WORK/www"
mkdir -p "$DOCROOT"
FILES=(1k 100k 100m)
declare -A FSIZE FLABEL
FSIZE[1k]=1024
FSIZE[100k]=102400
FSIZE[100m]=104857600
FLABEL[1k]="1 KiB"
FLABEL[100k]="100 KiB"
FLABEL[100m]="100 MiB"
for f in "${FILES[@]}"; do
    head -c "${FSIZE[$f]}" /dev/urandom >"$DOCROOT/$f.bin"
done
# nginx workers drop to another user when nginx runs as root without `user root`
chmod 755 "$WORK" "$DOCROOT"
chmod 644 "$DOCROOT"/*.bin
DOC_FS=$(stat -f -c %T "$DOCROOT")
log "document root $DOCROOT ($DOC_FS): ${FILES[*]/%/.bin}"

# nginx configuration: the settings asked for, everything else at its default
# except worker_connections (the default 512 cannot hold the idle connections)
# and the paths, which all point into the temporary prefix.
NGX_PREFIX="$WORK/nginx"
NGX_CONF="$NGX_PREFIX/nginx.conf"
mkdir -p "$NGX_PREFIX"
NGX_USER=
[ "$(id -u)" -eq 0 ] && NGX_USER="user root root;"
cat >"$NGX_CONF" <<EOF
$NGX_USER
worker_processes auto;
worker_rlimit_nofile $NOFILE;
pid $NGX_PREFIX/nginx.pid;
error_log $NGX_PREFIX/error.log warn;
events {
    worker_connections $((HOLD + 1024));
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $NGX_PREFIX/client_body;
    proxy_temp_path $NGX_PREFIX/proxy;
    fastcgi_temp_path $NGX_PREFIX/fastcgi;
    uwsgi_temp_path $NGX_PREFIX/uwsgi;
    scgi_temp_path $NGX_PREFIX/scgi;
    server {
        listen 127.0.0.1:${PORT[nginx]};
        root $DOCROOT;
    }
}
EOF
"$NGINX" -t -q -p "$NGX_PREFIX" -c "$NGX_CONF" -e "$NGX_PREFIX/error.log" ||
    die "nginx rejects the generated configuration ($NGX_CONF)"

SWS_ARGS=()
if [[ " ${SERVERS[*]} " == *" sws "* ]]; then
    # compression off: wrk sends no Accept-Encoding anyway, but keep it fair
    "$SWS" --help 2>&1 | grep -q -- '--compression' || die "$SWS has no --compression option"
    SWS_ARGS=(--compression false)
fi

server_cmd() { # sets CMD for server $1
    local p=${PORT[$1]}
    case "$1" in
        # RUST_LOG=warn: no access line per request (nginx runs with access_log off)
        sockit) CMD=(env RUST_LOG=warn "$SOCKIT" web "$DOCROOT" --bind "127.0.0.1:$p" "${SOCKIT_EXTRA[@]}") ;;
        nginx) CMD=("$NGINX" -p "$NGX_PREFIX" -c "$NGX_CONF" -e "$NGX_PREFIX/error.log" -g 'daemon off;') ;;
        sws) CMD=("$SWS" --host 127.0.0.1 --port "$p" --root "$DOCROOT" --log-level error "${SWS_ARGS[@]}") ;;
        py) CMD=(python3 -m http.server "$p" --bind 127.0.0.1 --directory "$DOCROOT") ;;
    esac
}

# files_for SERVER: the files measured for it (Python: 1 KiB only).
files_for() { if [ "$1" = py ]; then echo 1k; else echo "${FILES[*]}"; fi; }

# ---------------------------------------------------------------- helpers
# children_of PID: the pids of PID's direct children (nginx's workers). Reads
# /proc/*/status in BEGIN with getline, so a process exiting meanwhile is skipped.
children_of() {
    awk -v p="$1" 'BEGIN {
        for (i = 1; i < ARGC; i++) {
            f = ARGV[i]
            while ((getline l < f) > 0)
                if (l ~ /^PPid:/) { split(l, a, /[ \t]+/); if (a[2] == p) { split(f, b, "/"); print b[3] }; break }
            close(f)
        }
    }' /proc/[0-9]*/status
}
# tree_rss_kib PID: VmRSS of PID plus that of its direct children, in KiB
# (pages shared between them are counted once per process).
tree_rss_kib() {
    local total c
    total=$(rss_kib "$1")
    for c in $(children_of "$1"); do total=$((total + $(rss_kib "$c"))); done
    echo "$total"
}
# tree_procs PID: number of processes (PID and its direct children).
tree_procs() { echo $((1 + $(children_of "$1" | wc -l))); }

# check_files SERVER: GET every file once with curl and compare it with the original.
check_files() {
    local s=$1 f code
    for f in $(files_for "$s"); do
        code=$(curl -sS --max-time 60 -o "$WORK/check.bin" -w '%{http_code}' \
            "http://127.0.0.1:${PORT[$s]}/$f.bin" 2>>"$LOGS/web-check.log") || code=failed
        if [ "$code" != 200 ] || ! cmp -s "$WORK/check.bin" "$DOCROOT/$f.bin"; then
            log "warning: $s: GET /$f.bin returned $code or wrong content (see $LOGS/web-check.log)"
            CHECK_FAILED+=("$s $f.bin")
        fi
        rm -f "$WORK/check.bin"
    done
}
CHECK_FAILED=()

# parse_wrk FILE: "req/s MB/s p99_us errors" from wrk --latency output.
# Transfer/sec is in wrk's binary units (KB = 1024 B); MB/s here is 10^6 B/s.
# errors = socket errors (connect, read, write, timeout) + non-2xx/3xx responses.
parse_wrk() {
    awk '
        function bytes(s,   v, u) {
            v = s + 0; u = s; sub(/^[0-9.]+/, "", u)
            if (u == "KB") v *= 1024; else if (u == "MB") v *= 1048576
            else if (u == "GB") v *= 1073741824; else if (u == "TB") v *= 1099511627776
            return v
        }
        function usec(s,   v, u) {
            v = s + 0; u = s; sub(/^[0-9.]+/, "", u)
            if (u == "ms") v *= 1e3; else if (u == "s") v *= 1e6
            else if (u == "m") v *= 60e6; else if (u == "h") v *= 3600e6
            return v
        }
        /^Requests\/sec:/ { rps = $2 }
        /^Transfer\/sec:/ { mbs = bytes($2) / 1e6 }
        /^ +99%/ { p99 = usec($2) }
        / requests in / { nreq = $1 }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        END {
            if (rps == "") { print "n/a n/a n/a n/a"; exit }
            # no request completed: wrk prints a latency of 0
            printf "%s %.3f %s %d\n", rps, mbs, (p99 == "" || nreq + 0 == 0 ? "n/a" : p99), err
        }' "$1"
}

# run_wrk SERVER FILE DURATION OUT: run wrk against SERVER for FILE, its
# output to OUT; sets WRK_VALS to the parsed values. (Not run in $(...): the
# wrk process must stay known to the exit trap.)
WRK_VALS=
run_wrk() {
    local s=$1 f=$2 d=$3 out=$4 secs
    secs=$(duration_secs "$d")
    local client=(wrk "-t$THREADS" "-c$CONNS" "-d$d" --latency --timeout "$WRK_TIMEOUT"
        "http://127.0.0.1:${PORT[$s]}/$f.bin")
    record "${client[@]}"
    if ! run_fg web-wrk "$out" timeout -k 5 "$((secs + 60))" "${client[@]}"; then
        log "warning: wrk failed for $s/$f (see $out and $LOGS/web-wrk.log)"
    fi
    WRK_VALS=$(parse_wrk "$out")
}

# wait_line FILE PREFIX PID SECONDS: wait until FILE has a line starting with
# PREFIX; print the rest of it. Fails if PID exits first or after SECONDS.
wait_line() {
    local file=$1 prefix=$2 pid=$3 secs=$4 i line
    for ((i = 0; i < secs * 10; i++)); do
        line=$(grep -m1 "^$prefix" "$file" 2>/dev/null) && { echo "${line#"$prefix"}"; return 0; }
        alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}

# rate N: requests/s, one decimal below 100.
rate() { case "$1" in n/a|'') echo n/a ;; *) awk -v v="$1" 'BEGIN { printf (v < 100 ? "%.1f\n" : "%.0f\n"), v }' ;; esac; }
mib() { case "$1" in n/a|'') echo n/a ;; *) awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }' ;; esac; }
ms() { case "$1" in n/a|'') echo n/a ;; *) awk -v u="$1" 'BEGIN { printf (u < 10000 ? "%.2f\n" : "%.0f\n"), u / 1000 }' ;; esac; }

# ---------------------------------------------------------------- runs
RESULTS="$RAW/web.tsv"     # server file run req/s MB/s p99_us errors
IDLE="$RAW/web-idle.tsv"   # server run held req/s MB/s p99_us errors closed
MEM="$RAW/web-mem.tsv"     # server run procs rss_after_load rss_holding rss_after_release
: >"$RESULTS"; : >"$IDLE"; : >"$MEM"
log "web: RUNS=$RUNS DURATION=$DURATION PY_DURATION=$PY_DURATION wrk -t$THREADS -c$CONNS; servers: ${SERVERS[*]}; idle test: $IDLE_SERVERS, HOLD=$HOLD"

for ((run = 1; run <= RUNS; run++)); do
    for s in "${SERVERS[@]}"; do
        server_cmd "$s"
        record "${CMD[@]}"
        start_bg "web-$s" "${CMD[@]}"
        spid=$LAST_PID
        wait_port "${PORT[$s]}" "$spid"
        [ "$run" -eq 1 ] && check_files "$s"
        dead=0
        d=$DURATION
        [ "$s" = py ] && d=$PY_DURATION
        for f in $(files_for "$s"); do
            if [ "$dead" -eq 1 ]; then
                printf '%s\t%s\t%s\tn/a\tn/a\tn/a\tn/a\n' "$s" "$f" "$run" >>"$RESULTS"
                continue
            fi
            log "run $run/$RUNS: $s, ${FLABEL[$f]}"
            run_wrk "$s" "$f" "$d" "$RAW/web-$s-$f-run$run.txt"
            read -r rps mbs p99 err <<<"$WRK_VALS"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$f" "$run" "$rps" "$mbs" "$p99" "$err" >>"$RESULTS"
            if ! alive "$spid"; then
                log "warning: server $s exited during the ${FLABEL[$f]} run (see $LOGS/web-$s.log)"
                dead=1
            fi
        done
        procs=n/a rss_load=n/a rss_hold=n/a rss_rel=n/a
        if [ "$dead" -eq 0 ]; then
            procs=$(tree_procs "$spid")
            rss_load=$(tree_rss_kib "$spid")
        fi
        if [[ " $IDLE_SERVERS " == *" $s "* ]] && [ "$dead" -eq 0 ]; then
            holder=(python3 "$BENCH_DIR/py/hold_http.py" 127.0.0.1 "${PORT[$s]}" /1k.bin "$HOLD"
                --establish-timeout "$HOLD_TIMEOUT" --max-seconds "$((HOLD_TIMEOUT + DUR_S + 120))")
            record "${holder[@]}"
            hold_out="$RAW/web-hold-$s-run$run.txt"
            log "run $run/$RUNS: $s, opening $HOLD idle keep-alive connections"
            : >"$hold_out"   # now, not in the child: an old "holding" line must not be read
            start_bg_io "web-holder-$s-run$run" /dev/null "$hold_out" "${holder[@]}"
            hpid=$LAST_PID
            if held=$(wait_line "$hold_out" "holding " "$hpid" "$((HOLD_TIMEOUT + 30))"); then
                [ "$held" -lt "$HOLD" ] && log "warning: only $held of $HOLD idle connections established (see $LOGS/web-holder-$s-run$run.log)"
                log "run $run/$RUNS: $s, 1 KiB while holding $held idle connections"
                run_wrk "$s" 1k "$DURATION" "$RAW/web-idle-$s-run$run.txt"
                read -r rps mbs p99 err <<<"$WRK_VALS"
                if alive "$spid"; then rss_hold=$(tree_rss_kib "$spid"); fi
                stop_bg "$hpid"
                closed=$(wait_line "$hold_out" "closed_by_server " "$hpid" 1) || closed=n/a
                isleep 1
                if alive "$spid"; then rss_rel=$(tree_rss_kib "$spid"); fi
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$run" "$held" "$rps" "$mbs" "$p99" "$err" "$closed" >>"$IDLE"
            else
                log "warning: the idle holder did not establish its connections (see $LOGS/web-holder-$s-run$run.log)"
                stop_bg "$hpid"
                printf '%s\t%s\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\n' "$s" "$run" >>"$IDLE"
            fi
            alive "$spid" || log "warning: server $s exited during the idle test (see $LOGS/web-$s.log)"
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$run" "$procs" "$rss_load" "$rss_hold" "$rss_rel" >>"$MEM"
        stop_bg "$spid"
    done
done

# ---------------------------------------------------------------- report
col() { # col SERVER FILE FIELD -> median over runs
    awk -F'\t' -v s="$1" -v f="$2" -v c="$3" '$1 == s && $2 == f { print $c }' "$RESULTS" | median
}
icol() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$IDLE" | median; }
mcol() { awk -F'\t' -v s="$1" -v c="$2" '$1 == s { print $c }' "$MEM" | median; }
has() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }
pct() { case "$1$2" in *n/a*) echo n/a ;; *) awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.0f%%\n", 100 * a / b }' ;; esac; }
best() { # larger of two numbers, n/a ignored
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || a == "") print b; else if (b == "n/a" || b == "" || a + 0 >= b + 0) print a; else print b }'
}

versions() {
    local w n v p g
    w=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }' || true)
    n=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
    v="static-web-server not run"
    # (awk reads all of it: static-web-server aborts on a closed pipe)
    if has sws; then v="static-web-server $("$SWS" --version 2>&1 | awk '/^Version:/ { print $2 }' || true)"; fi
    p=$(python3 --version 2>&1)
    g=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || g="$g + uncommitted changes"
    echo "Versions: wrk $w; $n; $v; $p; sockit $g."
}

{
    echo "### Static files over HTTP/1.1 (wrk -t$THREADS -c$CONNS --latency, $DURATION per run (Python: $PY_DURATION), median of $RUNS runs)"
    echo
    machine_info
    echo
    versions
    echo
    echo "| server | file | requests/s | MB/s | p99 latency (ms) | errors | ratio to nginx | ratio to max(nginx, sws) |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for f in "${FILES[@]}"; do
        # ratios: requests/s for 1 KiB and 100 KiB; MB/s for 100 MiB, where a
        # 10 s run completes few requests and MB/s also counts partial bodies
        if [ "$f" = 100m ]; then rc=5; else rc=4; fi
        ngx=n/a; has nginx && ngx=$(col nginx "$f" "$rc")
        top=n/a
        if [ "$f" = 100m ]; then
            sws_v=n/a; has sws && sws_v=$(col sws "$f" "$rc")
            top=$(best "$ngx" "$sws_v")
        fi
        for s in sockit nginx sws py; do
            has "$s" || continue
            [[ " $(files_for "$s") " == *" $f "* ]] || continue
            v=$(col "$s" "$f" "$rc")
            r2=""
            [ "$f" = 100m ] && r2=$(ratio "$v" "$top")
            printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$s]}" "${FLABEL[$f]}" \
                "$(rate "$(col "$s" "$f" 4)")" "$(fmt "$(col "$s" "$f" 5)" 1)" "$(ms "$(col "$s" "$f" 6)")" \
                "$(fmt "$(col "$s" "$f" 7)")" "$(ratio "$v" "$ngx")" "$r2"
        done
    done
    echo
    echo "Ratios compare requests/s for 1 KiB and 100 KiB and MB/s for 100 MiB (a run completes few"
    echo "100 MiB requests, and MB/s also counts the bytes of responses still in flight at the end)."
    echo "MB/s is wrk's Transfer/sec (headers included) in 10^6 bytes/s. errors = wrk's socket errors +"
    echo "non-2xx/3xx responses. python3 -m http.server speaks HTTP/1.0 and closes every connection, so"
    echo "wrk reconnects for each of its requests."
    idle_any=0
    for s in $IDLE_SERVERS; do has "$s" && idle_any=1; done
    if [ "$idle_any" -eq 1 ]; then
        echo
        echo "#### 1 KiB while $HOLD idle keep-alive connections are held"
        echo
        echo "| server | idle connections held | closed by the server | requests/s without idle | requests/s with idle | with / without | p99 with idle (ms) | errors |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        for s in $IDLE_SERVERS; do
            has "$s" || continue
            base=$(col "$s" 1k 4)
            with=$(icol "$s" 4)
            printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${LABEL[$s]}" "$(fmt "$(icol "$s" 3)")" \
                "$(fmt "$(icol "$s" 8)")" "$(fmt "$base")" "$(fmt "$with")" "$(pct "$with" "$base")" \
                "$(ms "$(icol "$s" 6)")" "$(fmt "$(icol "$s" 7)")"
        done
        echo
        echo "Each idle connection (bench/py/hold_http.py) sent one GET /1k.bin, read the response and then"
        echo "stayed open and silent; all were established before wrk started and closed after it ended."
        echo "\"closed by the server\": idle connections the server had closed by then. \"without idle\" is"
        echo "the 1 KiB row of the table above (same server process, earlier in the same run)."
    fi
    echo
    echo "#### Server memory (VmRSS, MiB)"
    echo
    echo "| server | processes | after the load runs | holding $HOLD idle connections | after they closed |"
    echo "|---|---:|---:|---:|---:|"
    for s in "${SERVERS[@]}"; do
        if [[ " $IDLE_SERVERS " == *" $s "* ]]; then
            h=$(mib "$(mcol "$s" 5)") a=$(mib "$(mcol "$s" 6)")
        else
            h="not run" a="not run"
        fi
        printf '| %s | %s | %s | %s | %s |\n' "${LABEL[$s]}" "$(fmt "$(mcol "$s" 3)")" \
            "$(mib "$(mcol "$s" 4)")" "$h" "$a"
    done
    echo
    echo "VmRSS from /proc/PID/status, summed over the server's processes (nginx: master and workers,"
    echo "so pages they share are counted more than once). \"Holding\" is taken right after the wrk run"
    echo "with the idle connections still open; \"after they closed\" 1 s after the holder exited."
    echo
    echo "Document root: a temporary directory on $DOC_FS, files of random bytes (1k.bin, 100k.bin,"
    echo "100m.bin); the page cache was warm (the files had just been written)."
    if [ ${#CHECK_FAILED[@]} -gt 0 ]; then
        echo
        echo "**Content check failed** (GET did not return 200 with the file's bytes): ${CHECK_FAILED[*]}."
    else
        echo "Every server returned every file intact (curl + cmp before its first run)."
    fi
    echo "Raw wrk output: bench/out/raw/web-*.txt."
    echo
    echo "nginx configuration (DOCROOT and PREFIX are temporary directories):"
    echo
    echo '```nginx'
    sed -e "s|$DOCROOT|DOCROOT|g" -e "s|$NGX_PREFIX|PREFIX|g" -e '/^$/d' "$NGX_CONF"
    echo '```'
    print_commands | sed -e "s|$DOCROOT|DOCROOT|g" -e "s|$NGX_PREFIX|PREFIX|g"
} | tee "$OUT/web.md"
