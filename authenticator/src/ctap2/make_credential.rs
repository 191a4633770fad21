//! authenticatorMakeCredential (§6.1).

use ctap_types::ctap2::make_credential::{
    AttestedCredentialData, AuthenticatorData, Extensions, Request, Response, ResponseBuilder,
};
use ctap_types::ctap2::{
    AttestationStatement, AttestationStatementFormat, AuthenticatorDataFlags,
    NoneAttestationStatement, PackedAttestationStatement,
};
use heapless_bytes::Bytes;

use super::client_pin::{consume_token, permission};
use super::{client_data_hash, pin_uv_auth, require_uv_if_configured, Error, Step};
use crate::credential::{Algorithm, CredProtect, Credential};
use crate::platform::Platform;
use crate::store::{sha256, ResidentCredential};
use crate::Authenticator;

pub(crate) fn make_credential<P: Platform>(
    auth: &mut Authenticator<'_, P>,
    request: &Request<'_>,
) -> Step<Response> {
    let client_data_hash = client_data_hash(request.client_data_hash)?;
    let uv = pin_uv_auth(
        auth,
        request.pin_auth.map(|p| &p[..]),
        request.pin_protocol,
        client_data_hash,
        permission::MAKE_CREDENTIAL,
        &request.rp.id,
    )?;

    // The client lists algorithms in its order of preference; ctap-types has already dropped
    // the ones we don't know.
    let alg = request
        .pub_key_cred_params
        .0
        .iter()
        .find_map(|p| Algorithm::from_cose(p.alg))
        .ok_or(Error::UnsupportedAlgorithm)?;

    let options = request.options.as_ref();
    let discoverable = options.and_then(|o| o.rk).unwrap_or(false);
    if options.and_then(|o| o.up) == Some(false) {
        return Err(Error::InvalidOption.into());
    }
    // With a pinUvAuthParam the "uv" option is ignored; without one, it asks for built-in user
    // verification, which this key does not have.
    if !uv && options.and_then(|o| o.uv) == Some(true) {
        return Err(Error::InvalidOption.into());
    }
    if request.enterprise_attestation.is_some() {
        return Err(Error::InvalidParameter.into());
    }
    require_uv_if_configured(auth, uv, discoverable)?;

    let rp_id_hash = sha256(request.rp.id.as_bytes());
    let kwk = auth.store.kwk(auth.platform.rng())?;
    if let Some(exclude_list) = &request.exclude_list {
        let excluded = exclude_list.iter().any(|descriptor| {
            descriptor.key_type == "public-key"
                && auth.credential_exists(&kwk, &rp_id_hash, &descriptor.id[..], uv)
        });
        if excluded {
            // Tell the user before telling the RP: the touch confirms this key was chosen.
            auth.user_presence()?;
            return Err(Error::CredentialExcluded.into());
        }
    }

    let cred_protect = requested_cred_protect(request.extensions.as_ref());
    auth.user_presence()?;
    consume_token(auth);

    let credential = Credential::generate(
        auth.platform.rng(),
        alg,
        discoverable,
        cred_protect.unwrap_or(CredProtect::Optional),
    );
    let id = credential.seal(&kwk, &rp_id_hash, auth.platform.rng());
    let counter = auth.store.next_counter()?;
    if discoverable {
        auth.store.save_resident(&ResidentCredential {
            rp_id: request.rp.id.clone(),
            user: request.user.clone(),
            id: Bytes::try_from(&id[..]).map_err(|_| Error::Other)?,
            created: counter,
        })?;
    }

    let public_key = credential.public_key().to_cose();
    let hmac_secret = request.extensions.as_ref().and_then(|e| e.hmac_secret) == Some(true);
    let extensions = (cred_protect.is_some() || hmac_secret).then(|| {
        let mut out = Extensions::default();
        out.cred_protect = cred_protect.map(|level| level as u8);
        // Every credential can answer hmac-secret: its CredRandom derives from its key.
        out.hmac_secret = hmac_secret.then_some(true);
        out
    });
    let mut flags =
        AuthenticatorDataFlags::USER_PRESENCE | AuthenticatorDataFlags::ATTESTED_CREDENTIAL_DATA;
    if uv {
        flags |= AuthenticatorDataFlags::USER_VERIFIED;
    }
    if extensions.is_some() {
        flags |= AuthenticatorDataFlags::EXTENSION_DATA;
    }
    let auth_data = AuthenticatorData {
        rp_id_hash: &rp_id_hash,
        flags,
        sign_count: counter,
        attested_credential_data: Some(AttestedCredentialData {
            aaguid: &auth.config.aaguid,
            credential_id: &id,
            credential_public_key: &public_key,
        }),
        extensions,
    }
    .serialize()?;

    let (fmt, att_stmt) = if prefers_no_attestation(request) {
        (
            AttestationStatementFormat::None,
            AttestationStatement::None(NoneAttestationStatement {}),
        )
    } else {
        // Packed self attestation: signed with the credential's own key, no certificate.
        let signature = credential.sign(&[&auth_data, client_data_hash]);
        let statement = PackedAttestationStatement {
            alg: alg.cose(),
            sig: Bytes::try_from(&signature[..]).map_err(|_| Error::Other)?,
            x5c: None,
        };
        (
            AttestationStatementFormat::Packed,
            AttestationStatement::Packed(statement),
        )
    };
    let mut response = ResponseBuilder { fmt, auth_data }.build();
    response.att_stmt = Some(att_stmt);
    Ok(response)
}

/// credProtect (§12.1): the level asked for, if valid.
fn requested_cred_protect(extensions: Option<&Extensions>) -> Option<CredProtect> {
    extensions
        .and_then(|e| e.cred_protect)
        .and_then(CredProtect::from_level)
}

/// attestationFormatsPreference: the platform's first format we know is "none".
fn prefers_no_attestation(request: &Request<'_>) -> bool {
    request
        .attestation_formats_preference
        .as_ref()
        .and_then(|p| p.known_formats().first().copied())
        == Some(AttestationStatementFormat::None)
}
