//! W3C WebAuthn Automation's Credential Parameters as JSON, to and from the core's import and
//! export (see `authenticator::automation`).
//!
//! Binary members are base64url without padding, as WebDriver has them; standard base64 (what
//! Chrome's DevTools protocol sends for the same members) is read too, so the output of CDP's
//! `WebAuthn.getCredentials` imports as it is.

use authenticator::automation::{Exported, Import};
use authenticator::credential::Algorithm;
use base64ct::{Base64, Base64Unpadded, Base64Url, Base64UrlUnpadded, Encoding};
use ctap_types::webauthn::PublicKeyCredentialUserEntity;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// One credential (W3C WebAuthn §11.6 "Credential Parameters"). Members this key does not
/// model (backupEligibility, backupState) are accepted and ignored.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialParams {
    pub credential_id: String,
    pub is_resident_credential: bool,
    pub rp_id: String,
    /// A PKCS#8 private key (RFC 5958): P-256 or Ed25519.
    pub private_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_handle: Option<String>,
    #[serde(default)]
    pub sign_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_blob: Option<String>,
}

/// base64url (or, as CDP writes it, standard base64), padded or not.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    Base64UrlUnpadded::decode_vec(text)
        .or_else(|_| Base64Url::decode_vec(text))
        .or_else(|_| Base64::decode_vec(text))
        .or_else(|_| Base64Unpadded::decode_vec(text))
        .map_err(|_| "not base64url".to_string())
}

pub fn encode_base64url(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// What the core's import needs, owned: the key decoded from PKCS#8.
pub struct Decoded {
    pub credential_id: Vec<u8>,
    pub alg: Algorithm,
    pub secret: Zeroizing<[u8; 32]>,
    pub user: Option<PublicKeyCredentialUserEntity>,
}

impl CredentialParams {
    /// Decode the binary members; an error names the member at fault.
    pub fn decode(&self) -> Result<Decoded, String> {
        let credential_id =
            decode_base64(&self.credential_id).map_err(|e| format!("credentialId: {e}"))?;
        let der = Zeroizing::new(
            decode_base64(&self.private_key).map_err(|e| format!("privateKey: {e}"))?,
        );
        let (alg, secret) = private_key(&der)?;
        let user = match &self.user_handle {
            Some(handle) => {
                let id = decode_base64(handle).map_err(|e| format!("userHandle: {e}"))?;
                let id = heapless_bytes::Bytes::try_from(id.as_slice())
                    .map_err(|_| "userHandle: longer than 64 bytes".to_string())?;
                let mut user = PublicKeyCredentialUserEntity::from(id);
                user.name = self.user_name.as_deref().map(truncate);
                user.display_name = self.user_display_name.as_deref().map(truncate);
                Some(user)
            }
            None => None,
        };
        Ok(Decoded {
            credential_id,
            alg,
            secret,
            user,
        })
    }
}

impl Decoded {
    pub fn import<'a>(&'a self, params: &'a CredentialParams) -> Import<'a> {
        Import {
            credential_id: &self.credential_id,
            rp_id: &params.rp_id,
            discoverable: params.is_resident_credential,
            alg: self.alg,
            secret: &self.secret,
            user: self.user.clone(),
            sign_count: params.sign_count,
        }
    }
}

/// A user name cut to the 64 bytes the key keeps (at a character boundary), as CTAP allows.
fn truncate(text: &str) -> heapless::String<64> {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    heapless::String::try_from(&text[..end]).unwrap_or_default()
}

/// The algorithm and raw private key of a PKCS#8 document.
fn private_key(der: &[u8]) -> Result<(Algorithm, Zeroizing<[u8; 32]>), String> {
    use p256::pkcs8::DecodePrivateKey;
    if let Ok(key) = p256::SecretKey::from_pkcs8_der(der) {
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&key.to_bytes());
        return Ok((Algorithm::Es256, secret));
    }
    if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
        return Ok((Algorithm::EdDsa, Zeroizing::new(key.to_bytes())));
    }
    Err("privateKey: not a PKCS#8 P-256 or Ed25519 private key".to_string())
}

/// A PKCS#8 document of a raw private key.
fn pkcs8(alg: Algorithm, secret: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, String> {
    let document = match alg {
        Algorithm::Es256 => {
            use p256::pkcs8::EncodePrivateKey;
            p256::SecretKey::from_slice(secret)
                .map_err(|_| "invalid P-256 key".to_string())?
                .to_pkcs8_der()
        }
        Algorithm::EdDsa => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            ed25519_dalek::SigningKey::from_bytes(secret).to_pkcs8_der()
        }
    }
    .map_err(|_| "cannot encode the private key".to_string())?;
    Ok(Zeroizing::new(document.as_bytes().to_vec()))
}

/// Credential Parameters of an exported credential.
pub fn export(exported: &Exported) -> Result<CredentialParams, String> {
    let user = exported.user.as_ref();
    Ok(CredentialParams {
        credential_id: encode_base64url(&exported.credential_id),
        is_resident_credential: exported.discoverable && exported.stored,
        rp_id: exported.rp_id.to_string(),
        private_key: encode_base64url(&pkcs8(exported.alg, &exported.secret)?),
        user_handle: user.map(|u| encode_base64url(&u.id)),
        sign_count: exported.sign_count,
        user_name: user.and_then(|u| u.name.as_ref()).map(|n| n.to_string()),
        user_display_name: user
            .and_then(|u| u.display_name.as_ref())
            .map(|n| n.to_string()),
        large_blob: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pkcs8() {
        for alg in [Algorithm::Es256, Algorithm::EdDsa] {
            let secret = [0x42u8; 32];
            let der = pkcs8(alg, &secret).unwrap();
            let (read_alg, read) = private_key(&der).unwrap();
            assert_eq!((read_alg, *read), (alg, secret));
        }
        assert!(private_key(b"not a key").is_err());
    }

    #[test]
    fn base64_of_webdriver_and_of_cdp_both_decode() {
        let bytes = [0xFB, 0xFF, 0x01];
        assert_eq!(decode_base64("-_8B").unwrap(), bytes);
        assert_eq!(decode_base64("+/8B").unwrap(), bytes);
        assert_eq!(decode_base64("AQ==").unwrap(), [1]);
        assert_eq!(decode_base64("AQ").unwrap(), [1]);
        assert!(decode_base64("!!").is_err());
        assert_eq!(encode_base64url(&bytes), "-_8B");
    }
}
