#!/usr/bin/env bash
# bench/tls.sh - what TLS costs on the framed port, side by side with plain TCP.
#
# Two `sockit serve` processes run at once, data on the same filesystem: one
# with its default TLS framed port (self-signed certificate, pinned by the
# client with `sockit tls trust`), one with --no-tls.
#   1. BIG_MB (1024) MiB `sockit put -q` then `sockit get -q --force` to each
#      server, the plain and TLS order swapped every run; MB/s of each, and
#      the TLS/plain ratio of the medians (the issue's goal: at least 0.70).
#      Both include what a transfer always does (BLAKE3 on both sides, fsync,
#      rename), so the ratio is what a user sees.
#   2. New connections per second, `sockit bench handshake` (CONNS workers,
#      DURATION each): TCP + hello on the plain server; TCP + full TLS
#      handshake (no resumption) + hello, and the handshake alone, on the TLS
#      server; and the handshake alone against nginx (OpenSSL) serving TLS
#      with the same certificate and key (ECDSA P-256) on NGINX_PORT.
# Run from the repo root:
#   bash bench/tls.sh
# Environment: RUNS (3), BIG_MB (1024), CONNS (8), DURATION (10s),
#   PORT_BASE (29800; uses PORT_BASE..PORT_BASE+2), CMD_TIMEOUT (600),
#   SOCKIT_BUILD=0 to skip cargo build, SOCKIT (path of the binary).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LC_ALL=C   # decimal point in $EPOCHREALTIME

BIG_MB="${BIG_MB:-1024}"
CONNS="${CONNS:-8}"
DURATION="${DURATION:-10s}"
PORT_BASE="${PORT_BASE:-29800}"
CMD_TIMEOUT="${CMD_TIMEOUT:-600}"
for v in BIG_MB CONNS PORT_BASE CMD_TIMEOUT; do
    case "${!v}" in ''|*[!0-9]*|0) die "$v must be a positive integer (got '${!v}')" ;; esac
done

need timeout coreutils
need cmp diffutils
need python3 python3
[ -x /usr/sbin/nginx ] || need nginx nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build_sockit

TLS_PORT=$PORT_BASE
PLAIN_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
check_free "$TLS_PORT" "$PLAIN_PORT" "$NGINX_PORT"

TLS_DATA="$OUT/tls-data"
PLAIN_DATA="$OUT/tls-plain-data"
CLIENT_DIR="$OUT/tls-client"
WORK="$OUT/tls-work"
BYTES=$((BIG_MB * 1048576))
unset SOCKIT_CONFIG SOCKIT_SERVER
export SOCKIT_CONFIG_DIR="$CLIENT_DIR"
export SOCKIT_PASSWORD=bench-password
rm -rf "$TLS_DATA" "$PLAIN_DATA" "$CLIENT_DIR" "$WORK"
mkdir -p "$TLS_DATA" "$PLAIN_DATA" "$CLIENT_DIR" "$WORK"
RESULTS="$RAW/tls.tsv"
: >"$RESULTS"
log "tls: RUNS=$RUNS BIG_MB=$BIG_MB CONNS=$CONNS DURATION=$DURATION"

now() { echo "$EPOCHREALTIME"; }
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f\n", b - a }'; }

serve_args() { echo serve --data-dir "$1" --framed-bind "127.0.0.1:$2" --echo-bind 127.0.0.1:0 --web-bind 127.0.0.1:0; }
# shellcheck disable=SC2046
record "$SOCKIT" $(serve_args bench/out/tls-data "$TLS_PORT")
# shellcheck disable=SC2046
start_bg tls-server "$SOCKIT" $(serve_args "$TLS_DATA" "$TLS_PORT")
TLS_PID=$LAST_PID
# shellcheck disable=SC2046
record "$SOCKIT" $(serve_args bench/out/tls-plain-data "$PLAIN_PORT") --no-tls
# shellcheck disable=SC2046
start_bg tls-plain-server "$SOCKIT" $(serve_args "$PLAIN_DATA" "$PLAIN_PORT") --no-tls
PLAIN_PID=$LAST_PID
wait_port "$TLS_PORT" "$TLS_PID"
wait_port "$PLAIN_PORT" "$PLAIN_PID"
record_line "export SOCKIT_CONFIG_DIR=bench/out/tls-client SOCKIT_PASSWORD=bench-password"
trust_server "$TLS_DATA" "$TLS_PORT"

# One account on each server (Argon2id, not timed).
for p in "$TLS_PORT:" "$PLAIN_PORT:--no-tls"; do
    port=${p%%:*} flag=${p#*:}
    # shellcheck disable=SC2086
    "$SOCKIT" register -S "127.0.0.1:$port" --user bench $flag 2>>"$LOGS/tls-client.log"
    # shellcheck disable=SC2086
    "$SOCKIT" login -S "127.0.0.1:$port" --user bench $flag 2>>"$LOGS/tls-client.log"
done

SRC="$WORK/big.bin"
DEST="$WORK/got.bin"
log "writing a $BIG_MB MiB source file"
head -c "$BYTES" /dev/urandom >"$SRC"
sync -f "$SRC"
cat "$SRC" >/dev/null

# transfer NAME CMD...: time CMD; append "NAME run seconds MB/s".
transfer() {
    local name=$1 t0 t1 s; shift
    sync -f "$WORK"
    t0=$(now)
    timeout "$CMD_TIMEOUT" "$@" 2>>"$LOGS/tls-client.log" || die "$name failed: $(tail -1 "$LOGS/tls-client.log")"
    t1=$(now)
    s=$(secs_between "$t0" "$t1")
    printf '%s\t%s\t%s\t%s\n' "$name" "$run" "$s" "$(awk -v n="$BYTES" -v s="$s" 'BEGIN { printf "%.1f", n / s / 1e6 }')" >>"$RESULTS"
}
one_side() {
    local label=$1 port=$2; shift 2
    transfer "put-$label" "$SOCKIT" put -q --force -S "127.0.0.1:$port" "$@" "$SRC" big.bin
    transfer "get-$label" "$SOCKIT" get -q --force -S "127.0.0.1:$port" "$@" big.bin "$DEST"
    cmp -s "$SRC" "$DEST" || die "$label: the downloaded file differs from the source"
    rm -f "$DEST"
}
record_line "sockit put -q --force -S 127.0.0.1:$TLS_PORT SRC big.bin; sockit get -q --force -S 127.0.0.1:$TLS_PORT big.bin DEST"
record_line "sockit put -q --force -S 127.0.0.1:$PLAIN_PORT --no-tls SRC big.bin; sockit get -q --force -S 127.0.0.1:$PLAIN_PORT --no-tls big.bin DEST"
for ((run = 1; run <= RUNS; run++)); do
    log "run $run/$RUNS: $BIG_MB MiB put and get, TLS and plain"
    if ((run % 2)); then
        one_side tls "$TLS_PORT"
        one_side plain "$PLAIN_PORT" --no-tls
    else
        one_side plain "$PLAIN_PORT" --no-tls
        one_side tls "$TLS_PORT"
    fi
done

# nginx serving TLS with the same certificate, for the handshake reference.
NGX_PREFIX="$WORK/nginx"
NGX_CONF="$NGX_PREFIX/nginx.conf"
mkdir -p "$NGX_PREFIX"
NGX_USER=
[ "$(id -u)" -eq 0 ] && NGX_USER="user root root;"
chmod 755 "$WORK"
cat >"$NGX_CONF" <<EOF
$NGX_USER
worker_processes auto;
pid $NGX_PREFIX/nginx.pid;
error_log $NGX_PREFIX/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $NGX_PREFIX/client_body;
    proxy_temp_path $NGX_PREFIX/proxy;
    fastcgi_temp_path $NGX_PREFIX/fastcgi;
    uwsgi_temp_path $NGX_PREFIX/uwsgi;
    scgi_temp_path $NGX_PREFIX/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $TLS_DATA/tls/cert.pem;
        ssl_certificate_key $TLS_DATA/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        return 204;
    }
}
EOF
"$NGINX" -t -q -p "$NGX_PREFIX" -c "$NGX_CONF" -e "$NGX_PREFIX/error.log" ||
    die "nginx rejects the generated configuration ($NGX_CONF)"
start_bg tls-nginx "$NGINX" -p "$NGX_PREFIX" -c "$NGX_CONF" -e "$NGX_PREFIX/error.log" -g 'daemon off;'
NGINX_PID=$LAST_PID
wait_port "$NGINX_PORT" "$NGINX_PID"
# The nginx port serves the sockit server's certificate: pin it there too.
"$SOCKIT" tls trust "127.0.0.1:$NGINX_PORT" "$("$SOCKIT" tls fingerprint --data-dir "$TLS_DATA")" 2>/dev/null

# handshake NAME PORT ARGS...: one `sockit bench handshake` run; append
# "NAME run per_sec p50_ms p99_ms errors".
handshake() {
    local name=$1 port=$2 j; shift 2
    j=$(timeout "$CMD_TIMEOUT" "$SOCKIT" bench handshake "127.0.0.1:$port" -c "$CONNS" -d "$DURATION" --json "$@" 2>>"$LOGS/tls-handshake.log") ||
        die "bench handshake $name failed: $(tail -1 "$LOGS/tls-handshake.log")"
    python3 - "$name" "$run" "$j" >>"$RESULTS" <<'PY'
import json, sys
name, run, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print("\t".join([name, run, "%.1f" % j["per_sec"], "%.3f" % (j["p50_us"] / 1000),
                 "%.3f" % (j["p99_us"] / 1000), str(j["errors"])]))
PY
}
record_line "sockit bench handshake 127.0.0.1:$PLAIN_PORT --no-tls -c $CONNS -d $DURATION --json"
record_line "sockit bench handshake 127.0.0.1:$TLS_PORT -c $CONNS -d $DURATION --json"
record_line "sockit bench handshake 127.0.0.1:$TLS_PORT --handshake-only -c $CONNS -d $DURATION --json"
record_line "sockit bench handshake 127.0.0.1:$NGINX_PORT --handshake-only -c $CONNS -d $DURATION --json"
for ((run = 1; run <= RUNS; run++)); do
    log "run $run/$RUNS: new connections per second"
    handshake hs-plain "$PLAIN_PORT" --no-tls
    handshake hs-tls "$TLS_PORT"
    handshake hs-tls-only "$TLS_PORT" --handshake-only
    handshake hs-nginx "$NGINX_PORT" --handshake-only
done
stop_bg "$NGINX_PID"
stop_bg "$TLS_PID"
stop_bg "$PLAIN_PID"
rm -f "$SRC"

col() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n { print $c }' "$RESULTS" | median; }
{
    echo "### TLS on the framed port: ${BIG_MB} MiB put/get and new connections per second (median of $RUNS runs)"
    echo
    machine_info
    echo
    echo "| ${BIG_MB} MiB transfer | plain TCP (MB/s) | TLS (MB/s) | TLS / plain |"
    echo "|---|---:|---:|---:|"
    for op in put get; do
        printf '| `sockit %s -q` | %s | %s | %s |\n' "$op" "$(fmt "$(col "$op-plain" 4)")" "$(fmt "$(col "$op-tls" 4)")" \
            "$(ratio "$(col "$op-tls" 4)" "$(col "$op-plain" 4)")"
    done
    echo
    echo "| new connections, $CONNS workers, $DURATION | connections/s | p50 (ms) | p99 (ms) | errors |"
    echo "|---|---:|---:|---:|---:|"
    row() { printf '| %s | %s | %s | %s | %s |\n' "$1" "$(fmt "$(col "$2" 3)")" "$(fmt "$(col "$2" 4)" 2)" "$(fmt "$(col "$2" 5)" 2)" "$(col "$2" 6)"; }
    row "sockit, plain: TCP + hello" hs-plain
    row "sockit, TLS: TCP + full handshake + hello" hs-tls
    row "sockit, TLS: TCP + full handshake" hs-tls-only
    row "nginx $("$NGINX" -v 2>&1 | sed 's/^nginx version: nginx\///') (OpenSSL), TLS: TCP + full handshake" hs-nginx
    echo
    echo "MB/s = 10^6 bytes/s, wall clock around the whole client command (connect, auth,"
    echo "transfer, BLAKE3 on both sides, fsync, rename); every download is compared with"
    echo "its source. The handshakes are full ones (the client keeps no session), ECDSA"
    echo "P-256, TLS 1.3, with the client on the same 2 cores as the server. Ratio of the"
    echo "TLS handshake rates, sockit / nginx: $(ratio "$(col hs-tls-only 3)" "$(col hs-nginx 3)")."
    echo "Raw numbers: bench/out/raw/tls.tsv."
    print_commands
} | tee "$OUT/tls.md"
