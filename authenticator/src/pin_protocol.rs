//! PIN/UV auth protocols 1 and 2 (CTAP 2.1 §6.5.6, §6.5.7): the key agreement between platform
//! and authenticator, and the encryption and MACs built on it.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use cosey::EcdhEsHkdf256PublicKey;
use hmac::{Hmac, KeyInit, Mac};
use p256::elliptic_curve::sec1::{FromSec1Point, ToSec1Point};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::fallible::{self, OutOfMemory};

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// A PIN/UV auth protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinProtocol {
    V1,
    V2,
}

impl PinProtocol {
    /// The protocol for its number, if supported.
    pub fn from_number(number: u32) -> Option<Self> {
        match number {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    /// Length of pinUvAuthParam in this protocol.
    pub fn mac_len(self) -> usize {
        match self {
            Self::V1 => 16,
            Self::V2 => 32,
        }
    }

    /// authenticate(key, message): the MAC a pinUvAuthParam carries. Every key both protocols
    /// MAC with is 32 bytes (a pinUvAuthToken, or a shared secret's HMAC key), so the type says
    /// so: a key read from storage is checked for its length where it is read, and nothing
    /// here can slice past its end.
    pub fn authenticate(self, key: &[u8; 32], message: &[&[u8]]) -> [u8; 32] {
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in message {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// verify(key, message, signature) in constant time.
    pub fn verify(self, key: &[u8; 32], message: &[&[u8]], signature: &[u8]) -> bool {
        if signature.len() != self.mac_len() {
            return false;
        }
        let expected = self.authenticate(key, message);
        bool::from(expected[..self.mac_len()].ct_eq(signature))
    }
}

/// The shared secret of one key agreement: protocol 1 uses 32 bytes (one key for HMAC and
/// AES), protocol 2 uses 64 (an HMAC key, then an AES key).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret {
    #[zeroize(skip)]
    pub protocol: PinProtocol,
    bytes: [u8; 64],
}

impl SharedSecret {
    fn hmac_key(&self) -> &[u8; 32] {
        self.bytes[..32].try_into().expect("32 bytes")
    }

    fn aes_key(&self) -> &[u8; 32] {
        let range = match self.protocol {
            PinProtocol::V1 => 0..32,
            PinProtocol::V2 => 32..64,
        };
        (&self.bytes[range]).try_into().expect("32 bytes")
    }

    /// The key `verify` and `authenticate` use for messages under this shared secret.
    pub fn mac_key(&self) -> &[u8; 32] {
        self.hmac_key()
    }

    /// decrypt(sharedSecret, ciphertext): `Ok(None)` if the length is not whole blocks (plus
    /// the IV for protocol 2). Out of memory is told apart, so that it never counts as a wrong
    /// PIN.
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<alloc::vec::Vec<u8>>>, OutOfMemory> {
        let (iv, body) = match self.protocol {
            PinProtocol::V1 => ([0u8; 16], ciphertext),
            PinProtocol::V2 => match ciphertext.split_first_chunk::<16>() {
                Some((iv, body)) => (*iv, body),
                None => return Ok(None),
            },
        };
        if body.is_empty() || body.len() % 16 != 0 {
            return Ok(None);
        }
        let mut buffer = Zeroizing::new(fallible::copy(body)?);
        let decrypted = Aes256CbcDec::new(self.aes_key().into(), &iv.into())
            .decrypt_padded::<NoPadding>(&mut buffer)
            .is_ok();
        Ok(decrypted.then_some(buffer))
    }

    /// encrypt(sharedSecret, plaintext) for a whole number of blocks.
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        rng: &mut impl CryptoRng,
    ) -> Result<alloc::vec::Vec<u8>, OutOfMemory> {
        let mut iv = [0u8; 16];
        let iv_len = match self.protocol {
            PinProtocol::V1 => 0,
            PinProtocol::V2 => {
                rng.fill_bytes(&mut iv);
                16
            }
        };
        // Protocol 2 sends the IV first: write the ciphertext after it, in the same buffer.
        let mut buffer = fallible::concat(&[&iv[..iv_len], plaintext])?;
        let len = plaintext.len();
        let _ = Aes256CbcEnc::new(self.aes_key().into(), &iv.into())
            .encrypt_padded::<NoPadding>(&mut buffer[iv_len..], len);
        Ok(buffer)
    }
}

/// The authenticator's key agreement key: regenerated at power-up and whenever a PIN check
/// fails, so a platform cannot replay an old exchange. Its public key is computed once, when it
/// is made (a scalar multiplication), not at every getKeyAgreement.
pub struct KeyAgreement {
    secret: p256::SecretKey,
    public: p256::PublicKey,
}

impl KeyAgreement {
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        use p256::elliptic_curve::Generate;
        let secret = p256::SecretKey::generate_from_rng(rng);
        let point = crate::basepoint::mul_by_generator(&secret.to_nonzero_scalar());
        let public = p256::PublicKey::from_affine(point.into())
            .expect("a non-zero scalar times the generator is not the identity");
        Self { secret, public }
    }

    /// getPublicKey(): the COSE key the platform agrees with.
    pub fn public_key(&self) -> EcdhEsHkdf256PublicKey {
        let point = self.public.to_sec1_point(false);
        let coordinate = |c: Option<&[u8]>| {
            heapless_bytes::Bytes::try_from(c.unwrap_or(&[])).unwrap_or_default()
        };
        EcdhEsHkdf256PublicKey {
            x: coordinate(point.x().map(|x| x.as_slice())),
            y: coordinate(point.y().map(|y| y.as_slice())),
        }
    }

    /// decapsulate(peerCoseKey): `None` if the platform's key is not a valid P-256 point.
    pub fn shared_secret(
        &self,
        protocol: PinProtocol,
        peer: &EcdhEsHkdf256PublicKey,
    ) -> Option<SharedSecret> {
        let x: &[u8; 32] = peer.x.as_slice().try_into().ok()?;
        let y: &[u8; 32] = peer.y.as_slice().try_into().ok()?;
        let point = p256::Sec1Point::from_affine_coordinates(x.into(), y.into(), false);
        let peer = Option::<p256::PublicKey>::from(p256::PublicKey::from_sec1_point(&point))?;
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), peer.as_affine());
        let z = shared.raw_secret_bytes();
        let mut bytes = [0u8; 64];
        match protocol {
            PinProtocol::V1 => bytes[..32].copy_from_slice(&Sha256::digest(z)),
            PinProtocol::V2 => {
                let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), z);
                hkdf.expand(b"CTAP2 HMAC key", &mut bytes[..32]).ok()?;
                hkdf.expand(b"CTAP2 AES key", &mut bytes[32..]).ok()?;
            }
        }
        Some(SharedSecret { protocol, bytes })
    }
}
