#!/usr/bin/env bash
# The core reads top-down: transport (usb, ctaphid), dispatch (authenticator), commands (ctap1,
# ctap2, vendor), state (store, credential, pin_protocol, attestation record, presence,
# platform). A lower layer never names a command layer or the Authenticator: this fails if one
# does, so a cycle cannot creep back in.
set -euo pipefail
cd "$(dirname "$0")/../authenticator/src"
lower=(ctaphid.rs usb.rs store.rs store credential.rs pin_protocol.rs platform.rs presence.rs
       attestation.rs fault.rs profile.rs)
upper='ctap1|ctap2|vendor|authenticator|Authenticator'
# `crate::ctap2::...`, `crate::Authenticator`, and the same names inside `use crate::{...}`.
pattern="crate::(${upper})\b|use crate::\{[^}]*\b(${upper})\b"
if found=$(grep -rnE "$pattern" "${lower[@]}" | grep -vE '^[^:]+:[0-9]+:\s*//'); then
    echo "check-layers: a lower layer of the core reaches up to the command layers:" >&2
    echo "$found" >&2
    exit 1
fi
echo "check-layers: no lower layer of the core imports a command layer"
