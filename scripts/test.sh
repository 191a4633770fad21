#!/usr/bin/env bash
# Run every test of the project, installing what is missing first. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --all

# A clean run needs ~5 GB of build output (all tiers); incremental caches only cost space there.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
echo "disk: $((free_kib / 1024 / 1024)) GiB free where the tests build"
if [ "$free_kib" -lt $((8 * 1024 * 1024)) ]; then
    echo "warning: less than 8 GiB free; the build may run out of space (No space left on device)" >&2
fi

step() { printf '\n==> %s\n' "$*"; }

step "format and lints"
cargo fmt --all --check
(cd rp2040-runner && cargo fmt --check) # the firmware is its own workspace
cargo clippy --workspace --all-targets -- -D warnings
scripts/check-layers.sh
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet # links in doc comments resolve

step "Rust tests: core, runner, end to end over USB/IP"
cargo build --workspace
cargo test --workspace

step "release archives: static usbip-runner and attestation for x86_64 and aarch64 (run under qemu-user)"
scripts/release.sh

step "the real kernel: the release in a QEMU guest (--attach, usbip, uhid, the GitHub Actions recipe), libfido2 and OpenSSH (tests/qemu)"
tests/qemu/run.sh

step "real browsers through the real kernel: Chromium and Firefox ESR, python-fido2's RP (tests/browser)"
tests/browser/run.sh

step "the container image: built with podman from the release, python-fido2 against the key in it (tests/container)"
tests/container/run.sh

if [ -x tests/python/run.sh ]; then
    step "python-fido2 over USB/IP"
    tests/python/run.sh
fi

step "fuzzing: every target briefly from its seeds (FUZZ_SECONDS, default 30)"
scripts/fuzz-smoke.sh

if [ -x rp2040-runner/ci.sh ]; then
    step "Pico firmware: build, size budget, emulated end-to-end suite"
    rp2040-runner/ci.sh
fi

step "benchmark: CTAP round trips over USB/IP (figures, not a test)"
if cargo bench -p e2e-tests --bench roundtrip --no-run >/dev/null 2>&1; then
    cargo bench -p e2e-tests --bench roundtrip
fi

step "benchmark: the credential store at 10, 100 and 1,000 stored (STORE_BENCH_COUNTS)"
STORE_BENCH_COUNTS="${STORE_BENCH_COUNTS:-10,100,1000}" cargo bench -p e2e-tests --bench store_scale
