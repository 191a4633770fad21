//! authenticatorCredentialManagement (§6.8) and its 0x41 preview: what discoverable credentials
//! the key holds, listed, deleted and renamed, under a pinUvAuthToken with the cm permission.

use alloc::vec::Vec;

use ctap_types::ctap2::credential_management::{
    CredentialProtectionPolicy, Request, Response, Subcommand,
};
use ctap_types::webauthn::{PublicKeyCredentialDescriptor, PublicKeyCredentialRpEntity};
use serde_bytes::ByteArray;

use super::client_pin::{permission, verify_persistent_token, verify_token, RpScope};
use super::{to_cbor, Error, Step};
use crate::credential::Credential;
use crate::pin_protocol::PinProtocol;
use crate::platform::Platform;
use crate::store::{sha256, ResidentCredential, ResidentRef, StoredRp, Visibility};
use crate::Authenticator;

/// What enumerateRPsGetNextRP / enumerateCredentialsGetNextCredential continue: where the
/// walk is and how many are left, a few bytes however many credentials are stored.
pub(crate) enum Enumeration {
    Rps {
        last: [u8; 8],
        remaining: usize,
    },
    Credentials {
        rp_id_hash: [u8; 32],
        last: ResidentRef,
        remaining: usize,
    },
}

pub(crate) fn credential_management<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
) -> Step<Response> {
    let continuation = matches!(
        request.sub_command,
        Subcommand::EnumerateRpsGetNextRp | Subcommand::EnumerateCredentialsGetNextCredential
    );
    if !continuation {
        auth.enumeration = None;
    }
    match request.sub_command {
        Subcommand::GetCredsMetadata => {
            authorize(auth, request, RpScope::AllRps, Access::Read)?;
            let mut response = Response::default();
            response.existing_resident_credentials_count =
                Some(auth.store.resident_count()? as u32);
            response.max_possible_remaining_residential_credentials_count =
                Some(auth.store.remaining_resident_slots() as u32);
            Ok(response)
        }
        Subcommand::EnumerateRpsBegin => {
            authorize(auth, request, RpScope::AllRps, Access::Read)?;
            let first = auth.store.next_rp(None)?.ok_or(Error::NoCredentials)?;
            let total = auth.store.rp_count()?;
            auth.enumeration = Some(Enumeration::Rps {
                last: first.key,
                remaining: total.saturating_sub(1),
            });
            let mut response = rp_response(first)?;
            response.total_rps = Some(total as u32);
            Ok(response)
        }
        Subcommand::EnumerateRpsGetNextRp => match auth.enumeration {
            Some(Enumeration::Rps { last, remaining }) if remaining > 0 => {
                // Deleted since the enumeration began: the walk ends.
                let next = auth
                    .store
                    .next_rp(Some(last))?
                    .ok_or(Error::NoCredentials)?;
                auth.enumeration = Some(Enumeration::Rps {
                    last: next.key,
                    remaining: remaining - 1,
                });
                rp_response(next)
            }
            _ => Err(Error::NotAllowed.into()),
        },
        Subcommand::EnumerateCredentialsBegin => {
            let rp_id_hash: [u8; 32] =
                **params(request)?.rp_id_hash.ok_or(Error::MissingParameter)?;
            authorize(auth, request, RpScope::Within(&rp_id_hash), Access::Read)?;
            let (first, record) = auth
                .store
                .next_resident_record(&rp_id_hash, Visibility::All, None)?
                .ok_or(Error::NoCredentials)?;
            let total = auth.store.resident_count_of(&rp_id_hash, Visibility::All)?;
            auth.enumeration = Some(Enumeration::Credentials {
                rp_id_hash,
                last: first,
                remaining: total.saturating_sub(1),
            });
            let mut response = credential_response(auth, record)?;
            response.total_credentials = Some(total as u32);
            Ok(response)
        }
        Subcommand::EnumerateCredentialsGetNextCredential => match auth.enumeration {
            Some(Enumeration::Credentials {
                rp_id_hash,
                last,
                remaining,
            }) if remaining > 0 => {
                let (next, record) = auth
                    .store
                    .next_resident_record(&rp_id_hash, Visibility::All, Some(last))?
                    .ok_or(Error::NoCredentials)?;
                auth.enumeration = Some(Enumeration::Credentials {
                    rp_id_hash,
                    last: next,
                    remaining: remaining - 1,
                });
                credential_response(auth, record)
            }
            _ => Err(Error::NotAllowed.into()),
        },
        Subcommand::DeleteCredential => {
            let credential = stored_credential(auth, request)?;
            authorize(
                auth,
                request,
                RpScope::Within(&sha256(credential.rp_id.as_bytes())),
                Access::Write,
            )?;
            auth.store.delete_resident(&credential)?;
            Ok(Response::default())
        }
        Subcommand::UpdateUserInformation => {
            let mut credential = stored_credential(auth, request)?;
            let user = params(request)?
                .user
                .clone()
                .ok_or(Error::MissingParameter)?;
            authorize(
                auth,
                request,
                RpScope::Within(&sha256(credential.rp_id.as_bytes())),
                Access::Write,
            )?;
            if user.id != credential.user.id {
                return Err(Error::InvalidParameter.into());
            }
            // Absent fields are removed, as §6.8.6 says.
            credential.user = user;
            auth.store.save_resident(&credential)?;
            Ok(Response::default())
        }
        _ => Err(Error::InvalidSubcommand.into()),
    }
}

fn params<'r, 'a>(
    request: &'r Request<'a>,
) -> Step<&'r ctap_types::ctap2::credential_management::SubcommandParameters<'a>> {
    request
        .sub_command_params
        .as_ref()
        .ok_or_else(|| Error::MissingParameter.into())
}

/// The stored credential named by subCommandParams.credentialID.
fn stored_credential<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
) -> Step<ResidentCredential> {
    let descriptor = params(request)?
        .credential_id
        .as_ref()
        .ok_or(Error::MissingParameter)?;
    auth.store
        .find_resident(descriptor.id)?
        .ok_or_else(|| Error::NoCredentials.into())
}

/// What a subcommand does to the store: the reading ones (metadata, enumerations) also take
/// the persistent token (pcmr, CTAP 2.2), which deleting and updating never do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Every subcommand but the two "get next" ones carries pinUvAuthParam over
/// subCommand || subCommandParams (§6.8.1).
fn authorize<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
    scope: RpScope<'_>,
    access: Access,
) -> Step<()> {
    let param = request.pin_auth.ok_or(Error::PinRequired)?;
    let protocol = request.pin_protocol.ok_or(Error::MissingParameter)?;
    let protocol = PinProtocol::from_number(protocol.into()).ok_or(Error::InvalidParameter)?;
    let params = match &request.sub_command_params {
        Some(params) => to_cbor(params)?,
        None => Vec::new(),
    };
    let message: [&[u8]; 2] = [&[request.sub_command as u8], &params];
    let ordinary = verify_token(
        auth,
        protocol,
        &message,
        param,
        permission::CREDENTIAL_MANAGEMENT,
        scope,
    );
    match ordinary {
        Err(_) if access == Access::Read => {
            verify_persistent_token(auth, protocol, &message, param).or(ordinary)
        }
        _ => ordinary,
    }
}

fn rp_response(rp: StoredRp) -> Step<Response> {
    let mut response = Response::default();
    response.rp = Some(PublicKeyCredentialRpEntity {
        id: rp.rp_id,
        name: None,
        icon: None,
    });
    response.rp_id_hash = Some(ByteArray::new(rp.rp_id_hash));
    Ok(response)
}

fn credential_response<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    stored: ResidentCredential,
) -> Step<Response> {
    let kwk = auth.store.kwk()?;
    let rp_id_hash = sha256(stored.rp_id.as_bytes());
    let credential =
        Credential::open(&kwk, &rp_id_hash, stored.sealed_credential()).ok_or(Error::Other)?;
    let mut response = Response::default();
    response.user = Some(stored.user);
    response.credential_id = Some(PublicKeyCredentialDescriptor {
        id: heapless_bytes::Bytes::try_from(stored.id.as_slice()).map_err(|_| Error::Other)?,
        key_type: heapless::String::try_from("public-key").map_err(|_| Error::Other)?,
    });
    response.public_key = Some(credential.public_key().to_cosey());
    response.third_party_payment = Some(credential.third_party_payment);
    response.cred_protect = Some(match credential.cred_protect as u8 {
        3 => CredentialProtectionPolicy::Required,
        2 => CredentialProtectionPolicy::OptionalWithCredentialIdList,
        _ => CredentialProtectionPolicy::Optional,
    });
    Ok(response)
}
