//! Personas: the kinds of security key a relying party meets in the field, each a coherent
//! subset of what this key does, so that an RP's tests can meet them all with one key (the
//! virtual key's `--profile`; the Pico is always [`Profile::Full`]).
//!
//! A profile only takes away: it never changes how what remains behaves. What each one
//! answers is what the specification asks of such a key:
//! - [`Profile::U2fOnly`]: a FIDO U2F key. CTAPHID INIT leaves the CBOR capability clear and
//!   CTAPHID_CBOR is ERR_INVALID_CMD (CTAP 2.1 §11.2.9.1.3), so platforms speak U2F to it.
//! - [`Profile::Ctap20NoPin`]: a CTAP 2.0 key without a PIN. getInfo has CTAP 2.0's members only
//!   (versions U2F_V2 and FIDO_2_0, no clientPin option, no pinUvAuthProtocols, no extensions);
//!   CTAP 2.1's commands (clientPIN among them, which a key without a PIN does not have) are
//!   CTAP1_ERR_INVALID_COMMAND, extensions and CTAP 2.1 parameters are ignored, and a
//!   pinUvAuthParam is CTAP2_ERR_PIN_AUTH_INVALID (CTAP 2.0 §5.1 step 4).
//! - [`Profile::NoRk`]: no discoverable credentials. getInfo's `rk` is false and what only
//!   serves them is gone (credential management, large blobs, largeBlobKey, the remaining
//!   count); makeCredential with `rk` is CTAP2_ERR_UNSUPPORTED_OPTION, and a getAssertion
//!   without an allow list finds nothing.
//! - [`Profile::AlwaysUv`]: alwaysUv on for good, as on keys built to require it (CTAP 2.1
//!   §7.2): toggleAlwaysUv cannot turn it off (CTAP2_ERR_OPERATION_DENIED), U2F is off and
//!   makeCredUvNotRqd is false.

/// What kind of key this one presents itself as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// Everything this key does.
    #[default]
    Full,
    /// FIDO U2F only: CTAPHID without CBOR.
    U2fOnly,
    /// CTAP 2.0 (and U2F) without a PIN.
    Ctap20NoPin,
    /// No discoverable credentials.
    NoRk,
    /// alwaysUv, which cannot be turned off.
    AlwaysUv,
}

impl Profile {
    /// Does the key speak CTAP2 (CTAPHID_CBOR) at all?
    pub fn speaks_cbor(self) -> bool {
        self != Profile::U2fOnly
    }

    /// Does the key have CTAP 2.1's features: clientPIN, tokens, the 2.1 commands, extensions?
    pub fn ctap21(self) -> bool {
        self != Profile::Ctap20NoPin
    }

    /// Does the key store discoverable credentials?
    pub fn discoverable(self) -> bool {
        self != Profile::NoRk
    }

    /// Is alwaysUv on whatever the settings say, and for good?
    pub fn forces_always_uv(self) -> bool {
        self == Profile::AlwaysUv
    }
}
