//! hmac-secret (§12.5) and hmac-secret-mc (CTAP 2.2): per-credential PRF outputs for salts the
//! platform sends encrypted under a PIN/UV protocol shared secret.

use alloc::vec::Vec;

use ctap_types::ctap2::get_assertion::HmacSecretInput;
use heapless_bytes::Bytes;
use zeroize::Zeroizing;

use super::{Error, Step};
use crate::credential::Credential;
use crate::fallible;
use crate::pin_protocol::{PinProtocol, SharedSecret};
use crate::platform::Platform;
use crate::Authenticator;

/// hmac-secret's input, checked and decrypted: the shared secret to answer under, and the
/// salts (32 or 64 bytes).
pub(crate) struct HmacSecret {
    shared: SharedSecret,
    salts: Zeroizing<Vec<u8>>,
}

/// Check hmac-secret's input (§12.5): the salts must be authenticated under the shared secret.
pub(crate) fn hmac_secret_input<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    input: &HmacSecretInput,
) -> Step<HmacSecret> {
    let protocol =
        PinProtocol::from_number(input.pin_protocol.unwrap_or(1)).ok_or(Error::InvalidParameter)?;
    let shared = auth
        .pin
        .shared_secret(&mut auth.platform, protocol, &input.key_agreement)
        .ok_or(Error::InvalidParameter)?;
    if !protocol.verify(shared.mac_key(), &[&input.salt_enc], &input.salt_auth) {
        return Err(Error::PinAuthInvalid.into());
    }
    let salts = shared
        .decrypt(&input.salt_enc)?
        .ok_or(Error::InvalidLength)?;
    if salts.len() != 32 && salts.len() != 64 {
        return Err(Error::InvalidLength.into());
    }
    Ok(HmacSecret { shared, salts })
}

/// hmac-secret's output for one credential: HMAC(CredRandom, salt) per salt, encrypted.
pub(crate) fn hmac_secret_output<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    input: &HmacSecret,
    credential: &Credential,
    user_verified: bool,
) -> Step<Bytes<80>> {
    use hmac::{KeyInit, Mac};
    let cred_random = credential.cred_random(user_verified);
    let mut outputs = Zeroizing::new(fallible::with_capacity(64)?);
    for salt in input.salts.chunks(32) {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&cred_random[..])
            .map_err(|_| Error::Other)?;
        mac.update(salt);
        outputs.extend_from_slice(&mac.finalize().into_bytes());
    }
    let encrypted = input.shared.encrypt(&outputs, auth.platform.rng())?;
    Bytes::try_from(encrypted.as_slice()).map_err(|_| Error::Other.into())
}
