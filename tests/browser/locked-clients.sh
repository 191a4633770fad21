#!/bin/sh
# shellcheck shell=dash # busybox ash
# The browser tier's PIN-locked key met by libfido2's tools and OpenSSH, in the guest through
# the real kernel (docs/pin-lock.md, "What each client does"). guest-init.sh serves it on port
# 9225 (forwarded by QEMU) and webauthn.mjs --locked unlock=PORT connects after Chromium's
# headless shell, which has no PIN prompt, failed to sign in: the key is still locked. It
# answers the key's touches meanwhile.
#
#   locked-clients.sh PIN
#
# /owner/id and /owner/pem (run.sh, from the RP's records): the credential ID (base64) and
# public key of user `owner` at signin.aws.amazon.com, which the key made before the lock was
# turned on. Prints one "PASS|FAIL what: detail" line per check, each client's output
# indented, and last "unlocked" if the key was opened. Each PIN is fed on standard input: the
# tools read it there when the process has no controlling terminal (as tests/qemu does).
PIN=$1
DEV=$(ls /dev/hidraw*)
RP=signin.aws.amazon.com
failed=0
check() { # check OK-STATUS WHAT [DETAIL]
    if [ "$1" -eq 0 ]; then echo "PASS $2: $3"; else echo "FAIL $2: $3"; failed=1; fi
}
# show FILE: a client's output, indented, ending in a newline even when the client's last
# line (a PIN prompt) has none, so that each check line starts a line of its own.
show() { { cat "$1"; echo; } | sed 's/^/    | /'; }
# rand64: 32 random bytes, base64, for a client data hash.
rand64() { head -c 32 /dev/urandom | base64; }

# libfido2 reads getInfo: alwaysUv among the options, no U2F_V2 among the versions.
fido2-token -I "$DEV" >/tmp/info.out 2>&1
show /tmp/info.out
grep -Eq '^options: .*(^|[ ,])alwaysUv' /tmp/info.out && ! grep -q 'U2F_V2' /tmp/info.out
check $? "fido2-token -I shows alwaysUv, no U2F_V2" "$(grep -E '^(version strings|options):' /tmp/info.out | tr '\n' ' ')"

# An assertion with the owner's credential, touch only (no -v: libfido2 sends no PIN): refused.
{ rand64; echo "$RP"; cat /owner/id; } >/tmp/owner.aparam
fido2-assert -G -p -i /tmp/owner.aparam -o /tmp/owner.assert "$DEV" </dev/null >/tmp/nopin.out 2>&1
status=$?
show /tmp/nopin.out
[ "$status" -ne 0 ] && grep -q 'FIDO_ERR_PIN_REQUIRED' /tmp/nopin.out
check $? "fido2-assert -G without a PIN is refused (0x36: libfido2's FIDO_ERR_PIN_REQUIRED, CTAP 2.1's PUAT_REQUIRED)" "exit $status"

# OpenSSH: a new touch-only key (no -O verify-required) on the locked key, no PIN to give.
rm -f /tmp/id_locked /tmp/id_locked.pub
ssh-keygen -q -t ecdsa-sk -N '' -C locked -f /tmp/id_locked </dev/null >/tmp/ssh-nopin.out 2>&1
status=$?
show /tmp/ssh-nopin.out
[ "$status" -ne 0 ]
check $? "ssh-keygen -t ecdsa-sk with no PIN to give fails" "exit $status, $(tail -n 1 /tmp/ssh-nopin.out)"

# The same, with the PIN on standard input: OpenSSH asks for it and the key is made.
printf '%s\n' "$PIN" | ssh-keygen -q -t ecdsa-sk -N '' -C locked -f /tmp/id_locked >/tmp/ssh-pin.out 2>&1
status=$?
show /tmp/ssh-pin.out
[ "$status" -eq 0 ] && [ -s /tmp/id_locked.pub ]
check $? "ssh-keygen -t ecdsa-sk asks for the PIN and makes the key" "exit $status"

# The key is open now (the PIN opened it until power-off): libfido2's assertion with the PIN
# (-v) and without it both sign; each is verified with the owner's public key.
{ rand64; echo "$RP"; cat /owner/id; } >/tmp/owner.aparam
printf '%s\n' "$PIN" | fido2-assert -G -p -v -i /tmp/owner.aparam -o /tmp/owner.assert "$DEV" >/tmp/pin.out 2>&1 &&
    head -n 4 /tmp/owner.assert >/tmp/owner.vparam &&
    fido2-assert -V -p -v -i /tmp/owner.vparam /owner/pem es256 >>/tmp/pin.out 2>&1
check $? "fido2-assert -G -v with the PIN signs, UV set, verified" "$(tail -n 1 /tmp/pin.out)"
{ rand64; echo "$RP"; cat /owner/id; } >/tmp/owner.aparam
fido2-assert -G -p -i /tmp/owner.aparam -o /tmp/owner.assert "$DEV" </dev/null >/tmp/open.out 2>&1 &&
    head -n 4 /tmp/owner.assert >/tmp/owner.vparam &&
    fido2-assert -V -p -i /tmp/owner.vparam /owner/pem es256 >>/tmp/open.out 2>&1
check $? "then fido2-assert -G without a PIN signs too, verified" "$(tail -n 1 /tmp/open.out)"

# OpenSSH signs with the touch-only key, no PIN asked, and the signature verifies.
echo "hello from the locked key" >/tmp/message
rm -f /tmp/message.sig
ssh-keygen -Y sign -f /tmp/id_locked -n file /tmp/message </dev/null >/tmp/sign.out 2>&1 &&
    echo "owner $(cat /tmp/id_locked.pub)" >/tmp/allowed_signers &&
    ssh-keygen -Y verify -f /tmp/allowed_signers -I owner -n file -s /tmp/message.sig </tmp/message >>/tmp/sign.out 2>&1
check $? "ssh-keygen -Y sign with the touch-only key, verified" "$(tail -n 1 /tmp/sign.out)"

[ "$failed" -eq 0 ] && echo unlocked
