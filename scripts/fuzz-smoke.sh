#!/usr/bin/env bash
# Run each fuzz target briefly (FUZZ_SECONDS each, default 30) from its seed corpus, so that a
# regression that panics shows in CI. Longer runs: FUZZ_SECONDS=600 scripts/fuzz-smoke.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in ctaphid ctap2 ctap1 usbip_pdu storage; do
    mkdir -p "$work/$target"
    cp fuzz/corpus/"$target"/* "$work/$target"/
    echo "fuzz: $target for ${seconds}s"
    # Runs from a copy of the seeds: the corpus in the repository stays small and reviewed.
    status=0
    (cd fuzz && cargo +nightly fuzz run "$target" "$work/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1) > "$work/$target.log" 2>&1 || status=$?
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|SUMMARY|ERROR' "$work/$target.log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$work/$target.log"
        echo "fuzz: $target FAILED"
        exit 1
    fi
done
echo "fuzz: all targets ran without a crash"
