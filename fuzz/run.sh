#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, for CI and by hand.
#
#   FUZZ_SECONDS=30 bash fuzz/run.sh            # all targets, 30 s each
#   FUZZ_SECONDS=300 bash fuzz/run.sh range     # one target
#
# Installs cargo-fuzz if missing, builds the targets (AddressSanitizer, on
# stable Rust through RUSTC_BOOTSTRAP=1), then runs each one over its
# committed corpus in fuzz/corpus/TARGET (read, never written: new inputs
# go to a scratch folder). Exits non-zero if any target crashed, after
# printing the path of each crashing input (under fuzz/artifacts/TARGET/).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
seconds=${FUZZ_SECONDS:-30}
export RUSTC_BOOTSTRAP=1
# Fuzz builds use their own flags: never share the main target folder.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$here/target}

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "artifacts/$t"
    echo "== fuzz $t for ${seconds}s"
    log="$scratch/$t.log"
    if cargo fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        grep -E '^(#[0-9]+.*DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' "$log" || true
    else
        grep -A8 -E 'panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer' "$log" | head -n 40 || true
        grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
        crash=$(grep -oE 'Test unit written to [^ ]+' "$log" | sed 's/Test unit written to //' | tail -n 1)
        echo "FUZZ FAILURE in $t: crashing input ${crash:+$here/$crash}"
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that crashed: ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
