//! authenticatorGetInfo (§6.4).
//!
//! The response is this crate's own type, not ctap-types', so that every extension the key
//! supports (credBlob, minPinLength among them) can be named.

use ctap_types::webauthn::PublicKeyCredentialParameters;
use heapless::Vec;
use serde_indexed::SerializeIndexed;

use crate::credential::{EDDSA, ES256, MAX_CRED_BLOB_LEN, MAX_ID_LEN};
use crate::ctaphid::MAX_MESSAGE_SIZE;
use crate::platform::Platform;
use crate::store::{MAX_LARGE_BLOB_ARRAY, MAX_MIN_PIN_LENGTH_RP_IDS};
use crate::Authenticator;
use rand_core::Rng;
use zeroize::Zeroizing;

/// What getInfo advertises as maxCredentialCountInList: the allow list ctap-types parses.
pub const MAX_CREDENTIALS_IN_LIST: usize = ctap_types::sizes::MAX_CREDENTIAL_COUNT_IN_LIST;

/// The extensions this key supports, exactly.
const EXTENSIONS: [&str; 8] = [
    "credBlob",
    "credProtect",
    "hmac-secret",
    "largeBlobKey",
    "minPinLength",
    "hmac-secret-mc",
    "pinComplexityPolicy",
    "thirdPartyPayment",
];

/// The options map, its fields in CTAP's canonical CBOR order (shorter keys first, then
/// bytewise): clients such as python-fido2 reject any other order. An absent option is one the
/// key does not have (its profile took it away, or its body has no built-in UV).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Options {
    /// Enterprise attestation: absent on a key without one provisioned, else whether enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    ep: Option<bool>,
    rk: bool,
    up: bool,
    /// Built-in user verification: absent without one, else whether it is enrolled.
    #[serde(skip_serializing_if = "Option::is_none")]
    uv: Option<bool>,
    plat: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    always_uv: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cred_mgmt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authnr_cfg: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_pin: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    large_blobs: Option<bool>,
    /// CTAP 2.2: the persistent token (pcmr) for read-only credential management.
    #[serde(rename = "perCredMgmtRO", skip_serializing_if = "Option::is_none")]
    per_cred_mgmt_ro: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_uv_auth_token: Option<bool>,
    #[serde(rename = "setMinPINLength", skip_serializing_if = "Option::is_none")]
    set_min_pin_length: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    make_cred_uv_not_rqd: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential_mgmt_preview: Option<bool>,
}

/// authenticatorGetInfo's response; each field's position is its CBOR key (from 0x01).
#[derive(SerializeIndexed)]
#[serde_indexed(offset = 1)]
pub(crate) struct Info {
    versions: Vec<&'static str, 4>,
    extensions: Vec<&'static str, 8>,
    aaguid: serde_bytes::ByteArray<16>,
    options: Options,
    max_msg_size: usize,
    pin_uv_auth_protocols: [u8; 2],
    max_credential_count_in_list: usize,
    max_credential_id_length: usize,
    transports: [&'static str; 1],
    algorithms: [PublicKeyCredentialParameters; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_serialized_large_blob_array: Option<usize>,
    force_pin_change: bool,
    min_pin_length: u8,
    firmware_version: u32,
    max_cred_blob_length: usize,
    max_rp_ids_for_set_min_pin_length: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_platform_uv_attempts: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uv_modality: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certifications: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_discoverable_credentials: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vendor_prototype_config_commands: Option<[u64; 2]>,
    /// CTAP 2.2: the formats a platform may ask for in attestationFormatsPreference.
    attestation_formats: [&'static str; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    uv_count_since_last_pin_entry: Option<u32>,
    /// CTAP 2.2: present on a body that has a long touch; true once reset needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    long_touch_for_reset: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// CTAP 2.2: the key's identifier, encrypted under the persistent token (with a PIN set).
    enc_identifier: Option<serde_bytes::ByteArray<32>>,
    /// CTAP 2.2: authenticatorReset works over every transport the key has.
    transports_for_reset: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_complexity_policy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_complexity_policy_url: Option<serde_bytes::ByteArray<0>>,
    /// CTAP 2.2: the longest PIN accepted, in bytes of UTF-8.
    max_pin_length: usize,
    /// CTAP 2.2: the credential store's state, encrypted under the persistent token.
    #[serde(skip_serializing_if = "Option::is_none")]
    enc_cred_store_state: Option<serde_bytes::ByteArray<32>>,
    /// CTAP 2.2: the authenticatorConfig subcommands this key carries out.
    authenticator_config_commands: Vec<u8, 5>,
}

/// encIdentifier and encCredStoreState (CTAP 2.2), `None` without a PIN (no persistent token to
/// encrypt under; nothing is derived, so getInfo on a blank key writes nothing).
/// - encIdentifier: the key's 16-byte identifier, derived from the key-wrapping key, so it stays
///   until authenticatorReset and changes then, like everything else the key knew.
/// - encCredStoreState: the store's generation (see `Store::resident_generation`) bound to that
///   identifier, so a reset, which starts the generation again, never repeats a state.
///
/// Each is sealed by [`seal`]: only a platform holding the persistent token (so, once, the PIN)
/// recognises the key and knows whether its list of credentials is still current.
fn sealed_state<P: Platform>(
    auth: &mut Authenticator<'_, P>,
) -> Option<(serde_bytes::ByteArray<32>, serde_bytes::ByteArray<32>)> {
    use sha2::Digest;
    if !auth.store.pin_is_set() {
        return None;
    }
    // Sealed while the key is locked: both members are absent until the PIN is given.
    let token = auth.store.persistent_token().ok()??;
    let kwk = auth.store.kwk().ok()?;
    let mut identifier = Zeroizing::new([0u8; 16]);
    hkdf::Hkdf::<sha2::Sha256>::new(None, &kwk[..])
        .expand(b"device identifier", &mut identifier[..])
        .ok()?;
    let generation = auth.store.resident_generation().ok()?;
    let digest = sha2::Sha256::new()
        .chain_update(b"credential store state")
        .chain_update(&identifier[..])
        .chain_update(generation.to_le_bytes())
        .finalize();
    let state: [u8; 16] = digest[..16].try_into().ok()?;
    Some((
        seal(auth, &token[..], b"encIdentifier", &identifier)?,
        seal(auth, &token[..], b"encCredStoreState", &state)?,
    ))
}

/// A random IV, then `plain` under AES-128-CBC with HKDF-SHA-256(salt 32 zero bytes, the
/// persistent token, `info`).
fn seal<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    token: &[u8],
    info: &[u8],
    plain: &[u8; 16],
) -> Option<serde_bytes::ByteArray<32>> {
    use aes::cipher::{block_padding::NoPadding, BlockModeEncrypt, KeyIvInit};
    let mut key = Zeroizing::new([0u8; 16]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&[0u8; 32]), token)
        .expand(info, &mut key[..])
        .ok()?;
    let mut out = [0u8; 32];
    auth.platform.rng().fill_bytes(&mut out[..16]);
    let iv: [u8; 16] = out[..16].try_into().ok()?;
    out[16..].copy_from_slice(plain);
    cbc::Encryptor::<aes::Aes128>::new((&*key).into(), &iv.into())
        .encrypt_padded::<NoPadding>(&mut out[16..], 16)
        .ok()?;
    Some(serde_bytes::ByteArray::new(out))
}

/// A CTAP 2.0 key's getInfo (CTAP 2.0 §5.4): no member after maxMsgSize, and no
/// pinUvAuthProtocols on a key without a PIN.
#[derive(SerializeIndexed)]
#[serde_indexed(offset = 1)]
pub(crate) struct Info20 {
    versions: [&'static str; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    extensions: Option<[&'static str; 0]>,
    aaguid: serde_bytes::ByteArray<16>,
    options: Options,
    max_msg_size: usize,
}

/// getInfo's answer, appended to `response`: CTAP 2.1's (with 2.2's members), or a CTAP 2.0
/// key's (its profile).
pub(crate) fn get_info<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    response: &mut alloc::vec::Vec<u8>,
) -> super::Step<()> {
    let builtin_uv = super::builtin_uv::info(auth);
    if !auth.profile.ctap21() {
        let info = Info20 {
            versions: ["U2F_V2", "FIDO_2_0"],
            extensions: None,
            aaguid: serde_bytes::ByteArray::new(auth.aaguid()),
            options: Options {
                ep: None,
                rk: true,
                up: true,
                uv: builtin_uv.as_ref().map(|uv| uv.enrolled),
                plat: false,
                always_uv: None,
                cred_mgmt: None,
                authnr_cfg: None,
                client_pin: None,
                large_blobs: None,
                per_cred_mgmt_ro: None,
                pin_uv_auth_token: None,
                set_min_pin_length: None,
                make_cred_uv_not_rqd: None,
                credential_mgmt_preview: None,
            },
            max_msg_size: MAX_MESSAGE_SIZE,
        };
        return super::encode(response, &info);
    }
    super::encode(response, &info(auth, builtin_uv))
}

fn info<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    builtin_uv: Option<super::builtin_uv::Info>,
) -> Info {
    let settings = auth.store.settings().unwrap_or_default();
    // A locked key says alwaysUv, as platforms already understand it: they ask for the PIN.
    // So does a key whose profile requires it.
    let always_uv = auth.always_uv().unwrap_or(true);
    let discoverable = auth.profile.discoverable();
    let pin_set = auth.store.pin_is_set();
    let (enc_identifier, enc_cred_store_state) = sealed_state(auth).unzip();
    // One that cannot be read counts as none, as the batch attestation does.
    let enterprise = auth.store.has_enterprise_attestation();
    let mut config_commands = Vec::new();
    for sub_command in super::config::SUB_COMMANDS {
        if super::config::supported(auth, sub_command) {
            let _ = config_commands.push(sub_command);
        }
    }
    let long_touch = auth.platform.has_long_touch();

    let mut versions = Vec::new();
    // alwaysUv turns U2F off: it cannot verify the user (§7.2.1). Capacity 4 holds all four.
    if !always_uv {
        let _ = versions.push("U2F_V2");
    }
    let _ = versions.push("FIDO_2_0");
    // FIDO_2_1 stays for platforms that know no later version (makeCredUvNotRqd is theirs);
    // FIDO_2_3 says CTAP 2.2's additions are here too (CTAP 2.3 defines no "FIDO_2_2").
    let _ = versions.push("FIDO_2_1");
    let _ = versions.push("FIDO_2_3");

    // Without discoverable credentials, what only serves them is not there.
    let for_discoverable = discoverable.then_some(true);
    let options = Options {
        ep: enterprise.then_some(settings.enterprise_attestation),
        rk: discoverable,
        up: true,
        uv: builtin_uv.as_ref().map(|uv| uv.enrolled),
        plat: false,
        always_uv: Some(always_uv),
        cred_mgmt: for_discoverable,
        authnr_cfg: Some(true),
        client_pin: Some(pin_set),
        large_blobs: for_discoverable,
        per_cred_mgmt_ro: for_discoverable,
        pin_uv_auth_token: Some(true),
        set_min_pin_length: Some(true),
        // alwaysUv: every credential needs the user verified (§6.1.2 step 6.1).
        make_cred_uv_not_rqd: Some(!always_uv),
        credential_mgmt_preview: for_discoverable,
    };
    let extensions = EXTENSIONS
        .into_iter()
        .filter(|&name| discoverable || name != "largeBlobKey")
        .collect();

    Info {
        versions,
        extensions,
        aaguid: serde_bytes::ByteArray::new(auth.aaguid()),
        options,
        max_msg_size: MAX_MESSAGE_SIZE,
        pin_uv_auth_protocols: [2, 1],
        max_credential_count_in_list: MAX_CREDENTIALS_IN_LIST,
        max_credential_id_length: MAX_ID_LEN,
        transports: ["usb"],
        algorithms: [
            PublicKeyCredentialParameters::public_key_with_alg(ES256),
            PublicKeyCredentialParameters::public_key_with_alg(EDDSA),
        ],
        max_serialized_large_blob_array: discoverable.then_some(MAX_LARGE_BLOB_ARRAY),
        force_pin_change: settings.force_pin_change,
        min_pin_length: settings.min_pin_length,
        firmware_version: auth.config.firmware_version,
        max_cred_blob_length: MAX_CRED_BLOB_LEN,
        max_rp_ids_for_set_min_pin_length: MAX_MIN_PIN_LENGTH_RP_IDS,
        preferred_platform_uv_attempts: builtin_uv
            .as_ref()
            .map(|uv| uv.preferred_platform_uv_attempts),
        uv_modality: builtin_uv.as_ref().map(|uv| uv.modality),
        certifications: None,
        remaining_discoverable_credentials: discoverable
            .then(|| auth.store.remaining_resident_slots()),
        vendor_prototype_config_commands: Some(super::config::VENDOR_COMMANDS),
        attestation_formats: ["packed", "none"],
        uv_count_since_last_pin_entry: builtin_uv
            .as_ref()
            .map(|uv| uv.uv_count_since_last_pin_entry),
        long_touch_for_reset: long_touch.then_some(settings.long_touch_for_reset),
        enc_identifier,
        transports_for_reset: ["usb"],
        // Present: the policy can be turned on; its value: whether it is.
        pin_complexity_policy: Some(settings.pin_complexity),
        pin_complexity_policy_url: None,
        max_pin_length: super::client_pin::MAX_PIN_BYTES,
        enc_cred_store_state: enc_cred_store_state.filter(|_| discoverable),
        authenticator_config_commands: config_commands,
    }
}
