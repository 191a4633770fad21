//! authenticatorGetAssertion (§6.2) and authenticatorGetNextAssertion (§6.3).

use ctap_types::ctap2::get_assertion::{
    AllowList, HmacSecretInput, NoAttestedCredentialData, Response, ResponseBuilder,
};
use ctap_types::ctap2::AuthenticatorDataFlags;
use ctap_types::ctap2::AuthenticatorOptions;
use ctap_types::webauthn::{PublicKeyCredentialDescriptor, PublicKeyCredentialUserEntity};
use heapless_bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;
use serde_indexed::DeserializeIndexed;

use super::client_pin::{consume_token, permission};
use super::hmac_secret::{hmac_secret_input, hmac_secret_output, HmacSecret};
use super::{
    builtin_uv_asked, client_data_hash, presented_token, touch_unless_present, verify_user, Asked,
    Error, Step, Verified,
};
use crate::credential::{CredProtect, Credential, CredentialId};
use crate::fault::{self, Carries};
use crate::platform::Platform;
use crate::store::{sha256, ResidentCredential, ResidentRef, Visibility};
use crate::Authenticator;

/// The request (§6.2), parsed here rather than with ctap-types' type so that every extension
/// this key supports is read.
#[derive(DeserializeIndexed)]
#[serde_indexed(offset = 1)]
pub(crate) struct Request<'a> {
    rp_id: &'a str,
    client_data_hash: &'a serde_bytes::Bytes,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_list: Option<AllowList<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extensions: Option<Extensions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<AuthenticatorOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_auth: Option<&'a serde_bytes::Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_protocol: Option<u32>,
}

/// The getAssertion extensions this key supports; others are ignored.
#[derive(Default, Deserialize)]
struct Extensions {
    #[serde(rename = "hmac-secret", default)]
    hmac_secret: Option<HmacSecretInput>,
    #[serde(rename = "credBlob", default)]
    cred_blob: Option<bool>,
    #[serde(rename = "largeBlobKey", default)]
    large_blob_key: Option<bool>,
    #[serde(rename = "thirdPartyPayment", default)]
    third_party_payment: Option<bool>,
}

/// The extension outputs in authenticatorData, in canonical CBOR order.
#[derive(Default, Serialize)]
struct ExtensionOutputs {
    #[serde(rename = "credBlob", skip_serializing_if = "Option::is_none")]
    cred_blob: Option<heapless_bytes::Bytes<{ crate::credential::MAX_CRED_BLOB_LEN }>>,
    #[serde(rename = "hmac-secret", skip_serializing_if = "Option::is_none")]
    hmac_secret: Option<Bytes<80>>,
    #[serde(rename = "thirdPartyPayment", skip_serializing_if = "Option::is_none")]
    third_party_payment: Option<bool>,
}

type AuthenticatorData<'a> =
    ctap_types::ctap2::AuthenticatorData<'a, NoAttestedCredentialData, ExtensionOutputs>;

/// How long getNextAssertion may follow getAssertion.
const NEXT_ASSERTION_WINDOW_MS: u64 = 30_000;

/// A credential chosen for an assertion.
// One lives on the stack for one request; boxing the large variant would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Candidate {
    /// From the allow list: its ID, and where it is stored if it is discoverable.
    Listed {
        id: CredentialId,
        stored: Option<ResidentRef>,
    },
    /// A discoverable credential, with the record the walk read to find it.
    Stored(ResidentRef, ResidentCredential),
}

/// What every assertion of one getAssertion (and its getNextAssertions) shares.
struct Series {
    kwk: zeroize::Zeroizing<[u8; 32]>,
    rp_id_hash: [u8; 32],
    client_data_hash: [u8; 32],
    user_present: bool,
    user_verified: bool,
    hmac_secret: Option<HmacSecret>,
    cred_blob: bool,
    large_blob_key: bool,
    third_party_payment: bool,
}

/// The rest of a discoverable-credential series, for getNextAssertion: only the last
/// credential answered, so a series over thousands of accounts costs the same few bytes.
pub(crate) struct PendingAssertions {
    series: Series,
    visibility: Visibility,
    /// The next credential is the RP's newest visible one older than this.
    last: ResidentRef,
    remaining: usize,
    expires_ms: u64,
}

pub(crate) fn get_assertion<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
) -> Step<Response> {
    let client_data_hash = *client_data_hash(request.client_data_hash)?;
    // §6.2.2 steps 1-2 now; the token is verified at step 5, below.
    let token = presented_token(auth, request.pin_auth.map(|p| &p[..]), request.pin_protocol)?;

    let options = request.options.as_ref();
    if options.and_then(|o| o.rk).is_some() {
        return Err(Error::UnsupportedOption.into());
    }
    let user_present = options.and_then(|o| o.up).unwrap_or(true);
    let asked = Asked {
        token: token.is_some(),
        uv: options.and_then(|o| o.uv) == Some(true),
        discoverable: false,
        up: user_present,
    };
    let builtin = builtin_uv_asked(auth, asked)?;
    let verified = verify_user(
        auth,
        builtin,
        token.as_ref(),
        &client_data_hash,
        permission::GET_ASSERTION,
        request.rp_id,
    )?;
    let uv = verified.uv();
    // A CTAP 2.0 key knows no extension of CTAP 2.1's: it ignores them.
    let extensions = request
        .extensions
        .as_ref()
        .filter(|_| auth.profile.ctap21());
    let hmac_secret = match extensions.and_then(|e| e.hmac_secret.as_ref()) {
        Some(input) => Some(hmac_secret_input(auth, input)?),
        None => None,
    };

    let rp_id_hash = sha256(request.rp_id.as_bytes());
    let kwk = auth.store.kwk()?;
    // credProtect levels 2 and 3 keep a credential out of discovery without UV (§12.1).
    let visibility = if uv {
        Visibility::All
    } else {
        Visibility::Unprotected
    };
    let (first, count) = match request.allow_list.as_ref().filter(|list| !list.is_empty()) {
        Some(allow_list) => {
            let ids = allow_list
                .iter()
                .filter(|d| d.key_type == "public-key")
                .map(|d| &d.id[..]);
            (select_from_allow_list(auth, &kwk, &rp_id_hash, ids, uv)?, 1)
        }
        // A key without discoverable credentials finds none (whatever an earlier profile left).
        None if !auth.profile.discoverable() => (None, 0),
        None => {
            let first = auth
                .store
                .next_resident_record(&rp_id_hash, visibility, None)?;
            let count = auth.store.resident_count_of(&rp_id_hash, visibility)?;
            (first.map(|(r, record)| Candidate::Stored(r, record)), count)
        }
    };
    let first = first.ok_or(Error::NoCredentials)?;
    if user_present {
        touch_unless_present(auth, verified)?;
        // A touched, verified assertion spends the token's permissions (§6.2.2 step 9); a
        // silent up=false pre-flight, as platforms send before the real request, does not.
        if uv {
            consume_token(auth);
        }
    }

    let series = Series {
        kwk,
        rp_id_hash,
        client_data_hash,
        // The built-in method's finger was the user's touch too (§6.2.2 step 8).
        user_present: user_present || verified == Verified::BuiltIn,
        user_verified: uv,
        hmac_secret,
        cred_blob: extensions.and_then(|e| e.cred_blob) == Some(true),
        large_blob_key: extensions.and_then(|e| e.large_blob_key) == Some(true),
        third_party_payment: extensions.and_then(|e| e.third_party_payment) == Some(true),
    };
    let last = match &first {
        Candidate::Stored(reference, _) => Some(*reference),
        Candidate::Listed { .. } => None,
    };
    let mut response = assert(auth, &series, first)?;
    if let (Some(last), true) = (last, count > 1) {
        response.number_of_credentials = Some(count as u32);
        auth.pending_assertions = Some(PendingAssertions {
            series,
            visibility,
            last,
            remaining: count - 1,
            expires_ms: auth.platform.now_ms() + NEXT_ASSERTION_WINDOW_MS,
        });
    }
    Ok(response)
}

pub(crate) fn get_next_assertion<P: Platform>(auth: &mut Authenticator<'_, P>) -> Step<Response> {
    let now = auth.platform.now_ms();
    let mut pending = auth.pending_assertions.take().ok_or(Error::NotAllowed)?;
    if now > pending.expires_ms || pending.remaining == 0 {
        return Err(Error::NotAllowed.into());
    }
    let (next, record) = auth
        .store
        .next_resident_record(
            &pending.series.rp_id_hash,
            pending.visibility,
            Some(pending.last),
        )?
        // The rest were deleted since the series began.
        .ok_or(Error::NoCredentials)?;
    let response = assert(auth, &pending.series, Candidate::Stored(next, record))?;
    pending.last = next;
    pending.remaining -= 1;
    pending.expires_ms = now + NEXT_ASSERTION_WINDOW_MS;
    auth.pending_assertions = Some(pending);
    Ok(response)
}

/// The first credential of the allow list that is ours for this RP and usable as verified.
fn select_from_allow_list<'r, P: Platform>(
    auth: &mut Authenticator<'_, P>,
    kwk: &[u8; 32],
    rp_id_hash: &[u8; 32],
    ids: impl Iterator<Item = &'r [u8]>,
    uv: bool,
) -> Step<Option<Candidate>> {
    for id in ids {
        let Some(credential) = Credential::open(kwk, rp_id_hash, id) else {
            // Not sealed by this key: an imported credential, if one is stored with this ID.
            if let Some((reference, _)) = auth.imported_credential(kwk, rp_id_hash, id, uv)? {
                let id = CredentialId::from_slice(id).map_err(|_| Error::Other)?;
                return Ok(Some(Candidate::Listed {
                    id,
                    stored: Some(reference),
                }));
            }
            continue;
        };
        // credProtect level 3: the credential does not exist for an unverified request.
        if credential.cred_protect == CredProtect::Required && !uv {
            continue;
        }
        let stored = if credential.discoverable {
            // A deleted discoverable credential must stop working, although its ID still opens.
            match auth.store.resident_ref(rp_id_hash, id)? {
                Some(reference) => Some(reference),
                None => continue,
            }
        } else {
            None
        };
        let id = CredentialId::from_slice(id).map_err(|_| Error::Other)?;
        return Ok(Some(Candidate::Listed { id, stored }));
    }
    Ok(None)
}

/// Sign one assertion.
fn assert<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    series: &Series,
    candidate: Candidate,
) -> Step<Response> {
    let Series {
        kwk,
        rp_id_hash,
        client_data_hash,
        user_present,
        user_verified,
        ..
    } = series;
    let (user_present, user_verified) = (*user_present, *user_verified);
    let (id, stored) = match candidate {
        Candidate::Listed { id, stored: None } => (id, None),
        Candidate::Listed {
            stored: Some(reference),
            ..
        } => {
            // Deleted since the series began: nothing to sign with.
            let stored = auth
                .store
                .load_resident(&reference)?
                .ok_or(Error::NoCredentials)?;
            let id = CredentialId::from_slice(&stored.id).map_err(|_| Error::Other)?;
            (id, Some((reference, stored)))
        }
        Candidate::Stored(reference, stored) => {
            let id = CredentialId::from_slice(&stored.id).map_err(|_| Error::Other)?;
            (id, Some((reference, stored)))
        }
    };
    let sealed = stored
        .as_ref()
        .map_or(&id[..], |(_, s)| s.sealed_credential());
    let credential = Credential::open(kwk, rp_id_hash, sealed).ok_or(Error::Other)?;
    let hmac_secret = match &series.hmac_secret {
        Some(input) => Some(hmac_secret_output(auth, input, &credential, user_verified)?),
        None => None,
    };
    let cred_blob = series.cred_blob.then(|| {
        heapless_bytes::Bytes::try_from(credential.cred_blob.as_slice()).unwrap_or_default()
    });
    // thirdPartyPayment: whether this credential was made for payments.
    let third_party_payment = series
        .third_party_payment
        .then_some(credential.third_party_payment);
    let any_output = hmac_secret.is_some() || cred_blob.is_some() || third_party_payment.is_some();
    let extensions = any_output.then_some(ExtensionOutputs {
        cred_blob,
        hmac_secret,
        third_party_payment,
    });
    let (counter, user) = match stored {
        Some((reference, mut stored)) => {
            let counter = auth.signature_counter(Some((&reference, &mut stored)))?;
            // A non-discoverable credential has no user to tell.
            (counter, (!stored.listed_only).then_some(stored.user))
        }
        None => (auth.signature_counter(None)?, None),
    };
    let mut flags = AuthenticatorDataFlags::empty();
    if user_present {
        flags |= AuthenticatorDataFlags::USER_PRESENCE;
    }
    if user_verified {
        flags |= AuthenticatorDataFlags::USER_VERIFIED;
    }
    if extensions.is_some() {
        flags |= AuthenticatorDataFlags::EXTENSION_DATA;
    }
    // A silent up=false probe never reaches a relying party: an armed fault waits for the
    // assertion that does.
    let fault = if user_present {
        fault::take(
            &mut auth.platform,
            Carries {
                up: true,
                uv: user_verified,
                counter: true,
                signature: true,
            },
        )
    } else {
        fault::Applied::default()
    };
    let auth_data = AuthenticatorData {
        rp_id_hash,
        flags: fault.flags(flags),
        sign_count: fault.counter(counter),
        attested_credential_data: None,
        extensions,
    }
    .serialize()?;
    let signature = credential.sign(&[&auth_data, client_data_hash, fault.garble()]);

    let descriptor = PublicKeyCredentialDescriptor {
        id: Bytes::try_from(id.as_slice()).map_err(|_| Error::Other)?,
        key_type: heapless::String::try_from("public-key").map_err(|_| Error::Other)?,
    };
    let mut response = ResponseBuilder {
        credential: descriptor,
        auth_data,
        signature: Bytes::try_from(signature.as_slice()).map_err(|_| Error::Other)?,
    }
    .build();
    if series.large_blob_key && credential.discoverable {
        response.large_blob_key = Some(ByteArray::new(*credential.large_blob_key()));
    }
    // User-identifying fields only after user verification; otherwise just the id (§6.2.2).
    response.user = user.map(|user| {
        if user_verified {
            user
        } else {
            PublicKeyCredentialUserEntity::from(user.id)
        }
    });
    Ok(response)
}
