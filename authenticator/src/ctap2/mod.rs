//! CTAP2: the CBOR commands (CTAP 2.1 §6).
//!
//! Each command parses its request with ctap-types, runs, and either answers or halts: with an
//! error status, or to wait for the user ([`Halt::Wait`]), in which case CTAPHID calls it again
//! with the same request later. Commands make no lasting change before their last wait.

mod builtin_uv;
mod client_pin;
mod config;
mod credential_management;
mod get_assertion;
mod get_info;
mod hmac_secret;
mod large_blobs;
mod make_credential;
mod pin_policy;

use alloc::vec::Vec;

pub use ctap_types::ctap2::Error;
use serde::Serialize;

use crate::ctaphid::{KeepaliveStatus, Outcome};
use crate::fallible::{self, OutOfMemory};
use crate::pin_protocol::PinProtocol;
use crate::platform::Platform;
use crate::presence::NotGranted;
use crate::profile::Profile;
use crate::store::StoreError;
use crate::Authenticator;

pub(crate) use client_pin::PinRuntime;
pub(crate) use credential_management::Enumeration;
pub(crate) use get_assertion::PendingAssertions;
pub(crate) use large_blobs::PendingWrite;

/// CTAP2 command bytes.
mod command {
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    pub const GET_ASSERTION: u8 = 0x02;
    pub const GET_INFO: u8 = 0x04;
    pub const CLIENT_PIN: u8 = 0x06;
    pub const RESET: u8 = 0x07;
    pub const GET_NEXT_ASSERTION: u8 = 0x08;
    pub const CREDENTIAL_MANAGEMENT: u8 = 0x0A;
    pub const SELECTION: u8 = 0x0B;
    pub const LARGE_BLOBS: u8 = 0x0C;
    pub const CONFIG: u8 = 0x0D;
    /// The CTAP 2.1 preview of credentialManagement, which libfido2 still sends.
    pub const CREDENTIAL_MANAGEMENT_PREVIEW: u8 = 0x41;
}

/// The largest response body we produce (getInfo, an attestation object with a certificate).
const MAX_RESPONSE: usize = 3072;

/// Why a command stopped before answering successfully.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Halt {
    /// Waiting: CTAPHID keeps the channel alive and calls again.
    Wait(KeepaliveStatus),
    /// Finished with an error status.
    Fail(Error),
}

impl From<Error> for Halt {
    fn from(error: Error) -> Self {
        Halt::Fail(error)
    }
}

impl From<OutOfMemory> for Halt {
    fn from(_: OutOfMemory) -> Self {
        Halt::Fail(Error::Other)
    }
}

impl From<StoreError> for Halt {
    fn from(error: StoreError) -> Self {
        Halt::Fail(match error {
            StoreError::Full => Error::KeyStoreFull,
            StoreError::Filesystem(_) | StoreError::Io | StoreError::OutOfMemory => Error::Other,
            // A locked key's secrets open with the PIN: what alwaysUv answers without a token.
            StoreError::Locked => Error::PinRequired,
            StoreError::VaultUnreadable => VAULT_UNREADABLE,
        })
    }
}

/// What a key whose vault is unreadable (see `Store::refused`) answers every request but
/// getInfo, selection and authenticatorReset with: CTAP2_ERR_VENDOR_FIRST (0xF0). The spec
/// (§8.2) keeps 0xF0..=0xFF for errors a vendor defines, and this one is ours: the state the
/// owner's credentials need is gone until a reset. It is not CTAP1_ERR_OTHER (0x7F), which this
/// key also answers for a full heap or a flash error that the next request may not meet, so a
/// client or a script can tell "reset this key" from "try again". 0xF0 is the vendor code
/// clients name (python-fido2 `CtapError.ERR.VENDOR_FIRST`, Chromium `kCtap2ErrVendorFirst`);
/// one that knows none treats it as any failure. See docs/pin-lock.md.
pub(crate) const VAULT_UNREADABLE: Error = Error::VendorFirst;

impl From<NotGranted> for Halt {
    fn from(refusal: NotGranted) -> Self {
        match refusal {
            NotGranted::Pending => Halt::Wait(KeepaliveStatus::UpNeeded),
            NotGranted::Denied => Halt::Fail(Error::OperationDenied),
            NotGranted::Cancelled => Halt::Fail(Error::KeepaliveCancel),
            NotGranted::TimedOut => Halt::Fail(Error::UserActionTimeout),
        }
    }
}

pub(crate) type Step<T> = Result<T, Halt>;

/// Run one CTAP2 request (command byte, then CBOR) and write the status byte and CBOR body.
// Never inlined: CTAPHID reaches it from two places (a new request, a waiting one polled
// again), and the Pico's firmware measured 19 KB larger when LLVM copied it into both.
#[inline(never)]
pub(crate) fn handle<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &[u8],
    response: &mut Vec<u8>,
) -> Outcome {
    let Some((&command, payload)) = request.split_first() else {
        response.push(Error::InvalidLength as u8);
        return Outcome::Done;
    };
    // getNextAssertion must directly follow getAssertion: anything else ends the series.
    if command != command::GET_NEXT_ASSERTION {
        auth.pending_assertions = None;
    }
    // Likewise a credential management enumeration ends with any other command.
    if command != command::CREDENTIAL_MANAGEMENT
        && command != command::CREDENTIAL_MANAGEMENT_PREVIEW
    {
        auth.enumeration = None;
    }
    // Room for the whole answer before the command runs: one that changes what is stored must
    // not fail afterwards for want of memory, leaving a change the platform was told failed.
    if response.try_reserve(1 + MAX_RESPONSE).is_err() {
        // Authenticator::call left room for a status byte (MIN_RESPONSE_ROOM).
        response.push(Error::Other as u8);
        return Outcome::Done;
    }
    response.push(Error::Success as u8);
    let result = match command {
        _ if !has_command(auth.profile, command) => Err(Halt::Fail(Error::InvalidCommand)),
        _ if auth.store.refused() && !serves_while_refused(command) => {
            Err(Halt::Fail(VAULT_UNREADABLE))
        }
        command::GET_INFO => get_info::get_info(auth, response),
        command::MAKE_CREDENTIAL => parse(payload)
            .and_then(|r| make_credential::make_credential(auth, &r))
            .and_then(|r| encode(response, &r)),
        command::GET_ASSERTION => parse(payload)
            .and_then(|r| get_assertion::get_assertion(auth, &r))
            .and_then(|r| encode(response, &r)),
        command::GET_NEXT_ASSERTION => {
            get_assertion::get_next_assertion(auth).and_then(|r| encode(response, &r))
        }
        command::CLIENT_PIN => parse(payload)
            .and_then(|r| client_pin::client_pin(auth, &r))
            .and_then(|r| encode(response, &r)),
        command::CREDENTIAL_MANAGEMENT | command::CREDENTIAL_MANAGEMENT_PREVIEW => parse(payload)
            .and_then(|r| credential_management::credential_management(auth, &r))
            .and_then(|r| encode(response, &r)),
        command::LARGE_BLOBS => parse(payload)
            .and_then(|r| large_blobs::large_blobs(auth, &r))
            .and_then(|r| r.map_or(Ok(()), |r| encode(response, &r))),
        command::CONFIG => config::config(auth, payload),
        command::RESET => reset(auth),
        command::SELECTION => auth.user_presence(),
        _ => Err(Halt::Fail(Error::InvalidCommand)),
    };
    match result {
        Ok(()) => {}
        Err(Halt::Wait(status)) => {
            response.clear();
            return Outcome::Waiting(status);
        }
        Err(Halt::Fail(error)) => {
            response.clear();
            response.push(error as u8);
        }
    }
    Outcome::Done
}

/// The commands a key whose vault is unreadable still answers: it shows itself (getInfo), can
/// be picked among several (selection) and reset, the way out; nothing that reads or writes
/// what the owner stored.
fn serves_while_refused(command: u8) -> bool {
    matches!(
        command,
        command::GET_INFO | command::SELECTION | command::RESET
    )
}

/// Does a key of `profile` have `command`? A CTAP 2.0 key has CTAP 2.0's commands only (and,
/// without a PIN, not clientPIN); a key without discoverable credentials has nothing that only
/// serves them; a U2F key has none at all.
fn has_command(profile: Profile, command: u8) -> bool {
    use command::*;
    match profile {
        Profile::Full | Profile::AlwaysUv => true,
        Profile::U2fOnly => false,
        Profile::Ctap20NoPin => matches!(
            command,
            MAKE_CREDENTIAL | GET_ASSERTION | GET_INFO | RESET | GET_NEXT_ASSERTION
        ),
        Profile::NoRk => !matches!(
            command,
            CREDENTIAL_MANAGEMENT | CREDENTIAL_MANAGEMENT_PREVIEW | LARGE_BLOBS
        ),
    }
}

/// Decode a request, mapping CBOR problems to the spec's status codes.
fn parse<'de, T: serde::Deserialize<'de>>(payload: &'de [u8]) -> Step<T> {
    cbor_smol::cbor_deserialize(payload).map_err(|error| {
        Halt::Fail(match error {
            cbor_smol::Error::SerdeMissingField => Error::MissingParameter,
            cbor_smol::Error::DeserializeBadMajor
            | cbor_smol::Error::DeserializeBadBool
            | cbor_smol::Error::DeserializeBadI8
            | cbor_smol::Error::DeserializeBadI16
            | cbor_smol::Error::DeserializeBadI32
            | cbor_smol::Error::DeserializeBadI64
            | cbor_smol::Error::DeserializeBadU8
            | cbor_smol::Error::DeserializeBadU16
            | cbor_smol::Error::DeserializeBadU32 => Error::CborUnexpectedType,
            _ => Error::InvalidCbor,
        })
    })
}

/// `value`'s CBOR on its own, e.g. a request's parameters to check their MAC.
fn to_cbor<T: Serialize>(value: &T) -> Step<Vec<u8>> {
    let mut buffer = fallible::zeroed(MAX_RESPONSE)?;
    let len = cbor_smol::cbor_serialize(value, &mut buffer)
        .map_err(|_| Error::Other)?
        .len();
    buffer.truncate(len);
    Ok(buffer)
}

/// Append `value`'s CBOR to `response`, in the room `handle` reserved (no allocation).
fn encode<T: Serialize>(response: &mut Vec<u8>, value: &T) -> Step<()> {
    let start = response.len();
    response.resize(start + MAX_RESPONSE, 0);
    let len = cbor_smol::cbor_serialize(value, &mut response[start..])
        .map(|encoded| encoded.len())
        .map_err(|_| Error::Other);
    response.truncate(start + len.unwrap_or(0));
    len.map(|_| ()).map_err(Halt::from)
}

/// authenticatorReset (§6.6): only within 10 s of power-up, and only with the user's touch: a
/// long one once the owner enabled longTouchForReset (CTAP 2.2, see `config`). The 10 s bound
/// the request's arrival (when the wait began), not the end of the touch.
fn reset<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<()> {
    const RESET_WINDOW_MS: u64 = 10_000;
    let asked_at = auth
        .user_wait
        .started_ms(&auth.request_digest)
        .unwrap_or_else(|| auth.platform.now_ms());
    if asked_at > RESET_WINDOW_MS {
        return Err(Error::NotAllowed.into());
    }
    // Reset is also the way out of a damaged store: unreadable settings do not stop it, but
    // then it asks for the long touch the owner may have enabled.
    let long = auth
        .store
        .settings()
        .map_or(auth.platform.has_long_touch(), |s| s.long_touch_for_reset);
    if long {
        auth.long_touch()?;
    } else {
        auth.user_presence()?;
    }
    auth.store.reset(auth.platform.rng())?;
    auth.pin.discard_token();
    Ok(())
}

/// A pinUvAuthParam that passed the early checks, to be verified at its place in the order.
struct PresentedToken<'a> {
    protocol: PinProtocol,
    param: &'a [u8],
}

/// The pinUvAuthParam checks makeCredential and getAssertion make first (§6.1.2 and §6.2.2
/// steps 1-2): a zero-length one is the platform's "touch to select" probe, answered after a
/// touch; otherwise the protocol must be given and known. The MAC itself is checked later, by
/// [`verify_presented_token`], where the spec puts it (§6.1.2 step 11, §6.2.2 step 5): after the
/// algorithm, option and enterpriseAttestation checks, so a request with two faults gets the
/// error of the first.
fn presented_token<'a, P: Platform>(
    auth: &mut Authenticator<'_, P>,
    param: Option<&'a [u8]>,
    protocol: Option<u32>,
) -> Step<Option<PresentedToken<'a>>> {
    let Some(param) = param else {
        return Ok(None);
    };
    if param.is_empty() {
        // The platform's "touch to select" probe: answered after a touch.
        auth.user_presence()?;
        let error = if auth.store.pin_is_set() {
            Error::PinInvalid
        } else {
            Error::PinNotSet
        };
        return Err(error.into());
    }
    // A CTAP 2.0 key without a PIN supports no PIN protocol (CTAP 2.0 §5.1 step 4).
    if !auth.profile.ctap21() {
        return Err(Error::PinAuthInvalid.into());
    }
    let protocol = protocol.ok_or(Error::MissingParameter)?;
    let protocol = PinProtocol::from_number(protocol).ok_or(Error::InvalidParameter)?;
    Ok(Some(PresentedToken { protocol, param }))
}

/// Verify a presented pinUvAuthParam over the clientDataHash, for `permission` and `rp_id`.
/// Returns whether the user is verified by a valid token.
fn verify_presented_token<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    token: Option<&PresentedToken<'_>>,
    client_data_hash: &[u8; 32],
    permission: u8,
    rp_id: &str,
) -> Step<bool> {
    let Some(token) = token else {
        return Ok(false);
    };
    client_pin::verify_token(
        auth,
        token.protocol,
        &[client_data_hash],
        token.param,
        permission,
        client_pin::RpScope::BindTo(rp_id),
    )?;
    Ok(true)
}

/// What makeCredential and getAssertion ask of the user besides a token.
pub(crate) struct Asked {
    /// A pinUvAuthParam came with the request.
    pub token: bool,
    /// The request's "uv" option: verify with the built-in method.
    pub uv: bool,
    /// makeCredential of a discoverable credential.
    pub discoverable: bool,
    /// The "up" option (getAssertion's silent up=false requests are not held to alwaysUv).
    pub up: bool,
}

/// Before any lasting step (§6.1.2 steps 5.3 and 6-8, §6.2.2 steps 4.3 and 5): does the
/// request verify the user with the built-in method (`true`), and does the key's configuration
/// let it go on as asked?
/// - The "uv" option asks for built-in UV: only a key with an enrolled method has it.
/// - alwaysUv: a request without a token verifies with the built-in method if there is one;
///   otherwise it needs a token.
/// - makeCredUvNotRqd: a key protected by a PIN or built-in UV still makes non-discoverable
///   credentials without verifying the user (as U2F always did), but not discoverable ones.
fn builtin_uv_asked<P: Platform>(auth: &mut Authenticator<'_, P>, asked: Asked) -> Step<bool> {
    if asked.token {
        return Ok(false);
    }
    let builtin = builtin_uv::enabled(auth);
    if asked.uv {
        return if builtin {
            Ok(true)
        } else {
            Err(Error::InvalidOption.into())
        };
    }
    let pin_set = auth.store.pin_is_set();
    // alwaysUv, or a locked key (PIN lock on, no PIN since power-up), which behaves as alwaysUv
    // does (see `Authenticator::always_uv`).
    if asked.up && auth.always_uv()? {
        if builtin {
            return Ok(true);
        }
        return Err(if pin_set {
            Error::PinRequired
        } else {
            Error::PinNotSet
        }
        .into());
    }
    if asked.discoverable && builtin_uv::protected(auth) {
        return Err(if pin_set {
            Error::PinRequired
        } else {
            Error::OperationDenied
        }
        .into());
    }
    Ok(false)
}

/// How the user was verified: by a token, by the built-in method (whose finger was also the
/// touch), or not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verified {
    No,
    ByToken,
    BuiltIn,
}

impl Verified {
    pub(crate) fn uv(self) -> bool {
        self != Verified::No
    }
}

/// §6.1.2 step 11, §6.2.2 step 6: verify the presented token, or the user with the built-in
/// method when [`builtin_uv_asked`] said so.
fn verify_user<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    builtin: bool,
    token: Option<&PresentedToken<'_>>,
    client_data_hash: &[u8; 32],
    permission: u8,
    rp_id: &str,
) -> Step<Verified> {
    if builtin {
        builtin_uv::verify_for_command(auth)?;
        return Ok(Verified::BuiltIn);
    }
    let by_token = verify_presented_token(auth, token, client_data_hash, permission, rp_id)?;
    Ok(if by_token {
        Verified::ByToken
    } else {
        Verified::No
    })
}

/// §6.1.2 steps 13-14, §6.2.2 steps 8-9: the user's touch, unless the built-in method's finger
/// or the token (getUserPresentFlagValue) already brought it.
fn touch_unless_present<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    verified: Verified,
) -> Step<()> {
    let present = match verified {
        Verified::BuiltIn => true,
        Verified::ByToken => client_pin::take_user_present(auth),
        Verified::No => false,
    };
    if present {
        return Ok(());
    }
    auth.user_presence()
}

/// A clientDataHash is a SHA-256 digest.
fn client_data_hash(bytes: &[u8]) -> Step<&[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| Halt::Fail(Error::InvalidParameter))
}
