#!/usr/bin/env bash
# The container tier: the image of Containerfile, built with podman from the release's static
# binaries (BINARIES=release: a FROM scratch image, nothing pulled), then python-fido2's tests
# (tests/python/test_fido2.py: getInfo, registrations and sign-ins with every signature checked,
# U2F, nine AWS users, discoverable credentials, the appId flow) against the key running in it,
# each test in a container of its own whose USB/IP port podman publishes on loopback.
#
#   tests/container/run.sh
#
# Fails, never skips, where podman cannot build or run the image. The uhid way into a container
# (`--device /dev/uhid`) is not run here: this machine's kernel has no uhid; the kernel-path
# tier runs the same static binary with uhid in its guest, alone in an empty root.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v podman >/dev/null || {
    echo "container test: podman is missing (scripts/setup.sh --all installs it)" >&2
    exit 1
}
# Measured on the CI machines: root there lacks CAP_SYS_RESOURCE, so podman's default rlimits
# (above the hard limits) make the runtime fail, and crun refuses their hybrid cgroup setup;
# runc with rlimits within the limits runs. Anywhere else these flags change nothing that matters.
export PODMAN_RUN_FLAGS="--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
image=localhost/usbip-runner:test
export CONTAINER_IMAGE=$image

t0=$(date +%s.%N)
scripts/release.sh x86_64-unknown-linux-musl >/dev/null
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# The label marks every stage's image this build makes, so all of them go at the end.
# (--layers=false would keep none, but podman 4.3 then fails on the `FROM ${BINARIES}` stage.)
label=org.open-fido-key.test=container-tier
cleanup() {
    podman images -a -q --filter "label=$label" | xargs -r podman rmi -f >/dev/null 2>&1 || true
}
trap cleanup EXIT
podman build -q --label "$label" --build-arg BINARIES=release -t "$image" -f Containerfile . >/dev/null
t_built=$(date +%s.%N)

# The image holds the two static binaries and nothing else.
size=$(podman image inspect --format '{{.Size}}' "$image")
files=$(podman image save "$image" 2>/dev/null | tar -xOf - --wildcards '*.tar' 2>/dev/null | tar -itf - | sort | tr '\n' ' ')
echo "container test: image $image, $((size / 1024)) KiB: $files"
[ "$files" = "attestation usbip-runner " ] || { echo "container test: unexpected files in the image: $files" >&2; exit 1; }
# shellcheck disable=SC2086 # flags are words
reported=$(podman run --rm $PODMAN_RUN_FLAGS "$image" --version)
[ "$reported" = "usbip-runner $version" ] || { echo "container test: the image runs '$reported'" >&2; exit 1; }

# python-fido2's tests start "the runner" for each test; this one runs it in the image.
USBIP_RUNNER=$PWD/tests/container/key-in-container.sh tests/python/run.sh test_fido2.py
t_end=$(date +%s.%N)
awk -v a="$t0" -v b="$t_built" -v c="$t_end" \
    'BEGIN { printf "container test: image built in %.1f s, tests in %.1f s\n", b - a, c - b }'
