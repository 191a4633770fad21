//! Built-in user verification (CTAP 2.1 §6.5.3): a method on the key itself, a fingerprint
//! sensor say, on a body that has one ([`Platform::builtin_uv`]; the virtual key's
//! `--uv builtin`, never the Pico).
//!
//! - getInfo's `uv` option says whether the method is enrolled; uvModality,
//!   preferredPlatformUvAttempts and uvCountSinceLastPinEntry describe it ([`Info`]).
//! - getPinUvAuthTokenUsingUvWithPermissions (§6.5.5.7.3) issues a pinUvAuthToken after a
//!   verified attempt, and getUVRetries (§6.5.5.3) reports the attempts left.
//! - makeCredential and getAssertion verify the user themselves when asked (`uv` option, or
//!   alwaysUv without a token: §6.1.2 steps 6 and 11.2, §6.2.2 steps 5 and 6.2); the finger is
//!   also the touch, so no second touch is asked.
//!
//! Every attempt, matched or not, costs one of the uvRetries on storage before its outcome is
//! acted on (as a PIN retry is spent before the PIN is compared); a match restores them. At 0
//! built-in UV is blocked, and only a correct PIN restores it (§6.5.2.2), which also starts
//! uvCountSinceLastPinEntry again. One attempt per request: maxUvAttemptsForInternalRetries is
//! 1, and the platform makes the further attempts (preferredPlatformUvAttempts).

use ctap_types::ctap2::client_pin::{Request, Response};

use super::{Error, Halt, Step};
use crate::ctaphid::KeepaliveStatus;
use crate::pin_protocol::PinProtocol;
use crate::platform::{BuiltinUv, Platform};
use crate::presence::NotGranted;
use crate::store::{UvState, UV_RETRIES};
use crate::Authenticator;

/// getInfo's preferredPlatformUvAttempts: how many times a platform should ask for a finger
/// before it falls back to the PIN (more than 1: each getPinUvAuthTokenUsingUvWithPermissions
/// makes one attempt, internalRetry being false, §6.5.5.7.3 step 6).
const PREFERRED_PLATFORM_UV_ATTEMPTS: u8 = 3;

/// Why an attempt did not verify the user (performBuiltInUv's error reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nobody put a finger on the sensor in time.
    TimedOut,
    /// The finger did not match; attempts are left.
    NoMatch,
    /// No attempts are left (uvRetries is 0).
    Blocked,
}

/// The built-in method, if the body has one.
fn method<P: Platform>(auth: &Authenticator<'_, P>) -> Option<BuiltinUv> {
    auth.platform.builtin_uv()
}

/// Is the key protected by an enrolled built-in method ("enabled", "configured")? Not while
/// the key is locked (PIN lock on, no PIN since power-up): the secrets a finger would let a
/// request use are sealed under the PIN, so only the PIN verifies then, and getInfo's `uv`
/// says false until it is given.
pub(crate) fn enabled<P: Platform>(auth: &mut Authenticator<'_, P>) -> bool {
    method(auth).is_some_and(|uv| uv.enrolled) && !auth.store.locked()
}

/// Is the key "protected by some form of user verification" (a PIN, or enrolled built-in UV)?
/// Then discoverable credentials, configuration and large-blob writes need it (§6.1.2 step 7,
/// §6.11.1, §6.10.2).
pub(crate) fn protected<P: Platform>(auth: &mut Authenticator<'_, P>) -> bool {
    auth.store.pin_is_set() || enabled(auth)
}

/// getInfo's members for built-in UV, on a body that has it.
pub(crate) struct Info {
    /// The `uv` option: enrolled.
    pub enrolled: bool,
    pub modality: u32,
    pub preferred_platform_uv_attempts: u8,
    pub uv_count_since_last_pin_entry: u32,
}

pub(crate) fn info<P: Platform>(auth: &mut Authenticator<'_, P>) -> Option<Info> {
    let uv = method(auth)?;
    let enrolled = enabled(auth);
    // Unreadable counters are reported as the worst case: many attempts since the PIN.
    let since_pin = auth.store.uv_state().map_or(u32::MAX, |s| s.since_pin);
    Some(Info {
        enrolled,
        modality: uv.modality,
        preferred_platform_uv_attempts: PREFERRED_PLATFORM_UV_ATTEMPTS,
        uv_count_since_last_pin_entry: since_pin,
    })
}

/// performBuiltInUv (one attempt): wait for the user's finger, pay for the attempt on storage,
/// then act on it. `Err(Halt::Wait)` while the sensor waits (keepalive UPNEEDED, as a
/// fingerprint key sends).
pub(crate) fn perform<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<Result<(), Failure>> {
    let mut state = auth.store.uv_state()?;
    if state.retries == 0 {
        return Ok(Err(Failure::Blocked));
    }
    let request = auth.request_digest;
    let matched = match auth.user_wait.verify(&mut auth.platform, &request) {
        Ok(matched) => matched,
        Err(NotGranted::Pending) => return Err(Halt::Wait(KeepaliveStatus::UpNeeded)),
        Err(NotGranted::Cancelled) => return Err(Error::KeepaliveCancel.into()),
        Err(NotGranted::TimedOut | NotGranted::Denied) => return Ok(Err(Failure::TimedOut)),
    };
    state.retries -= 1;
    state.since_pin = state.since_pin.saturating_add(1);
    auth.store.save_uv_state(&state)?;
    if matched {
        state.retries = UV_RETRIES;
        auth.store.save_uv_state(&state)?;
        return Ok(Ok(()));
    }
    Ok(Err(if state.retries == 0 {
        Failure::Blocked
    } else {
        Failure::NoMatch
    }))
}

/// Built-in UV inside makeCredential (§6.1.2 step 11.2) or getAssertion (§6.2.2 step 6.2):
/// the answer to a failed attempt. With a PIN the platform is told to use it instead
/// (PUAT_REQUIRED); without one, a blocked method is CTAP2_ERR_PIN_BLOCKED, as the spec names
/// it, and a finger that did not match is OPERATION_DENIED.
pub(crate) fn verify_for_command<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<()> {
    let failure = match perform(auth)? {
        Ok(()) => return Ok(()),
        Err(failure) => failure,
    };
    Err(match failure {
        Failure::TimedOut => Error::UserActionTimeout,
        _ if auth.store.pin_is_set() => Error::PinRequired,
        Failure::Blocked => Error::PinBlocked,
        Failure::NoMatch => Error::OperationDenied,
    }
    .into())
}

/// getUVRetries (§6.5.5.3): no touch, no PIN.
pub(crate) fn get_uv_retries<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<Response> {
    let mut response = Response::default();
    response.uv_retries = Some(auth.store.uv_state()?.retries);
    Ok(response)
}

/// getPinUvAuthTokenUsingUvWithPermissions (§6.5.5.7.3), steps 5 to 16; the caller checked the
/// protocol and the permissions (steps 1 to 4). `pcmr` gets the persistent token, which belongs
/// to the PIN: without one there is none to give (CTAP2_ERR_NOT_ALLOWED).
pub(crate) fn get_token<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    protocol: PinProtocol,
    request: &Request<'_>,
    permissions: u8,
) -> Step<Response> {
    request
        .key_agreement
        .as_ref()
        .ok_or(Error::MissingParameter)?;
    if !enabled(auth) {
        return Err(Error::NotAllowed.into());
    }
    if auth.store.uv_state()?.retries == 0 {
        return Err(Error::UvBlocked.into());
    }
    match perform(auth)? {
        Ok(()) => {}
        Err(Failure::TimedOut) => return Err(Error::UserActionTimeout.into()),
        Err(Failure::Blocked) => return Err(Error::UvBlocked.into()),
        Err(Failure::NoMatch) => return Err(Error::UvInvalid.into()),
    }
    // After the attempt, not at each poll of the wait: one key agreement per request.
    let shared = super::client_pin::shared_secret(auth, protocol, request)?;
    if permissions == super::client_pin::permission::PERSISTENT_CREDENTIAL_MANAGEMENT_RO {
        return super::client_pin::persistent_token_response(auth, &shared);
    }
    // The finger on the sensor was the user's touch too: the token's first use needs no other.
    super::client_pin::issue_token(auth, protocol, &shared, permissions, request.rp_id, true)
}

/// A correct PIN was entered: built-in UV is unblocked and its count since the PIN starts
/// again (§6.5.2.2). Nothing is written on a body without the method, or when nothing changes.
pub(crate) fn pin_entered<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<()> {
    if method(auth).is_none() {
        return Ok(());
    }
    let fresh = UvState::default();
    if auth.store.uv_state()? != fresh {
        auth.store.save_uv_state(&fresh)?;
    }
    Ok(())
}
