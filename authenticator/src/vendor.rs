//! Vendor CTAPHID commands: PROVISION_ATTESTATION installs a batch attestation (the record
//! and its checks live in [`crate::attestation`], below the store; this is request handling).

use serde_indexed::DeserializeIndexed;

use crate::attestation::{Attestation, AttestationError};
use crate::ctap2::Error;
use crate::platform::Platform;
use crate::Authenticator;

/// The vendor command's request: `{1: private key (32 bytes), 2: DER certificate}`.
#[derive(DeserializeIndexed)]
#[serde_indexed(offset = 1)]
struct ProvisionRequest<'a> {
    key: &'a serde_bytes::Bytes,
    certificate: &'a serde_bytes::Bytes,
}

/// The vendor CTAPHID command PROVISION_ATTESTATION: install a batch attestation if none is
/// installed. The response is one CTAP status byte.
pub(crate) fn provision<P: Platform>(auth: &mut Authenticator<'_, P>, request: &[u8]) -> u8 {
    let result = cbor_smol::cbor_deserialize::<ProvisionRequest<'_>>(request)
        .map_err(|_| Error::InvalidCbor)
        .and_then(|request| {
            let attestation = Attestation::new(request.key, request.certificate)
                .map_err(|_| Error::InvalidParameter)?;
            auth.install_attestation(&attestation)
                .map_err(|error| match error {
                    AttestationError::AlreadyProvisioned => Error::NotAllowed,
                    _ => Error::Other,
                })
        });
    match result {
        Ok(()) => 0,
        Err(error) => error as u8,
    }
}
