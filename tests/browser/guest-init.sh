#!/bin/sh
# shellcheck shell=dash # busybox ash
# /init of the browser tier's QEMU guest (tests/browser/run.sh): attach the host's virtual key
# through vhci-hcd, as `usbip attach` does on a user's machine, then start Chromium's headless
# shell with its DevTools endpoint, which QEMU forwards to the host. The host's
# Playwright script drives the browser from there; when it closes the browser, the guest ends.
# Marker lines on the serial console, parsed by the host:
#   GUEST-ATTACHED /dev/hidrawN      the key is attached and its hidraw node exists
#   BROWSER-START                    Chromium is starting
#   BROWSER-EXIT <status>            Chromium exited (closed by the host, or crashed)
#   GUEST-FAIL <reason>

export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /var/run /tmp /dev/shm
mount -t tmpfs tmpfs /dev/shm

finish() {
    sync
    reboot -f
    sleep 60
}
fail() {
    echo "GUEST-FAIL $*"
    dmesg | tail -n 20
    finish
}

PORT=""
SPKI=""
# shellcheck disable=SC2013 # the command line is words
for word in $(cat /proc/cmdline); do
    case $word in
        usbip_port=*) PORT=${word#usbip_port=} ;;
        rp_spki=*) SPKI=${word#rp_spki=} ;;
    esac
done
HOST=10.0.2.2 # QEMU's user network: the host's loopback
[ -n "$PORT" ] && [ -n "$SPKI" ] || fail "usbip_port or rp_spki missing from the kernel command line"

for module in e1000 vhci-hcd usbhid hid-generic; do
    modprobe "$module" || fail "modprobe $module"
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via "$HOST"

usbip --tcp-port "$PORT" attach -r "$HOST" -b 1-1 || fail "usbip attach"
# No udevd: Chromium finds the key by enumerating sysfs when WebAuthn first asks (there are no
# hotplug events without udevd), so the node must exist before the browser's first request.
i=0
while ! ls /dev/hidraw* >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -le 100 ] || fail "no hidraw node 10 s after usbip attach"
    sleep 0.1
done
echo "GUEST-ATTACHED $(ls /dev/hidraw*)"

# Flags: root needs --no-sandbox; no GPU; the guest's /dev/shm is small; no network beyond the
# test's (background requests to Google would only fail). The RP's host name resolves to the
# host, whose self-signed certificate the browser trusts by its key (SPKI), as it would trust
# a CA-issued one: the origin is a real https origin, so WebAuthn runs as on the real site.
echo "BROWSER-START"
# The headless shell binds DevTools to 127.0.0.1 whatever --remote-debugging-address says, and
# QEMU's forward arrives on eth0: busybox nc relays port 9223 to it, one connection at a time
# (-ll: listen again after each; Playwright holds a single WebSocket).
nc -ll -p 9223 -e nc 127.0.0.1 9222 &
LD_LIBRARY_PATH=/opt/chs /opt/chs/chromium-headless-shell \
    --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir=/tmp/profile \
    --remote-debugging-port=9222 \
    --host-resolver-rules="MAP signin.aws.amazon.com $HOST" \
    --ignore-certificate-errors-spki-list="$SPKI" \
    about:blank >/tmp/browser.log 2>&1
status=$?
echo "BROWSER-EXIT $status"
# Chromium's own complaints (dbus, GPU) are expected here; show the end for a crash.
[ "$status" -eq 0 ] || tail -n 20 /tmp/browser.log
finish
