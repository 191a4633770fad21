//! authenticatorClientPIN (§6.5) and the pinUvAuthToken it issues.
//!
//! Wrong guesses are paid for before they are checked: the retry counter is decremented on
//! storage first, so cutting power during a check never grants a free guess. After three wrong
//! PINs in a row the key refuses PIN checks until it is power-cycled; after eight in all it
//! refuses until reset.
//!
//! The PIN itself is never stored: the store keeps a salted, slow verifier of pinHash (see
//! `store::device`). The first correct PIN of a power-up costs one KDF evaluation (and opens a
//! locked key); later ones are checked against a fast check in RAM.

use ctap_types::ctap2::client_pin::{PinV1Subcommand, Request, Response};
use heapless_bytes::Bytes;
use rand_core::Rng;
use zeroize::{Zeroize, Zeroizing};

use super::{Error, Step};
use crate::pin_protocol::{KeyAgreement, PinProtocol, SharedSecret};
use crate::platform::Platform;
use crate::store::StoreError;
use crate::store::{sha256, PinState, PIN_RETRIES};
use crate::Authenticator;

/// Wrong PINs in a row that block PIN checks until the next power-up.
const CONSECUTIVE_FAILURES_BEFORE_POWER_CYCLE: u8 = 3;
/// A token not used within this time after it was issued expires.
const TOKEN_INITIAL_USE_MS: u64 = 30_000;
/// No token outlives this.
const TOKEN_LIFETIME_MS: u64 = 10 * 60_000;
/// A touch that came with a token (built-in UV) counts for this long (userPresentTimeLimit).
const USER_PRESENT_TIME_LIMIT_MS: u64 = 30_000;
/// The longest PIN, in UTF-8 bytes.
pub(super) const MAX_PIN_BYTES: usize = 63;

/// pinUvAuthToken permissions (§6.5.5.7).
pub(crate) mod permission {
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    pub const GET_ASSERTION: u8 = 0x02;
    pub const LARGE_BLOB_WRITE: u8 = 0x10;
    pub const CREDENTIAL_MANAGEMENT: u8 = 0x04;
    pub const AUTHENTICATOR_CONFIGURATION: u8 = 0x20;
    /// CTAP 2.2 pcmr: read-only credential management with the persistent token, alone.
    pub const PERSISTENT_CREDENTIAL_MANAGEMENT_RO: u8 = 0x40;
    /// The permissions this key can grant.
    pub const SUPPORTED: u8 = MAKE_CREDENTIAL
        | GET_ASSERTION
        | CREDENTIAL_MANAGEMENT
        | LARGE_BLOB_WRITE
        | AUTHENTICATOR_CONFIGURATION
        | PERSISTENT_CREDENTIAL_MANAGEMENT_RO;
}

/// A pinUvAuthToken and the state §6.5.2.1 attaches to it.
pub(crate) struct Token {
    value: Zeroizing<[u8; 32]>,
    protocol: PinProtocol,
    permissions: u8,
    rp_id: Option<heapless::String<256>>,
    issued_ms: u64,
    used: bool,
    /// The user's touch came with the token (a finger on the built-in sensor): its first use
    /// needs no other (§6.5.2.1 userPresent).
    user_present: bool,
}

/// The PIN machinery's state in RAM: gone at power-down, as the spec wants.
#[derive(Default)]
pub(crate) struct PinRuntime {
    key_agreement: Option<KeyAgreement>,
    consecutive_failures: u8,
    token: Option<Token>,
}

impl PinRuntime {
    /// The state at power-up: the key agreement key is made now, as `initialize()` of the PIN
    /// protocols says (§6.5.5.1), so that the first getKeyAgreement does not wait for it.
    pub(crate) fn power_up<P: Platform>(platform: &mut P) -> Self {
        Self {
            key_agreement: Some(KeyAgreement::generate(platform.rng())),
            ..Self::default()
        }
    }

    /// Forget the token (PIN changed, reset).
    pub(crate) fn discard_token(&mut self) {
        self.token = None;
    }

    /// The shared secret with a platform key (hmac-secret uses the clientPIN key agreement).
    pub(crate) fn shared_secret<P: Platform>(
        &mut self,
        platform: &mut P,
        protocol: PinProtocol,
        peer: &cosey::EcdhEsHkdf256PublicKey,
    ) -> Option<SharedSecret> {
        self.key_agreement(platform).shared_secret(protocol, peer)
    }

    fn key_agreement<P: Platform>(&mut self, platform: &mut P) -> &KeyAgreement {
        self.key_agreement
            .get_or_insert_with(|| KeyAgreement::generate(platform.rng()))
    }

    fn regenerate_key_agreement<P: Platform>(&mut self, platform: &mut P) {
        self.key_agreement = Some(KeyAgreement::generate(platform.rng()));
    }

    fn blocked_until_power_cycle(&self) -> bool {
        self.consecutive_failures >= CONSECUTIVE_FAILURES_BEFORE_POWER_CYCLE
    }
}

pub(crate) fn client_pin<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
) -> Step<Response> {
    let protocol = match request.pin_protocol {
        Some(number) => {
            Some(PinProtocol::from_number(number.into()).ok_or(Error::InvalidParameter)?)
        }
        None => None,
    };
    match request.sub_command {
        PinV1Subcommand::GetRetries => get_retries(auth),
        PinV1Subcommand::GetKeyAgreement => {
            get_key_agreement(auth, protocol.ok_or(Error::MissingParameter)?)
        }
        PinV1Subcommand::SetPin => set_pin(auth, protocol.ok_or(Error::MissingParameter)?, request)
            .map(|()| Response::default()),
        PinV1Subcommand::ChangePin => {
            change_pin(auth, protocol.ok_or(Error::MissingParameter)?, request)
                .map(|()| Response::default())
        }
        PinV1Subcommand::GetPinToken => {
            if request.permissions.is_some() || request.rp_id.is_some() {
                return Err(Error::InvalidParameter.into());
            }
            let permissions = permission::MAKE_CREDENTIAL | permission::GET_ASSERTION;
            get_token(
                auth,
                protocol.ok_or(Error::MissingParameter)?,
                request,
                permissions,
                None,
            )
        }
        PinV1Subcommand::GetPinUvAuthTokenUsingPinWithPermissions => {
            let protocol = protocol.ok_or(Error::MissingParameter)?;
            let permissions = requested_permissions(request, grantable(auth))?;
            if permissions == permission::PERSISTENT_CREDENTIAL_MANAGEMENT_RO {
                return get_persistent_token(auth, protocol, request);
            }
            get_token(auth, protocol, request, permissions, request.rp_id)
        }
        // The UV subcommands exist only on a body with built-in user verification.
        PinV1Subcommand::GetPinUvAuthTokenUsingUvWithPermissions
            if auth.platform.builtin_uv().is_some() =>
        {
            let protocol = protocol.ok_or(Error::MissingParameter)?;
            // acfg needs uvAcfg and be uvBioEnroll (§6.5.5.7.3 step 4): this key has neither.
            let supported = grantable(auth) & !permission::AUTHENTICATOR_CONFIGURATION;
            let permissions = requested_permissions(request, supported)?;
            super::builtin_uv::get_token(auth, protocol, request, permissions)
        }
        PinV1Subcommand::GetUVRetries if auth.platform.builtin_uv().is_some() => {
            super::builtin_uv::get_uv_retries(auth)
        }
        _ => Err(Error::InvalidSubcommand.into()),
    }
}

/// The permissions this key can grant (§6.5.5.7.2 step 4): on a key without discoverable
/// credentials, whose getInfo has no credMgmt, largeBlobs or perCredMgmtRO, not cm, lbw or pcmr.
fn grantable<P: Platform>(auth: &Authenticator<'_, P>) -> u8 {
    if auth.profile.discoverable() {
        return permission::SUPPORTED;
    }
    permission::SUPPORTED
        & !(permission::CREDENTIAL_MANAGEMENT
            | permission::LARGE_BLOB_WRITE
            | permission::PERSISTENT_CREDENTIAL_MANAGEMENT_RO)
}

/// The permissions a token request asks for, checked (§6.5.5.7.2 and .3, steps 1 to 4): given,
/// not zero, each one `supported`, and pcmr alone (its token is another, longer-lived one).
fn requested_permissions(request: &Request<'_>, supported: u8) -> Step<u8> {
    let permissions = request.permissions.ok_or(Error::MissingParameter)?;
    if permissions == 0 {
        return Err(Error::InvalidParameter.into());
    }
    if permissions & !supported != 0 {
        return Err(Error::UnauthorizedPermission.into());
    }
    let pcmr = permission::PERSISTENT_CREDENTIAL_MANAGEMENT_RO;
    if permissions & pcmr != 0 && permissions != pcmr {
        return Err(Error::UnauthorizedPermission.into());
    }
    Ok(permissions)
}

/// getPINRetries: no touch, no PIN needed (§6.5.5.2).
fn get_retries<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<Response> {
    let pin = auth.store.pin()?;
    let mut response = Response::default();
    response.retries = Some(pin.retries);
    response.power_cycle_state = Some(auth.pin.blocked_until_power_cycle());
    Ok(response)
}

fn get_key_agreement<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    _protocol: PinProtocol,
) -> Step<Response> {
    let mut response = Response::default();
    response.key_agreement = Some(auth.pin.key_agreement(&mut auth.platform).public_key());
    Ok(response)
}

/// The shared secret with the platform's key agreement key.
pub(super) fn shared_secret<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    request: &Request<'_>,
) -> Step<SharedSecret> {
    let peer = request
        .key_agreement
        .as_ref()
        .ok_or(Error::MissingParameter)?;
    auth.pin
        .key_agreement(&mut auth.platform)
        .shared_secret(protocol, peer)
        .ok_or_else(|| Error::InvalidParameter.into())
}

fn set_pin<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    request: &Request<'_>,
) -> Step<()> {
    let new_pin_enc = request.new_pin_enc.ok_or(Error::MissingParameter)?;
    let pin_auth = request.pin_auth.ok_or(Error::MissingParameter)?;
    request
        .key_agreement
        .as_ref()
        .ok_or(Error::MissingParameter)?;
    if auth.store.pin_is_set() {
        return Err(Error::NotAllowed.into());
    }
    let shared = shared_secret(auth, protocol, request)?;
    if !protocol.verify(shared.mac_key(), &[new_pin_enc], pin_auth) {
        return Err(Error::PinAuthInvalid.into());
    }
    let (hash, code_points) = new_pin(auth, &shared, new_pin_enc)?;
    // Full retries first: a cut before the verifier is written leaves no PIN, as before.
    auth.store.save_pin(&PinState {
        retries: PIN_RETRIES,
    })?;
    let kdf = auth.config.pin_kdf;
    auth.store
        .set_pin(&hash, code_points, kdf, auth.platform.rng())?;
    Ok(())
}

fn change_pin<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    request: &Request<'_>,
) -> Step<()> {
    let new_pin_enc = request.new_pin_enc.ok_or(Error::MissingParameter)?;
    let pin_hash_enc = request.pin_hash_enc.ok_or(Error::MissingParameter)?;
    let pin_auth = request.pin_auth.ok_or(Error::MissingParameter)?;
    request
        .key_agreement
        .as_ref()
        .ok_or(Error::MissingParameter)?;
    let shared = shared_secret(auth, protocol, request)?;
    if !protocol.verify(shared.mac_key(), &[new_pin_enc, pin_hash_enc], pin_auth) {
        return Err(Error::PinAuthInvalid.into());
    }
    check_current_pin(auth, &shared, pin_hash_enc)?;
    let (hash, code_points) = new_pin(auth, &shared, new_pin_enc)?;
    // A new PIN ends every token made under the old one, the persistent one too (set_pin makes
    // a new one), and gets a new salt and verifier; a locked key's secrets are sealed again
    // under it in the same write.
    let kdf = auth.config.pin_kdf;
    auth.store
        .set_pin(&hash, code_points, kdf, auth.platform.rng())?;
    let mut settings = auth.store.settings()?;
    if settings.force_pin_change {
        settings.force_pin_change = false;
        auth.store.save_settings(&settings)?;
    }
    auth.pin.discard_token();
    Ok(())
}

fn get_token<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    request: &Request<'_>,
    permissions: u8,
    rp_id: Option<&str>,
) -> Step<Response> {
    let shared = pin_for_token(auth, protocol, request)?;
    issue_token(auth, protocol, &shared, permissions, rp_id, false)
}

/// A new pinUvAuthToken (every earlier one ends), encrypted for the platform. `user_present`:
/// the user's touch came with it (built-in UV), so its first use needs no other.
pub(super) fn issue_token<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    shared: &SharedSecret,
    permissions: u8,
    rp_id: Option<&str>,
    user_present: bool,
) -> Step<Response> {
    let mut value = Zeroizing::new([0u8; 32]);
    auth.platform.rng().fill_bytes(&mut *value);
    let rp_id = match rp_id {
        Some(id) => Some(heapless::String::try_from(id).map_err(|_| Error::InvalidParameter)?),
        None => None,
    };
    let encrypted = shared.encrypt(&*value, auth.platform.rng())?;
    auth.pin.token = Some(Token {
        value,
        protocol,
        permissions,
        rp_id,
        issued_ms: auth.platform.now_ms(),
        used: false,
        user_present,
    });
    token_response(&encrypted)
}

/// What every token request checks before any token is handed out: the request's key
/// agreement, the PIN (a retry spent first), no pending forced change. Returns the shared
/// secret to encrypt the token under.
fn pin_for_token<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    request: &Request<'_>,
) -> Step<SharedSecret> {
    let pin_hash_enc = request.pin_hash_enc.ok_or(Error::MissingParameter)?;
    request
        .key_agreement
        .as_ref()
        .ok_or(Error::MissingParameter)?;
    let shared = shared_secret(auth, protocol, request)?;
    check_current_pin(auth, &shared, pin_hash_enc)?;
    if auth.store.settings()?.force_pin_change {
        return Err(Error::PinPolicyViolation.into());
    }
    Ok(shared)
}

fn token_response(encrypted: &[u8]) -> Step<Response> {
    let mut response = Response::default();
    response.pin_token = Some(Bytes::try_from(encrypted).map_err(|_| Error::Other)?);
    Ok(response)
}

/// getPinUvAuthTokenUsingPinWithPermissions with pcmr: the PIN is checked as for any token,
/// and the answer is the persistent token, which the ordinary token's state never touches.
fn get_persistent_token<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    request: &Request<'_>,
) -> Step<Response> {
    let shared = pin_for_token(auth, protocol, request)?;
    persistent_token_response(auth, &shared)
}

/// The persistent token, made now if the PIN has none yet, encrypted for the platform. It
/// belongs to the PIN: a key without one has none to give (CTAP2_ERR_NOT_ALLOWED).
pub(super) fn persistent_token_response<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    shared: &SharedSecret,
) -> Step<Response> {
    if !auth.store.pin_is_set() {
        return Err(Error::NotAllowed.into());
    }
    let token = match auth.store.persistent_token()? {
        Some(token) => token,
        None => auth.store.renew_persistent_token(auth.platform.rng())?,
    };
    let encrypted = shared.encrypt(&token[..], auth.platform.rng())?;
    token_response(&encrypted)
}

/// pinUvAuthParam made with the persistent token, for read-only credential management.
pub(crate) fn verify_persistent_token<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    message: &[&[u8]],
    param: &[u8],
) -> Step<()> {
    if !auth.store.pin_is_set() {
        return Err(Error::PinAuthInvalid.into());
    }
    // Sealed while the key is locked: unusable until the PIN is given.
    let token = match auth.store.persistent_token() {
        Ok(Some(token)) => token,
        Ok(None) | Err(StoreError::Locked) => return Err(Error::PinAuthInvalid.into()),
        Err(error) => return Err(error.into()),
    };
    if !protocol.verify(&token, message, param) {
        return Err(Error::PinAuthInvalid.into());
    }
    Ok(())
}

/// Check pinHashEnc against the stored PIN, paying for the guess first (§6.5.5.5 step 6).
fn check_current_pin<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    shared: &SharedSecret,
    pin_hash_enc: &[u8],
) -> Step<()> {
    let mut pin = auth.store.pin()?;
    if !auth.store.pin_is_set() {
        return Err(Error::PinNotSet.into());
    }
    if pin.retries == 0 {
        return Err(Error::PinBlocked.into());
    }
    if auth.pin.blocked_until_power_cycle() {
        return Err(Error::PinAuthBlocked.into());
    }
    // Decrypted first (nothing is compared yet): a heap too full to decrypt must not cost a
    // retry.
    let presented = shared
        .decrypt(pin_hash_enc)?
        .and_then(|p| <[u8; 16]>::try_from(p.as_slice()).ok())
        .map(Zeroizing::new);
    pin.retries -= 1;
    auth.store.save_pin(&pin)?;

    let matches = match presented {
        Some(hash) => auth.store.check_pin(&hash, auth.platform.rng())?,
        None => false,
    };
    if !matches {
        auth.pin.regenerate_key_agreement(&mut auth.platform);
        auth.pin.consecutive_failures += 1;
        return Err(if pin.retries == 0 {
            Error::PinBlocked
        } else if auth.pin.blocked_until_power_cycle() {
            Error::PinAuthBlocked
        } else {
            Error::PinInvalid
        }
        .into());
    }
    auth.pin.consecutive_failures = 0;
    pin.retries = PIN_RETRIES;
    auth.store.save_pin(&pin)?;
    super::builtin_uv::pin_entered(auth)
}

/// Decrypt and check a new PIN; returns its pinHash (LEFT(SHA-256(PIN), 16)) and its length
/// in code points.
fn new_pin<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    shared: &SharedSecret,
    new_pin_enc: &[u8],
) -> Step<(Zeroizing<[u8; 16]>, u8)> {
    let padded = shared
        .decrypt(new_pin_enc)?
        .ok_or(Error::InvalidParameter)?;
    if padded.len() != 64 {
        return Err(Error::InvalidParameter.into());
    }
    let len = padded.iter().position(|&b| b == 0).unwrap_or(padded.len());
    let pin = &padded[..len];
    if padded[len..].iter().any(|&b| b != 0) || pin.len() > MAX_PIN_BYTES {
        return Err(Error::PinPolicyViolation.into());
    }
    let code_points = core::str::from_utf8(pin)
        .map_err(|_| Error::PinPolicyViolation)?
        .chars()
        .count();
    let settings = auth.store.settings()?;
    if code_points < usize::from(settings.min_pin_length) {
        return Err(Error::PinPolicyViolation.into());
    }
    if settings.pin_complexity && !super::pin_policy::complex_enough(pin) {
        return Err(Error::PinPolicyViolation.into());
    }
    let mut digest = Zeroizing::new(sha256(pin));
    let mut hash = Zeroizing::new([0u8; 16]);
    hash.copy_from_slice(&digest[..16]);
    digest.zeroize();
    Ok((hash, code_points as u8))
}

/// Which relying parties a token's use concerns, for its RP binding (§6.5.5.7).
pub(crate) enum RpScope<'a> {
    /// makeCredential / getAssertion: a bound token must match; an unbound one is bound now.
    BindTo(&'a str),
    /// Credential management of one RP (by RP ID hash): a bound token must be bound to it.
    Within(&'a [u8; 32]),
    /// Credential management across RPs: only a token bound to no RP will do.
    AllRps,
    /// authenticatorConfig: RP binding does not matter.
    Any,
}

/// Verify a pinUvAuthParam made with the current token over `message`, for `permission` in
/// `scope`. Any mismatch is PIN_AUTH_INVALID.
pub(crate) fn verify_token<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    message: &[&[u8]],
    param: &[u8],
    permission: u8,
    scope: RpScope<'_>,
) -> Step<()> {
    let now = auth.platform.now_ms();
    let token = auth.pin.token.as_mut().ok_or(Error::PinAuthInvalid)?;
    let age = now.saturating_sub(token.issued_ms);
    let expired = age > TOKEN_LIFETIME_MS || (!token.used && age > TOKEN_INITIAL_USE_MS);
    if expired {
        auth.pin.token = None;
        return Err(Error::PinAuthInvalid.into());
    }
    if token.protocol != protocol || !protocol.verify(&token.value, message, param) {
        return Err(Error::PinAuthInvalid.into());
    }
    if token.permissions & permission != permission {
        return Err(Error::PinAuthInvalid.into());
    }
    let bound = token.rp_id.as_ref().map(|id| id.as_str());
    let in_scope = match (scope, bound) {
        (RpScope::BindTo(rp_id), Some(bound)) => bound == rp_id,
        (RpScope::BindTo(rp_id), None) => {
            // The first use of an unbound token binds it to that RP (§6.1.2 step 11).
            token.rp_id = heapless::String::try_from(rp_id).ok();
            true
        }
        (RpScope::Within(hash), Some(bound)) => sha256(bound.as_bytes()) == *hash,
        (RpScope::AllRps, Some(_)) => false,
        (RpScope::Within(_) | RpScope::AllRps | RpScope::Any, None) | (RpScope::Any, Some(_)) => {
            true
        }
    };
    if !in_scope {
        return Err(Error::PinAuthInvalid.into());
    }
    token.used = true;
    Ok(())
}

/// After a makeCredential or getAssertion with the token: its mc and ga permissions are spent
/// (everything but large-blob write goes, §6.5.5.7).
pub(crate) fn consume_token<P: Platform>(auth: &mut Authenticator<'_, P>) {
    if let Some(token) = auth.pin.token.as_mut() {
        token.permissions &= permission::LARGE_BLOB_WRITE;
        token.user_present = false;
    }
}

/// getUserPresentFlagValue and clearUserPresentFlag (§6.5.2.1): did the token that verified
/// this request bring the user's touch with it? Only its first makeCredential or getAssertion
/// does, and only within userPresentTimeLimit of the touch.
pub(crate) fn take_user_present<P: Platform>(auth: &mut Authenticator<'_, P>) -> bool {
    let now = auth.platform.now_ms();
    auth.pin.token.as_mut().is_some_and(|token| {
        let recent = now.saturating_sub(token.issued_ms) <= USER_PRESENT_TIME_LIMIT_MS;
        core::mem::take(&mut token.user_present) && recent
    })
}
