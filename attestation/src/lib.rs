//! Be your own vendor: an attestation root CA, batch attestation certificates, a FIDO metadata
//! statement (MDS3) that lets relying parties trust them, and provisioning a key with a batch.
//!
//! Built on RustCrypto (x509-cert's builder, p256, der, spki); no OpenSSL. The `attestation`
//! binary is a thin command line over this library.
//!
//! Files (PEM, readable by any X.509 tool):
//! - a CA directory: `ca.key.pem` (PKCS#8, mode 0600) and `ca.pem`;
//! - a batch directory: `batch.key.pem` (PKCS#8, mode 0600), `batch.pem`, and a copy of the
//!   root, `ca.pem`, so that the metadata statement can name it; `metadata.json` once made.

pub mod certificate;
pub mod files;
pub mod metadata;
pub mod provision;

use std::fmt;

/// Everything here fails with a message for the user.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self(error.to_string())
    }
}

/// Parse an AAGUID written as a UUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`) or as 32 hex digits.
pub fn parse_aaguid(text: &str) -> Result<[u8; 16], Error> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let dashes_ok = text.len() == 32 || (text.len() == 36 && dash_positions_ok(text));
    if hex.len() != 32 || !dashes_ok || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::new(format!("{text:?} is not a UUID")));
    }
    let mut aaguid = [0u8; 16];
    for (i, byte) in aaguid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex digits");
    }
    Ok(aaguid)
}

fn dash_positions_ok(text: &str) -> bool {
    text.char_indices()
        .all(|(i, c)| (c == '-') == matches!(i, 8 | 13 | 18 | 23))
}

/// An AAGUID in UUID form.
pub fn format_aaguid(aaguid: &[u8; 16]) -> String {
    let hex: String = aaguid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aaguids_round_trip_and_bad_ones_are_refused() {
        let text = "c56e6d6e-3d7e-4079-8197-760492289b2e";
        let aaguid = parse_aaguid(text).unwrap();
        assert_eq!(format_aaguid(&aaguid), text);
        assert_eq!(parse_aaguid(&text.replace('-', "")).unwrap(), aaguid);
        for bad in [
            "",
            "c56e6d6e",
            "c56e6d6e-3d7e-4079-8197-760492289b2x",
            "c56e6d6e3-d7e-4079-8197-760492289b2e",
        ] {
            assert!(parse_aaguid(bad).is_err(), "{bad}");
        }
    }
}
