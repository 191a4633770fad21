//! Vendor CTAPHID commands: PROVISION_ATTESTATION installs a batch attestation, or, with an RP
//! ID list, an enterprise attestation (the records and their checks live in
//! [`crate::attestation`], below the store; this is request handling).

use serde_indexed::DeserializeIndexed;

use crate::attestation::{
    Attestation, AttestationError, EnterpriseAttestation, MAX_ENTERPRISE_RP_IDS,
};
use crate::ctap2::Error;
use crate::platform::Platform;
use crate::Authenticator;

/// The vendor command's request: `{1: private key (32 bytes), 2: DER certificate}` installs the
/// batch attestation; with `3: [RP ID, ...]` (at most [`MAX_ENTERPRISE_RP_IDS`], possibly
/// none) it installs the enterprise attestation instead, whose key and certificate name this
/// one key and whose list is what vendor-facilitated enterprise attestation is given to.
/// A request without key 3 is the first version's, byte for byte.
#[derive(DeserializeIndexed)]
#[serde_indexed(offset = 1)]
struct ProvisionRequest<'a> {
    key: &'a serde_bytes::Bytes,
    certificate: &'a serde_bytes::Bytes,
    #[serde(skip_serializing_if = "Option::is_none")]
    enterprise_rp_ids: Option<heapless::Vec<&'a str, MAX_ENTERPRISE_RP_IDS>>,
}

/// The vendor CTAPHID command PROVISION_ATTESTATION: install a batch attestation if none is
/// installed. The response is one CTAP status byte.
pub(crate) fn provision<P: Platform>(auth: &mut Authenticator<'_, P>, request: &[u8]) -> u8 {
    let result = cbor_smol::cbor_deserialize::<ProvisionRequest<'_>>(request)
        .map_err(|_| Error::InvalidCbor)
        .and_then(|request| {
            let installed = match &request.enterprise_rp_ids {
                None => Attestation::new(request.key, request.certificate)
                    .and_then(|attestation| auth.install_attestation(&attestation)),
                Some(rp_ids) => {
                    EnterpriseAttestation::new(request.key, request.certificate, rp_ids)
                        .and_then(|attestation| auth.install_enterprise_attestation(attestation))
                }
            };
            installed.map_err(|error| match error {
                AttestationError::AlreadyProvisioned | AttestationError::NoBatch => {
                    Error::NotAllowed
                }
                AttestationError::InvalidKey
                | AttestationError::InvalidCertificate
                | AttestationError::KeyMismatch
                | AttestationError::InvalidRpIds
                | AttestationError::AaguidMismatch => Error::InvalidParameter,
                AttestationError::Storage | AttestationError::OutOfMemory => Error::Other,
            })
        });
    match result {
        Ok(()) => 0,
        Err(error) => error as u8,
    }
}
