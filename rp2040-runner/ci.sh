#!/usr/bin/env bash
# Build the Pico firmware and its UF2, hold its size to size-budget.txt, and run the emulated
# end-to-end suite (rp2040js). Installs what a fresh Debian machine lacks.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
for pkg in gcc-arm-none-eabi libnewlib-arm-none-eabi clang libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${need_apt[@]}"
fi
rustup target add thumbv6m-none-eabi >/dev/null

cargo build --release --locked
elf=target/thumbv6m-none-eabi/release/rp2040-runner

# Sizes per section (SysV format: name size addr).
declare -A sec
while read -r name size _; do
  [[ "$size" =~ ^[0-9]+$ ]] && sec[$name]=$size
done < <(arm-none-eabi-size -A "$elf")
flash=$(( ${sec[.boot2]:-0} + ${sec[.vector_table]:-0} + ${sec[.text]:-0} + ${sec[.rodata]:-0} + ${sec[.data]:-0} ))
ram=$(( ${sec[.data]:-0} + ${sec[.bss]:-0} ))
budget() { awk -v k="$1" '$1 == k { print $2 }' size-budget.txt; }
echo "firmware size: flash ${flash} B (budget $(budget flash)), static RAM ${ram} B (budget $(budget ram))"
fail=0
[ "$flash" -le "$(budget flash)" ] || { echo "FAIL: flash over budget"; fail=1; }
[ "$ram" -le "$(budget ram)" ] || { echo "FAIL: static RAM over budget"; fail=1; }
[ "$fail" -eq 0 ] || exit 1

# A batch attestation for the provisioning test, made by the workspace's `attestation` tool,
# and the flash-copy attack the PIN lock test runs on a dump of the emulated flash.
# (From the workspace root: this directory's .cargo/config.toml would build it for the Pico.)
(cd .. && cargo build -p attestation -p e2e-tests --bin attestation --bin flash-copy-attack --quiet)
batch_dir=$(mktemp -d)
trap 'rm -rf "$batch_dir"' EXIT
../target/debug/attestation ca --out "$batch_dir/ca" >/dev/null
../target/debug/attestation batch --ca "$batch_dir/ca" --aaguid 6f70656e-6669-646f-2d70-69636f000001 \
  --out "$batch_dir/batch" >/dev/null
export ATTESTATION_BATCH="$batch_dir/batch"

# State partitions pre-filled on the host by the core's own store code, in the Pico's geometry:
# nearly full for the fill-to-full test, 1,000 maximal credentials (one per RP, or 300 on one
# RP) for the figures with the store full.
(cd .. && cargo build --release -p authenticator --example pico_state_image --quiet)
images=../target/release/examples/pico_state_image
"$images" "$batch_dir/nearly-full.img" 1736 300
"$images" "$batch_dir/spread.img" 1000 0
"$images" "$batch_dir/one-rp.img" 1000 300
export PICO_NEARLY_FULL_IMAGE="$batch_dir/nearly-full.img"

cd emulator
npm ci --no-audit --no-fund
node uf2.mjs "../$elf" ../target/rp2040-runner.uf2
# The suite also runs from the UF2, so what a user flashes is what was tested.
node --test --test-concurrency=2 test/
RP2040_FIRMWARE=../target/rp2040-runner.uf2 node --test test/key.test.mjs

# What the PIN verifier adds to the first PIN after power-up (not a test: it prints cycles).
node bench-pin.mjs
# Figures with 1,000 maximal credentials stored (not a test: it prints cycles).
node bench-scale.mjs "$batch_dir/spread.img" 500
node bench-scale.mjs "$batch_dir/one-rp.img" shared
