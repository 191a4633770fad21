//! authenticatorMakeCredential (§6.1).

use ctap_types::ctap2::make_credential::{AttestedCredentialData, Response, ResponseBuilder};
use ctap_types::ctap2::{
    AttestationFormatsPreference, AttestationStatement, AttestationStatementFormat,
    AuthenticatorDataFlags, AuthenticatorOptions, NoneAttestationStatement,
    PackedAttestationStatement,
};
use ctap_types::webauthn::{
    FilteredPublicKeyCredentialParameters, PublicKeyCredentialDescriptorRef,
    PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
use heapless_bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;
use serde_indexed::DeserializeIndexed;

use super::client_pin::{consume_token, permission};
use super::hmac_secret::{hmac_secret_input, hmac_secret_output, HmacSecret};
use super::{
    builtin_uv_asked, client_data_hash, presented_token, touch_unless_present, verify_user, Asked,
    Error, Step,
};
use crate::attestation::Attestation;
use crate::credential::{Algorithm, CredProtect, Credential, MAX_CRED_BLOB_LEN};
use crate::fault::{self, Carries};
use crate::platform::Platform;
use crate::store::{sha256, ResidentCredential};
use crate::Authenticator;

/// The request (§6.1), parsed here rather than with ctap-types' type so that every extension
/// this key supports is read.
#[derive(DeserializeIndexed)]
#[serde_indexed(offset = 1)]
pub(crate) struct Request<'a> {
    client_data_hash: &'a serde_bytes::Bytes,
    rp: PublicKeyCredentialRpEntity,
    user: PublicKeyCredentialUserEntity,
    pub_key_cred_params: FilteredPublicKeyCredentialParameters,
    #[serde(skip_serializing_if = "Option::is_none")]
    exclude_list: Option<heapless::Vec<PublicKeyCredentialDescriptorRef<'a>, 16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extensions: Option<Extensions<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<AuthenticatorOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_auth: Option<&'a serde_bytes::Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_protocol: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enterprise_attestation: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attestation_formats_preference: Option<AttestationFormatsPreference>,
}

/// The makeCredential extensions this key supports; others are ignored.
#[derive(Default, Deserialize)]
struct Extensions<'a> {
    #[serde(rename = "credProtect", default)]
    cred_protect: Option<u8>,
    #[serde(rename = "hmac-secret", default)]
    hmac_secret: Option<bool>,
    #[serde(rename = "credBlob", default, borrow)]
    cred_blob: Option<&'a serde_bytes::Bytes>,
    #[serde(rename = "largeBlobKey", default)]
    large_blob_key: Option<bool>,
    #[serde(rename = "minPinLength", default)]
    min_pin_length: Option<bool>,
    #[serde(rename = "pinComplexityPolicy", default)]
    pin_complexity_policy: Option<bool>,
    #[serde(rename = "thirdPartyPayment", default)]
    third_party_payment: Option<bool>,
    #[serde(rename = "hmac-secret-mc", default)]
    hmac_secret_mc: Option<ctap_types::ctap2::get_assertion::HmacSecretInput>,
}

/// The extension outputs in authenticatorData, in CTAP's canonical CBOR order (shorter names
/// first, then bytewise), which serde keeps: the fields' order is the map's.
#[derive(Default, Serialize)]
struct ExtensionOutputs {
    #[serde(rename = "credBlob", skip_serializing_if = "Option::is_none")]
    cred_blob: Option<bool>,
    #[serde(rename = "credProtect", skip_serializing_if = "Option::is_none")]
    cred_protect: Option<u8>,
    #[serde(rename = "hmac-secret", skip_serializing_if = "Option::is_none")]
    hmac_secret: Option<bool>,
    #[serde(rename = "minPinLength", skip_serializing_if = "Option::is_none")]
    min_pin_length: Option<u8>,
    #[serde(rename = "hmac-secret-mc", skip_serializing_if = "Option::is_none")]
    hmac_secret_mc: Option<Bytes<80>>,
    #[serde(rename = "thirdPartyPayment", skip_serializing_if = "Option::is_none")]
    third_party_payment: Option<bool>,
    #[serde(
        rename = "pinComplexityPolicy",
        skip_serializing_if = "Option::is_none"
    )]
    pin_complexity_policy: Option<bool>,
}

type AuthenticatorData<'a> =
    ctap_types::ctap2::AuthenticatorData<'a, AttestedCredentialData<'a>, ExtensionOutputs>;

pub(crate) fn make_credential<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
) -> Step<Response> {
    let client_data_hash = client_data_hash(request.client_data_hash)?;
    // §6.1.2 steps 1-2 now; the token is verified at step 11, below.
    let token = presented_token(auth, request.pin_auth.map(|p| &p[..]), request.pin_protocol)?;
    let alg = algorithm(request)?;

    let options = request.options.as_ref();
    let discoverable = options.and_then(|o| o.rk).unwrap_or(false);
    if options.and_then(|o| o.up) == Some(false) {
        return Err(Error::InvalidOption.into());
    }
    // A key without discoverable credentials has no rk option (§6.1.2 step 5.4).
    if discoverable && !auth.profile.discoverable() {
        return Err(Error::UnsupportedOption.into());
    }
    // With a pinUvAuthParam the "uv" option is ignored; without one, it asks for built-in user
    // verification, which only a key with an enrolled method has.
    let asked = Asked {
        token: token.is_some(),
        uv: options.and_then(|o| o.uv) == Some(true),
        discoverable,
        up: true,
    };
    let builtin = builtin_uv_asked(auth, asked)?;
    let enterprise = enterprise_attestation(auth, request)?;
    let verified = verify_user(
        auth,
        builtin,
        token.as_ref(),
        client_data_hash,
        permission::MAKE_CREDENTIAL,
        &request.rp.id,
    )?;
    let uv = verified.uv();

    let rp_id_hash = sha256(request.rp.id.as_bytes());
    let kwk = auth.store.kwk()?;
    if excluded(auth, request, &kwk, &rp_id_hash, uv) {
        // Tell the user before telling the RP: the touch confirms this key was chosen.
        touch_unless_present(auth, verified)?;
        return Err(Error::CredentialExcluded.into());
    }
    let extensions = request
        .extensions
        .as_ref()
        .filter(|_| auth.profile.ctap21());
    let inputs = ExtensionInputs::read(auth, extensions, discoverable)?;
    touch_unless_present(auth, verified)?;
    consume_token(auth);

    let (credential, cred_blob_stored) = new_credential(auth, alg, discoverable, &inputs);
    let id = credential.seal(&kwk, &rp_id_hash, auth.platform.rng());
    let counter = auth.store.next_counter()?;
    if discoverable {
        auth.store.save_resident(&ResidentCredential {
            rp_id: request.rp.id.clone(),
            user: request.user.clone(),
            id: Bytes::try_from(&id[..]).map_err(|_| Error::Other)?,
            created: counter,
            cred_protect: credential.cred_protect as u8,
            sealed: None,
            counter: None,
            listed_only: false,
        })?;
    }

    let outputs = extension_outputs(
        auth,
        &inputs,
        &request.rp.id,
        &credential,
        cred_blob_stored,
        uv,
    )?;
    let new = NewCredential {
        rp_id_hash: &rp_id_hash,
        id: &id,
        credential: &credential,
        counter,
        uv,
        outputs,
    };
    let mut response = attested(auth, request, enterprise, client_data_hash, new)?;
    if inputs.large_blob_key {
        response.large_blob_key = Some(ByteArray::new(*credential.large_blob_key()));
    }
    Ok(response)
}

/// The client lists algorithms in its order of preference (ctap-types has already dropped the
/// ones we don't know): the first we support.
fn algorithm(request: &Request<'_>) -> Step<Algorithm> {
    let alg = request
        .pub_key_cred_params
        .0
        .iter()
        .find_map(|p| Algorithm::from_cose(p.alg))
        .ok_or(Error::UnsupportedAlgorithm)?;
    Ok(alg)
}

/// A fresh credential with what the extensions seal into it, and whether credBlob was stored.
fn new_credential<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    alg: Algorithm,
    discoverable: bool,
    inputs: &ExtensionInputs<'_>,
) -> (Credential, Option<bool>) {
    let cred_protect = inputs.cred_protect.unwrap_or(CredProtect::Optional);
    let mut credential = Credential::generate(auth.platform.rng(), alg, discoverable, cred_protect);
    // thirdPartyPayment: sealed into the credential; the output says whether it is set.
    credential.third_party_payment = inputs.third_party_payment == Some(true);
    // credBlob: kept if it fits, and the output says whether it did (§12.2).
    let cred_blob_stored = inputs.cred_blob.map(|blob| {
        let fits = blob.len() <= MAX_CRED_BLOB_LEN;
        if fits {
            credential.cred_blob = heapless::Vec::from_slice(blob).unwrap_or_default();
        }
        fits
    });
    (credential, cred_blob_stored)
}

/// §6.1.2 step 10: whether a credential of the excludeList is this key's for this RP (one
/// whose credProtect the request's verification satisfies).
fn excluded<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
    kwk: &[u8; 32],
    rp_id_hash: &[u8; 32],
    uv: bool,
) -> bool {
    let Some(exclude_list) = &request.exclude_list else {
        return false;
    };
    exclude_list.iter().any(|descriptor| {
        descriptor.key_type == "public-key"
            && auth.credential_exists(kwk, rp_id_hash, &descriptor.id[..], uv)
    })
}

/// What the extensions ask of this registration, read and checked before the touch, so that
/// a request that will fail fails without asking the user.
struct ExtensionInputs<'r> {
    cred_protect: Option<CredProtect>,
    /// Only on a key with discoverable credentials; any other ignores it.
    large_blob_key: bool,
    /// hmac-secret-mc: the salts, decrypted and checked now; PRF outputs once made.
    hmac_secret_mc: Option<HmacSecret>,
    hmac_secret: bool,
    cred_blob: Option<&'r [u8]>,
    third_party_payment: Option<bool>,
    min_pin_length: bool,
    pin_complexity_policy: bool,
}

impl<'r> ExtensionInputs<'r> {
    fn read<P: Platform>(
        auth: &mut Authenticator<'_, P>,
        extensions: Option<&'r Extensions<'r>>,
        discoverable: bool,
    ) -> Step<Self> {
        let cred_protect = extensions
            .and_then(|e| e.cred_protect)
            .and_then(CredProtect::from_level);
        // A key without discoverable credentials does not have largeBlobKey: it ignores it.
        let large_blob_key =
            extensions.and_then(|e| e.large_blob_key) == Some(true) && auth.profile.discoverable();
        let hmac_secret_mc = match extensions.and_then(|e| e.hmac_secret_mc.as_ref()) {
            Some(input) => Some(hmac_secret_input(auth, input)?),
            None => None,
        };
        if large_blob_key && !discoverable {
            // largeBlobKey is only for discoverable credentials (§12.3).
            return Err(Error::InvalidOption.into());
        }
        Ok(Self {
            cred_protect,
            large_blob_key,
            hmac_secret_mc,
            hmac_secret: extensions.and_then(|e| e.hmac_secret) == Some(true),
            cred_blob: extensions.and_then(|e| e.cred_blob).map(|blob| &blob[..]),
            third_party_payment: extensions.and_then(|e| e.third_party_payment),
            min_pin_length: extensions.and_then(|e| e.min_pin_length) == Some(true),
            pin_complexity_policy: extensions.and_then(|e| e.pin_complexity_policy) == Some(true),
        })
    }
}

/// The extension outputs of authenticatorData for the new `credential`, or `None` when no
/// extension has one (then the ED flag stays clear).
fn extension_outputs<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    inputs: &ExtensionInputs<'_>,
    rp_id: &heapless::String<256>,
    credential: &Credential,
    cred_blob_stored: Option<bool>,
    uv: bool,
) -> Step<Option<ExtensionOutputs>> {
    let outputs = ExtensionOutputs {
        cred_blob: cred_blob_stored,
        cred_protect: inputs.cred_protect.map(|level| level as u8),
        // Every credential can answer hmac-secret: its CredRandom derives from its key.
        hmac_secret: inputs.hmac_secret.then_some(true),
        min_pin_length: min_pin_length_output(auth, inputs.min_pin_length, rp_id)?,
        pin_complexity_policy: pin_complexity_output(auth, inputs.pin_complexity_policy, rp_id)?,
        third_party_payment: inputs.third_party_payment,
        hmac_secret_mc: match &inputs.hmac_secret_mc {
            Some(input) => Some(hmac_secret_output(auth, input, credential, uv)?),
            None => None,
        },
    };
    Ok(outputs.any().then_some(outputs))
}

impl ExtensionOutputs {
    fn any(&self) -> bool {
        self.cred_blob.is_some()
            || self.cred_protect.is_some()
            || self.hmac_secret.is_some()
            || self.min_pin_length.is_some()
            || self.pin_complexity_policy.is_some()
            || self.third_party_payment.is_some()
            || self.hmac_secret_mc.is_some()
    }
}

/// What the attested response tells of the new credential.
struct NewCredential<'c> {
    rp_id_hash: &'c [u8; 32],
    id: &'c [u8],
    credential: &'c Credential,
    counter: u32,
    uv: bool,
    outputs: Option<ExtensionOutputs>,
}

/// authenticatorData with the attested credential data, and the attestation statement over it
/// (none, packed by the batch or enterprise key, or self attestation).
fn attested<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
    enterprise: bool,
    client_data_hash: &[u8],
    new: NewCredential<'_>,
) -> Step<Response> {
    let aaguid = auth.aaguid();
    let public_key = new.credential.public_key().to_cose();
    // A platform that puts "none" first gets none, even if it also asked for enterprise
    // attestation: it said it does not want an attestation, so the key gives away nothing
    // that identifies it (and epAtt stays absent).
    let no_attestation = prefers_no_attestation(auth, request);
    let fault = fault::take(
        &mut auth.platform,
        Carries {
            up: true,
            uv: new.uv,
            counter: true,
            signature: !no_attestation,
        },
    );
    let mut flags =
        AuthenticatorDataFlags::USER_PRESENCE | AuthenticatorDataFlags::ATTESTED_CREDENTIAL_DATA;
    if new.uv {
        flags |= AuthenticatorDataFlags::USER_VERIFIED;
    }
    if new.outputs.is_some() {
        flags |= AuthenticatorDataFlags::EXTENSION_DATA;
    }
    let auth_data = AuthenticatorData {
        rp_id_hash: new.rp_id_hash,
        flags: fault.flags(flags),
        sign_count: fault.counter(new.counter),
        attested_credential_data: Some(AttestedCredentialData {
            aaguid: &aaguid,
            credential_id: new.id,
            credential_public_key: &public_key,
        }),
        extensions: new.outputs,
    }
    .serialize()?;

    let (fmt, att_stmt) = if no_attestation {
        (
            AttestationStatementFormat::None,
            AttestationStatement::None(NoneAttestationStatement {}),
        )
    } else {
        let signed: [&[u8]; 3] = [&auth_data, client_data_hash, fault.garble()];
        let attestation = if enterprise {
            auth.store
                .enterprise_attestation()?
                .map(|enterprise| enterprise.attestation())
        } else {
            auth.store.attestation()?
        };
        (
            AttestationStatementFormat::Packed,
            AttestationStatement::Packed(packed(attestation, new.credential, &signed)?),
        )
    };
    let mut response = ResponseBuilder { fmt, auth_data }.build();
    response.att_stmt = Some(att_stmt);
    // epAtt (§6.1.2): present, true, exactly when the enterprise attestation was returned.
    response.ep_att = (enterprise && !no_attestation).then_some(true);
    Ok(response)
}

/// A packed attestation statement (WebAuthn §8.2): by the batch key, with its certificate, once
/// one is provisioned; until then self attestation, by the credential's own key.
fn packed(
    attestation: Option<&Attestation>,
    credential: &Credential,
    signed: &[&[u8]],
) -> Step<PackedAttestationStatement> {
    let statement = match attestation {
        Some(attestation) => {
            let certificate =
                Bytes::try_from(attestation.certificate()).map_err(|_| Error::Other)?;
            let mut x5c = heapless::Vec::new();
            x5c.push(certificate).map_err(|_| Error::Other)?;
            let signature = attestation.sign(signed);
            PackedAttestationStatement {
                alg: Algorithm::Es256.cose(),
                sig: Bytes::try_from(&signature[..]).map_err(|_| Error::Other)?,
                x5c: Some(x5c),
            }
        }
        None => {
            let signature = credential.sign(signed);
            PackedAttestationStatement {
                alg: credential.alg.cose(),
                sig: Bytes::try_from(&signature[..]).map_err(|_| Error::Other)?,
                x5c: None,
            }
        }
    };
    Ok(statement)
}

/// enterpriseAttestation (§6.1.2 step 9, §7.1): whether this registration gets the enterprise
/// attestation.
/// - On a key without one provisioned, or with it disabled: CTAP1_ERR_INVALID_PARAMETER.
/// - A value other than 1 or 2: CTAP2_ERR_INVALID_OPTION.
/// - 1, vendor-facilitated: only for an RP ID on the provisioned list (exact bytes); any other
///   RP gets the ordinary batch attestation, as the spec asks, not an error.
/// - 2, platform-managed: for any RP ID; the platform is trusted to ask only for the RPs its
///   enterprise policy names.
fn enterprise_attestation<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
) -> Step<bool> {
    // A CTAP 2.0 key does not know the parameter, so it ignores it.
    let Some(kind) = request
        .enterprise_attestation
        .filter(|_| auth.profile.ctap21())
    else {
        return Ok(false);
    };
    let enabled = auth.store.settings()?.enterprise_attestation;
    let Some(enterprise) = auth.store.enterprise_attestation()?.filter(|_| enabled) else {
        return Err(Error::InvalidParameter.into());
    };
    match kind {
        VENDOR_FACILITATED => Ok(enterprise.lists(&request.rp.id)),
        PLATFORM_MANAGED => Ok(true),
        _ => Err(Error::InvalidOption.into()),
    }
}

/// enterpriseAttestation's values (§6.1).
const VENDOR_FACILITATED: u32 = 1;
const PLATFORM_MANAGED: u32 = 2;

/// minPinLength (§12.4): the minimum PIN length, but only to RPs the key's owner allowed.
fn min_pin_length_output<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    asked: bool,
    rp_id: &heapless::String<256>,
) -> Step<Option<u8>> {
    if !asked {
        return Ok(None);
    }
    let settings = auth.store.settings()?;
    let allowed = settings.min_pin_length_rp_ids.contains(rp_id);
    Ok(allowed.then_some(settings.min_pin_length))
}

/// pinComplexityPolicy (CTAP 2.2): whether the policy is on, to the same RPs minPinLength
/// tells the length.
fn pin_complexity_output<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    asked: bool,
    rp_id: &heapless::String<256>,
) -> Step<Option<bool>> {
    if !asked {
        return Ok(None);
    }
    let settings = auth.store.settings()?;
    let allowed = settings.min_pin_length_rp_ids.contains(rp_id);
    Ok(allowed.then_some(settings.pin_complexity))
}

/// attestationFormatsPreference (CTAP 2.2, unknown to a CTAP 2.0 key): the platform's first
/// format we know is "none".
fn prefers_no_attestation<P: Platform>(auth: &Authenticator<'_, P>, request: &Request<'_>) -> bool {
    auth.profile.ctap21()
        && request
            .attestation_formats_preference
            .as_ref()
            .and_then(|p| p.known_formats().first().copied())
            == Some(AttestationStatementFormat::None)
}
