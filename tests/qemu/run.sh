#!/usr/bin/env bash
# The kernel-path test: our usbip-runner, attached by the real Linux USB/IP stack (vhci-hcd,
# usbhid, hidraw) in a QEMU guest and driven by libfido2's tools and OpenSSH. The build and CI
# machines have no USB stack of their own, so the kernel runs in the guest; see
# tests/qemu/build-guest.sh for what it holds and tests/qemu/guest-init.sh for the steps.
# What runs is the release: scripts/release.sh's x86_64 archive, checked against its SHA256SUMS
# and unpacked, its static binaries run in the guest (--attach, uhid, the attestation tool) and
# here (the key the guest attaches with the `usbip` tool). The GitHub Actions recipe
# (examples/github-actions.yml) runs in the guest too, every `run:` block of it, installing the
# same archive from an HTTP server here.
#
#   tests/qemu/run.sh            build the guest (cached) and the release, run the steps
#
# Environment: QEMU_TEST_TIMEOUT (seconds for the whole guest run, default 420),
# QEMU_GUEST_CACHE (default target/qemu-guest).
#
# Fails on any failed step, a missing result, a timeout, or a runner that died. It never skips:
# a machine that cannot run QEMU fails here, loudly.
set -euo pipefail
cd "$(dirname "$0")/../.."

timeout_s=${QEMU_TEST_TIMEOUT:-420}
cache=${QEMU_GUEST_CACHE:-target/qemu-guest}

for tool in qemu-system-x86_64 cpio gzip python3; do
    command -v "$tool" >/dev/null || {
        echo "kernel test: $tool is missing (scripts/setup.sh --all installs it)" >&2
        exit 1
    }
done

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            wait "$pid" 2>/dev/null || true # its exit status after SIGTERM is not the test's
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

t_build=$(date +%s.%N)
tests/qemu/build-guest.sh "$cache"
# The release archive, as a user downloads it: summed, unpacked, its binaries used as they are.
scripts/release.sh x86_64-unknown-linux-musl
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
release=usbip-runner-x86_64-unknown-linux-musl-v$version
(cd target/release-artifacts && grep " $release.tar.gz\$" SHA256SUMS | sha256sum -c -)
tar -xzf "target/release-artifacts/$release.tar.gz" -C "$work"
runner=$work/$release/usbip-runner
attestation=$work/$release/attestation
# Firefox's FIDO library (Mozilla's `authenticator` crate) as a stand-in for the browser; outside
# the workspace for its C libraries (libudev, OpenSSL).
CARGO_TARGET_DIR=target/firefox-stack cargo build -q --manifest-path tests/firefox-stack/Cargo.toml
firefox_stack=target/firefox-stack/debug/firefox-stack
t_built=$(date +%s.%N)

# start_runner NAME ARGS...: a fresh key on a free loopback port; sets $port. QEMU's user
# network maps the guest's 10.0.2.2 to the host's 127.0.0.1, so nothing listens beyond loopback.
start_runner() {
    local name=$1 line
    shift
    mkfifo "$work/$name.out"
    USBIP_RUNNER_LOG=${USBIP_RUNNER_LOG:-debug} "$runner" --listen 127.0.0.1:0 --ephemeral "$@" \
        >"$work/$name.out" 2>"$work/$name.log" &
    pids+=($!)
    exec 3<"$work/$name.out"
    if ! read -r -t 30 line <&3; then
        echo "kernel test: the $name runner did not start" >&2
        cat "$work/$name.log" >&2
        exit 1
    fi
    port=${line##*:}
    [[ $line == "listening on 127.0.0.1:"* && $port =~ ^[0-9]+$ ]] || {
        echo "kernel test: unexpected first line from the $name runner: $line" >&2
        exit 1
    }
    # Keep draining its stdout so it never blocks on a full pipe.
    cat <&3 >/dev/null &
    exec 3<&-
}
# The key the guest attaches with the `usbip` tool waits for answers on its control socket.
start_runner control --presence control --control "$work/control.sock"
port_control=$port

# The recipe downloads the release from here: RELEASES/vVERSION/{archive,SHA256SUMS}, as a
# GitHub release's download address lays them out.
mkdir -p "$work/releases/v$version"
cp "target/release-artifacts/$release.tar.gz" target/release-artifacts/SHA256SUMS \
    "$work/releases/v$version/"
mkfifo "$work/http.out"
python3 -u -m http.server --bind 127.0.0.1 --directory "$work/releases" 0 \
    >"$work/http.out" 2>"$work/http.log" &
pids+=($!)
exec 3<"$work/http.out"
read -r -t 30 line <&3 || { echo "kernel test: the HTTP server did not start" >&2; exit 1; }
http_port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' <<<"$line")
[ -n "$http_port" ] || { echo "kernel test: unexpected HTTP server line: $line" >&2; exit 1; }
cat <&3 >/dev/null &
exec 3<&-

# The guest asks for each answer of the second key with a "CONTROL approve|deny|timeout" line on
# the console; send it to the control socket (which arms it if the request has not come yet).
: >"$work/console.log"
mkfifo "$work/console.follow"
tail -n +1 -F "$work/console.log" >"$work/console.follow" 2>/dev/null &
pids+=($!)
while read -r word answer _; do
    [ "$word" = CONTROL ] || continue
    answer=${answer%$'\r'}
    echo "kernel test: control socket: $answer -> $("$runner" control "$work/control.sock" "$answer" 1-1 2>&1)"
done <"$work/console.follow" >>"$work/answers.log" &
pids+=($!)

# The client script goes into a second, small archive appended to the cached one (the kernel
# unpacks concatenated archives in order), so editing the test never rebuilds the guest.
mkdir -p "$work/overlay"
install -m 0755 tests/qemu/guest-init.sh "$work/overlay/init"
# The release's static binaries, as they came out of the archive.
mkdir -p "$work/overlay/opt/key"
cp "$runner" "$attestation" "$work/overlay/opt/key/"
# A host-built program, stripped, with the host's loader and libraries beside it (the guest
# has only what its Debian packages bring).
bundle() { # bundle BINARY NAME: /opt/NAME/NAME and its libraries
    mkdir -p "$work/overlay/opt/$2"
    strip -o "$work/overlay/opt/$2/$2" "$1"
    ldd "$1" | awk '$3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
        while read -r lib; do cp -L "$lib" "$work/overlay/opt/$2/"; done
}
bundle "$firefox_stack" firefox-stack
# The GitHub Actions recipe: its steps, extracted here so the guest runs exactly what the file
# says, and apt-get's stand-in (the guest has no package archive).
tests/qemu/workflow-steps.py examples/github-actions.yml "$work/overlay/recipe"
echo "$version" >"$work/overlay/recipe/version"
install -D -m 0755 tests/qemu/apt-get-standin.sh "$work/overlay/usr/local/bin/apt-get"
mkdir -p "$work/overlay/batch"
"$attestation" ca --out "$work/ca" >/dev/null
"$attestation" batch --ca "$work/ca" --aaguid 6f70656e-6669-646f-2d71-656d75000001 \
    --out "$work/overlay/batch" >/dev/null
grep -v -- '-----' "$work/overlay/batch/batch.pem" | tr -d '\n' >"$work/overlay/batch/batch.b64"
(cd "$work/overlay" && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc --quiet) |
    gzip -1 >"$work/overlay.cpio.gz"
cat "$cache/base.cpio.gz" "$work/overlay.cpio.gz" >"$work/initrd.gz"

# TCG, one vCPU: /dev/kvm on these machines is a nested kvm_pvm that hangs stock kernels, and a
# second vCPU made TCG slower, not faster. -no-reboot turns the guest's final reboot into an exit.
echo "kernel test: booting the guest (TCG); the host's key on 127.0.0.1:$port_control, releases on :$http_port"
t_boot=$(date +%s.%N)
set +e
timeout --foreground "$timeout_s" qemu-system-x86_64 \
    -accel tcg -smp 1 -m 512 -display none -monitor none -no-reboot \
    -kernel "$cache/vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 usbip_port2=$port_control release_port=$http_port" \
    -nic user,model=e1000 -serial stdio </dev/null | tee "$work/console.log"
status=${PIPESTATUS[0]}
set -e
t_end=$(date +%s.%N)

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
fail() {
    echo "kernel test: FAIL: $*" >&2
    echo "--- runner logs ---" >&2
    tail -n 30 "$work/control.log" "$work/answers.log" "$work/http.log" >&2
    exit 1
}

tr -d '\r' <"$work/console.log" >"$work/console.txt"
echo
echo "kernel test: per-step times in the guest (seconds)"
awk '$1 == "STEP-PASS" || $1 == "STEP-FAIL" { printf "  %-28s %6s  %s\n", $2, $3, ($1 == "STEP-PASS" ? "pass" : "FAIL") }' "$work/console.txt"
printf 'kernel test: guest and runner build %s s, boot and steps %s s\n' \
    "$(secs "$t_build" "$t_built")" "$(secs "$t_boot" "$t_end")"

if [ "$status" -eq 124 ]; then
    fail "the guest did not finish within ${timeout_s} s (last step started: $(awk '$1 == "STEP-START" { s = $2 } END { print s ? s : "none" }' "$work/console.txt"))"
fi
[ "$status" -eq 0 ] || fail "QEMU exited with status $status"
kill -0 "${pids[0]}" 2>/dev/null || fail "the host's runner died during the run"
if grep -q '^STEP-FAIL' "$work/console.txt"; then
    fail "step $(awk '$1 == "STEP-FAIL" { print $2; exit }' "$work/console.txt") failed (its output is above)"
fi
grep -q '^RESULT PASS$' "$work/console.txt" || fail "the guest ended without a result"
grep -q "\"GET /v$version/$release.tar.gz HTTP" "$work/http.log" ||
    fail "the recipe did not download the release archive"
cat "$work/answers.log"
passed=$(grep -c '^STEP-PASS' "$work/console.txt")
echo "kernel test: $passed passed, 0 failed"
