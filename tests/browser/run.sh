#!/usr/bin/env bash
# The browser tier: a real browser (Debian's Chromium headless shell) registers and signs in
# with the virtual key through the real kernel. The key runs here (usbip-runner, presence under
# the control socket); a QEMU guest attaches it with vhci-hcd, as `usbip attach` does on a
# user's machine, and runs the browser; the relying party (rp.py: python-fido2's Fido2Server
# behind HTTPS) runs here too, reached from the guest through QEMU's network; Playwright
# (webauthn.mjs) drives the guest's browser over the DevTools protocol, which QEMU forwards.
#
#   tests/browser/run.sh
#
# Environment: BROWSER_TEST_TIMEOUT (seconds for the guest, default 400), QEMU_GUEST_CACHE
# (default target/qemu-guest, shared with tests/qemu), USBIP_RUNNER (a runner binary to test),
# BROWSER_KEEP=1 (keep the work directory: key log and CTAP trace, RP log, guest console).
set -euo pipefail
cd "$(dirname "$0")/../.."

timeout_s=${BROWSER_TEST_TIMEOUT:-400}
cache=${QEMU_GUEST_CACHE:-target/qemu-guest}
t_start=$(date +%s.%N)

# --- what runs here: the guest (cached), the browser archive (cached), the key, the RP ---
tests/qemu/build-guest.sh "$cache"
tests/browser/build-browser.sh "$cache"
if [ -n "${USBIP_RUNNER:-}" ]; then
    runner=$USBIP_RUNNER
else
    cargo build -q -p usbip-runner -p attestation
    runner=target/debug/usbip-runner
fi
attestation=target/debug/attestation
[ -x "$attestation" ] || cargo build -q -p attestation
(cd tests/browser && npm ci --no-audit --no-fund --silent)
python=.venv/bin/python
[ -x "$python" ] || { echo "browser test: no .venv (scripts/setup.sh --all makes it)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    done
    [ -n "${BROWSER_KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

# The key: presence decided by the test, through the control socket.
mkfifo "$work/key.out"
USBIP_RUNNER_LOG=${USBIP_RUNNER_LOG:-debug} "$runner" --listen 127.0.0.1:0 --ephemeral \
    --presence control --control "$work/key.sock" --trace "$work/trace.jsonl" >"$work/key.out" 2>"$work/key.log" &
pids+=($!)
exec 3<"$work/key.out"
read -r -t 30 line <&3 || { echo "browser test: the key did not start" >&2; cat "$work/key.log" >&2; exit 1; }
port=${line##*:}
cat <&3 >/dev/null &
exec 3<&-

# Be the vendor: a root CA, a batch for our test AAGUID, installed on the key over USB/IP, and
# the metadata statement the RP trusts (our own, as an RP would load it from the FIDO MDS).
"$attestation" ca --out "$work/ca" >/dev/null
"$attestation" batch --ca "$work/ca" --aaguid 6f70656e-6669-646f-2d62-726f77736572 --out "$work/batch" >/dev/null
"$attestation" provision --target "127.0.0.1:$port:1-1" --batch "$work/batch" >/dev/null
"$attestation" metadata --batch "$work/batch" --target "127.0.0.1:$port:1-1" >/dev/null

# The RP. Before the browser comes, it enrols a legacy U2F credential over CTAP1 (AWS's old
# U2F registration), the touch approved here.
"$runner" control "$work/key.sock" approve 1-1 >/dev/null
mkfifo "$work/rp.out"
"$python" tests/browser/rp.py --metadata "$work/batch/metadata.json" --cert-dir "$work/tls" \
    --u2f "127.0.0.1:$port:1-1" >"$work/rp.out" 2>"$work/rp.log" &
pids+=($!)
exec 4<"$work/rp.out"
read -r -t 60 ready rp_port spki <&4 || { echo "browser test: the RP did not start" >&2; cat "$work/rp.log" >&2; exit 1; }
[ "$ready" = ready ] || { echo "browser test: RP said: $ready $rp_port $spki" >&2; exit 1; }
cat <&4 >/dev/null &
exec 4<&-

# --- the guest: the kernel-path guest, the browser archive and this tier's /init ---
mkdir -p "$work/overlay"
install -m 0755 tests/browser/guest-init.sh "$work/overlay/init"
(cd "$work/overlay" && echo init | cpio -o -H newc --quiet) | gzip -1 >"$work/overlay.cpio.gz"
cat "$cache/base.cpio.gz" "$cache/browser.cpio.gz" "$work/overlay.cpio.gz" >"$work/initrd.gz"
cdp_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# -cpu max: Chromium needs SSE3/SSSE3, which QEMU's default model lacks (it dies with SIGTRAP).
# 2 GiB: the browser unpacks to ~290 MB of initramfs in RAM, then runs.
echo "browser test: booting the guest (TCG); key on 127.0.0.1:$port, RP on :$rp_port, DevTools on :$cdp_port"
t_boot=$(date +%s.%N)
: >"$work/console.log"
timeout --foreground "$timeout_s" qemu-system-x86_64 \
    -accel tcg -cpu max -smp 1 -m 2048 -display none -monitor none -no-reboot \
    -kernel "$cache/vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 usbip_port=$port rp_spki=$spki" \
    -nic "user,model=e1000,hostfwd=tcp:127.0.0.1:$cdp_port-:9223" \
    -serial "file:$work/console.log" </dev/null &
qemu=$!
pids+=($qemu)

fail() {
    echo "browser test: FAIL: $*" >&2
    echo "--- guest console ---" >&2
    tr -d '\r' <"$work/console.log" | tail -n 30 >&2
    echo "--- key and RP logs ---" >&2
    tail -n 20 "$work/key.log" "$work/rp.log" >&2
    exit 1
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Wait for the browser's DevTools endpoint (through QEMU's forward).
until curl -sf "http://127.0.0.1:$cdp_port/json/version" >/dev/null 2>&1; do
    kill -0 "$qemu" 2>/dev/null || fail "the guest ended before the browser listened"
    grep -q '^GUEST-FAIL' "$work/console.log" 2>/dev/null && fail "the guest failed"
    sleep 1
done
t_browser=$(date +%s.%N)
echo "browser test: $(tr -d '\r' <"$work/console.log" | grep -m1 '^GUEST-ATTACHED')," \
    "$(curl -s "http://127.0.0.1:$cdp_port/json/version" | sed -n 's/.*"Browser": *"\([^"]*\)".*/\1/p') listening after $(secs "$t_boot" "$t_browser") s"

set +e
node tests/browser/webauthn.mjs --site "https://signin.aws.amazon.com:$rp_port/" \
    --cdp "http://127.0.0.1:$cdp_port" --runner "$runner" --control "$work/key.sock"
status=$?
set -e
t_steps=$(date +%s.%N)
wait "$qemu" || true
t_end=$(date +%s.%N)
tr -d '\r' <"$work/console.log" | grep -E '^(BROWSER-EXIT|GUEST-FAIL)' || true
printf 'browser test: build and setup %s s, boot to browser %s s, steps %s s, shutdown %s s\n' \
    "$(secs "$t_start" "$t_boot")" "$(secs "$t_boot" "$t_browser")" \
    "$(secs "$t_browser" "$t_steps")" "$(secs "$t_steps" "$t_end")"
[ "$status" -eq 0 ] || fail "the Playwright steps failed (above)"
tr -d '\r' <"$work/console.log" | grep -q '^BROWSER-EXIT 0$' || fail "the browser did not exit cleanly"
kill -0 "${pids[0]}" 2>/dev/null || fail "the key died during the run"
# The key's side of the cancelled and the timed-out registration, from its trace.
for status in 39:CTAP2_ERR_OPERATION_DENIED 47:CTAP2_ERR_USER_ACTION_TIMEOUT; do
    grep -q "\"command\":\"makeCredential\",\"dir\":\"response\".*\"status\":${status%%:*}}" "$work/trace.jsonl" ||
        fail "the key never answered a makeCredential with ${status#*:}"
done
echo "browser test: passed"
