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
/// bytewise): clients such as python-fido2 reject any other order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Options {
    /// Enterprise attestation: absent on a key without one provisioned, else whether enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    ep: Option<bool>,
    rk: bool,
    up: bool,
    plat: bool,
    always_uv: bool,
    cred_mgmt: bool,
    authnr_cfg: bool,
    client_pin: bool,
    large_blobs: bool,
    /// CTAP 2.2: the persistent token (pcmr) for read-only credential management.
    #[serde(rename = "perCredMgmtRO")]
    per_cred_mgmt_ro: bool,
    pin_uv_auth_token: bool,
    #[serde(rename = "setMinPINLength")]
    set_min_pin_length: bool,
    make_cred_uv_not_rqd: bool,
    credential_mgmt_preview: bool,
}

/// authenticatorGetInfo's response; each field's position is its CBOR key (from 0x01).
#[derive(SerializeIndexed)]
#[serde_indexed(offset = 1)]
pub(crate) struct Info {
    versions: Vec<&'static str, 4>,
    extensions: [&'static str; 8],
    aaguid: serde_bytes::ByteArray<16>,
    options: Options,
    max_msg_size: usize,
    pin_uv_auth_protocols: [u8; 2],
    max_credential_count_in_list: usize,
    max_credential_id_length: usize,
    transports: [&'static str; 1],
    algorithms: [PublicKeyCredentialParameters; 2],
    max_serialized_large_blob_array: usize,
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
    remaining_discoverable_credentials: usize,
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

pub(crate) fn get_info<P: Platform>(auth: &mut Authenticator<'_, P>) -> Info {
    let settings = auth.store.settings().unwrap_or_default();
    let pin_set = auth.store.pin_is_set();
    // A locked key says alwaysUv, as platforms already understand it: they ask for the PIN.
    let always_uv = settings.always_uv || auth.store.locked();
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

    let options = Options {
        ep: enterprise.then_some(settings.enterprise_attestation),
        rk: true,
        up: true,
        plat: false,
        always_uv,
        cred_mgmt: true,
        authnr_cfg: true,
        client_pin: pin_set,
        large_blobs: true,
        per_cred_mgmt_ro: true,
        pin_uv_auth_token: true,
        set_min_pin_length: true,
        make_cred_uv_not_rqd: true,
        credential_mgmt_preview: true,
    };

    Info {
        versions,
        extensions: EXTENSIONS,
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
        max_serialized_large_blob_array: MAX_LARGE_BLOB_ARRAY,
        force_pin_change: settings.force_pin_change,
        min_pin_length: settings.min_pin_length,
        firmware_version: auth.config.firmware_version,
        max_cred_blob_length: MAX_CRED_BLOB_LEN,
        max_rp_ids_for_set_min_pin_length: MAX_MIN_PIN_LENGTH_RP_IDS,
        preferred_platform_uv_attempts: None,
        uv_modality: None,
        certifications: None,
        remaining_discoverable_credentials: auth.store.remaining_resident_slots(),
        vendor_prototype_config_commands: Some(super::config::VENDOR_COMMANDS),
        attestation_formats: ["packed", "none"],
        uv_count_since_last_pin_entry: None,
        long_touch_for_reset: long_touch.then_some(settings.long_touch_for_reset),
        enc_identifier,
        transports_for_reset: ["usb"],
        // Present: the policy can be turned on; its value: whether it is.
        pin_complexity_policy: Some(settings.pin_complexity),
        pin_complexity_policy_url: None,
        max_pin_length: super::client_pin::MAX_PIN_BYTES,
        enc_cred_store_state,
        authenticator_config_commands: config_commands,
    }
}
