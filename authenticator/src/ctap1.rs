//! CTAP1 / U2F raw messages (FIDO U2F Raw Message Formats v1.2), carried in CTAPHID_MSG.
//!
//! Key handles are credential IDs (see [`crate::credential`]) sealed to the application
//! parameter, so a U2F registration can later be used through CTAP2 getAssertion by a client
//! that sends the appId as rpId (WebAuthn's `appid` extension): how AWS's old U2F registrations
//! keep working.

use alloc::vec::Vec;

use crate::credential::{Algorithm, CredProtect, Credential};
use crate::fallible::{self, OutOfMemory};
use crate::fault::{self, Carries};
use crate::platform::Platform;
use crate::presence::NotGranted;
use crate::store::StoreError;
use crate::Authenticator;

/// ISO 7816-4 status words.
mod sw {
    pub const NO_ERROR: u16 = 0x9000;
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    pub const COMMAND_NOT_ALLOWED: u16 = 0x6986;
    pub const WRONG_DATA: u16 = 0x6A80;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const INCORRECT_P1P2: u16 = 0x6A86;
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    pub const UNKNOWN: u16 = 0x6F00;
    /// ISO 7816-4's "not enough memory space": the heap could not hold the answer.
    pub const NOT_ENOUGH_MEMORY: u16 = 0x6A84;
}

const REGISTER: u8 = 0x01;
const AUTHENTICATE: u8 = 0x02;
const VERSION: u8 = 0x03;

/// AUTHENTICATE control bytes (P1).
const ENFORCE_PRESENCE: u8 = 0x03;
const CHECK_ONLY: u8 = 0x07;
const DONT_ENFORCE_PRESENCE: u8 = 0x08;

/// A command APDU: header and data, in short or extended length encoding.
struct Apdu<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    data: &'a [u8],
}

impl<'a> Apdu<'a> {
    /// Parse; `Err` carries the status word for a malformed APDU.
    fn parse(bytes: &'a [u8]) -> Result<Self, u16> {
        let (&[cla, ins, p1, _p2], body) =
            bytes.split_first_chunk::<4>().ok_or(sw::WRONG_LENGTH)?;
        let data = match body {
            // Case 1 (no data, no Le) and case 2 short (Le only).
            [] | [_] => &[][..],
            // Extended: 0x00, then Lc as two bytes (or, with no data, Le as two bytes).
            [0, rest @ ..] if rest.len() >= 2 => {
                let declared = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let rest = &rest[2..];
                if rest.is_empty() {
                    &[][..] // case 2 extended: that was Le
                } else if rest.len() == declared || rest.len() == declared + 2 {
                    &rest[..declared] // case 3 or case 4 extended (trailing Le)
                } else {
                    return Err(sw::WRONG_LENGTH);
                }
            }
            // Short: Lc in one byte, data, optional one-byte Le.
            [lc, rest @ ..] => {
                let declared = usize::from(*lc);
                if declared != 0 && (rest.len() == declared || rest.len() == declared + 1) {
                    &rest[..declared]
                } else {
                    return Err(sw::WRONG_LENGTH);
                }
            }
        };
        Ok(Self { cla, ins, p1, data })
    }
}

/// Handle one U2F request and write the response (data, then the status word).
pub(crate) fn handle<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &[u8],
    response: &mut Vec<u8>,
) {
    let status = match Apdu::parse(request) {
        Ok(apdu) => dispatch(auth, &apdu, response),
        Err(status) => Err(status),
    };
    if let Err(status) = status {
        response.clear();
        response.extend_from_slice(&status.to_be_bytes());
    } else {
        response.extend_from_slice(&sw::NO_ERROR.to_be_bytes());
    }
}

fn dispatch<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    apdu: &Apdu<'_>,
    out: &mut Vec<u8>,
) -> Result<(), u16> {
    if apdu.cla != 0 {
        return Err(sw::CLA_NOT_SUPPORTED);
    }
    // A key whose vault is unreadable serves nothing until reset (see `Store::refused`):
    // "no precise diagnosis", as the Pico's RNG refusal answers, not 0x6985, which a host
    // takes for "touch the key" and repeats.
    if auth.store.refused() {
        return Err(sw::UNKNOWN);
    }
    // alwaysUv turns U2F off: U2F cannot verify the user (CTAP 2.1 §7.2.1). So does the PIN
    // lock until the PIN is given (see `Authenticator::always_uv`): a touch-only request must
    // not use the sealed secrets.
    if auth.always_uv().unwrap_or(true) {
        return Err(sw::COMMAND_NOT_ALLOWED);
    }
    match apdu.ins {
        REGISTER => register(auth, apdu.data, out),
        AUTHENTICATE => authenticate(auth, apdu.p1, apdu.data, out),
        VERSION if apdu.data.is_empty() => write(out, &[b"U2F_V2"]),
        VERSION => Err(sw::WRONG_LENGTH),
        _ => Err(sw::INS_NOT_SUPPORTED),
    }
}

/// U2F has no keepalive: until the user touches, answer "conditions not satisfied" and let the
/// host repeat the request (the wait continues across repeats of the same request).
fn presence<P: Platform>(auth: &mut Authenticator<'_, P>) -> Result<(), u16> {
    match auth.presence_check() {
        Ok(()) => Ok(()),
        Err(
            NotGranted::Pending | NotGranted::Denied | NotGranted::Cancelled | NotGranted::TimedOut,
        ) => Err(sw::CONDITIONS_NOT_SATISFIED),
    }
}

fn register<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), u16> {
    let (challenge, application) = data
        .split_first_chunk::<32>()
        .and_then(|(challenge, rest)| Some((challenge, <&[u8; 32]>::try_from(rest).ok()?)))
        .ok_or(sw::WRONG_LENGTH)?;
    presence(auth)?;

    let kwk = auth.store.kwk().map_err(|_| sw::UNKNOWN)?;
    let credential = Credential::generate(
        auth.platform.rng(),
        Algorithm::Es256,
        false,
        CredProtect::Optional,
    );
    let key_handle = credential.seal(&kwk, application, auth.platform.rng());
    let public_key = credential
        .public_key()
        .sec1_uncompressed()
        .ok_or(sw::UNKNOWN)?;
    let fault = fault::take(
        &mut auth.platform,
        Carries {
            up: false,
            uv: false,
            counter: false,
            signature: true,
        },
    );
    // The key handle is at most 128 bytes, so its length fits the one-byte field.
    let signed: [&[u8]; 6] = [
        &[0x00],
        application,
        challenge,
        &key_handle,
        &public_key,
        fault.garble(),
    ];
    // Signed by the batch attestation key once one is provisioned, else self-signed.
    let self_signed;
    let (certificate, signature) = match auth.store.attestation().map_err(store_error)? {
        Some(attestation) => (attestation.certificate(), attestation.sign(&signed)),
        None => {
            self_signed = self_signed_certificate(&credential, &public_key)
                .map_err(|OutOfMemory| sw::NOT_ENOUGH_MEMORY)?;
            (self_signed.as_slice(), credential.sign(&signed))
        }
    };
    let pieces: [&[u8]; 6] = [
        &[0x05],
        &public_key,
        &[key_handle.len() as u8],
        &key_handle,
        certificate,
        &signature,
    ];
    write(out, &pieces)
}

/// Append the pieces to the answer, with room for the status word `handle` adds, or fail as a
/// whole if the heap cannot hold them.
fn write(out: &mut Vec<u8>, pieces: &[&[u8]]) -> Result<(), u16> {
    let total = pieces.iter().map(|piece| piece.len()).sum::<usize>() + 2;
    out.try_reserve(total).map_err(|_| sw::NOT_ENOUGH_MEMORY)?;
    for piece in pieces {
        out.extend_from_slice(piece);
    }
    Ok(())
}

fn store_error(error: StoreError) -> u16 {
    match error {
        StoreError::OutOfMemory => sw::NOT_ENOUGH_MEMORY,
        StoreError::Full
        | StoreError::Filesystem(_)
        | StoreError::Io
        | StoreError::VaultUnreadable => sw::UNKNOWN,
        // Not reached: a locked key answers no U2F request (see `dispatch`).
        StoreError::Locked => sw::COMMAND_NOT_ALLOWED,
    }
}

fn authenticate<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    control: u8,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), u16> {
    if data.len() < 65 {
        return Err(sw::WRONG_LENGTH);
    }
    let challenge = &data[..32];
    let application: &[u8; 32] = data[32..64].try_into().map_err(|_| sw::WRONG_LENGTH)?;
    let handle_len = usize::from(data[64]);
    let key_handle = data
        .get(65..65 + handle_len)
        .filter(|_| data.len() == 65 + handle_len)
        .ok_or(sw::WRONG_LENGTH)?;

    let kwk = auth.store.kwk().map_err(|_| sw::UNKNOWN)?;
    let (credential, mut stored) = match Credential::open(&kwk, application, key_handle) {
        Some(c) if c.discoverable && !auth.store.resident_exists(application, key_handle) => {
            return Err(sw::WRONG_DATA)
        }
        Some(credential) => (credential, None),
        // Not sealed by this key: an imported credential whose RP ID hashes to the
        // application parameter, if one is stored with this ID.
        None => {
            let (reference, credential) = auth
                .imported_credential(&kwk, application, key_handle, false)
                .map_err(store_error)?
                .ok_or(sw::WRONG_DATA)?;
            let record = auth
                .store
                .load_resident(&reference)
                .map_err(store_error)?
                .ok_or(sw::WRONG_DATA)?;
            (credential, Some((reference, record)))
        }
    };
    if credential.alg != Algorithm::Es256 || credential.cred_protect == CredProtect::Required {
        return Err(sw::WRONG_DATA);
    }

    let user_present = match control {
        // "Check only": the handle is ours, which U2F reports as this status.
        CHECK_ONLY => return Err(sw::CONDITIONS_NOT_SATISFIED),
        ENFORCE_PRESENCE => {
            presence(auth)?;
            true
        }
        DONT_ENFORCE_PRESENCE => false,
        _ => return Err(sw::INCORRECT_P1P2),
    };

    let stored = stored
        .as_mut()
        .map(|(reference, record)| (&*reference, record));
    let counter = auth.signature_counter(stored).map_err(|_| sw::UNKNOWN)?;
    // Only an authentication with presence enforced reaches a relying party as a sign-in.
    let fault = if user_present {
        fault::take(
            &mut auth.platform,
            Carries {
                up: true,
                uv: false,
                counter: true,
                signature: true,
            },
        )
    } else {
        fault::Applied::default()
    };
    let counter = fault.counter(counter).to_be_bytes();
    let flags = [u8::from(fault.u2f_presence(user_present))];
    let signature = credential.sign(&[application, &flags, &counter, challenge, fault.garble()]);
    write(out, &[&flags, &counter, &signature])
}

/// U2F requires an attestation certificate. Until a batch certificate is provisioned, each
/// registration carries a certificate self-signed by the credential's own key, which proves
/// possession and reveals nothing that links registrations together.
fn self_signed_certificate(
    credential: &Credential,
    public_key: &[u8; 65],
) -> Result<Vec<u8>, OutOfMemory> {
    use der::*;
    use fallible::concat;
    const ECDSA_WITH_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
    const EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    const PRIME256V1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

    let algorithm = tlv(SEQUENCE, &tlv(OID, ECDSA_WITH_SHA256)?)?;
    let common_name = concat(&[
        &tlv(OID, COMMON_NAME)?,
        &tlv(UTF8_STRING, b"U2F self attestation")?,
    ])?;
    let name = tlv(SEQUENCE, &tlv(SET, &tlv(SEQUENCE, &common_name)?)?)?;
    let validity = tlv(
        SEQUENCE,
        &concat(&[
            &tlv(UTC_TIME, b"200101000000Z")?,
            &tlv(GENERALIZED_TIME, b"99991231235959Z")?,
        ])?,
    )?;
    let key_algorithm = tlv(
        SEQUENCE,
        &concat(&[&tlv(OID, EC_PUBLIC_KEY)?, &tlv(OID, PRIME256V1)?])?,
    )?;
    let spki = tlv(
        SEQUENCE,
        &concat(&[
            &key_algorithm,
            &tlv(BIT_STRING, &concat(&[&[0u8], public_key])?)?,
        ])?,
    )?;
    let tbs = tlv(
        SEQUENCE,
        &concat(&[
            &tlv(CONTEXT_0, &tlv(INTEGER, &[2])?)?, // v3
            &tlv(INTEGER, &[1])?,
            &algorithm,
            &name,
            &validity,
            &name,
            &spki,
        ])?,
    )?;
    let signature = credential.sign(&[&tbs]);
    tlv(
        SEQUENCE,
        &concat(&[
            &tbs,
            &algorithm,
            &tlv(BIT_STRING, &concat(&[&[0u8], &signature])?)?,
        ])?,
    )
}

/// Just enough DER to write a certificate (not a parser).
mod der {
    use alloc::vec::Vec;

    use crate::fallible::{self, OutOfMemory};

    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0C;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const CONTEXT_0: u8 = 0xA0;

    /// Tag, definite length, value.
    pub fn tlv(tag: u8, value: &[u8]) -> Result<Vec<u8>, OutOfMemory> {
        let mut out = fallible::with_capacity(value.len() + 4)?;
        out.push(tag);
        match value.len() {
            len @ 0..=0x7F => out.push(len as u8),
            len @ 0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
            len => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(value);
        Ok(out)
    }
}
