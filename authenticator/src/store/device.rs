//! What the vault record holds: the device secrets, the PIN verifier, the PIN lock, and the marks
//! of a wipe or a scrub under way.
//!
//! - The device secrets: the key-wrapping key (it opens every credential ID and derives every
//!   hmac-secret output), the persistent PIN/UV auth token, and the batch and enterprise
//!   attestations (their keys are secrets too: a copied key must not forge its batch's
//!   attestations).
//! - The PIN verifier: root = KDF(pinHash, salt), where pinHash = LEFT(SHA-256(PIN), 16) is what
//!   every platform sends; the record keeps HMAC-SHA-256(root, "verifier"), never the root or
//!   pinHash, and the KDF with its cost, so that a state carries its own parameters.
//! - The PIN lock: with it on and a PIN set, the secrets are kept only as an AEAD ciphertext
//!   (XChaCha20-Poly1305) under HMAC-SHA-256(root, "seal"), never also in the clear. A copy of
//!   the state then gives nothing without a KDF evaluation per PIN guess.
//!
//! The record is CBOR; the secrets inside it are CBOR again, in the clear or sealed, so that
//! both forms carry the same bytes.

use alloc::vec::Vec;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteArray, Bytes};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Result, StoreError};
use crate::attestation::{Attestation, EnterpriseAttestation};
use crate::fallible;

/// A 32-byte secret, wiped when dropped.
pub type Key = Zeroizing<[u8; 32]>;

/// The KDF that turns pinHash into the PIN's root key, with its cost. Chosen per body (see
/// `Config::pin_kdf`) and stored with each verifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinKdf {
    /// PBKDF2-HMAC-SHA-256: what a microcontroller with little RAM can afford.
    Pbkdf2 { iterations: u32 },
    /// Argon2id (version 0x13, one lane): memory-hard, for bodies with memory to spare. Needs
    /// the crate's `argon2` feature to be evaluated; a record naming it is still read without.
    Argon2id { memory_kib: u32, passes: u32 },
}

const KDF_PBKDF2: u8 = 1;
const KDF_ARGON2ID: u8 = 2;

impl PinKdf {
    /// root = KDF(pinHash, salt).
    pub fn derive(&self, pin_hash: &[u8; 16], salt: &[u8; 32]) -> Result<Key> {
        let mut root = Zeroizing::new([0u8; 32]);
        match *self {
            PinKdf::Pbkdf2 { iterations } => {
                pbkdf2::pbkdf2_hmac::<Sha256>(pin_hash, salt, iterations.max(1), &mut root[..]);
            }
            PinKdf::Argon2id { memory_kib, passes } => {
                argon2id(pin_hash, salt, memory_kib, passes, &mut root)?
            }
        }
        Ok(root)
    }

    fn id_and_cost(&self) -> (u8, u32, u32) {
        match *self {
            PinKdf::Pbkdf2 { iterations } => (KDF_PBKDF2, iterations, 0),
            PinKdf::Argon2id { memory_kib, passes } => (KDF_ARGON2ID, passes, memory_kib),
        }
    }

    fn from_id(id: u8, cost: u32, memory_kib: u32) -> Option<Self> {
        match id {
            KDF_PBKDF2 => Some(PinKdf::Pbkdf2 { iterations: cost }),
            KDF_ARGON2ID => Some(PinKdf::Argon2id {
                memory_kib,
                passes: cost,
            }),
            _ => None,
        }
    }
}

#[cfg(feature = "argon2")]
fn argon2id(
    pin_hash: &[u8; 16],
    salt: &[u8; 32],
    memory_kib: u32,
    passes: u32,
    out: &mut [u8; 32],
) -> Result<()> {
    use argon2::{Algorithm, Argon2, Block, Params, Version};
    let params = Params::new(memory_kib, passes, 1, Some(32)).map_err(|_| StoreError::Io)?;
    // The memory is taken fallibly: a heap too small for it is an error, not a panic.
    let mut memory = Vec::new();
    memory
        .try_reserve_exact(params.block_count())
        .map_err(|_| StoreError::OutOfMemory)?;
    memory.resize(params.block_count(), Block::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(pin_hash, salt, &mut out[..], &mut memory)
        .map_err(|_| StoreError::Io)
}

#[cfg(not(feature = "argon2"))]
fn argon2id(_: &[u8; 16], _: &[u8; 32], _: u32, _: u32, _: &mut [u8; 32]) -> Result<()> {
    // A verifier made by a body with Argon2id cannot be checked by one without it.
    Err(StoreError::Io)
}

pub(super) fn hmac(key: &[u8], label: &[u8]) -> Key {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// What the root key gives: the verifier kept in the record and the key the secrets are sealed
/// under. One does not reveal the other.
pub struct PinKeys {
    pub check: Key,
    pub seal: Key,
}

impl PinKeys {
    pub fn from_root(root: &Key) -> Self {
        Self {
            check: hmac(&root[..], b"open-fido-key pin verifier"),
            seal: hmac(&root[..], b"open-fido-key pin seal"),
        }
    }
}

/// The PIN verifier as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    #[serde(rename = "f")]
    kdf: u8,
    /// PBKDF2 iterations, or Argon2id passes.
    #[serde(rename = "c")]
    cost: u32,
    /// Argon2id memory in KiB (0 for PBKDF2).
    #[serde(rename = "m")]
    memory_kib: u32,
    #[serde(rename = "s")]
    salt: ByteArray<32>,
    #[serde(rename = "v")]
    check: ByteArray<32>,
    /// The PIN's length in code points: a raised minimum may force a change.
    #[serde(rename = "n")]
    pub code_points: u8,
}

impl Verifier {
    /// A verifier for `pin_hash` under a fresh salt; also returns the PIN's keys.
    pub fn new(
        kdf: PinKdf,
        pin_hash: &[u8; 16],
        code_points: u8,
        rng: &mut impl CryptoRng,
    ) -> Result<(Self, PinKeys)> {
        let mut salt = [0u8; 32];
        rng.fill_bytes(&mut salt);
        let keys = PinKeys::from_root(&kdf.derive(pin_hash, &salt)?);
        let (kdf, cost, memory_kib) = kdf.id_and_cost();
        let verifier = Self {
            kdf,
            cost,
            memory_kib,
            salt: ByteArray::new(salt),
            check: ByteArray::new(*keys.check),
            code_points,
        };
        Ok((verifier, keys))
    }

    /// The KDF and cost this verifier was made with.
    pub fn kdf(&self) -> Option<PinKdf> {
        PinKdf::from_id(self.kdf, self.cost, self.memory_kib)
    }

    /// The slow check: one KDF evaluation. The PIN's keys if `pin_hash` is the PIN's.
    pub fn check(&self, pin_hash: &[u8; 16]) -> Result<Option<PinKeys>> {
        let kdf = self.kdf().ok_or(StoreError::Io)?;
        let keys = PinKeys::from_root(&kdf.derive(pin_hash, &self.salt)?);
        let matches: bool = keys.check.ct_eq(&*self.check).into();
        Ok(matches.then_some(keys))
    }
}

/// The device secrets, in RAM (wiped when dropped: every field zeroizes itself).
#[derive(Clone)]
pub struct Secrets {
    pub kwk: Key,
    pub persistent_token: Option<Key>,
    pub attestation: Option<Attestation>,
    pub enterprise: Option<EnterpriseAttestation>,
}

impl Secrets {
    pub fn new(rng: &mut impl CryptoRng) -> Self {
        let mut kwk = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut kwk[..]);
        Self {
            kwk,
            persistent_token: None,
            attestation: None,
            enterprise: None,
        }
    }

    /// Their CBOR (wiped when dropped).
    fn to_cbor(&self) -> Result<Zeroizing<Vec<u8>>> {
        let attestation = self.attestation.as_ref().map(Attestation::to_record);
        let enterprise = match &self.enterprise {
            Some(e) => Some(e.to_record().map_err(|_| StoreError::OutOfMemory)?),
            None => None,
        };
        let record = SecretsRecord {
            kwk: Bytes::new(&self.kwk[..]),
            persistent_token: self.persistent_token.as_ref().map(|t| Bytes::new(&t[..])),
            attestation: attestation.as_ref().map(|a| Bytes::new(a)),
            enterprise: enterprise.as_ref().map(|e| Bytes::new(e)),
        };
        to_cbor(&record)
    }

    fn from_cbor(bytes: &[u8]) -> Result<Self> {
        let record: SecretsRecord<'_> =
            cbor_smol::cbor_deserialize(bytes).map_err(|_| StoreError::Io)?;
        let key = |bytes: &Bytes| -> Result<Key> {
            let key: [u8; 32] = (&bytes[..]).try_into().map_err(|_| StoreError::Io)?;
            Ok(Zeroizing::new(key))
        };
        Ok(Self {
            kwk: key(record.kwk)?,
            persistent_token: record.persistent_token.map(key).transpose()?,
            attestation: match record.attestation {
                Some(a) => Some(Attestation::from_record(a).ok_or(StoreError::Io)?),
                None => None,
            },
            enterprise: match record.enterprise {
                Some(e) => Some(EnterpriseAttestation::from_record(e).ok_or(StoreError::Io)?),
                None => None,
            },
        })
    }
}

#[derive(Serialize, Deserialize)]
struct SecretsRecord<'a> {
    #[serde(rename = "k", borrow)]
    kwk: &'a Bytes,
    #[serde(rename = "t", borrow, default, skip_serializing_if = "Option::is_none")]
    persistent_token: Option<&'a Bytes>,
    #[serde(rename = "a", borrow, default, skip_serializing_if = "Option::is_none")]
    attestation: Option<&'a Bytes>,
    #[serde(rename = "e", borrow, default, skip_serializing_if = "Option::is_none")]
    enterprise: Option<&'a Bytes>,
}

/// Associated data of the sealed secrets: they open only as what they were sealed as.
const SEAL_AD: &[u8] = b"open-fido-key vault secrets 1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// nonce || XChaCha20-Poly1305(seal key, nonce, secrets) || tag.
fn seal(secrets: &Secrets, key: &Key, rng: &mut impl CryptoRng) -> Result<Vec<u8>> {
    let plain = secrets.to_cbor()?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mut sealed = fallible::concat(&[&nonce, &plain, &[0; TAG_LEN]])?;
    let end = NONCE_LEN + plain.len();
    let cipher = XChaCha20Poly1305::new((&**key).into());
    let tag = cipher
        .encrypt_inout_detached(
            &XNonce::from(nonce),
            SEAL_AD,
            (&mut sealed[NONCE_LEN..end]).into(),
        )
        .map_err(|_| StoreError::Full)?;
    sealed[end..].copy_from_slice(&tag);
    Ok(sealed)
}

fn unseal(sealed: &[u8], key: &Key) -> Result<Secrets> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(StoreError::Io);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| StoreError::Io)?;
    let tag = Tag::try_from(tag).map_err(|_| StoreError::Io)?;
    let mut plain = Zeroizing::new(fallible::copy(ciphertext)?);
    let cipher = XChaCha20Poly1305::new((&**key).into());
    cipher
        .decrypt_inout_detached(&nonce, SEAL_AD, (&mut plain[..]).into(), &tag)
        .map_err(|_| StoreError::Io)?;
    Secrets::from_cbor(&plain)
}

/// The record as stored (borrowing the slot's bytes).
#[derive(Serialize, Deserialize)]
struct Record<'a> {
    /// The secrets' CBOR in the clear: no PIN, or the lock off.
    #[serde(rename = "c", borrow, default, skip_serializing_if = "Option::is_none")]
    clear: Option<&'a Bytes>,
    /// The secrets sealed under the PIN's seal key: a PIN and the lock on.
    #[serde(rename = "s", borrow, default, skip_serializing_if = "Option::is_none")]
    sealed: Option<&'a Bytes>,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pin: Option<Verifier>,
    #[serde(rename = "l", default)]
    lock: bool,
    /// The batch certificate's AAGUID, so that a locked key still reports it in getInfo.
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    aaguid: Option<ByteArray<16>>,
    /// An enterprise attestation is provisioned (getInfo's `ep` while locked).
    #[serde(rename = "e", default)]
    enterprise: bool,
    /// authenticatorReset's wipe is under way; the signature counter's floor to restore.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    wipe_floor: Option<u32>,
    /// The migration's scrub of littlefs is under way (stale copies of secrets may remain).
    #[serde(rename = "m", default)]
    scrub: bool,
}

/// The vault's record as held in RAM.
#[derive(Clone)]
pub struct Device {
    /// The secrets; `None` while the key is locked.
    pub secrets: Option<Secrets>,
    /// The sealed form as read, kept while locked so that a write can carry it unchanged.
    sealed: Option<Zeroizing<Vec<u8>>>,
    pub pin: Option<Verifier>,
    pub lock: bool,
    aaguid: Option<[u8; 16]>,
    enterprise: bool,
    pub wipe_floor: Option<u32>,
    pub scrub: bool,
}

impl Device {
    /// A new key: fresh secrets, no PIN, the lock off.
    pub fn new(secrets: Secrets) -> Self {
        Self {
            secrets: Some(secrets),
            sealed: None,
            pin: None,
            lock: false,
            aaguid: None,
            enterprise: false,
            wipe_floor: None,
            scrub: false,
        }
    }

    pub fn from_cbor(body: &[u8]) -> Result<Self> {
        let record: Record<'_> = cbor_smol::cbor_deserialize(body).map_err(|_| StoreError::Io)?;
        let secrets = match record.clear {
            Some(clear) => Some(Secrets::from_cbor(clear)?),
            None => None,
        };
        let sealed = match record.sealed {
            Some(sealed) => Some(Zeroizing::new(fallible::copy(sealed)?)),
            None => None,
        };
        if secrets.is_none() == sealed.is_none() {
            return Err(StoreError::Io);
        }
        Ok(Self {
            secrets,
            sealed,
            pin: record.pin,
            lock: record.lock,
            aaguid: record.aaguid.map(|a| a.into_array()),
            enterprise: record.enterprise,
            wipe_floor: record.wipe_floor,
            scrub: record.scrub,
        })
    }

    /// Whether the secrets are to be kept sealed.
    fn sealing(&self) -> bool {
        self.lock && self.pin.is_some()
    }

    /// The record's CBOR: the secrets sealed under `seal_key` if the lock is on and a PIN set
    /// (that key must then be given, unless the secrets are still sealed as read).
    pub fn to_cbor(
        &self,
        seal_key: Option<&Key>,
        rng: &mut impl CryptoRng,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut clear = None;
        let mut sealed = None;
        match (&self.secrets, self.sealing()) {
            (Some(secrets), false) => clear = Some(secrets.to_cbor()?),
            (Some(secrets), true) => {
                let key = seal_key.ok_or(StoreError::Locked)?;
                sealed = Some(Zeroizing::new(seal(secrets, key, rng)?));
            }
            (None, true) => sealed = Some(self.sealed.clone().ok_or(StoreError::Locked)?),
            // No secrets to write in the clear: refuse rather than lose them.
            (None, false) => return Err(StoreError::Locked),
        }
        let public = self.secrets.as_ref();
        let record = Record {
            clear: clear.as_ref().map(|c| Bytes::new(c)),
            sealed: sealed.as_ref().map(|s| Bytes::new(s)),
            pin: self.pin.clone(),
            lock: self.lock,
            aaguid: match public {
                Some(s) => s.attestation.as_ref().map(|a| ByteArray::new(*a.aaguid())),
                None => self.aaguid.map(ByteArray::new),
            },
            enterprise: public.map_or(self.enterprise, |s| s.enterprise.is_some()),
            wipe_floor: self.wipe_floor,
            scrub: self.scrub,
        };
        to_cbor(&record)
    }

    /// Open the sealed secrets with the PIN's seal key (the first correct PIN of a power-up).
    pub fn unseal(&mut self, seal_key: &Key) -> Result<()> {
        if self.secrets.is_none() {
            let sealed = self.sealed.as_ref().ok_or(StoreError::Io)?;
            self.secrets = Some(unseal(sealed, seal_key)?);
        }
        Ok(())
    }

    /// Forget the sealed form once the secrets are in RAM and written again.
    pub fn written(&mut self) {
        if self.secrets.is_some() {
            self.sealed = None;
        }
    }

    /// The batch certificate's AAGUID, readable while locked.
    pub fn aaguid(&self) -> Option<[u8; 16]> {
        match &self.secrets {
            Some(s) => s.attestation.as_ref().map(|a| *a.aaguid()),
            None => self.aaguid,
        }
    }

    /// Whether an enterprise attestation is provisioned, readable while locked.
    pub fn has_enterprise(&self) -> bool {
        match &self.secrets {
            Some(s) => s.enterprise.is_some(),
            None => self.enterprise,
        }
    }
}

fn to_cbor<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(fallible::zeroed(super::vault::MAX_BODY)?);
    let len = cbor_smol::cbor_serialize(value, &mut buffer)
        .map_err(|_| StoreError::Full)?
        .len();
    buffer.truncate(len);
    Ok(buffer)
}
