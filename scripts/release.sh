#!/usr/bin/env bash
# Build the release archives: static (musl) binaries of usbip-runner and the attestation tool,
# one archive per target, with their SHA-256 sums. See docs/install.md.
#
#   scripts/release.sh [TARGET...]     default: x86_64-unknown-linux-musl aarch64-unknown-linux-musl
#
# Output, in target/release-artifacts/:
#   usbip-runner-TARGET-vVERSION.tar.gz   usbip-runner-TARGET-vVERSION/{usbip-runner,attestation,
#                                         README.md,LICENSE-APACHE,LICENSE-MIT}
#   SHA256SUMS                            `sha256sum -c --ignore-missing SHA256SUMS` checks them
#   TARGET/usbip-runner, TARGET/attestation   the same binaries, unpacked
#
# Each binary is checked to be static (no interpreter, no shared library: `file`, `ldd`), and
# each target's pair is run (a foreign one under qemu-user): the runner serves a key, and the
# tool makes a CA and a batch, provisions the key over USB/IP and reads its getInfo back.
# Anything wrong fails the script. Needs what scripts/setup.sh --release installs: musl-tools
# (and for aarch64 the cross gcc and qemu-user) and the rustup targets.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
out=target/release-artifacts
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "release: no version in Cargo.toml" >&2; exit 1; }
# Archives whose bytes depend on the commit only: times from its date, no owners.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)

# configure TARGET: the C compiler (littlefs2-sys builds littlefs's C), the linker, and how to
# run the target's programs here.
configure() {
    local env_target=${1//-/_}
    case $1 in
        x86_64-unknown-linux-musl)
            export "CC_$env_target=musl-gcc"
            run=() ;;
        aarch64-unknown-linux-musl)
            # The cross gcc only compiles littlefs (which needs nothing of a libc but string.h)
            # and drives the link; the C library, musl, is the one the Rust target ships.
            export "CC_$env_target=aarch64-linux-gnu-gcc"
            export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
            run=(qemu-aarch64) ;;
        *)
            echo "release: unknown target $1" >&2
            exit 1 ;;
    esac
}

# check_static FILE: an executable with no interpreter and no shared library.
check_static() {
    local description
    description=$(file -b "$1")
    case $description in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) echo "release: $1 is not static: $description" >&2; exit 1 ;;
    esac
    if ldd "$1" 2>&1 | grep -q '=>'; then
        echo "release: $1 loads shared libraries:" >&2
        ldd "$1" >&2
        exit 1
    fi
    echo "  $1: $description"
}

# smoke DIR: the runner in DIR serves a key that the tool in DIR provisions and reads back.
smoke() {
    local dir=$1 work line port pid status=0
    work=$(mktemp -d)
    mkfifo "$work/out"
    "${run[@]}" "$dir/usbip-runner" --listen 127.0.0.1:0 --ephemeral --presence auto \
        >"$work/out" 2>"$work/log" &
    pid=$!
    exec 3<"$work/out"
    if read -r -t 60 line <&3 && [[ $line == "listening on 127.0.0.1:"* ]]; then
        port=${line##*:}
        {
            "${run[@]}" "$dir/attestation" ca --out "$work/ca" &&
                "${run[@]}" "$dir/attestation" batch --ca "$work/ca" --out "$work/batch" \
                    --aaguid 6f70656e-6669-646f-2d72-656c65617365 &&
                "${run[@]}" "$dir/attestation" provision --target "127.0.0.1:$port:1-1" \
                    --batch "$work/batch" &&
                "${run[@]}" "$dir/attestation" metadata --target "127.0.0.1:$port:1-1" \
                    --batch "$work/batch" &&
                grep -q '"aaguid": "6f70656e-6669-646f-2d72-656c65617365"' \
                    "$work/batch/metadata.json"
        } >"$work/steps" 2>&1 || status=1
    else
        status=1
    fi
    exec 3<&-
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true # its status after SIGTERM is not the check's
    if [ "$status" -ne 0 ]; then
        echo "release: the $dir binaries failed their run:" >&2
        cat "$work/steps" "$work/log" >&2 2>/dev/null || true
        rm -rf "$work"
        exit 1
    fi
    echo "  ran: a key served, provisioned and read back (${run[*]:-natively})"
    rm -rf "$work"
}

mkdir -p "$out"
for target in "${targets[@]}"; do
    configure "$target"
    echo "release: $target"
    # The dist profile: release, stripped, no debug info (Cargo.toml).
    cargo build --locked --profile dist --target "$target" -p usbip-runner -p attestation
    name=usbip-runner-$target-v$version
    stage=$out/$target
    rm -rf "${stage:?}" "$out/$name" && mkdir -p "$stage" "$out/$name"
    for binary in usbip-runner attestation; do
        cp "target/$target/dist/$binary" "$stage/"
        check_static "$stage/$binary"
        cp "$stage/$binary" "$out/$name/"
    done
    smoke "$stage"
    cp README.md LICENSE-APACHE LICENSE-MIT "$out/$name/"
    touch -d "@$epoch" "$out/$name" "$out/$name"/*
    tar -C "$out" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
        -cf - "$name" | gzip -9n >"$out/$name.tar.gz"
    rm -rf "${out:?}/$name"
    echo "  $out/$name.tar.gz"
done

# Every archive of this version (from this run or an earlier one for another target), summed.
(cd "$out" && sha256sum -- usbip-runner-*-v"$version".tar.gz >SHA256SUMS && cat SHA256SUMS)
