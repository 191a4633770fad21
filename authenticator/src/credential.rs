//! Credentials: the key pairs the authenticator makes for relying parties.
//!
//! A credential ID is the credential itself, sealed: XChaCha20-Poly1305 under the device's
//! key-wrapping key, with the RP ID hash as associated data. So the key keeps no state per
//! non-discoverable credential (one key serves any number of accounts), an ID made for one RP is
//! useless for another, and a U2F key handle is just a credential ID whose "RP ID hash" is the
//! U2F application parameter.
//!
//! ```text
//! ID = version (1) || nonce (24) || seal(alg (1) || flags (1) || secret (32) || credBlob) || tag (16)
//! ```
//!
//! credBlob (0 to 32 bytes) rides in the sealed part, so even non-discoverable credentials keep
//! it without state on the key: IDs are 75 to 107 bytes.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use heapless::Vec;
use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// COSE algorithm identifiers we can make credentials for.
pub const ES256: i32 = -7;
pub const EDDSA: i32 = -8;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const FIXED_PLAIN_LEN: usize = 1 + 1 + 32;
/// The largest credBlob a credential carries (maxCredBlobLength).
pub const MAX_CRED_BLOB_LEN: usize = 32;
const MAX_PLAIN_LEN: usize = FIXED_PLAIN_LEN + MAX_CRED_BLOB_LEN;
/// The length of a credential ID without a credBlob.
pub const ID_LEN: usize = 1 + NONCE_LEN + FIXED_PLAIN_LEN + TAG_LEN;
/// What getInfo advertises as maxCredentialIdLength (room for a future format).
pub const MAX_ID_LEN: usize = 128;

/// A credential ID.
pub type CredentialId = Vec<u8, MAX_ID_LEN>;

/// The signature algorithm of a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Es256,
    EdDsa,
}

impl Algorithm {
    /// The algorithm for a COSE identifier, if we support it.
    pub fn from_cose(alg: i32) -> Option<Self> {
        match alg {
            ES256 => Some(Self::Es256),
            EDDSA => Some(Self::EdDsa),
            _ => None,
        }
    }

    pub fn cose(self) -> i32 {
        match self {
            Self::Es256 => ES256,
            Self::EdDsa => EDDSA,
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Es256 => 1,
            Self::EdDsa => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Es256),
            2 => Some(Self::EdDsa),
            _ => None,
        }
    }
}

/// credProtect levels (CTAP 2.1 §12.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CredProtect {
    /// userVerificationOptional
    Optional = 1,
    /// userVerificationOptionalWithCredentialIDList
    OptionalWithList = 2,
    /// userVerificationRequired
    Required = 3,
}

impl CredProtect {
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            1 => Some(Self::Optional),
            2 => Some(Self::OptionalWithList),
            3 => Some(Self::Required),
            _ => None,
        }
    }
}

/// A credential with its private key, as recovered from (or about to be sealed into) an ID.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Credential {
    #[zeroize(skip)]
    pub alg: Algorithm,
    /// Stored on the key as well (a discoverable credential).
    #[zeroize(skip)]
    pub discoverable: bool,
    #[zeroize(skip)]
    pub cred_protect: CredProtect,
    /// credBlob (§12.2): a few bytes the RP stores with the credential.
    #[zeroize(skip)]
    pub cred_blob: Vec<u8, MAX_CRED_BLOB_LEN>,
    /// thirdPartyPayment (CTAP 2.2): made for payments another origin may start.
    #[zeroize(skip)]
    pub third_party_payment: bool,
    secret: [u8; 32],
}

/// A public key, COSE-encoded on demand.
pub enum PublicKey {
    Es256(p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_dalek::VerifyingKey),
}

/// A signature: DER for ES256 (as WebAuthn and U2F want), 64 raw bytes for EdDSA.
pub type Signature = Vec<u8, 72>;

impl Credential {
    /// Make a new credential with a fresh private key.
    pub fn generate(
        rng: &mut impl CryptoRng,
        alg: Algorithm,
        discoverable: bool,
        cred_protect: CredProtect,
    ) -> Self {
        let mut secret = [0u8; 32];
        loop {
            rng.fill_bytes(&mut secret);
            // A P-256 scalar must be below the group order: retry the rare seed that is not.
            if alg == Algorithm::EdDsa || p256_scalar(&secret).is_some() {
                break;
            }
        }
        Self {
            alg,
            discoverable,
            cred_protect,
            cred_blob: Vec::new(),
            third_party_payment: false,
            secret,
        }
    }

    /// A credential with a private key made elsewhere (test automation imports one): the P-256
    /// scalar or the Ed25519 seed. `None` if it is not a valid key of that algorithm.
    pub fn from_secret(
        alg: Algorithm,
        secret: &[u8; 32],
        discoverable: bool,
        cred_protect: CredProtect,
    ) -> Option<Self> {
        if alg == Algorithm::Es256 && p256_scalar(secret).is_none() {
            return None;
        }
        Some(Self {
            alg,
            discoverable,
            cred_protect,
            cred_blob: Vec::new(),
            third_party_payment: false,
            secret: *secret,
        })
    }

    /// The private key (P-256 scalar or Ed25519 seed), for test automation's export: only a
    /// runner that was told to give keys away (see [`crate::automation`]) asks for it.
    pub fn secret(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret)
    }

    /// Seal this credential into an ID bound to `rp_id_hash`.
    pub fn seal(
        &self,
        kwk: &[u8; 32],
        rp_id_hash: &[u8; 32],
        rng: &mut impl CryptoRng,
    ) -> CredentialId {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut plain = [0u8; MAX_PLAIN_LEN];
        plain[0] = self.alg.code();
        // Flags: discoverable, the credProtect level, thirdPartyPayment (IDs sealed before
        // it existed have the bit clear, which reads as "not for payments").
        plain[1] = u8::from(self.discoverable)
            | ((self.cred_protect as u8) << 1)
            | (u8::from(self.third_party_payment) << 3);
        plain[2..FIXED_PLAIN_LEN].copy_from_slice(&self.secret);
        let len = FIXED_PLAIN_LEN + self.cred_blob.len();
        plain[FIXED_PLAIN_LEN..len].copy_from_slice(&self.cred_blob);

        let cipher = XChaCha20Poly1305::new(kwk.into());
        let aad = associated_data(rp_id_hash);
        let tag = cipher
            .encrypt_inout_detached(&XNonce::from(nonce), &aad, (&mut plain[..len]).into())
            .expect("66 bytes are within XChaCha20-Poly1305's limits");

        let mut id = CredentialId::new();
        // The pieces add up to at most 107 <= MAX_ID_LEN bytes, so none of these pushes fail.
        let _ = id.push(VERSION);
        let _ = id.extend_from_slice(&nonce);
        let _ = id.extend_from_slice(&plain[..len]);
        let _ = id.extend_from_slice(&tag);
        plain.zeroize();
        id
    }

    /// Open a credential ID; `None` if it is not one of ours for this RP.
    pub fn open(kwk: &[u8; 32], rp_id_hash: &[u8; 32], id: &[u8]) -> Option<Self> {
        let len = id.len().checked_sub(1 + NONCE_LEN + TAG_LEN)?;
        if !(FIXED_PLAIN_LEN..=MAX_PLAIN_LEN).contains(&len) || id[0] != VERSION {
            return None;
        }
        let nonce = XNonce::try_from(&id[1..1 + NONCE_LEN]).ok()?;
        let mut plain = [0u8; MAX_PLAIN_LEN];
        plain[..len].copy_from_slice(&id[1 + NONCE_LEN..1 + NONCE_LEN + len]);
        let tag = chacha20poly1305::Tag::try_from(&id[id.len() - TAG_LEN..]).ok()?;

        let cipher = XChaCha20Poly1305::new(kwk.into());
        let aad = associated_data(rp_id_hash);
        cipher
            .decrypt_inout_detached(&nonce, &aad, (&mut plain[..len]).into(), &tag)
            .ok()?;
        let credential = Self::from_plain(&plain[..len]);
        plain.zeroize();
        credential
    }

    fn from_plain(plain: &[u8]) -> Option<Self> {
        let alg = Algorithm::from_code(plain[0])?;
        let discoverable = plain[1] & 1 != 0;
        let cred_protect = CredProtect::from_level((plain[1] >> 1) & 3)?;
        let third_party_payment = plain[1] & 8 != 0;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&plain[2..FIXED_PLAIN_LEN]);
        let cred_blob = Vec::from_slice(&plain[FIXED_PLAIN_LEN..]).ok()?;
        Some(Self {
            alg,
            discoverable,
            cred_protect,
            cred_blob,
            third_party_payment,
            secret,
        })
    }

    /// largeBlobKey (§12.3): derived from the private key, like CredRandom.
    pub fn large_blob_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        self.derive(b"largeBlobKey")
    }

    /// CredRandom for hmac-secret (§12.5): derived from the private key, so it needs no storage;
    /// verified and unverified requests get different values.
    pub fn cred_random(&self, user_verified: bool) -> zeroize::Zeroizing<[u8; 32]> {
        self.derive(if user_verified {
            b"hmac-secret with uv"
        } else {
            b"hmac-secret without uv"
        })
    }

    /// A secret of this credential's own, for one purpose: HMAC-SHA-256(secret, label).
    fn derive(&self, label: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("any key length");
        mac.update(label);
        zeroize::Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// The credential's public key.
    pub fn public_key(&self) -> PublicKey {
        match self.alg {
            Algorithm::Es256 => PublicKey::es256(&self.p256_key()),
            Algorithm::EdDsa => PublicKey::EdDsa(self.ed25519_key().verifying_key()),
        }
    }

    /// Sign `message` (ECDSA with SHA-256 and RFC 6979 nonces, or Ed25519).
    pub fn sign(&self, message: &[&[u8]]) -> Signature {
        use ed25519_dalek::ed25519::signature::MultipartSigner;
        let mut out = Signature::new();
        // Both encodings fit the 72-byte buffer (a DER P-256 signature is at most 72 bytes).
        match self.alg {
            Algorithm::Es256 => return sign_es256(&self.p256_key(), message),
            Algorithm::EdDsa => {
                let signature = self.ed25519_key().multipart_sign(message);
                let _ = out.extend_from_slice(&signature.to_bytes());
            }
        }
        out
    }

    fn p256_key(&self) -> p256::NonZeroScalar {
        p256_scalar(&self.secret).expect(
            "generate() only keeps valid P-256 scalars and open() only opens what seal() made",
        )
    }

    fn ed25519_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.secret)
    }
}

/// An ECDSA P-256 signature (SHA-256, RFC 6979 nonces) over the concatenation of `message`, DER
/// encoded.
pub(crate) fn sign_es256(key: &p256::NonZeroScalar, message: &[&[u8]]) -> Signature {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    for part in message {
        digest.update(part);
    }
    // What p256's SigningKey does to sign, without the public key it computes when built (a
    // scalar multiplication saved), and with the nonce point from the installed basepoint
    // table when the runner has one (see crate::basepoint).
    let signature = crate::basepoint::sign_prehashed_rfc6979(key, &digest.finalize().into());
    let mut out = Signature::new();
    // A DER P-256 signature is at most 72 bytes: it fits.
    let _ = out.extend_from_slice(signature.to_der().as_bytes());
    out
}

/// The secret as a P-256 private scalar, if it is one (non-zero, below the group order).
pub(crate) fn p256_scalar(secret: &[u8; 32]) -> Option<p256::NonZeroScalar> {
    p256::NonZeroScalar::from_repr((*secret).into()).into_option()
}

fn associated_data(rp_id_hash: &[u8; 32]) -> [u8; 33] {
    let mut aad = [0u8; 33];
    aad[0] = VERSION;
    aad[1..].copy_from_slice(rp_id_hash);
    aad
}

impl PublicKey {
    /// The P-256 public key of a private scalar.
    pub(crate) fn es256(key: &p256::NonZeroScalar) -> Self {
        // Fixed-base: the installed basepoint table's, when the runner installed one (the Pico).
        let point = crate::basepoint::mul_by_generator(key);
        let key = p256::ecdsa::VerifyingKey::from_affine(point.into())
            .expect("a non-zero scalar times the generator is not the identity");
        PublicKey::Es256(key)
    }

    /// The key as a COSE_Key structure.
    pub fn to_cosey(&self) -> cosey::PublicKey {
        let bytes = |b: &[u8]| heapless_bytes::Bytes::try_from(b).unwrap_or_default();
        match self {
            PublicKey::Es256(key) => {
                let point = key.to_sec1_point(false);
                cosey::PublicKey::P256Key(cosey::P256PublicKey {
                    x: bytes(point.x().map(|x| x.as_slice()).unwrap_or(&[])),
                    y: bytes(point.y().map(|y| y.as_slice()).unwrap_or(&[])),
                })
            }
            PublicKey::EdDsa(key) => cosey::PublicKey::Ed25519Key(cosey::Ed25519PublicKey {
                x: bytes(key.as_bytes()),
            }),
        }
    }

    /// The COSE_Key encoding (RFC 9053) used in attested credential data.
    pub fn to_cose(&self) -> Vec<u8, 128> {
        let mut buffer = [0u8; 128];
        let len = cbor_smol::cbor_serialize(&self.to_cosey(), &mut buffer)
            .map(|s| s.len())
            .unwrap_or(0);
        Vec::from_slice(&buffer[..len]).unwrap_or_default()
    }

    /// The uncompressed SEC1 point of a P-256 key (U2F's raw public key format).
    pub fn sec1_uncompressed(&self) -> Option<[u8; 65]> {
        match self {
            PublicKey::Es256(key) => key.to_sec1_point(false).as_bytes().try_into().ok(),
            PublicKey::EdDsa(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(7)
    }

    #[test]
    fn sealed_ids_open_only_for_their_rp() {
        let mut rng = rng();
        let kwk = [9u8; 32];
        let rp = [1u8; 32];
        let cred = Credential::generate(&mut rng, Algorithm::Es256, true, CredProtect::Required);
        let id = cred.seal(&kwk, &rp, &mut rng);
        assert_eq!(id.len(), ID_LEN);
        assert!(id.len() <= MAX_ID_LEN);
        let opened = Credential::open(&kwk, &rp, &id).expect("opens");
        assert_eq!(opened.alg, Algorithm::Es256);
        assert!(opened.discoverable);
        assert_eq!(opened.cred_protect, CredProtect::Required);
        assert!(Credential::open(&kwk, &[2u8; 32], &id).is_none());
        assert!(Credential::open(&[8u8; 32], &rp, &id).is_none());
        let mut tampered = id.clone();
        tampered[30] ^= 1;
        assert!(Credential::open(&kwk, &rp, &tampered).is_none());
        assert!(Credential::open(&kwk, &rp, &id[..ID_LEN - 1]).is_none());
    }

    #[test]
    fn signatures_verify() {
        use p256::ecdsa::signature::Verifier;
        let mut rng = rng();
        let es = Credential::generate(&mut rng, Algorithm::Es256, false, CredProtect::Optional);
        let sig = es.sign(&[b"hello ", b"world"]);
        let PublicKey::Es256(key) = es.public_key() else {
            panic!()
        };
        let sig = p256::ecdsa::Signature::from_der(&sig).unwrap();
        key.verify(b"hello world", &sig).unwrap();

        let ed = Credential::generate(&mut rng, Algorithm::EdDsa, false, CredProtect::Optional);
        let sig = ed.sign(&[b"hello ", b"world"]);
        let PublicKey::EdDsa(key) = ed.public_key() else {
            panic!()
        };
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        key.verify(b"hello world", &sig).unwrap();
        assert!(!ed.public_key().to_cose().is_empty());
        assert!(!es.public_key().to_cose().is_empty());
    }
}
