//! authenticatorLargeBlobs (§6.10): a small store, read and written in fragments, whose
//! contents the platform encrypts with each credential's largeBlobKey.

use alloc::vec::Vec;

use serde_indexed::{DeserializeIndexed, SerializeIndexed};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::client_pin::{permission, verify_token, RpScope};
use super::{Error, Step};
use crate::ctaphid::MAX_MESSAGE_SIZE;
use crate::fallible;
use crate::pin_protocol::PinProtocol;
use crate::platform::Platform;
use crate::store::MAX_LARGE_BLOB_ARRAY;
use crate::Authenticator;

/// maxFragmentLength: what fits one message with room for the CBOR around it.
const MAX_FRAGMENT: usize = MAX_MESSAGE_SIZE - 64;

#[derive(DeserializeIndexed)]
#[serde_indexed(offset = 1)]
pub(crate) struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    get: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    set: Option<&'a serde_bytes::Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_uv_auth_param: Option<&'a serde_bytes::Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_uv_auth_protocol: Option<u32>,
}

#[derive(SerializeIndexed)]
#[serde_indexed(offset = 1)]
pub(crate) struct Response {
    config: serde_bytes::ByteBuf,
}

/// A write in progress: the whole new array is assembled before it replaces the old one.
pub(crate) struct PendingWrite {
    expected_length: usize,
    buffer: Vec<u8>,
}

/// Returns a response body for `get`, none for `set`.
pub(crate) fn large_blobs<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
) -> Step<Option<Response>> {
    let offset = request.offset.ok_or(Error::MissingParameter)?;
    match (request.get, request.set) {
        (Some(count), None) => get(auth, request, offset, count).map(Some),
        (None, Some(fragment)) => set(auth, request, offset, fragment).map(|()| None),
        _ => Err(Error::InvalidParameter.into()),
    }
}

fn get<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
    offset: usize,
    count: usize,
) -> Step<Response> {
    if request.length.is_some() || request.pin_uv_auth_param.is_some() {
        return Err(Error::InvalidParameter.into());
    }
    if count > MAX_FRAGMENT {
        return Err(Error::InvalidLength.into());
    }
    let array = auth.store.large_blob_array()?;
    if offset > array.len() {
        return Err(Error::InvalidParameter.into());
    }
    let end = offset.saturating_add(count).min(array.len());
    Ok(Response {
        config: serde_bytes::ByteBuf::from(fallible::copy(&array[offset..end])?),
    })
}

fn set<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
    offset: usize,
    fragment: &[u8],
) -> Step<()> {
    if fragment.len() > MAX_FRAGMENT {
        return Err(Error::InvalidLength.into());
    }
    if offset == 0 {
        let length = request.length.ok_or(Error::InvalidParameter)?;
        if length > MAX_LARGE_BLOB_ARRAY {
            return Err(Error::LargeBlobStorageFull.into());
        }
        if length < 17 {
            return Err(Error::InvalidParameter.into());
        }
        auth.large_blob_write = Some(PendingWrite {
            expected_length: length,
            // Room for the whole array now, so no fragment allocates.
            buffer: fallible::with_capacity(length)?,
        });
    } else {
        if request.length.is_some() {
            return Err(Error::InvalidParameter.into());
        }
        let expected = auth.large_blob_write.as_ref().map(|w| w.buffer.len());
        if expected != Some(offset) {
            return Err(Error::InvalidSeq.into());
        }
    }
    authorize(auth, request, offset, fragment)?;

    let write = auth.large_blob_write.as_mut().ok_or(Error::InvalidSeq)?;
    if offset + fragment.len() > write.expected_length {
        return Err(Error::InvalidParameter.into());
    }
    write.buffer.extend_from_slice(fragment);
    if write.buffer.len() < write.expected_length {
        return Ok(());
    }
    let write = auth.large_blob_write.take().ok_or(Error::Other)?;
    let (array, check) = write.buffer.split_at(write.buffer.len() - 16);
    if !bool::from(Sha256::digest(array)[..16].ct_eq(check)) {
        return Err(Error::IntegrityFailure.into());
    }
    auth.store.save_large_blob_array(&write.buffer)?;
    Ok(())
}

/// A PIN-protected key writes large blobs only with an lbw token (§6.10.2 step 7).
fn authorize<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
    offset: usize,
    fragment: &[u8],
) -> Step<()> {
    let protected = super::builtin_uv::protected(auth) || auth.always_uv()?;
    if !protected {
        return Ok(());
    }
    let param = request.pin_uv_auth_param.ok_or(Error::PinRequired)?;
    let protocol = request
        .pin_uv_auth_protocol
        .ok_or(Error::MissingParameter)?;
    let protocol = PinProtocol::from_number(protocol).ok_or(Error::InvalidParameter)?;
    let offset = u32::try_from(offset)
        .map_err(|_| Error::InvalidParameter)?
        .to_le_bytes();
    let digest = Sha256::digest(fragment);
    let message: [&[u8]; 4] = [
        &[0xff; 32],
        &[super::command::LARGE_BLOBS, 0x00],
        &offset,
        &digest,
    ];
    verify_token(
        auth,
        protocol,
        &message,
        param,
        permission::LARGE_BLOB_WRITE,
        RpScope::Any,
    )
}
