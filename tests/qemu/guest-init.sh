#!/bin/sh
# shellcheck shell=dash # busybox ash: POSIX sh plus `local`
# /init of the kernel-path test's QEMU guest (tests/qemu/run.sh puts it into the initramfs).
# It runs the release's static usbip-runner (/opt/key, unpacked from the release archive), which
# attaches itself through the real vhci-hcd driver (--attach), and drives the key with libfido2's
# tools and OpenSSH, as a user's machine would; then attaches the host's key with the `usbip`
# tool, runs the runner with uhid, and runs the GitHub Actions recipe's steps
# (examples/github-actions.yml) as its user. Each step prints one marker line on the serial
# console, which the host parses:
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

PORT2=""
RELEASE_PORT=""
# shellcheck disable=SC2013 # the command line is words
for word in $(cat /proc/cmdline); do
    case $word in
        usbip_port2=*) PORT2=${word#usbip_port2=} ;;     # the host's key, touches decided there
        release_port=*) RELEASE_PORT=${word#release_port=} ;; # the release archives, over HTTP
    esac
done
HOST=10.0.2.2 # QEMU's user network: the host's loopback
[ -n "$PORT2" ] && [ -n "$RELEASE_PORT" ] || finish FAIL

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

# --- the guest's own setup (vhci-hcd comes later: the runner must first see it missing) ---
setup() {
    hostname guest
    # As udev makes them on a usual system (bash's process substitution needs /dev/fd).
    ln -s /proc/self/fd /dev/fd && ln -s fd/0 /dev/stdin && ln -s fd/1 /dev/stdout &&
        ln -s fd/2 /dev/stderr || return 1
    modprobe e1000 &&
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
    usbip --tcp-port "$PORT2" list -r "$HOST" >/tmp/list.out 2>&1
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
one_hidraw() { [ "$(ls /dev/hidraw* 2>/dev/null | wc -l)" -eq 1 ]; }
hidraw_absent() { ! hidraw_present; }
# shellcheck disable=SC2012 # device nodes have plain names
two_hidraws() { [ "$(ls /dev/hidraw* 2>/dev/null | wc -l)" -eq 2 ]; }

# --- the release's static binaries (/opt/key, from the archive run.sh built) ---
RUNNER=/opt/key/usbip-runner
attestation() { /opt/key/attestation "$@"; }

# As the container image runs it (FROM scratch): alone in an empty root, no loader, no library.
static_alone() {
    mkdir -p /tmp/scratch &&
        cp "$RUNNER" /tmp/scratch/usbip-runner &&
        chroot /tmp/scratch /usbip-runner --version | tee /tmp/version.out &&
        expect '^usbip-runner [0-9]' /tmp/version.out
}

# --- --attach: the runner attaches its own keys to vhci-hcd, no usbip tool ---
# Before the module is loaded: a clear error naming the fix, and a failed exit.
attach_missing_module() {
    if $RUNNER --attach --ephemeral --presence auto --listen 127.0.0.1:0 >/tmp/missing.out 2>&1; then
        echo "the runner attached without vhci-hcd"
        return 1
    fi
    cat /tmp/missing.out
    expect 'modprobe vhci-hcd' /tmp/missing.out && expect 'linux-modules-extra' /tmp/missing.out
}

vhci_module() { modprobe vhci-hcd && ls /sys/devices/platform/vhci_hcd.0; }

# A user without root: refused before it serves anything, saying what it needs.
attach_needs_root() {
    if sudo -u runner $RUNNER --attach --ephemeral --presence auto --listen 127.0.0.1:0 \
        >/tmp/noroot.out 2>&1; then
        echo "the runner attached as an unprivileged user"
        return 1
    fi
    cat /tmp/noroot.out
    expect 'as root' /tmp/noroot.out && expect 'vhci_hcd.0/attach' /tmp/noroot.out
}

# vhci_ports_in_use: how many vhci-hcd ports hold a device (status 006; 004 is free).
vhci_ports_in_use() { awk '$3 == "006"' /sys/devices/platform/vhci_hcd.0/status* | wc -l; }
no_vhci_port_in_use() { [ "$(vhci_ports_in_use)" -eq 0 ]; }

# attach_start LINES ARGS...: the runner with --attach and ARGS, until it printed LINES
# "attached" lines; $ATTACH_PID is the runner. Key state in /tmp/key (kept across restarts).
ATTACH_PID=""
attached_lines() { [ "$(grep -c '^attached ' /tmp/attach.out)" -ge "$1" ]; }
attach_start() {
    local lines=$1
    shift
    : >/tmp/attach.out
    $RUNNER --attach --listen 127.0.0.1:0 --state /tmp/key --presence auto "$@" \
        >/tmp/attach.out 2>/tmp/attach.log &
    ATTACH_PID=$!
    local i=0
    until attached_lines "$lines"; do
        i=$((i + 1))
        if [ $i -gt 600 ] || ! kill -0 "$ATTACH_PID" 2>/dev/null; then
            cat /tmp/attach.out /tmp/attach.log
            return 1
        fi
        sleep 0.1
    done
    cat /tmp/attach.out
    ls -l /dev/hidraw*
    cat /sys/devices/platform/vhci_hcd.0/status
}

# The node the runner printed for BUS.
attached_node() { awk -v bus="$1" '$1 == "attached" && $2 == bus { print $3 }' /tmp/attach.out; }

# Two keys: two nodes, two vhci ports; the printed node of 1-1 is the key libfido2 lists, and
# its serial (HID_UNIQ) says so.
attach_two() {
    attach_start 2 --keys 2 || return 1
    KEY1=$(attached_node 1-1)
    KEY2=$(attached_node 1-2)
    echo "1-1 is $KEY1, 1-2 is $KEY2"
    [ -c "$KEY1" ] && [ -c "$KEY2" ] && [ "$KEY1" != "$KEY2" ] || return 1
    [ "$(vhci_ports_in_use)" -eq 2 ] || { echo "$(vhci_ports_in_use) ports in use, not 2"; return 1; }
    grep -H '^HID_UNIQ' "/sys/class/hidraw/${KEY1#/dev/}/device/uevent" | tee /tmp/uniq.out
    expect '=usbip-1-1$' /tmp/uniq.out
}

# libfido2 lists both keys; the steps that follow use 1-1's node, as the runner printed it.
attached_token_list() {
    fido2-token -L | tee /tmp/L.out
    expect "^$KEY1: vendor=0x1209, product=0x0001" /tmp/L.out &&
        expect "^$KEY2: vendor=0x1209, product=0x0001" /tmp/L.out &&
        DEV=$KEY1
}

# The second key is a key of its own.
attach_second_key() {
    fido2-token -I "$KEY2" | tee /tmp/I2.out && expect 'noclientPin' /tmp/I2.out
}

# SIGTERM: the runner detached each key itself (its log says so for each: the kernel took the
# detach and the port was free again before it went on), the ports free, the nodes gone, a clean
# exit. (A runner that only closed its sockets would leave the same kernel log behind: the
# kernel logs "connection closed" either way.)
attach_sigterm() {
    kill -TERM "$ATTACH_PID" || return 1
    wait "$ATTACH_PID"
    local status=$?
    no_vhci_port_in_use || { cat /sys/devices/platform/vhci_hcd.0/status; return 1; }
    cat /tmp/attach.log
    [ "$status" -eq 0 ] || { echo "the runner exited with $status"; return 1; }
    wait_for hidraw_absent || { ls -l /dev/hidraw*; return 1; }
    [ "$(grep -c 'attach: detached' /tmp/attach.log)" -eq "$1" ] || { echo "not $1 keys detached"; return 1; }
}

# The same state again, one key: what the key stored survived the runner's restart.
attach_restart() {
    attach_start 1 || return 1
    KEY1=$(attached_node 1-1)
    token_list && [ "$DEV" = "$KEY1" ]
}

# --- the classic path: the host's key, attached with the usbip tool ---
attach() {
    usbip --tcp-port "$PORT2" attach -r "$HOST" -b 1-1 &&
        wait_for hidraw_present &&
        ls -l /dev/hidraw* &&
        DEV2=$(ls /dev/hidraw*) &&
        fido2-token -I "$DEV2"
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
# The release's static tool (/opt/key); run.sh puts a batch for AAGUID
# 6f70656e-6669-646f-2d71-656d75000001 in /batch.

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

# --- the same key through uhid: the runner makes a HID device itself ---
# (the transport for machines and containers without vhci-hcd).

# Before the module is loaded: a clear error and a failed exit, not a hang.
uhid_missing_module() {
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

# $RUNNER is a command, not a function: `$RUNNER ... &` makes $! the runner's own PID (a
# backgrounded function would be a subshell, which SIGTERM would kill without the runner).

# Two keys, a control socket and a trace, as over USB/IP.
RUNNER_PID=""
uhid_start() {
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

# --- the GitHub Actions recipe (examples/github-actions.yml), as its job's user ---
# run.sh extracted each `run:` block into /recipe/NN.sh (its name in NN.name) and the job's env
# into /recipe/env. Each runs as GitHub runs `shell: bash` steps, `bash --noprofile --norc -eo
# pipefail`, as the user `runner` (password-less sudo, as on hosted runners), in a workspace
# directory, with GITHUB_ENV (lines a step adds there are in the next steps' environment) and
# RUNNER_TEMP. Only KEY_RELEASES differs: the release archive comes from run.sh's HTTP server
# on the host. `apt-get` is a stand-in (/usr/local/bin/apt-get): the guest has no archive, so
# it only checks that each package asked for is one the guest image brings.
RECIPE_HOME=/home/runner
recipe_prepare() {
    # The recipe loads vhci-hcd itself: unload it (nothing is attached now).
    rmmod vhci-hcd && [ ! -e /sys/devices/platform/vhci_hcd.0 ] || return 1
    mkdir -p "$RECIPE_HOME/work" "$RECIPE_HOME/temp" &&
        : >"$RECIPE_HOME/github_env" &&
        chown -R runner:runner "$RECIPE_HOME" || return 1
    {
        cat /recipe/env
        echo "KEY_RELEASES=http://$HOST:$RELEASE_PORT"
    } >/tmp/recipe.env
    cat /tmp/recipe.env
    expect "^KEY_VERSION=$(cat /recipe/version)\$" /tmp/recipe.env || {
        echo "the recipe installs another version than this build's ($(cat /recipe/version))"
        return 1
    }
}

# recipe_step NN: one step, as the job's user, in a fresh environment as on a runner: the job's
# env, then what earlier steps added to GITHUB_ENV (NAME=VALUE lines, taken as they are).
recipe_step() {
    echo "step $1: $(cat "/recipe/$1.name")"
    sed 's/^/  | /' "/recipe/$1.sh"
    cat >/tmp/recipe-step <<'EOF'
while IFS= read -r line; do
    [ -n "$line" ] && export "$line"
done < <(cat /tmp/recipe.env "$GITHUB_ENV")
cd "$HOME/work" && exec bash --noprofile --norc -eo pipefail "/recipe/$1.sh"
EOF
    su runner -s /bin/sh -c "exec env -i HOME=$RECIPE_HOME USER=runner \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin CI=true GITHUB_ACTIONS=true \
        GITHUB_ENV=$RECIPE_HOME/github_env RUNNER_TEMP=$RECIPE_HOME/temp \
        /bin/bash --noprofile --norc /tmp/recipe-step $1" >/tmp/recipe.out 2>&1
    local status=$?
    # What the step printed, on the console as in a job's log.
    sed 's/^/  > /' /tmp/recipe.out | tee /dev/console
    return "$status"
}

# After the recipe: the key is gone (its Stop step detached it).
recipe_done() {
    cat "$RECIPE_HOME/github_env"
    no_vhci_port_in_use && hidraw_absent
}

run_steps() {
    step setup setup
    step "static-binary-alone" static_alone
    # --attach: the release's runner attaches its keys itself
    step "attach-missing-module" attach_missing_module
    step "vhci-module" vhci_module
    step "attach-needs-root" attach_needs_root
    step "attach-start-two-keys" attach_two
    step "fido2-token-L" attached_token_list
    step "attach-second-key" attach_second_key
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
    step "dmesg-before-detach" dmesg_clean 0
    step "attach-sigterm-detaches" attach_sigterm 2
    step "attach-restart" attach_restart
    step "assert-after-restart" assert es256 '-p -v' es256 9876543 '-p -v'
    step "pin-retries-after-restart" token_info 'pin retries: 8'
    # (with one key: Firefox's library would take the touch of whichever key answers first)
    step "firefox-stack-stand-in" firefox_stack
    step "attestation-provision-hidraw" provision
    step "attestation-aaguid" token_info 'aaguid: 6f70656e6669646f2d71656d75000001'
    step "cred-batch-attestation" cred_attested
    step "attestation-second-refused" provision_again_refused
    step "attach-sigterm-again" attach_sigterm 1
    # the classic path: the host's key (touches decided there), with the usbip tool
    step "usbip-list" list
    step "usbip-attach" attach
    step "presence-denied" presence deny FIDO_ERR_OPERATION_DENIED
    step "presence-timed-out" presence timeout FIDO_ERR_USER_ACTION_TIMEOUT
    step "presence-approved" presence approve ''
    step "usbip-detach" detach
    step "usbip-reattach" attach
    step "presence-approved-after-reattach" presence approve ''
    step "dmesg-at-end" dmesg_clean 4
    step "usbip-detach-again" detach
    # uhid
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
    # the GitHub Actions recipe, every command of it
    step "recipe-prepare" recipe_prepare
    local n
    for n in $(ls /recipe/*.sh | sed 's|.*/||; s|\.sh$||'); do
        step "recipe-$n-$(tr ' ' '-' <"/recipe/$n.name" | tr -cd 'A-Za-z0-9-' | cut -c1-40)" recipe_step "$n"
    done
    step "recipe-done" recipe_done
    finish PASS
}

echo "guest: kernel $(uname -r), init at $(now) s"
run_steps </dev/null
