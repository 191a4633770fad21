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
            certificate: certificate.to_vec(),
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
