//! Batch attestation: a vendor's P-256 key and its certificate, installed once (provisioning)
//! and then used for packed attestation with `x5c` and for U2F registrations.
//!
//! The certificate is checked when it is installed: it must be for the key that comes with it
//! and carry the AAGUID extension (id-fido-gen-ce-aaguid), whose value then becomes the AAGUID
//! the key reports. Installation is refused once an attestation is in place, and
//! authenticatorReset keeps it, as on commercial keys: the private key never leaves again.

use alloc::vec::Vec;
use core::fmt;

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Sequence};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::credential::{p256_scalar, sign_es256, PublicKey, Signature};
use crate::fallible;

/// id-fido-gen-ce-aaguid, the extension carrying the AAGUID in an attestation certificate.
const AAGUID_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");

/// The largest certificate an attestation statement carries (ctap-types' `x5c` entry).
pub const MAX_CERTIFICATE_LEN: usize = 1024;

/// The parts of an X.509 certificate (RFC 5280 §4.1) the key checks, the subject public key and
/// the extensions; the rest stays undecoded. (x509-cert's full model costs the Pico ~47 KB of
/// flash for fields the key never reads.)
#[derive(Sequence)]
struct CertificateRef<'a> {
    tbs_certificate: TbsCertificateRef<'a>,
    signature_algorithm: AnyRef<'a>,
    signature: BitStringRef<'a>,
}

#[derive(Sequence)]
struct TbsCertificateRef<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    version: Option<u8>,
    serial_number: AnyRef<'a>,
    signature: AnyRef<'a>,
    issuer: AnyRef<'a>,
    validity: AnyRef<'a>,
    subject: AnyRef<'a>,
    subject_public_key_info: SubjectPublicKeyInfoRef<'a>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    issuer_unique_id: Option<BitStringRef<'a>>,
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT", optional = "true")]
    subject_unique_id: Option<BitStringRef<'a>>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    extensions: Option<Vec<ExtensionRef<'a>>>,
}

#[derive(Sequence)]
struct SubjectPublicKeyInfoRef<'a> {
    algorithm: AnyRef<'a>,
    subject_public_key: BitStringRef<'a>,
}

#[derive(Sequence)]
struct ExtensionRef<'a> {
    extn_id: ObjectIdentifier,
    #[asn1(default = "Default::default")]
    critical: bool,
    extn_value: &'a OctetStringRef,
}

/// An installed attestation: the private key, the AAGUID its certificate names, the certificate.
#[derive(Clone)]
pub struct Attestation {
    key: Zeroizing<[u8; 32]>,
    aaguid: [u8; 16],
    certificate: Vec<u8>,
}

/// Why an attestation cannot be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttestationError {
    /// The private key is not a P-256 scalar.
    InvalidKey,
    /// The certificate does not parse, is too large or has no AAGUID extension.
    InvalidCertificate,
    /// The certificate is for another key.
    KeyMismatch,
    /// An attestation is already installed.
    AlreadyProvisioned,
    /// The store could not be read or written.
    Storage,
    /// An enterprise attestation's RP ID list is too long or has an empty or too long RP ID.
    InvalidRpIds,
    /// An enterprise attestation's certificate names another AAGUID than the batch's.
    AaguidMismatch,
    /// An enterprise attestation needs a batch attestation for the RPs it does not go to.
    NoBatch,
    /// The heap could not hold the record.
    OutOfMemory,
    /// The key is locked: its secrets are sealed until the PIN is given.
    Locked,
}

impl fmt::Display for AttestationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidKey => "the attestation key is not a P-256 private key",
            Self::InvalidCertificate => {
                "the certificate does not parse, exceeds 1024 bytes or lacks the AAGUID extension"
            }
            Self::KeyMismatch => "the certificate is not for the attestation key",
            Self::AlreadyProvisioned => "an attestation is already installed",
            Self::Storage => "the key's storage failed",
            Self::InvalidRpIds => "more than 8 RP IDs, or an RP ID empty or over 256 bytes",
            Self::AaguidMismatch => "the certificate names another AAGUID than the batch's",
            Self::NoBatch => "a batch attestation must be installed first",
            Self::OutOfMemory => "out of memory",
            Self::Locked => "the key is locked: give its PIN first",
        })
    }
}

impl Attestation {
    /// Check a key (a 32-byte big-endian P-256 scalar) and its DER certificate.
    pub fn new(key: &[u8], certificate: &[u8]) -> Result<Self, AttestationError> {
        let key: [u8; 32] = key.try_into().map_err(|_| AttestationError::InvalidKey)?;
        let key = Zeroizing::new(key);
        let scalar = p256_scalar(&key).ok_or(AttestationError::InvalidKey)?;
        if certificate.len() > MAX_CERTIFICATE_LEN {
            return Err(AttestationError::InvalidCertificate);
        }
        let parsed = CertificateRef::from_der(certificate)
            .map_err(|_| AttestationError::InvalidCertificate)?;
        let tbs = parsed.tbs_certificate;
        let certified = tbs.subject_public_key_info.subject_public_key.raw_bytes();
        let public = PublicKey::es256(&scalar).sec1_uncompressed();
        if public.as_ref().map(|p| &p[..]) != Some(certified) {
            return Err(AttestationError::KeyMismatch);
        }
        let aaguid = tbs
            .extensions
            .iter()
            .flatten()
            .find(|extension| extension.extn_id == AAGUID_OID && !extension.critical)
            .and_then(|extension| <&OctetStringRef>::from_der(extension.extn_value.as_bytes()).ok())
            .and_then(|value| <[u8; 16]>::try_from(value.as_bytes()).ok())
            .ok_or(AttestationError::InvalidCertificate)?;
        Ok(Self {
            key,
            aaguid,
            certificate: fallible::copy(certificate).map_err(|_| AttestationError::OutOfMemory)?,
        })
    }

    /// The AAGUID named by the certificate.
    pub fn aaguid(&self) -> &[u8; 16] {
        &self.aaguid
    }

    /// The DER certificate.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// Sign with the attestation key (ES256).
    pub(crate) fn sign(&self, message: &[&[u8]]) -> Signature {
        let scalar = p256_scalar(&self.key).expect("checked when the attestation was built");
        sign_es256(&scalar, message)
    }

    /// The record kept in the store: the key, then the certificate.
    pub(crate) fn to_record(&self) -> Zeroizing<Vec<u8>> {
        let mut record = Zeroizing::new(Vec::with_capacity(32 + self.certificate.len()));
        record.extend_from_slice(&*self.key);
        record.extend_from_slice(&self.certificate);
        record
    }

    /// Read back a record written by [`Attestation::to_record`], checked again as when it was
    /// installed (littlefs checksums metadata, not file contents), once per boot.
    pub(crate) fn from_record(record: &[u8]) -> Option<Self> {
        let (key, certificate) = record.split_first_chunk::<32>()?;
        Self::new(key, certificate).ok()
    }
}

impl PartialEq for Attestation {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.key.ct_eq(&*other.key)) && self.certificate == other.certificate
    }
}

impl fmt::Debug for Attestation {
    /// The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attestation")
            .field("aaguid", &self.aaguid)
            .field("certificate_len", &self.certificate.len())
            .finish_non_exhaustive()
    }
}

/// The most RP IDs a vendor-facilitated list holds.
pub const MAX_ENTERPRISE_RP_IDS: usize = 8;
/// The longest RP ID in that list, in bytes (as the longest RP ID the key stores elsewhere).
pub const MAX_ENTERPRISE_RP_ID_LEN: usize = 256;
/// The record's format version (its first byte), so that a later format can be told apart.
const ENTERPRISE_RECORD_VERSION: u8 = 1;

/// Enterprise attestation (CTAP 2.1 §7.1): a key and certificate that name this one key (not a
/// batch), with the RP IDs the vendor-facilitated mode gives it to. Installed once, like the
/// batch attestation, and kept by authenticatorReset (reset only disables it: that switch is
/// in the settings).
#[derive(Clone, PartialEq)]
pub struct EnterpriseAttestation {
    attestation: Attestation,
    /// The RP IDs, each as a 2-byte big-endian length and the bytes, as in the record.
    rp_ids: Vec<u8>,
}

impl EnterpriseAttestation {
    /// Check a key, its certificate (as [`Attestation::new`] does) and the RP ID list: at most
    /// [`MAX_ENTERPRISE_RP_IDS`], each 1 to [`MAX_ENTERPRISE_RP_ID_LEN`] bytes.
    pub fn new(key: &[u8], certificate: &[u8], rp_ids: &[&str]) -> Result<Self, AttestationError> {
        if rp_ids.len() > MAX_ENTERPRISE_RP_IDS
            || rp_ids
                .iter()
                .any(|id| id.is_empty() || id.len() > MAX_ENTERPRISE_RP_ID_LEN)
        {
            return Err(AttestationError::InvalidRpIds);
        }
        let attestation = Attestation::new(key, certificate)?;
        let mut list = fallible::with_capacity(rp_ids.iter().map(|id| 2 + id.len()).sum())
            .map_err(|_| AttestationError::OutOfMemory)?;
        for id in rp_ids {
            list.extend_from_slice(&(id.len() as u16).to_be_bytes());
            list.extend_from_slice(id.as_bytes());
        }
        Ok(Self {
            attestation,
            rp_ids: list,
        })
    }

    /// The enterprise key and certificate.
    pub fn attestation(&self) -> &Attestation {
        &self.attestation
    }

    /// The RP IDs of the vendor-facilitated list, in the order provisioned.
    pub fn rp_ids(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.rp_ids[..];
        core::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let (id, tail) = tail.split_at_checked(u16::from_be_bytes(*len) as usize)?;
            rest = tail;
            Some(id)
        })
    }

    /// Whether `rp_id` is on the list: exact byte comparison, no case folding and no suffix
    /// matching (a listed "example.com" does not cover "login.example.com").
    pub fn lists(&self, rp_id: &str) -> bool {
        self.rp_ids().any(|id| id == rp_id.as_bytes())
    }

    /// The record kept in the store: version, key, certificate length (u16 big-endian),
    /// certificate, RP ID count, then each RP ID as its length (u16 big-endian) and bytes.
    pub(crate) fn to_record(&self) -> Result<Zeroizing<Vec<u8>>, AttestationError> {
        let certificate = self.attestation.certificate();
        let count = self.rp_ids().count();
        let len = 1 + 32 + 2 + certificate.len() + 1 + self.rp_ids.len();
        let mut record = Zeroizing::new(
            fallible::with_capacity(len).map_err(|_| AttestationError::OutOfMemory)?,
        );
        record.push(ENTERPRISE_RECORD_VERSION);
        record.extend_from_slice(&*self.attestation.key);
        record.extend_from_slice(&(certificate.len() as u16).to_be_bytes());
        record.extend_from_slice(certificate);
        record.push(count as u8);
        record.extend_from_slice(&self.rp_ids);
        Ok(record)
    }

    /// Read back a record written by [`EnterpriseAttestation::to_record`], checked again.
    pub(crate) fn from_record(record: &[u8]) -> Option<Self> {
        let (&version, rest) = record.split_first()?;
        if version != ENTERPRISE_RECORD_VERSION {
            return None;
        }
        let (key, rest) = rest.split_first_chunk::<32>()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let (certificate, rest) = rest.split_at_checked(u16::from_be_bytes(*len) as usize)?;
        let (&count, mut rest) = rest.split_first()?;
        let mut ids: heapless::Vec<&str, MAX_ENTERPRISE_RP_IDS> = heapless::Vec::new();
        for _ in 0..count {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let (id, tail) = tail.split_at_checked(u16::from_be_bytes(*len) as usize)?;
            ids.push(core::str::from_utf8(id).ok()?).ok()?;
            rest = tail;
        }
        if !rest.is_empty() {
            return None;
        }
        Self::new(key, certificate, &ids).ok()
    }
}

impl fmt::Debug for EnterpriseAttestation {
    /// The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnterpriseAttestation")
            .field("attestation", &self.attestation)
            .field("rp_ids", &self.rp_ids().count())
            .finish()
    }
}
