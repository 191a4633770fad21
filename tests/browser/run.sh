#!/usr/bin/env bash
# The browser tier: real browsers (Debian's Chromium headless shell, then Firefox ESR headless)
# register and sign in with the virtual key through the real kernel. For each browser: the key
# runs here (usbip-runner, presence under the control socket); a QEMU guest attaches it with
# vhci-hcd, as `usbip attach` does on a user's machine, and runs the browser; the relying party
# (rp.py: python-fido2's Fido2Server behind HTTPS) runs here too, reached from the guest through
# QEMU's network; webauthn.mjs drives the guest's browser over its remote protocol (Playwright
# over the DevTools protocol for Chromium, Puppeteer over WebDriver BiDi for Firefox), which QEMU
# forwards.
#
# The PIN lock (docs/pin-lock.md), as a user meets it, in the runs `firefox` and
# `chromium-locked`: the key gets a WebAuthn credential for user `owner`, then a PIN and the
# lock on, and is power-cycled (its runner restarted on the same --state) before the guest
# boots, so the browser meets a locked key. From the host, locked.py checks that it refuses
# touch-only U2F (register, and authenticate with the site's legacy U2F key handle) and CTAP2
# without a token. Firefox's first step is the owner's sign-in, which does not ask for UV:
# Firefox sees alwaysUv, asks for the PIN, the autoconfig script types it at the prompt, and the
# RP sees the UV flag; its other steps follow on the opened key. Chromium's headless shell has no
# PIN prompt: in `chromium-locked` (a short run of its own, because a key with a PIN would make
# the `chromium` run's never-matching finger fall back to a PIN prompt, which the headless shell
# does not survive) the same sign-in fails, then libfido2's tools and OpenSSH in the guest meet
# the locked key and give the PIN (locked-clients.sh), and the owner signs in. After each of the
# two, the same power-up, U2F signs again.
#
# Test automation both ways, with Chromium's own DevTools virtual authenticator: at the end of
# the Chromium run, root's credential is exported from the key (`credentials`) into a virtual
# authenticator, which signs root in, and victor registers on the virtual authenticator; the
# Firefox run imports victor's credential into its key (`add-credential`) and victor signs in
# there. The RP keeps its users in a state file across the two runs, as a site's database does.
#
#   tests/browser/run.sh [RUN...]        default: chromium chromium-locked firefox
#
# Environment: BROWSER_TEST_TIMEOUT (seconds per guest, default 600; Firefox took up to 215 s),
# QEMU_GUEST_CACHE (default target/qemu-guest, shared with tests/qemu), USBIP_RUNNER (a runner
# binary to test), BROWSER_KEEP=1 (keep the work directory: key log and CTAP trace, RP log,
# guest console).
set -euo pipefail
cd "$(dirname "$0")/../.."

runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(chromium chromium-locked firefox)
timeout_s=${BROWSER_TEST_TIMEOUT:-600}
cache=${QEMU_GUEST_CACHE:-target/qemu-guest}

# --- what runs here: the guest and browser archives (cached), the key, the RP, the driver ---
t_start=$(date +%s.%N)
tests/qemu/build-guest.sh "$cache"
for engine in $(printf '%s\n' "${runs[@]%-locked}" | sort -u); do
    tests/browser/build-browser.sh "$engine" "$cache"
done
if [ -n "${USBIP_RUNNER:-}" ]; then
    runner=$USBIP_RUNNER
else
    cargo build -q -p usbip-runner
    runner=target/debug/usbip-runner
fi
cargo build -q -p attestation
attestation=target/debug/attestation
(cd tests/browser && npm ci --no-audit --no-fund --silent)
python=.venv/bin/python
[ -x "$python" ] || { echo "browser test: no .venv (scripts/setup.sh --all makes it)" >&2; exit 1; }
t_built=$(date +%s.%N)

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    done
    if [ -n "${BROWSER_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
pin=270419 # the PIN of a locked key (Firefox types it at its prompt; in chromium-locked, libfido2)
# The site's users and credentials, kept from one browser's run to the next as a site keeps
# them in its database; and the credential Chromium's virtual authenticator made, which the
# next browser's key imports (test automation, both ways).
rp_state=$work/rp-state.json
virtual_credential=$work/virtual-credential.json
free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run_engine RUN: one browser, from a fresh key to the browser's exit, in $work/RUN. RUN is
# chromium, firefox (with the PIN lock), or chromium-locked (the lock's steps alone).
run_engine() {
    local run=$1 engine=${1%-locked} dir=$work/$1 line port ready rp_port spki remote_port
    local unlock_port qemu status t_boot t_browser t_steps t_end lock=""
    [ "$run" = chromium ] || lock=yes
    mkdir -p "$dir"
    fail() {
        echo "browser test ($run): FAIL: $*" >&2
        echo "--- guest console ---" >&2
        tr -d '\r' <"$dir/console.log" | tail -n 30 >&2
        echo "--- key and RP logs ---" >&2
        tail -n 20 "$dir/key.log" "$dir/rp.log" >&2
        exit 1
    }

    # The key: presence decided by the test, through the control socket; every CTAP request
    # and answer in its trace. It also has a fingerprint sensor whose fingers the test gives
    # (`uv ok|fail`): Chromium's headless shell, which has no PIN prompt, meets
    # userVerification "required" with it (--uv-steps); Firefox's sensor starts unenrolled, so
    # that its passkey steps type the PIN, and its last steps enroll a finger and make and use a
    # passkey with it (--uv-passkeys). Its state on disk, so that it can be power-cycled; a test
    # key, whose private keys the test automation steps may read.
    local uv_args=(--uv builtin --uv-mode control) uv_steps=(--uv-steps)
    [ "$engine" = firefox ] && uv_steps=(--uv-passkeys)
    [ "$run" = chromium-locked ] && uv_steps=()
    local key_pid
    start_key() {
        rm -f "$dir/key.out"
        mkfifo "$dir/key.out"
        USBIP_RUNNER_LOG=${USBIP_RUNNER_LOG:-debug} "$runner" --listen 127.0.0.1:0 \
            --state "$dir/state" --allow-key-export \
            --presence control --control "$dir/key.sock" --trace "$dir/trace.jsonl" "${uv_args[@]}" \
            >"$dir/key.out" 2>>"$dir/key.log" &
        key_pid=$!
        pids+=("$key_pid")
        exec 3<"$dir/key.out"
        read -r -t 30 line <&3 || fail "the key did not start"
        port=${line##*:}
        cat <&3 >/dev/null &
        exec 3<&-
        # The sensor's enrolment is the runner's, not the state's: given again at each start.
        if [ "$engine" = firefox ]; then "$runner" control "$dir/key.sock" uv unenroll 1-1 >/dev/null; fi
    }
    start_key

    # Be the vendor: a root CA, a batch for our test AAGUID, installed on the key over USB/IP,
    # and the metadata statement the RP trusts (our own, as an RP would load it from the MDS).
    "$attestation" ca --out "$dir/ca" >/dev/null
    "$attestation" batch --ca "$dir/ca" --aaguid 6f70656e-6669-646f-2d62-726f77736572 \
        --out "$dir/batch" >/dev/null
    # Provisioning waits for a touch, like every CTAP2 command that changes the key: armed here.
    "$runner" control "$dir/key.sock" approve 1-1 >/dev/null
    "$attestation" provision --target "127.0.0.1:$port:1-1" --batch "$dir/batch" >/dev/null
    "$attestation" metadata --batch "$dir/batch" --target "127.0.0.1:$port:1-1" >/dev/null

    # The RP. Before the browser comes, it enrols a legacy U2F credential over CTAP1 (AWS's old
    # U2F registration) and the owner's WebAuthn credential over CTAP2, each touch approved (the
    # key's presence mode is the runner's: back to control at the restart below).
    "$runner" control "$dir/key.sock" presence auto 1-1 >/dev/null
    mkfifo "$dir/rp.out"
    # Then, as the key's owner would, it sets a PIN and turns the PIN lock on. For Firefox,
    # which can be made to answer its PIN prompt, the steps add passkeys (discoverable,
    # PIN-verified) and a sign-in without an allow list.
    local passkeys=() lock_args=()
    [ "$engine" = firefox ] && passkeys=(--passkeys)
    [ -n "$lock" ] && lock_args=(--pin "$pin" --lock)
    "$python" tests/browser/rp.py --metadata "$dir/batch/metadata.json" --cert-dir "$dir/tls" \
        --origin "https://signin.aws.amazon.com" --state "$rp_state" \
        --u2f "127.0.0.1:$port:1-1" "${lock_args[@]}" >"$dir/rp.out" 2>"$dir/rp.log" &
    pids+=($!)
    exec 4<"$dir/rp.out"
    read -r -t 60 ready rp_port spki <&4 || fail "the RP did not start"
    [ "$ready" = ready ] || fail "the RP said: $ready $rp_port $spki"
    cat <&4 >/dev/null &
    exec 4<&-
    "$runner" control "$dir/key.sock" presence control 1-1 >/dev/null

    # Power cycle: the key comes back locked. Before any browser, from the host: it refuses
    # touch-only U2F and CTAP2 without a token (no touch is armed: a key that asked for one
    # would answer otherwise).
    local t_cycle
    if [ -n "$lock" ]; then
        t_cycle=$(date +%s.%N)
        kill -TERM "$key_pid" && wait "$key_pid" || fail "the key did not stop cleanly"
        start_key
        "$python" tests/browser/locked.py "127.0.0.1:$port:1-1" --rp-state "$rp_state" --expect locked ||
            fail "the locked key answered a touch-only request (above)"
        echo "browser test ($run): power cycle and the locked key's checks $(secs "$t_cycle" "$(date +%s.%N)") s"
    fi

    # The guest: the kernel-path guest, the browser's archive, this tier's /init and, for
    # Firefox, the policy that installs the RP's CA.
    mkdir -p "$dir/overlay"
    install -m 0755 tests/browser/guest-init.sh "$dir/overlay/init"
    # The clients that meet the locked key in the guest, and the owner's credential they use.
    if [ "$run" = chromium-locked ]; then
        install -D -m 0755 tests/browser/locked-clients.sh "$dir/overlay/opt/locked-clients.sh"
        "$python" tests/browser/locked.py --rp-state "$rp_state" --export-owner "$dir/overlay/owner"
    fi
    if [ "$engine" = firefox ]; then
        mkdir -p "$dir/overlay/opt/firefox/distribution" "$dir/overlay/opt/firefox/defaults/pref"
        cp tests/browser/firefox/webauthn-user.cfg "$dir/overlay/opt/firefox/"
        cp tests/browser/firefox/autoconfig.js "$dir/overlay/opt/firefox/defaults/pref/"
        cp "$dir/tls/rp-ca.pem" "$dir/overlay/rp-ca.pem"
        echo '{"policies": {"Certificates": {"Install": ["/rp-ca.pem"]}}}' \
            >"$dir/overlay/opt/firefox/distribution/policies.json"
    fi
    (cd "$dir/overlay" && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc --quiet) |
        gzip -1 >"$dir/overlay.cpio.gz"
    cat "$cache/base.cpio.gz" "$cache/$engine.cpio.gz" "$dir/overlay.cpio.gz" >"$dir/initrd.gz"
    remote_port=$(free_port)
    unlock_port=$(free_port)

    # -cpu max: Chromium needs SSE3/SSSE3, which QEMU's default model lacks (SIGTRAP at start).
    # 2 GiB: the browser unpacks to ~300 MB of initramfs in RAM, then runs.
    echo "browser test ($run): booting the guest (TCG); key on 127.0.0.1:$port, RP on :$rp_port, browser's remote end on :$remote_port"
    t_boot=$(date +%s.%N)
    : >"$dir/console.log"
    timeout --foreground "$timeout_s" qemu-system-x86_64 \
        -accel tcg -cpu max -smp 1 -m 2048 -display none -monitor none -no-reboot \
        -kernel "$cache/vmlinuz" -initrd "$dir/initrd.gz" \
        -append "console=ttyS0 quiet panic=-1 usbip_port=$port rp_port=$rp_port rp_spki=$spki browser=$engine webauthn_pin=$pin" \
        -nic "user,model=e1000,hostfwd=tcp:127.0.0.1:$remote_port-:9223,hostfwd=tcp:127.0.0.1:$unlock_port-:9225" \
        -serial "file:$dir/console.log" </dev/null &
    qemu=$!
    pids+=($qemu)

    # Wait for the browser's remote end (through QEMU's forward and the guest's relay).
    local probe=(curl -sf "http://127.0.0.1:$remote_port/json/version")
    [ "$engine" = firefox ] && probe=(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$remote_port/")
    until out=$("${probe[@]}" 2>/dev/null) && [ -n "$out" ] && [ "$out" != 000 ]; do
        kill -0 "$qemu" 2>/dev/null || fail "the guest ended before the browser listened"
        grep -q '^GUEST-FAIL' "$dir/console.log" 2>/dev/null && fail "the guest failed"
        sleep 1
    done
    t_browser=$(date +%s.%N)
    echo "browser test ($run): $(tr -d '\r' <"$dir/console.log" | grep -m1 '^GUEST-ATTACHED'), browser listening after $(secs "$t_boot" "$t_browser") s"

    local remote=(--cdp "http://127.0.0.1:$remote_port")
    [ "$engine" = firefox ] &&
        remote=(--bidi "ws://127.0.0.1:$remote_port/session" --bidi-host 127.0.0.1:9222)
    # The locked key's first step: Firefox asks for the PIN and types it; the headless shell has
    # no PIN prompt, so the guest's libfido2 and OpenSSH give it, and nothing else runs (see
    # webauthn.mjs).
    local locked=() interop=()
    case $run in
        firefox) locked=(--locked pin) ;;
        chromium-locked) locked=(--locked "unlock=$unlock_port" --locked-only) ;;
    esac
    if [ "$run" = chromium ]; then
        interop=(--virtual-authenticator "$virtual_credential")
    elif [ "$run" = firefox ] && [ -s "$virtual_credential" ]; then
        interop=(--import-credential "$virtual_credential")
    fi
    set +e
    node tests/browser/webauthn.mjs --engine "$engine" "${remote[@]}" "${locked[@]}" "${passkeys[@]}" "${uv_steps[@]}" "${interop[@]}" \
        --site "https://signin.aws.amazon.com/" --runner "$runner" --control "$dir/key.sock"
    status=$?
    set -e
    t_steps=$(date +%s.%N)
    # The driver closed the browser, which ends the guest; if the driver failed first, end it.
    [ "$status" -eq 0 ] || kill "$qemu" 2>/dev/null || true
    wait "$qemu" || true
    t_end=$(date +%s.%N)
    tr -d '\r' <"$dir/console.log" | grep -E '^(BROWSER-EXIT|GUEST-FAIL)' || true
    printf 'browser test (%s): boot to browser %s s, steps %s s, shutdown %s s\n' "$run" \
        "$(secs "$t_boot" "$t_browser")" "$(secs "$t_browser" "$t_steps")" "$(secs "$t_steps" "$t_end")"
    [ "$status" -eq 0 ] || fail "the browser steps failed (above)"
    tr -d '\r' <"$dir/console.log" | grep -q '^BROWSER-EXIT 0$' || fail "the browser did not exit cleanly"
    kill -0 "$key_pid" 2>/dev/null || fail "the key died during the run"
    # The same power-up, the guest gone: the PIN a browser or client gave opened the key for
    # every client, touch-only U2F included.
    if [ -n "$lock" ]; then
        "$runner" control "$dir/key.sock" approve 1-1 >/dev/null
        "$python" tests/browser/locked.py "127.0.0.1:$port:1-1" --rp-state "$rp_state" --expect unlocked ||
            fail "the unlocked key did not sign a U2F request (above)"
    fi
    if [ "$run" = chromium-locked ]; then
        echo "browser test ($run): passed"
        return
    fi
    # The key's side of the cancelled and the timed-out registration, from its trace.
    local answer
    for answer in 39:CTAP2_ERR_OPERATION_DENIED 47:CTAP2_ERR_USER_ACTION_TIMEOUT; do
        grep -q "\"command\":\"makeCredential\",\"dir\":\"response\".*\"status\":${answer%%:*}}" \
            "$dir/trace.jsonl" || fail "the key never answered a makeCredential with ${answer#*:}"
    done
    # The passkey sign-in listed both accounts to the browser (getNextAssertion) and was verified
    # with the PIN typed at Firefox's prompt (pinUvAuthParam, key 6, in that getAssertion).
    if [ ${#passkeys[@]} -gt 0 ]; then
        grep -q '"command":"getNextAssertion","dir":"request"' "$dir/trace.jsonl" ||
            fail "no getNextAssertion: the passkey sign-in did not list the accounts"
        grep '"command":"getAssertion","dir":"request"' "$dir/trace.jsonl" | grep -v '"3":' |
            grep -q '"6":{"bytes":' || fail "no PIN-verified getAssertion without an allow list"
    fi
    # The fingerprint steps: the browser asked the key's sensor for a token
    # (getPinUvAuthTokenUsingUvWithPermissions, subcommand 6); in Chromium a finger that never
    # matched was counted down (CTAP2_ERR_UV_INVALID, 0x3F) to blocked (CTAP2_ERR_UV_BLOCKED,
    # 0x3C).
    grep -q '"command":"clientPIN","dir":"request".*"2":6[,}]' "$dir/trace.jsonl" ||
        fail "the browser never asked for a token by built-in UV"
    if [ "$engine" = chromium ]; then
        for answer in 63:CTAP2_ERR_UV_INVALID 60:CTAP2_ERR_UV_BLOCKED; do
            grep -q "\"command\":\"clientPIN\",\"dir\":\"response\".*\"status\":${answer%%:*}}" \
                "$dir/trace.jsonl" || fail "the key never answered a UV token request with ${answer#*:}"
        done
    fi
    echo "browser test ($run): passed"
}

for run in "${runs[@]}"; do
    run_engine "$run"
done
printf 'browser test: build and setup %s s, all of it %s s\n' "$(secs "$t_start" "$t_built")" \
    "$(secs "$t_start" "$(date +%s.%N)")"
