#!/bin/sh
# shellcheck shell=dash # busybox ash: POSIX sh plus `local`
# /init of the kernel-path test's QEMU guest (tests/qemu/run.sh puts it into the initramfs).
# It attaches the host's virtual key through the real vhci-hcd driver and drives it with
# libfido2's tools and OpenSSH, as a user's machine would. Each step prints one marker line on
# the serial console, which the host parses:
#   STEP-START <name>
#   STEP-PASS <name> <seconds>
#   STEP-FAIL <name> <seconds>      (followed by the step's output, then the end of dmesg)
#   RESULT PASS | RESULT FAIL
# The first failing step ends the run: later steps depend on earlier ones.
#
# PINs: libfido2's tools read a PIN with readpassphrase(), which uses /dev/tty if the process
# has a controlling terminal and standard input otherwise. Nothing here has one (/dev/console,
# PID 1's terminal, can never be a controlling terminal; the setup step checks), so each PIN is
# fed on standard input, and a wrong or missing PIN fails the step like a user's typo would.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# usbip attach records each connection in /var/run/vhci_hcd/ and detaches again if it cannot.
mkdir -p /run /var/run

# PID 1 must not exit (the kernel would panic); every path ends in reboot -f, which QEMU's
# -no-reboot turns into an exit.
finish() {
    echo "RESULT $1"
    sync
    reboot -f
    sleep 60
}

PORT=""
PORT2=""
# shellcheck disable=SC2013 # the command line is words
for word in $(cat /proc/cmdline); do
    case $word in
        usbip_port=*) PORT=${word#usbip_port=} ;;   # the key that approves every touch
        usbip_port2=*) PORT2=${word#usbip_port2=} ;; # the key whose touches the host decides
    esac
done
HOST=10.0.2.2 # QEMU's user network: the host's loopback
[ -n "$PORT" ] && [ -n "$PORT2" ] || finish FAIL

# --- timing and step helpers ---
now() { read -r up _ </proc/uptime; echo "$up"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
OUT=/tmp/step.out

# step NAME COMMAND...: run COMMAND (a function or a program) with output to $OUT.
step() {
    local step_name="$1" t0
    shift
    echo "STEP-START $step_name"
    t0=$(now)
    if "$@" >"$OUT" 2>&1; then
        echo "STEP-PASS $step_name $(elapsed "$t0")"
    else
        echo "STEP-FAIL $step_name $(elapsed "$t0")"
        echo "--- output of $step_name ---"
        cat "$OUT"
        echo "--- end of dmesg ---"
        dmesg | tail -n 30
        finish FAIL
    fi
}

# expect PATTERN FILE: FILE holds an extended regular expression match (else print both, fail).
expect() {
    if ! grep -Eq "$1" "$2"; then
        echo "expected /$1/ in $2:"
        cat "$2"
        return 1
    fi
}

# A fresh 32-byte challenge (the client data hash) and ids, as base64.
rand64() { head -c "${1:-32}" /dev/urandom | base64; }

# --- the guest's own setup ---
setup() {
    modprobe e1000 &&
        modprobe vhci-hcd &&
        modprobe usbhid &&
        modprobe hid-generic &&
        ip link set lo up &&
        ip link set eth0 up &&
        ip addr add 10.0.2.15/24 dev eth0 || return 1
    # The PIN feeding above relies on this.
    if (: </dev/tty) 2>/dev/null; then
        echo "the steps have a controlling terminal: PINs would be read from it"
        return 1
    fi
}

list() {
    usbip --tcp-port "$PORT" list -r "$HOST" >/tmp/list.out 2>&1
    cat /tmp/list.out
    expect '1-1: .*\(1209:0001\)' /tmp/list.out
}

# wait_for CONDITION...: poll for up to 10 s.
wait_for() {
    local i=0
    until "$@"; do
        i=$((i + 1))
        [ $i -le 100 ] || return 1
        sleep 0.1
    done
}
hidraw_present() { ls /dev/hidraw* >/dev/null 2>&1; }
hidraw_absent() { ! hidraw_present; }
# shellcheck disable=SC2012 # device nodes have plain names
two_hidraws() { [ "$(ls /dev/hidraw* 2>/dev/null | wc -l)" -eq 2 ]; }

attach() {
    usbip --tcp-port "$PORT" attach -r "$HOST" -b 1-1 &&
        wait_for hidraw_present &&
        ls -l /dev/hidraw*
}

detach() {
    usbip port
    usbip detach -p 0 &&
        wait_for hidraw_absent
}

token_list() {
    fido2-token -L >/tmp/L.out
    cat /tmp/L.out
    expect '^/dev/hidraw[0-9]+: vendor=0x1209, product=0x0001' /tmp/L.out || return 1
    DEV=$(sed -n 's/^\(\/dev\/hidraw[0-9]*\):.*/\1/p' /tmp/L.out | head -n 1)
}

# token_info [PATTERN...]: fido2-token -I, and each pattern must be in its output.
token_info() {
    fido2-token -I "$DEV" >/tmp/I.out || return 1
    cat /tmp/I.out
    expect '^aaguid: ' /tmp/I.out || return 1
    local pattern
    for pattern in "$@"; do
        expect "$pattern" /tmp/I.out || return 1
    done
}

# cred NAME [OPTIONS] [TYPE]: make a credential (rp NAME.example) and verify its attestation;
# keeps NAME.cred (fido2-cred -M output) and NAME.pub (credential id + PEM public key).
cred() {
    local name="$1" opts="$2" type="${3:-es256}"
    printf '%s\n%s\n%s\n%s\n' "$(rand64)" "$name.example" "user-$name" "$(rand64 16)" >"/tmp/$name.param"
    # shellcheck disable=SC2086 # options are words
    fido2-cred -M $opts -i "/tmp/$name.param" -o "/tmp/$name.cred" "$DEV" "$type" </dev/null &&
        fido2-cred -V -i "/tmp/$name.cred" -o "/tmp/$name.pub" "$type" &&
        cat "/tmp/$name.pub"
}

# assert NAME [GET-OPTIONS] [TYPE] [PIN] [VERIFY-OPTIONS]: get an assertion with NAME's
# credential (by id, or discoverable with -r) and verify its signature with NAME's public key.
assert() {
    local name="$1" opts="$2" type="${3:-es256}" pin="${4:-}" vopts="${5:--p}"
    {
        rand64
        echo "$name.example"
        case " $opts " in
            *" -r "*) ;;                              # discoverable: no credential id
            *) sed -n 5p "/tmp/$name.cred" ;;         # the credential id made by cred
        esac
    } >"/tmp/$name.aparam"
    sed -n '2,$p' "/tmp/$name.pub" >"/tmp/$name.pem"
    # shellcheck disable=SC2086
    printf '%s\n' "$pin" | fido2-assert -G $opts -i "/tmp/$name.aparam" -o "/tmp/$name.assert" "$DEV" &&
        head -n 4 "/tmp/$name.assert" >"/tmp/$name.vparam" &&
        fido2-assert -V $vopts -i "/tmp/$name.vparam" "/tmp/$name.pem" "$type"
}

# A wrong PIN must be refused and cost exactly one retry.
wrong_pin() {
    if printf '%s\n' "$1" | fido2-assert -G -p -v -i /tmp/es256.aparam -o /tmp/wrong.assert "$DEV" \
        >/tmp/wrong.out 2>&1; then
        echo "an assertion with the wrong PIN $1 succeeded"
        return 1
    fi
    cat /tmp/wrong.out
    expect 'FIDO_ERR_PIN_INVALID' /tmp/wrong.out
}

ssh_sk() {
    local type="$1"
    rm -f "/tmp/id_$type" "/tmp/id_$type.pub"
    ssh-keygen -q -t "$type" -N '' -C "kernel-test-$type" -f "/tmp/id_$type" </dev/null || return 1
    echo "hello from the guest" >/tmp/message
    rm -f /tmp/message.sig
    ssh-keygen -Y sign -f "/tmp/id_$type" -n file /tmp/message </dev/null || return 1
    echo "tester $(cat "/tmp/id_$type.pub")" >/tmp/allowed_signers
    ssh-keygen -Y verify -f /tmp/allowed_signers -I tester -n file -s /tmp/message.sig </tmp/message || return 1
    # And a tampered message must not verify.
    echo tampered >>/tmp/message
    if ssh-keygen -Y verify -f /tmp/allowed_signers -I tester -n file -s /tmp/message.sig </tmp/message; then
        echo "a tampered message verified"
        return 1
    fi
}

set_pin() { printf '1234\n1234\n' | fido2-token -S "$DEV"; }
change_pin() { printf '1234\n9876543\n9876543\n' | fido2-token -C "$DEV"; }

list_rps() {
    printf '9876543\n' | fido2-token -L -r "$DEV" >/tmp/rps.out || return 1
    cat /tmp/rps.out
    expect 'rk\.example' /tmp/rps.out || return 1
    printf '9876543\n' | fido2-token -L -k rk.example "$DEV" >/tmp/rk.out || return 1
    cat /tmp/rk.out
    # The listed credential is the one made by the discoverable step (its id, base64).
    expect "$(sed -n 5p /tmp/rk.cred | sed 's/[+/]/./g')" /tmp/rk.out
}

# --- Firefox's FIDO stack (Mozilla's authenticator crate), a stand-in for the browser ---
# It finds the key itself (libudev's hidraw enumeration, as Firefox does), registers a
# discoverable credential with UV (answering its PIN prompt) and signs in, checking the
# signature, rpIdHash and flags.
firefox_stack() {
    /opt/firefox-stack/ld-linux-x86-64.so.2 --library-path /opt/firefox-stack \
        /opt/firefox-stack/firefox-stack 9876543 firefox.example >/tmp/ff.out 2>&1
    local status=$?
    cat /tmp/ff.out
    sed 's/^/  /' /tmp/ff.out >/dev/console
    [ "$status" -eq 0 ] && expect 'signature verified' /tmp/ff.out
}

# --- batch attestation, provisioned through hidraw by our attestation tool ---
# run.sh puts the host-built tool in /opt/attestation with the loader and libraries it was
# linked against, and a batch for AAGUID 6f70656e-6669-646f-2d71-656d75000001 in /batch.
attestation() {
    /opt/attestation/ld-linux-x86-64.so.2 --library-path /opt/attestation \
        /opt/attestation/attestation "$@"
}

provision() { attestation provision --target "$DEV" --batch /batch; }

# A registration now carries the batch certificate (x5c), and libfido2 verifies its signature.
cred_attested() {
    cred batch '' || return 1
    if ! grep -qF "$(cat /batch/batch.b64)" /tmp/batch.cred; then
        echo "the attestation does not carry the batch certificate:"
        cat /tmp/batch.cred
        return 1
    fi
}

provision_again_refused() {
    if attestation provision --target "$DEV" --batch /batch >/tmp/again.out 2>&1; then
        echo "a second provisioning was accepted"
        return 1
    fi
    cat /tmp/again.out
    expect 'already' /tmp/again.out
}

# --- the second key: presence answered by the host through the runner's control socket ---
# A "CONTROL <answer>" line on the console makes the host send that answer to the control
# socket; it arms the answer if the request has not arrived yet, so there is no race.
host_control() { echo "CONTROL $1" >/dev/console; }

attach_second() {
    local all
    usbip --tcp-port "$PORT2" attach -r "$HOST" -b 1-1 || return 1
    wait_for two_hidraws || { ls -l /dev/hidraw*; return 1; }
    all=$(ls /dev/hidraw*)
    DEV2=$(echo "$all" | grep -vx "$DEV")
    echo "first key $DEV, second key $DEV2"
    fido2-token -I "$DEV2"
}

# presence ANSWER EXPECTED-ERROR: a registration on the second key, answered by the host.
presence() {
    printf '%s\n%s\n%s\n%s\n' "$(rand64)" "control.example" "user" "$(rand64 16)" >/tmp/control.param
    host_control "$1"
    if fido2-cred -M -i /tmp/control.param -o /tmp/control.cred "$DEV2" </dev/null >/tmp/control.out 2>&1; then
        cat /tmp/control.out
        [ -z "$2" ] || { echo "registration succeeded; expected $2"; return 1; }
        fido2-cred -V -i /tmp/control.cred
    else
        cat /tmp/control.out
        [ -n "$2" ] || { echo "registration failed; it was approved"; return 1; }
        expect "$2" /tmp/control.out
    fi
}

# The kernel logs usbip trouble; any of it fails the run (a lenient client would carry on).
# dmesg_clean DETACHES: the log may show exactly that many connection shutdowns, which is what
# a `usbip detach` logs ("connection closed", "stop threads", ...); any other shutdown means
# the kernel dropped the device.
dmesg_clean() {
    local shutdowns
    dmesg >/tmp/dmesg.out
    grep -Ei 'usbip|vhci|hid|usb 1-1' /tmp/dmesg.out
    if grep -Ei 'recv xbuf|malicious|connection reset|xmit failed|(usbip|vhci|hid|usb 1-1).*(error|fail|cannot|can.t)|device descriptor read' /tmp/dmesg.out; then
        echo "usbip or HID trouble in the kernel log (lines above)"
        return 1
    fi
    shutdowns=$(grep -c 'vhci_hcd: stop threads' /tmp/dmesg.out)
    if [ "$shutdowns" -ne "$1" ]; then
        echo "the kernel shut the connection down $shutdowns times; $1 expected (usbip detach)"
        return 1
    fi
}

# --- the same key through uhid: the runner runs in the guest and makes a HID device itself ---
# (the transport for machines and containers without vhci-hcd; run.sh bundles the runner).
detach_all() {
    usbip detach -p 0 && usbip detach -p 1 && wait_for hidraw_absent
}

# Before the module is loaded: a clear error and a failed exit, not a hang.
uhid_missing_module() {
    # shellcheck disable=SC2086 # $RUNNER is words
    if $RUNNER --transport uhid --ephemeral --presence auto >/tmp/missing.out 2>&1; then
        echo "the runner started without /dev/uhid"
        return 1
    fi
    cat /tmp/missing.out
    expect 'modprobe uhid' /tmp/missing.out
}

uhid_module() {
    modprobe uhid && ls -l /dev/uhid
}

# A command, not a function: `$RUNNER ... &` makes $! the runner's own PID (a backgrounded
# function would be a subshell, which SIGTERM would kill without the runner).
RUNNER="/opt/usbip-runner/ld-linux-x86-64.so.2 --library-path /opt/usbip-runner /opt/usbip-runner/usbip-runner"

# Two keys, a control socket and a trace, as over USB/IP.
RUNNER_PID=""
uhid_start() {
    # shellcheck disable=SC2086 # $RUNNER is words
    $RUNNER --transport uhid --ephemeral --presence auto --keys 2 --control /tmp/uhid.sock \
        --trace /tmp/uhid.trace >/tmp/uhid-runner.out 2>/tmp/uhid-runner.log &
    RUNNER_PID=$!
    wait_for two_hidraws || { cat /tmp/uhid-runner.out /tmp/uhid-runner.log; return 1; }
    cat /tmp/uhid-runner.out
    expect '^uhid on /dev/uhid: keys 1-1 1-2$' /tmp/uhid-runner.out || return 1
    ls -l /dev/hidraw*
    # What udev rules match on: a USB bus HID device with the key's IDs and serial.
    cat /sys/class/hidraw/hidraw*/device/uevent | tee /tmp/uevent.out
    expect '^HID_ID=0003:00001209:00000001$' /tmp/uevent.out &&
        expect '^HID_NAME=Open FIDO Key \(uhid\)$' /tmp/uevent.out &&
        expect '^HID_UNIQ=uhid-1-1-ephemeral$' /tmp/uevent.out &&
        expect '^HID_UNIQ=uhid-1-2-ephemeral$' /tmp/uevent.out &&
        $RUNNER control /tmp/uhid.sock status
}

# The node of key 1-1 (by its serial), for the steps that follow.
uhid_first_key() {
    local node
    for node in /sys/class/hidraw/hidraw*; do
        grep -q '^HID_UNIQ=uhid-1-1-ephemeral$' "$node/device/uevent" && DEV=/dev/${node##*/}
    done
    echo "key 1-1 is $DEV"
    fido2-token -L | tee /tmp/L.out
    expect "^$DEV: vendor=0x1209, product=0x0001" /tmp/L.out
}

# The key again, now waiting for touches answered on its control socket (one key, fresh).
uhid_restart_control() {
    kill -TERM "$RUNNER_PID" && wait "$RUNNER_PID" && wait_for hidraw_absent || return 1
    # shellcheck disable=SC2086 # $RUNNER is words
    $RUNNER --transport uhid --ephemeral --presence control --control /tmp/uhid-c.sock \
        >/tmp/uhid-runner.out 2>/tmp/uhid-runner.log &
    RUNNER_PID=$!
    wait_for hidraw_present || { cat /tmp/uhid-runner.log; return 1; }
    token_list
}

uctl() { $RUNNER control /tmp/uhid-c.sock "$@"; }
uhid_waiting() { uctl status | grep -q 'waiting 1-1'; }
uhid_not_waiting() { ! uhid_waiting; }
remaining_rks() { fido2-token -I "$DEV" | sed -n 's/^remaining rk(s): //p'; }

# A client killed while its request waits for a touch (its hidraw closed: UHID_CLOSE): the
# wait ends, nothing is stored, and a request after it is served and approved.
uhid_close_mid_request() {
    local before after pid
    before=$(remaining_rks)
    printf '%s\n%s\n%s\n%s\n' "$(rand64)" "closed.example" "user" "$(rand64 16)" >/tmp/closed.param
    fido2-cred -M -r -i /tmp/closed.param -o /tmp/closed.cred "$DEV" </dev/null >/tmp/closed.out 2>&1 &
    pid=$!
    wait_for uhid_waiting || { uctl status; kill "$pid"; return 1; }
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null
    wait_for uhid_not_waiting || { echo "still waiting after the client closed hidraw"; return 1; }
    after=$(remaining_rks)
    echo "remaining discoverable credentials: $before before, $after after"
    [ -n "$before" ] && [ "$before" = "$after" ] || return 1
    uctl approve 1-1
    cred approved ''
}

uhid_traced() {
    cat /tmp/uhid.trace | head -n 4
    expect '"key":"1-1"' /tmp/uhid.trace
}

# packet FILE BYTES...: a hidraw write of one report: the report number (0: the key has no
# report IDs) and 64 bytes, the given ones (octal escapes) then zeros.
packet() {
    local file=$1
    shift
    { printf '\000'; printf "$@"; } >"$file.head"
    { cat "$file.head"; head -c 64 /dev/zero; } | head -c 65 >"$file"
}

# A client that opens hidraw, starts a message and closes the node before finishing it leaves
# nothing behind: the runner logs the abandoned transaction, and the next client is answered
# at once instead of getting CHANNEL_BUSY until the message times out.
uhid_close_mid_message() {
    local octal="" hh
    exec 3<>"$DEV" || return 1
    # CTAPHID_INIT on the broadcast channel, nonce "abcdefgh"; the answer names our channel.
    packet /tmp/init.pkt '\377\377\377\377\206\000\010abcdefgh'
    dd if=/tmp/init.pkt bs=65 count=1 >&3 2>/dev/null || return 1
    dd bs=64 count=1 <&3 >/tmp/init.bin 2>/dev/null || return 1
    od -An -tx1 /tmp/init.bin
    for hh in $(od -An -tx1 -j15 -N4 /tmp/init.bin); do
        octal="$octal$(printf '\\%03o' "0x$hh")"
    done
    # The first packet of a 100-byte PING on that channel; the rest never comes.
    packet /tmp/ping.pkt "$octal"'\201\000\144'
    dd if=/tmp/ping.pkt bs=65 count=1 >&3 2>/dev/null || return 1
    exec 3<&-
    wait_for grep -q 'abandoned' /tmp/uhid-runner.log || { cat /tmp/uhid-runner.log; return 1; }
    grep 'abandoned' /tmp/uhid-runner.log
    fido2-token -I "$DEV" | head -n 3
}

uhid_sigterm() {
    kill -TERM "$RUNNER_PID" || return 1
    wait_for hidraw_absent || { ls -l /dev/hidraw*; cat /tmp/uhid-runner.log; return 1; }
    wait "$RUNNER_PID"
    local status=$?
    cat /tmp/uhid-runner.log
    [ "$status" -eq 0 ] || { echo "the runner exited with $status"; return 1; }
    expect 'uhid device destroyed' /tmp/uhid-runner.log
}

uhid_dmesg_clean() {
    dmesg >/tmp/dmesg.out
    grep -Ei 'uhid|hid' /tmp/dmesg.out | tail -n 20
    if grep -Ei '(uhid|hid-generic).*(error|fail|cannot|can.t)' /tmp/dmesg.out; then
        echo "uhid or HID trouble in the kernel log (lines above)"
        return 1
    fi
}

run_steps() {
    step setup setup
    step "usbip-list" list
    step "usbip-attach" attach
    step "fido2-token-L" token_list
    step "fido2-token-I" token_info 'noclientPin'
    step "cred-es256" cred es256 ''
    step "assert-es256" assert es256 '-p'
    step "cred-eddsa" cred eddsa '' eddsa
    step "assert-eddsa" assert eddsa '-p' eddsa
    step "cred-discoverable" cred rk '-r'
    step "assert-discoverable" assert rk '-p -r'
    step "cred-u2f" cred u2f '-u'
    step "assert-u2f" assert u2f '-p -u'
    step "ssh-ecdsa-sk" ssh_sk ecdsa-sk
    step "ssh-ed25519-sk" ssh_sk ed25519-sk
    step "pin-set" set_pin
    step "pin-retries-8" token_info 'pin retries: 8' '[ ,]clientPin'
    step "pin-change" change_pin
    step "assert-uv-pin" assert es256 '-p -v' es256 9876543 '-p -v'
    step "pin-old-refused" wrong_pin 1234
    step "pin-retries-7" token_info 'pin retries: 7'
    step "assert-uv-resets-retries" assert es256 '-p -v' es256 9876543 '-p -v'
    step "pin-retries-8-again" token_info 'pin retries: 8'
    step "cred-management-list" list_rps
    step "firefox-stack-stand-in" firefox_stack
    step "dmesg-before-detach" dmesg_clean 0
    step "usbip-detach" detach
    step "usbip-reattach" attach
    step "fido2-token-L-again" token_list
    step "assert-after-reattach" assert es256 '-p -v' es256 9876543 '-p -v'
    step "pin-retries-after-reattach" token_info 'pin retries: 8'
    step "attestation-provision-hidraw" provision
    step "attestation-aaguid" token_info 'aaguid: 6f70656e6669646f2d71656d75000001'
    step "cred-batch-attestation" cred_attested
    step "attestation-second-refused" provision_again_refused
    step "usbip-attach-second-key" attach_second
    step "presence-denied" presence deny FIDO_ERR_OPERATION_DENIED
    step "presence-timed-out" presence timeout FIDO_ERR_USER_ACTION_TIMEOUT
    step "presence-approved" presence approve ''
    step "dmesg-at-end" dmesg_clean 1
    step "usbip-detach-both" detach_all
    step "uhid-missing-module" uhid_missing_module
    step "uhid-module" uhid_module
    step "uhid-runner-start" uhid_start
    step "uhid-fido2-token-L" uhid_first_key
    step "uhid-fido2-token-I" token_info 'noclientPin'
    step "uhid-close-mid-message" uhid_close_mid_message
    step "uhid-cred-es256" cred es256 ''
    step "uhid-assert-es256" assert es256 '-p'
    step "uhid-cred-discoverable" cred rk '-r'
    step "uhid-assert-discoverable" assert rk '-p -r'
    step "uhid-cred-u2f" cred u2f '-u'
    step "uhid-assert-u2f" assert u2f '-p -u'
    step "uhid-ssh-ecdsa-sk" ssh_sk ecdsa-sk
    step "uhid-ssh-ed25519-sk" ssh_sk ed25519-sk
    step "uhid-pin-set" set_pin
    step "uhid-assert-uv-pin" assert es256 '-p -v' es256 1234 '-p -v'
    step "uhid-traced" uhid_traced
    step "uhid-restart-control" uhid_restart_control
    step "uhid-close-mid-request" uhid_close_mid_request
    step "uhid-dmesg" uhid_dmesg_clean
    step "uhid-sigterm-destroys" uhid_sigterm
    finish PASS
}

echo "guest: kernel $(uname -r), init at $(now) s"
run_steps </dev/null
