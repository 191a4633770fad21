#!/usr/bin/env bash
# The kernel-path test: our usbip-runner, attached by the real Linux USB/IP stack (vhci-hcd,
# usbhid, hidraw) in a QEMU guest and driven by libfido2's tools and OpenSSH. The build and CI
# machines have no USB stack of their own, so the kernel runs in the guest; see
# tests/qemu/build-guest.sh for what it holds and tests/qemu/guest-init.sh for the steps.
#
#   tests/qemu/run.sh            build the guest (cached), build the runner, run the steps
#
# Environment: QEMU_TEST_TIMEOUT (seconds for the whole guest run, default 300),
# QEMU_GUEST_CACHE (default target/qemu-guest), USBIP_RUNNER (a runner binary to test instead
# of building target/debug/usbip-runner).
#
# Fails on any failed step, a missing result, a timeout, or a runner that died. It never skips:
# a machine that cannot run QEMU fails here, loudly.
set -euo pipefail
cd "$(dirname "$0")/../.."

timeout_s=${QEMU_TEST_TIMEOUT:-300}
cache=${QEMU_GUEST_CACHE:-target/qemu-guest}

for tool in qemu-system-x86_64 cpio gzip; do
    command -v "$tool" >/dev/null || {
        echo "kernel test: $tool is missing (scripts/setup.sh --all installs it)" >&2
        exit 1
    }
done

t_build=$(date +%s.%N)
tests/qemu/build-guest.sh "$cache"
if [ -n "${USBIP_RUNNER:-}" ]; then
    runner=$USBIP_RUNNER
else
    cargo build -q -p usbip-runner
    runner=target/debug/usbip-runner
fi
# The attestation tool provisions the key from inside the guest, through hidraw.
cargo build -q -p attestation
attestation=target/debug/attestation
# Firefox's FIDO library (Mozilla's `authenticator` crate) as a stand-in for the browser; outside
# the workspace for its C libraries (libudev, OpenSSL).
CARGO_TARGET_DIR=target/firefox-stack cargo build -q --manifest-path tests/firefox-stack/Cargo.toml
firefox_stack=target/firefox-stack/debug/firefox-stack
t_built=$(date +%s.%N)

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
# The main key approves every touch; the second waits for answers on its control socket.
start_runner auto --presence auto
port_auto=$port
start_runner control --presence control --control "$work/control.sock"
port_control=$port

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
# Host-built programs, stripped, with the host's loader and libraries beside them (the guest
# has only what its Debian packages bring): the attestation tool, and the runner itself, which
# the guest starts with --transport uhid.
bundle() { # bundle BINARY NAME: /opt/NAME/NAME and its libraries
    mkdir -p "$work/overlay/opt/$2"
    strip -o "$work/overlay/opt/$2/$2" "$1"
    ldd "$1" | awk '$3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
        while read -r lib; do cp -L "$lib" "$work/overlay/opt/$2/"; done
}
bundle "$attestation" attestation
bundle "$runner" usbip-runner
bundle "$firefox_stack" firefox-stack
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
echo "kernel test: booting the guest (TCG); keys on 127.0.0.1:$port_auto and :$port_control"
t_boot=$(date +%s.%N)
set +e
timeout --foreground "$timeout_s" qemu-system-x86_64 \
    -accel tcg -smp 1 -m 512 -display none -monitor none -no-reboot \
    -kernel "$cache/vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 usbip_port=$port_auto usbip_port2=$port_control" \
    -nic user,model=e1000 -serial stdio </dev/null | tee "$work/console.log"
status=${PIPESTATUS[0]}
set -e
t_end=$(date +%s.%N)

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
fail() {
    echo "kernel test: FAIL: $*" >&2
    echo "--- runner logs ---" >&2
    tail -n 30 "$work/auto.log" "$work/control.log" "$work/answers.log" >&2
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
kill -0 "${pids[0]}" 2>/dev/null || fail "the main runner died during the run"
kill -0 "${pids[1]}" 2>/dev/null || fail "the control-socket runner died during the run"
if grep -q '^STEP-FAIL' "$work/console.txt"; then
    fail "step $(awk '$1 == "STEP-FAIL" { print $2; exit }' "$work/console.txt") failed (its output is above)"
fi
grep -q '^RESULT PASS$' "$work/console.txt" || fail "the guest ended without a result"
cat "$work/answers.log"
passed=$(grep -c '^STEP-PASS' "$work/console.txt")
echo "kernel test: $passed passed, 0 failed"
