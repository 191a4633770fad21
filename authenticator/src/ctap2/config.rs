//! authenticatorConfig (§6.11): enterprise attestation, alwaysUv, the minimum PIN length,
//! (CTAP 2.2) longTouchForReset, and, as vendorPrototype commands, the PIN lock.

use serde_indexed::{DeserializeIndexed, SerializeIndexed};

use super::client_pin::{permission, verify_token, RpScope};
use super::{parse, to_cbor, Error, Step};
use crate::pin_protocol::PinProtocol;
use crate::platform::Platform;
use crate::store::{Settings, MAX_MIN_PIN_LENGTH_RP_IDS};
use crate::Authenticator;

pub(super) const ENABLE_ENTERPRISE_ATTESTATION: u8 = 0x01;
pub(super) const TOGGLE_ALWAYS_UV: u8 = 0x02;
pub(super) const SET_MIN_PIN_LENGTH: u8 = 0x03;
pub(super) const ENABLE_LONG_TOUCH_FOR_RESET: u8 = 0x04;
/// vendorPrototype (§6.11.4): the subcommand of vendor commands, named by `vendorCommandId`.
pub(super) const VENDOR_PROTOTYPE: u8 = 0xFF;
/// vendorCommandId "LOCK" (ASCII): turn the PIN lock on. From then on, while a PIN is set, the
/// device secrets are sealed under the PIN, and after power-up the key is locked until the
/// first correct PIN (see `store::device`).
pub(crate) const PIN_LOCK_ON: u64 = 0x4C4F_434B;
/// vendorCommandId "OPEN" (ASCII): turn the PIN lock off; the secrets are kept in the clear.
pub(crate) const PIN_LOCK_OFF: u64 = 0x4F50_454E;
/// getInfo's vendorPrototypeConfigCommands.
pub(super) const VENDOR_COMMANDS: [u64; 2] = [PIN_LOCK_ON, PIN_LOCK_OFF];
/// Every subcommand this crate knows, in getInfo's order.
pub(super) const SUB_COMMANDS: [u8; 5] = [
    ENABLE_ENTERPRISE_ATTESTATION,
    TOGGLE_ALWAYS_UV,
    SET_MIN_PIN_LENGTH,
    ENABLE_LONG_TOUCH_FOR_RESET,
    VENDOR_PROTOTYPE,
];

/// The most RP IDs parsed from a request; more than [`MAX_MIN_PIN_LENGTH_RP_IDS`] is refused.
const PARSED_RP_IDS: usize = 8;

#[derive(DeserializeIndexed)]
#[serde_indexed(offset = 1)]
struct Request<'a> {
    sub_command: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_command_params: Option<SubCommandParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_uv_auth_protocol: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_uv_auth_param: Option<&'a serde_bytes::Bytes>,
}

/// setMinPINLength's parameters, or vendorPrototype's (key 1 alone). Serialized again
/// (canonical CBOR, as clients send it) to check the pinUvAuthParam over them.
#[derive(SerializeIndexed, DeserializeIndexed)]
#[serde_indexed(offset = 1)]
struct SubCommandParams {
    /// setMinPINLength's newMinPINLength (at most 255), or vendorPrototype's vendorCommandId.
    #[serde(skip_serializing_if = "Option::is_none")]
    new_min_pin_length_or_vendor_command_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_pin_length_rp_ids: Option<heapless::Vec<heapless::String<256>, PARSED_RP_IDS>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    force_change_pin: Option<bool>,
    /// CTAP 2.2: turn the PIN complexity policy on (false changes nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_complexity_policy: Option<bool>,
}

pub(crate) fn config<P: Platform>(auth: &mut Authenticator<'_, P>, payload: &[u8]) -> Step<()> {
    let request: Request<'_> = parse(payload)?;
    // §6.11 step 2, before any PIN/UV auth: a subcommand this key does not have is
    // CTAP1_ERR_INVALID_PARAMETER (not CTAP2_ERR_INVALID_SUBCOMMAND, which is credential
    // management's and clientPIN's answer).
    if !supported(auth, request.sub_command) {
        return Err(Error::InvalidParameter.into());
    }
    // newMinPINLength is a u8: a larger number is the wrong type, as when it was parsed as one.
    let first = request
        .sub_command_params
        .as_ref()
        .and_then(|p| p.new_min_pin_length_or_vendor_command_id);
    let new_min_pin_length = match (request.sub_command, first) {
        (SET_MIN_PIN_LENGTH, Some(n)) => {
            Some(u8::try_from(n).map_err(|_| Error::CborUnexpectedType)?)
        }
        _ => None,
    };
    authorize(auth, &request)?;
    match request.sub_command {
        TOGGLE_ALWAYS_UV => toggle_always_uv(auth),
        SET_MIN_PIN_LENGTH => set_min_pin_length(
            auth,
            new_min_pin_length,
            request.sub_command_params.as_ref(),
        ),
        ENABLE_ENTERPRISE_ATTESTATION => enable_enterprise_attestation(auth),
        ENABLE_LONG_TOUCH_FOR_RESET => enable_long_touch_for_reset(auth),
        VENDOR_PROTOTYPE => vendor_prototype(auth, first),
        _ => Err(Error::InvalidParameter.into()),
    }
}

/// toggleAlwaysUv (§6.11.3): on a key whose profile requires alwaysUv it cannot be turned off
/// (CTAP2_ERR_OPERATION_DENIED, §7.2).
fn toggle_always_uv<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<()> {
    if auth.profile.forces_always_uv() {
        return Err(Error::OperationDenied.into());
    }
    let mut settings = auth.store.settings()?;
    settings.always_uv = !settings.always_uv;
    auth.store.save_settings(&settings)?;
    Ok(())
}

/// The subcommands this key carries out now: what getInfo's authenticatorConfigCommands lists.
pub(super) fn supported<P: Platform>(auth: &mut Authenticator<'_, P>, sub_command: u8) -> bool {
    match sub_command {
        TOGGLE_ALWAYS_UV | SET_MIN_PIN_LENGTH | VENDOR_PROTOTYPE => true,
        // One that cannot be read counts as none, as the batch attestation does.
        ENABLE_ENTERPRISE_ATTESTATION => auth.store.has_enterprise_attestation(),
        ENABLE_LONG_TOUCH_FOR_RESET => auth.platform.has_long_touch(),
        _ => false,
    }
}

/// vendorPrototype (§6.11.4): the PIN lock, on or off (see [`PIN_LOCK_ON`]). Like every
/// subcommand it needs a token with the acfg permission once a PIN is set, so turning the lock
/// on or off with a PIN set proves this power-up's correct PIN, whose key seals (or unseals)
/// the secrets in the same vault write. Without a PIN it only sets the switch: the secrets are
/// sealed when a PIN is set. Another vendorCommandId is CTAP1_ERR_INVALID_PARAMETER.
fn vendor_prototype<P: Platform>(auth: &mut Authenticator<'_, P>, id: Option<u64>) -> Step<()> {
    let on = match id.ok_or(Error::MissingParameter)? {
        PIN_LOCK_ON => true,
        PIN_LOCK_OFF => false,
        _ => return Err(Error::InvalidParameter.into()),
    };
    auth.store.set_lock(on, auth.platform.rng())?;
    Ok(())
}

/// enableLongTouchForReset (CTAP 2.2): from now on authenticatorReset needs a long touch (the
/// button held for `platform::LONG_TOUCH_MS`), so that a touch given by habit cannot wipe the
/// key. Only a body with a long touch has the subcommand (getInfo then has longTouchForReset
/// and lists 0x04 in authenticatorConfigCommands; see [`supported`]). There is no subcommand to
/// turn it off: enabling an enabled key changes nothing and succeeds, and only
/// authenticatorReset (itself with the long touch) returns the key to its factory setting, off.
fn enable_long_touch_for_reset<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<()> {
    switch_on(auth, |settings| &mut settings.long_touch_for_reset)
}

/// enableEnterpriseAttestation (§6.11.2, §7.1): only a key with an enterprise attestation
/// provisioned has the subcommand (getInfo then lists it in authenticatorConfigCommands and has
/// the `ep` option); on any other key it is a subcommand the key does not support (see
/// [`supported`]). Enabling an enabled key changes nothing and succeeds. It stays enabled
/// across power cycles until authenticatorReset, which disables it (the settings file goes).
fn enable_enterprise_attestation<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<()> {
    switch_on(auth, |settings| &mut settings.enterprise_attestation)
}

/// Turn a setting on, writing the settings only if it was off (a subcommand sent again costs
/// no flash write).
fn switch_on<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    setting: fn(&mut Settings) -> &mut bool,
) -> Step<()> {
    let mut settings = auth.store.settings()?;
    if !*setting(&mut settings) {
        *setting(&mut settings) = true;
        auth.store.save_settings(&settings)?;
    }
    Ok(())
}

/// A key with a PIN, enrolled built-in UV or alwaysUv takes configuration only with an acfg
/// token (§6.11.1).
fn authorize<P: Platform>(auth: &mut Authenticator<'_, P>, request: &Request<'_>) -> Step<()> {
    let protected = super::builtin_uv::protected(auth) || auth.always_uv()?;
    let Some(param) = request.pin_uv_auth_param else {
        return if protected {
            Err(Error::PinRequired.into())
        } else {
            Ok(())
        };
    };
    let protocol = request
        .pin_uv_auth_protocol
        .ok_or(Error::MissingParameter)?;
    let protocol = PinProtocol::from_number(protocol).ok_or(Error::InvalidParameter)?;
    let params = match &request.sub_command_params {
        Some(params) => to_cbor(params)?,
        None => alloc::vec::Vec::new(),
    };
    let message: [&[u8]; 4] = [
        &[0xff; 32],
        &[super::command::CONFIG],
        &[request.sub_command],
        &params,
    ];
    verify_token(
        auth,
        protocol,
        &message,
        param,
        permission::AUTHENTICATOR_CONFIGURATION,
        RpScope::Any,
    )
}

fn set_min_pin_length<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    new_min_pin_length: Option<u8>,
    params: Option<&SubCommandParams>,
) -> Step<()> {
    let mut settings = auth.store.settings()?;
    let new_length = new_min_pin_length.unwrap_or(settings.min_pin_length);
    if new_length < settings.min_pin_length {
        return Err(Error::PinPolicyViolation.into());
    }
    let code_points = auth.store.pin_code_points();
    let force = params.and_then(|p| p.force_change_pin).unwrap_or(false);
    if force && code_points.is_none() {
        return Err(Error::PinNotSet.into());
    }
    if let Some(rp_ids) = params.and_then(|p| p.min_pin_length_rp_ids.as_ref()) {
        if rp_ids.len() > MAX_MIN_PIN_LENGTH_RP_IDS {
            return Err(Error::PinPolicyViolation.into());
        }
        settings.min_pin_length_rp_ids = rp_ids.iter().cloned().collect();
    }
    settings.min_pin_length = new_length;
    // Only a hash of the current PIN is kept, so whether it meets the complexity policy cannot
    // be known: turning the policy on asks for a new PIN, as a longer minimum does.
    let complexity_now =
        params.and_then(|p| p.pin_complexity_policy) == Some(true) && !settings.pin_complexity;
    if complexity_now {
        settings.pin_complexity = true;
    }
    if code_points.is_some_and(|n| force || n < new_length || complexity_now) {
        settings.force_pin_change = true;
        // A forced change ends the persistent token now, not when the PIN finally changes.
        auth.store.renew_persistent_token(auth.platform.rng())?;
    }
    auth.store.save_settings(&settings)?;
    Ok(())
}
