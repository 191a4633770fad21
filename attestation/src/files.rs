//! The CA and batch directories on disk.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use der::pem::LineEnding;
use der::{DecodePem, EncodePem};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use x509_cert::Certificate;

use crate::certificate::Issued;
use crate::Error;

pub const CA_KEY: &str = "ca.key.pem";
pub const CA_CERT: &str = "ca.pem";
pub const BATCH_KEY: &str = "batch.key.pem";
pub const BATCH_CERT: &str = "batch.pem";
pub const METADATA: &str = "metadata.json";
pub const ENTERPRISE_KEY: &str = "enterprise.key.pem";
pub const ENTERPRISE_CERT: &str = "enterprise.pem";

/// Write a key and its certificate into `dir` (created if needed). Refuses to overwrite a key:
/// losing a CA or batch key cannot be undone.
pub fn save(dir: &Path, issued: &Issued, key_file: &str, cert_file: &str) -> Result<(), Error> {
    fs::create_dir_all(dir)?;
    let key_path = dir.join(key_file);
    let pem = issued
        .key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::new(format!("encoding the key: {e}")))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| Error::new(format!("{}: {e}", key_path.display())))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    save_certificate(&dir.join(cert_file), &issued.certificate)
}

pub fn save_certificate(path: &Path, certificate: &Certificate) -> Result<(), Error> {
    let pem = certificate
        .to_pem(LineEnding::LF)
        .map_err(|e| Error::new(format!("encoding the certificate: {e}")))?;
    fs::write(path, pem).map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

pub fn load_certificate(path: &Path) -> Result<Certificate, Error> {
    let pem =
        fs::read_to_string(path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
    Certificate::from_pem(pem.as_bytes())
        .map_err(|e| Error::new(format!("{}: not a PEM certificate: {e}", path.display())))
}

pub fn load_key(path: &Path) -> Result<SigningKey, Error> {
    let pem = zeroize::Zeroizing::new(
        fs::read_to_string(path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?,
    );
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| Error::new(format!("{}: not a PKCS#8 P-256 key: {e}", path.display())))
}

/// A key and certificate from `dir`.
pub fn load(dir: &Path, key_file: &str, cert_file: &str) -> Result<Issued, Error> {
    Ok(Issued {
        key: load_key(&dir.join(key_file))?,
        certificate: load_certificate(&dir.join(cert_file))?,
    })
}
