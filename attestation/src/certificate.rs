//! The certificates: a self-signed P-256 root, and batch certificates that meet the FIDO packed
//! attestation certificate requirements (WebAuthn §8.2.1): X.509 v3; subject C, O,
//! OU = "Authenticator Attestation" and CN; basic constraints CA false; the AAGUID in the
//! non-critical id-fido-gen-ce-aaguid extension.

use std::str::FromStr;
use std::time::Duration;

use der::asn1::{ObjectIdentifier, OctetString};
use der::referenced::OwnedToRef;
use der::Encode;
use p256::ecdsa::{DerSignature, SigningKey};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned as SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::Validity;
use x509_cert::Certificate;

use crate::Error;

/// id-fido-gen-ce-aaguid.
pub const AAGUID_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");

/// What FIDO requires as the batch certificate's organisational unit.
pub const ATTESTATION_OU: &str = "Authenticator Attestation";

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A key and the certificate for it.
pub struct Issued {
    pub key: SigningKey,
    pub certificate: Certificate,
}

/// Who the certificates name.
#[derive(Clone, Debug)]
pub struct Subject {
    /// ISO 3166 country code.
    pub country: String,
    pub organization: String,
    pub common_name: String,
}

impl Subject {
    /// The country and organisation a certificate names (empty where it names none).
    pub fn of(certificate: &Certificate) -> Self {
        let name = certificate.tbs_certificate().subject();
        Subject {
            country: (name.country().ok().flatten())
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            organization: (name.organization().ok().flatten())
                .map(|o| o.value().into_owned())
                .unwrap_or_default(),
            common_name: (name.common_name().ok().flatten())
                .map(|cn| cn.value().into_owned())
                .unwrap_or_default(),
        }
    }

    fn name(&self, unit: Option<&str>, serial: Option<&str>) -> Result<Name, Error> {
        // RFC 4514 order: the most specific attribute first.
        let mut parts = vec![format!("CN={}", escape(&self.common_name))];
        if let Some(serial) = serial {
            parts.push(format!("serialNumber={}", escape(serial)));
        }
        if let Some(unit) = unit {
            parts.push(format!("OU={}", escape(unit)));
        }
        parts.push(format!("O={}", escape(&self.organization)));
        parts.push(format!("C={}", escape(&self.country)));
        Name::from_str(&parts.join(",")).map_err(|e| Error::new(format!("subject name: {e}")))
    }
}

/// RFC 4514 escaping of an attribute value.
fn escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A profile that only sets the names: every extension is added explicitly.
struct Names {
    issuer: Name,
    subject: Name,
}

impl BuilderProfile for Names {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(Vec::new())
    }
}

/// A new P-256 key from the operating system's randomness.
pub fn generate_key() -> Result<SigningKey, Error> {
    loop {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *bytes).map_err(|e| Error::new(format!("randomness: {e}")))?;
        // A random 256-bit string is a valid scalar but for a chance of about 2^-32.
        if let Ok(key) = SigningKey::from_slice(&*bytes) {
            return Ok(key);
        }
    }
}

/// A random positive 16-byte serial number (RFC 5280 allows up to 20 octets).
fn serial_number() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::new(format!("randomness: {e}")))?;
    bytes[0] &= 0x7F;
    bytes[0] |= 0x01;
    SerialNumber::new(&bytes).map_err(|e| Error::new(format!("serial number: {e}")))
}

fn public_key_info(key: &SigningKey) -> Result<SubjectPublicKeyInfo, Error> {
    SubjectPublicKeyInfo::from_key(key.verifying_key())
        .map_err(|e| Error::new(format!("public key: {e}")))
}

/// The key identifier RFC 5280 §4.2.1.2 method 1 gives a public key.
fn key_identifier(spki: &SubjectPublicKeyInfo) -> Result<SubjectKeyIdentifier, Error> {
    SubjectKeyIdentifier::try_from(spki.owned_to_ref())
        .map_err(|e| Error::new(format!("key id: {e}")))
}

fn build_error(e: impl std::fmt::Display) -> Error {
    Error::new(format!("certificate: {e}"))
}

/// A self-signed root CA, valid for `years`.
pub fn root_ca(subject: &Subject, years: u32) -> Result<Issued, Error> {
    let key = generate_key()?;
    let name = subject.name(None, None)?;
    let spki = public_key_info(&key)?;
    let ski = key_identifier(&spki)?;
    let validity = Validity::from_now(YEAR * years).map_err(build_error)?;
    let profile = Names {
        issuer: name.clone(),
        subject: name,
    };
    let mut builder =
        CertificateBuilder::new(profile, serial_number()?, validity, spki).map_err(build_error)?;
    builder
        .add_extension(&BasicConstraints {
            ca: true,
            path_len_constraint: Some(0),
        })
        .map_err(build_error)?;
    builder
        .add_extension(&KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign))
        .map_err(build_error)?;
    builder.add_extension(&ski).map_err(build_error)?;
    let certificate = builder
        .build::<_, DerSignature>(&key)
        .map_err(build_error)?;
    Ok(Issued { key, certificate })
}

/// A batch attestation key and certificate for `aaguid`, issued by `ca`, valid for `years`.
pub fn batch(
    ca: &Issued,
    subject: &Subject,
    aaguid: [u8; 16],
    years: u32,
) -> Result<Issued, Error> {
    attestation_certificate(ca, subject.name(Some(ATTESTATION_OU), None)?, aaguid, years)
}

/// An enterprise attestation key and certificate (CTAP 2.1 §7.1) for the one key whose serial
/// is `serial`: like a batch certificate (same profile, same AAGUID, issued by the same CA),
/// but its own key pair and a subject that names the individual key (the X.520 serialNumber
/// attribute), so a relying party it is given to can tell this key from every other.
pub fn enterprise(
    ca: &Issued,
    subject: &Subject,
    serial: &str,
    aaguid: [u8; 16],
    years: u32,
) -> Result<Issued, Error> {
    if serial.is_empty() || serial.len() > 64 {
        return Err(Error::new("the key's serial must be 1 to 64 characters"));
    }
    let name = subject.name(Some(ATTESTATION_OU), Some(serial))?;
    attestation_certificate(ca, name, aaguid, years)
}

fn attestation_certificate(
    ca: &Issued,
    subject: Name,
    aaguid: [u8; 16],
    years: u32,
) -> Result<Issued, Error> {
    let key = generate_key()?;
    let spki = public_key_info(&key)?;
    let ski = key_identifier(&spki)?;
    let ca_ski = key_identifier(ca.certificate.tbs_certificate().subject_public_key_info())?;
    let validity = Validity::from_now(YEAR * years).map_err(build_error)?;
    let profile = Names {
        issuer: ca.certificate.tbs_certificate().subject().clone(),
        subject,
    };
    let mut builder =
        CertificateBuilder::new(profile, serial_number()?, validity, spki).map_err(build_error)?;
    builder
        .add_extension(&BasicConstraints {
            ca: false,
            path_len_constraint: None,
        })
        .map_err(build_error)?;
    builder
        .add_extension(&KeyUsage(KeyUsages::DigitalSignature.into()))
        .map_err(build_error)?;
    builder.add_extension(&ski).map_err(build_error)?;
    builder
        .add_extension(&AuthorityKeyIdentifier {
            key_identifier: Some(ca_ski.0),
            ..Default::default()
        })
        .map_err(build_error)?;
    builder
        .add_extension(aaguid_extension(aaguid)?)
        .map_err(build_error)?;
    let certificate = builder
        .build::<_, DerSignature>(&ca.key)
        .map_err(build_error)?;
    Ok(Issued { key, certificate })
}

/// id-fido-gen-ce-aaguid: an OCTET STRING holding the 16 AAGUID bytes, not critical.
fn aaguid_extension(aaguid: [u8; 16]) -> Result<Extension, Error> {
    let value = OctetString::new(aaguid.to_vec()).map_err(build_error)?;
    Ok(Extension {
        extn_id: AAGUID_OID,
        critical: false,
        extn_value: OctetString::new(value.to_der().map_err(build_error)?).map_err(build_error)?,
    })
}

/// The AAGUID a certificate carries, if it has the extension.
pub fn aaguid_of(certificate: &Certificate) -> Option<[u8; 16]> {
    use der::Decode;
    let extension = certificate
        .tbs_certificate()
        .extensions()?
        .iter()
        .find(|e| e.extn_id == AAGUID_OID)?;
    let value = OctetString::from_der(extension.extn_value.as_bytes()).ok()?;
    value.as_bytes().try_into().ok()
}
