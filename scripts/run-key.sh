#!/usr/bin/env bash
# Start the virtual FIDO2/U2F key on 127.0.0.1:3240 (bus id 1-1), installing what is missing.
# Extra arguments go to usbip-runner, e.g.:  scripts/run-key.sh --presence auto --ephemeral
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p usbip-runner
exec target/release/usbip-runner "$@"
