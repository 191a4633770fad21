#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks to build and test the key. Idempotent: each
# step checks first, so a second run costs seconds. Sourced by run-key.sh and test.sh.
#
#   scripts/setup.sh            host tools: the Rust workspace and the virtual key
#   scripts/setup.sh --release  also what scripts/release.sh needs (static musl builds, aarch64)
#   scripts/setup.sh --all      also that, the Pico toolchain, Node packages, the Python venv,
#                               QEMU and podman
set -euo pipefail
cd "$(dirname "$0")/.."

want_all=false
want_release=false
[ "${1:-}" = "--all" ] && want_all=true && want_release=true
[ "${1:-}" = "--release" ] && want_release=true

need_apt=()
# littlefs2-sys compiles littlefs with cc and generates bindings with bindgen (libclang).
# util-linux (essential on Debian; named for minimal images): setpriv, with which
# tests/tests/e2e/local_users.rs runs its attacker as a second uid.
for pkg in build-essential pkg-config clang libclang-dev util-linux; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if $want_release; then
    # scripts/release.sh: musl-gcc compiles littlefs for the x86_64 musl target; for aarch64 the
    # cross gcc compiles it and links, and qemu-user runs the result; `file` checks it is static.
    for pkg in musl-tools gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user file; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
    done
fi
if $want_all; then
    # The container tier (tests/container): podman builds and runs the image; runc is the
    # runtime that works on the CI machines (see tests/container/run.sh).
    for pkg in podman runc; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
    done
    # The Pico firmware: littlefs's C needs newlib's headers for thumbv6m (see rp2040-runner).
    for pkg in gcc-arm-none-eabi libnewlib-arm-none-eabi python3-venv; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
    done
    command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
    # The kernel-path test (tests/qemu): QEMU with its BIOS and the e1000's option ROM, and cpio
    # to pack the guest's initramfs. The guest itself comes from Debian packages unpacked into
    # target/qemu-guest by tests/qemu/build-guest.sh, never installed.
    # libudev and OpenSSL headers: tests/firefox-stack links them (Firefox's FIDO library).
    # The browser tier (tests/browser): Chromium's headless shell and Firefox ESR, packed into
    # the guest from here, and curl to wait for their remote endpoints.
    for pkg in qemu-system-x86 seabios ipxe-qemu cpio libudev-dev libssl-dev \
        chromium-headless-shell firefox-esr curl; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
    done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: Rust is missing; install it from https://rustup.rs and run again" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    installed=$(rustup component list --installed 2>/dev/null || true)
    for component in rustfmt clippy; do
        grep -q "^$component" <<<"$installed" || rustup component add "$component"
    done
    wanted_targets=()
    $want_all && wanted_targets+=(thumbv6m-none-eabi)
    $want_release && wanted_targets+=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
    installed=$(rustup target list --installed)
    for target in "${wanted_targets[@]}"; do
        grep -qx "$target" <<<"$installed" || rustup target add "$target"
    done
fi

if $want_all; then
    # python-fido2, pinned, in a venv of the repo's own (tests/python/requirements.txt).
    if [ -f tests/python/requirements.txt ]; then
        if [ ! -x .venv/bin/python ]; then
            python3 -m venv .venv
        fi
        stamp=.venv/.requirements.sha256
        sum=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
        if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
            .venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
            echo "$sum" > "$stamp"
        fi
    fi
fi
