//! `--attestation DIR`: a batch attestation made by the `attestation` tool (`batch.key.pem`, a
//! PKCS#8 P-256 key, and `batch.pem`, its certificate), installed on each key at start instead
//! of provisioning it over USB.

use std::path::Path;

use authenticator::attestation::Attestation;
use p256::pkcs8::DecodePrivateKey;
use zeroize::Zeroizing;

/// Read and check the batch in `dir`.
pub fn load(dir: &Path) -> Result<Attestation, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map(Zeroizing::new)
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let key = p256::SecretKey::from_pkcs8_pem(&read("batch.key.pem")?)
        .map_err(|e| format!("batch.key.pem: not a PKCS#8 P-256 key: {e}"))?;
    let pem = read("batch.pem")?;
    let (label, certificate) =
        der::pem::decode_vec(pem.as_bytes()).map_err(|e| format!("batch.pem: not PEM: {e}"))?;
    if label != "CERTIFICATE" {
        return Err(format!("batch.pem holds a {label}, not a CERTIFICATE"));
    }
    Attestation::new(&Zeroizing::new(key.to_bytes().to_vec()), &certificate)
        .map_err(|e| format!("{}: {e}", dir.display()))
}
