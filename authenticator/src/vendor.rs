//! Vendor CTAPHID commands: PROVISION_ATTESTATION installs a batch attestation, or, with an RP
//! ID list, an enterprise attestation (the records and their checks live in
//! [`crate::attestation`], below the store; this is request handling).

use serde_indexed::DeserializeIndexed;

use crate::attestation::{
    Attestation, AttestationError, EnterpriseAttestation, MAX_ENTERPRISE_RP_IDS,
};
use crate::ctap2::Error;
use crate::ctaphid::KeepaliveStatus;
use crate::platform::Platform;
use crate::presence::NotGranted;
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

/// The vendor CTAPHID command PROVISION_ATTESTATION: install a batch (or enterprise)
/// attestation if none is installed. The request is checked first; then, like every CTAP2
/// command that changes what the key is, it waits for the user's touch (keepalives meanwhile;
/// denied or timed out: the CTAP2 error). A locked key refuses it until its PIN is given, as it
/// refuses everything that needs its secrets. `Ok`: the response, one CTAP status byte; `Err`:
/// still waiting, with this keepalive status.
pub(crate) fn provision<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &[u8],
) -> Result<u8, KeepaliveStatus> {
    if auth.store.refused() {
        return Ok(crate::ctap2::VAULT_UNREADABLE as u8);
    }
    let result = cbor_smol::cbor_deserialize::<ProvisionRequest<'_>>(request)
        .map_err(|_| Halt::Fail(Error::InvalidCbor))
        .and_then(|request| install(auth, &request));
    match result {
        Ok(()) => Ok(0),
        Err(Halt::Wait(status)) => Err(status),
        Err(Halt::Fail(error)) => Ok(error as u8),
    }
}

/// Why provisioning did not (yet) install anything.
enum Halt {
    Wait(KeepaliveStatus),
    Fail(Error),
}

impl From<Error> for Halt {
    fn from(error: Error) -> Self {
        Halt::Fail(error)
    }
}

fn install<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &ProvisionRequest<'_>,
) -> Result<(), Halt> {
    if auth.store.locked() {
        return Err(Error::PinRequired.into());
    }
    match &request.enterprise_rp_ids {
        None => {
            let attestation = Attestation::new(request.key, request.certificate).map_err(error)?;
            auth.check_attestation(&attestation).map_err(error)?;
            touch(auth)?;
            auth.install_attestation(&attestation).map_err(error)?;
        }
        Some(rp_ids) => {
            let attestation = EnterpriseAttestation::new(request.key, request.certificate, rp_ids)
                .map_err(error)?;
            auth.check_enterprise_attestation(&attestation)
                .map_err(error)?;
            touch(auth)?;
            auth.install_enterprise_attestation(attestation)
                .map_err(error)?;
        }
    }
    Ok(())
}

/// The user's touch, as CTAP2 commands ask for it.
fn touch<P: Platform>(auth: &mut Authenticator<'_, P>) -> Result<(), Halt> {
    auth.presence_check().map_err(|refusal| match refusal {
        NotGranted::Pending => Halt::Wait(KeepaliveStatus::UpNeeded),
        NotGranted::Denied => Halt::Fail(Error::OperationDenied),
        NotGranted::Cancelled => Halt::Fail(Error::KeepaliveCancel),
        NotGranted::TimedOut => Halt::Fail(Error::UserActionTimeout),
    })
}

fn error(error: AttestationError) -> Halt {
    Halt::Fail(match error {
        AttestationError::AlreadyProvisioned | AttestationError::NoBatch => Error::NotAllowed,
        AttestationError::InvalidKey
        | AttestationError::InvalidCertificate
        | AttestationError::KeyMismatch
        | AttestationError::InvalidRpIds
        | AttestationError::AaguidMismatch => Error::InvalidParameter,
        AttestationError::Locked => Error::PinRequired,
        AttestationError::Storage | AttestationError::OutOfMemory => Error::Other,
    })
}
