#!/bin/sh
# shellcheck shell=dash # busybox ash
# /init of the browser tier's QEMU guest (tests/browser/run.sh): attach the host's virtual key
# through vhci-hcd, as `usbip attach` does on a user's machine, then start the browser the
# kernel command line names (browser=chromium: Chromium's headless shell, DevTools protocol;
# browser=firefox: Firefox ESR headless, WebDriver BiDi) with its remote endpoint relayed to a
# port QEMU forwards to the host. The host's script (webauthn.mjs) drives the browser from
# there; when it closes the browser, the guest ends.
# Marker lines on the serial console, parsed by the host:
#   GUEST-ATTACHED /dev/hidrawN      the key is attached and its hidraw node exists
#   BROWSER-START <engine>           the browser is starting
#   BROWSER-EXIT <status>            it exited (closed by the host, or crashed)
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
BROWSER=""
PIN=""
# shellcheck disable=SC2013 # the command line is words
for word in $(cat /proc/cmdline); do
    case $word in
        usbip_port=*) PORT=${word#usbip_port=} ;;
        rp_port=*) RP_PORT=${word#rp_port=} ;;
        rp_spki=*) SPKI=${word#rp_spki=} ;;
        browser=*) BROWSER=${word#browser=} ;;
        webauthn_pin=*) PIN=${word#webauthn_pin=} ;; # what the "user" types at Firefox's prompt
    esac
done
HOST=10.0.2.2 # QEMU's user network: the host's loopback
[ -n "$PORT" ] && [ -n "$RP_PORT" ] && [ -n "$SPKI" ] && [ -n "$BROWSER" ] ||
    fail "usbip_port, rp_port, rp_spki or browser missing from the kernel command line"

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

# The site is https://signin.aws.amazon.com, port 443, as the real one: its name resolves to
# the guest itself (Chromium is also told so by --host-resolver-rules), where busybox nc relays
# each connection on :443 to the RP on the host (-ll -e: a child per connection, so the
# browser's parallel connections are served at once; TLS passes through untouched).
printf "127.0.0.1 localhost\n127.0.0.1 signin.aws.amazon.com\n" >/etc/hosts
echo "hosts: files" >/etc/nsswitch.conf
nc -ll -p 443 -e nc "$HOST" "$RP_PORT" &

# The PIN lock: a browser without a PIN prompt (Chromium's headless shell) cannot open a locked
# key. On port 9225 (forwarded by QEMU; webauthn.mjs --locked unlock=PORT) libfido2's tools and
# OpenSSH meet the locked key, then give the PIN, as that browser's user would with another
# client (/opt/locked-clients.sh, put there by run.sh); the key stays open until power-off.
printf '#!/bin/sh\nexec /opt/locked-clients.sh %s 2>&1\n' "$PIN" >/tmp/locked-clients
chmod 0755 /tmp/locked-clients
nc -ll -p 9225 -e /tmp/locked-clients &

# Both browsers bind their remote endpoint to 127.0.0.1 only (the headless shell ignores
# --remote-debugging-address), and QEMU's forward arrives on eth0: busybox nc relays port 9223
# to it, one connection at a time (-ll: listen again after each; the drivers hold one WebSocket).
nc -ll -p 9223 -e nc 127.0.0.1 9222 &
echo "BROWSER-START $BROWSER"
case $BROWSER in
chromium)
    # Root needs --no-sandbox; no GPU; the guest's /dev/shm is small; no network beyond the
    # test's (background requests to Google would only fail). The RP's self-signed certificate
    # is trusted by its key (SPKI), as a CA-issued one would be: the origin is a real https
    # origin, so WebAuthn runs as on the real site.
    LD_LIBRARY_PATH=/opt/chs /opt/chs/chromium-headless-shell \
        --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir=/tmp/profile \
        --remote-debugging-port=9222 \
        --host-resolver-rules="MAP signin.aws.amazon.com 127.0.0.1" \
        --ignore-certificate-errors-spki-list="$SPKI" \
        about:blank >/tmp/browser.log 2>&1
    ;;
firefox)
    # The RP's CA comes in through an enterprise policy (/opt/firefox/distribution, put there
    # by run.sh); Firefox refuses WebAuthn on a site whose certificate error was overridden.
    # run.sh also puts the autoconfig script there that plays the user at the PIN prompt.
    # Prefs: USB security keys on, direct attestation without the consent prompt (a headless
    # browser has no one to answer it), nothing fetched from Mozilla.
    mkdir -p /tmp/profile
    cat >/tmp/profile/user.js <<'PREFS'
user_pref("security.webauth.webauthn_enable_usbtoken", true);
user_pref("security.webauthn.always_allow_direct_attestation", true);
user_pref("remote.active-protocols", 1);
user_pref("app.update.enabled", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("browser.safebrowsing.update.enabled", false);
user_pref("extensions.update.enabled", false);
PREFS
    # The PIN the "user" types (/opt/firefox/webauthn-user.cfg answers the prompts).
    echo "user_pref(\"webauthn.test.pin\", \"$PIN\");" >>/tmp/profile/user.js
    # Root in a guest without user namespaces: the content sandboxes cannot start.
    MOZ_DISABLE_CONTENT_SANDBOX=1 MOZ_DISABLE_GMP_SANDBOX=1 MOZ_DISABLE_RDD_SANDBOX=1 \
        MOZ_DISABLE_SOCKET_PROCESS_SANDBOX=1 MOZ_DISABLE_UTILITY_SANDBOX=1 \
        LD_LIBRARY_PATH=/opt/firefox:/opt/firefox/lib /opt/firefox/firefox-esr \
        --headless --no-remote --profile /tmp/profile --remote-debugging-port 9222 \
        about:blank >/tmp/browser.log 2>&1
    ;;
*) fail "unknown browser $BROWSER" ;;
esac
status=$?
echo "BROWSER-EXIT $status"
# The browsers' own complaints (dbus, GPU) are expected here; show the end for a crash.
[ "$status" -eq 0 ] || tail -n 20 /tmp/browser.log
finish
