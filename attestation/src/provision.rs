//! Talking to a key: install a batch attestation with the vendor CTAPHID command, and read its
//! authenticatorGetInfo for the metadata statement.
//!
//! A key is reached over USB/IP (`HOST:PORT:BUSID`, e.g. a running `usbip-runner`) or through a
//! Linux hidraw node (`/dev/hidrawN`, e.g. a Pico).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ciborium::Value;
use fido_client::ctaphid::{Channel, Reports, CBOR};
use fido_client::hidraw::Hidraw;
use fido_client::usbip::Device;
use zeroize::Zeroizing;

use crate::certificate::Issued;
use crate::Error;

/// The vendor CTAPHID command that installs a batch attestation (as on the wire, 0x80 set).
pub const PROVISION_ATTESTATION: u8 = authenticator::ctaphid::command::PROVISION_ATTESTATION;

/// authenticatorGetInfo's command byte.
const GET_INFO: u8 = 0x04;

/// Where the key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    UsbIp { addr: SocketAddr, bus_id: String },
    Hidraw(PathBuf),
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if text.starts_with('/') {
            return Ok(Target::Hidraw(PathBuf::from(text)));
        }
        let bad = || {
            Error::new(format!(
                "{text:?}: expected HOST:PORT:BUSID or /dev/hidrawN"
            ))
        };
        let (server, bus_id) = text.rsplit_once(':').ok_or_else(bad)?;
        let addr = server
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        if bus_id.is_empty() {
            return Err(bad());
        }
        Ok(Target::UsbIp {
            addr,
            bus_id: bus_id.to_owned(),
        })
    }
}

/// One CTAPHID request and its response on a fresh channel of the target.
fn transact(target: &Target, command: u8, payload: &[u8]) -> Result<(u8, Vec<u8>), Error> {
    fn on<D: Reports>(device: D, command: u8, payload: &[u8]) -> std::io::Result<(u8, Vec<u8>)> {
        Channel::open(device)?.transact(command, payload)
    }
    let result = match target {
        Target::UsbIp { addr, bus_id } => {
            // A client that just detached (our own last command, say) may still hold it.
            let device = Device::import_when_free(*addr, bus_id, Duration::from_secs(2))
                .map_err(|e| Error::new(format!("USB/IP {addr} bus {bus_id}: {e}")))?;
            on(device, command, payload)
        }
        Target::Hidraw(path) => {
            let device =
                Hidraw::open(path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            on(device, command, payload)
        }
    };
    result.map_err(|e| Error::new(format!("talking to the key: {e}")))
}

/// The vendor command's request: `{1: private key (32 bytes), 2: DER certificate}`.
/// The most RP IDs, and the longest, an enterprise attestation's list takes.
pub use authenticator::attestation::{MAX_ENTERPRISE_RP_IDS, MAX_ENTERPRISE_RP_ID_LEN};

/// The request: `{1: key, 2: certificate}`, and for an enterprise attestation `3: [RP ID]`.
fn provisioning_request(
    batch: &Issued,
    rp_ids: Option<&[String]>,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    use der::Encode;
    let key = Zeroizing::new(batch.key.to_bytes().to_vec());
    let certificate = batch
        .certificate
        .to_der()
        .map_err(|e| Error::new(format!("encoding the certificate: {e}")))?;
    let request = Value::Map(vec![
        (Value::Integer(1.into()), Value::Bytes(key.to_vec())),
        (Value::Integer(2.into()), Value::Bytes(certificate)),
    ]);
    let request = match (request, rp_ids) {
        (Value::Map(mut entries), Some(rp_ids)) => {
            let list = rp_ids.iter().map(|id| Value::Text(id.clone())).collect();
            entries.push((Value::Integer(3.into()), Value::Array(list)));
            Value::Map(entries)
        }
        (request, _) => request,
    };
    let mut bytes = Zeroizing::new(Vec::new());
    ciborium::into_writer(&request, &mut *bytes)
        .map_err(|e| Error::new(format!("encoding the request: {e}")))?;
    // ciborium's Value holds a copy of the key: wipe it too.
    if let Value::Map(entries) = request {
        for (_, value) in entries {
            if let Value::Bytes(mut bytes) = value {
                zeroize::Zeroize::zeroize(&mut bytes);
            }
        }
    }
    Ok(bytes)
}

/// Install `batch` on the key at `target`. A key accepts one attestation in its life.
pub fn provision(target: &Target, batch: &Issued) -> Result<(), Error> {
    let request = provisioning_request(batch, None)?;
    send(target, &request)
}

/// Install an enterprise attestation (see `certificate::enterprise`) with the RP IDs that
/// vendor-facilitated enterprise attestation is for, on a key that has its batch already.
pub fn provision_enterprise(
    target: &Target,
    enterprise: &Issued,
    rp_ids: &[String],
) -> Result<(), Error> {
    if rp_ids.len() > MAX_ENTERPRISE_RP_IDS {
        return Err(Error::new(format!(
            "at most {MAX_ENTERPRISE_RP_IDS} RP IDs, not {}",
            rp_ids.len()
        )));
    }
    if let Some(id) = rp_ids
        .iter()
        .find(|id| id.is_empty() || id.len() > MAX_ENTERPRISE_RP_ID_LEN)
    {
        return Err(Error::new(format!(
            "{id:?}: an RP ID takes 1 to {MAX_ENTERPRISE_RP_ID_LEN} bytes"
        )));
    }
    let request = provisioning_request(enterprise, Some(rp_ids))?;
    send(target, &request).map_err(|error| {
        Error::new(format!(
            "{error} (an enterprise attestation needs the batch installed first, with the same \
             AAGUID, and a key takes one enterprise attestation in its life)"
        ))
    })
}

fn send(target: &Target, request: &[u8]) -> Result<(), Error> {
    let (command, response) = transact(target, PROVISION_ATTESTATION, request)?;
    if command != PROVISION_ATTESTATION || response.len() != 1 {
        return Err(Error::new(format!(
            "the key does not know the provisioning command (answered {command:02x} {response:02x?})"
        )));
    }
    match response[0] {
        0x00 => Ok(()),
        0x30 => Err(Error::new(
            "the key already has an attestation installed, and keeps it for life",
        )),
        0x02 => Err(Error::new(
            "the key refused the batch: the certificate must be for the key and carry an AAGUID",
        )),
        status => Err(Error::new(format!(
            "the key answered status 0x{status:02x}"
        ))),
    }
}

/// The key's authenticatorGetInfo response (CBOR).
pub fn get_info(target: &Target) -> Result<Value, Error> {
    let (command, response) = transact(target, CBOR, &[GET_INFO])?;
    match response.split_first() {
        Some((0, body)) if command == CBOR => {
            ciborium::from_reader(body).map_err(|e| Error::new(format!("getInfo is not CBOR: {e}")))
        }
        _ => Err(Error::new(format!(
            "getInfo failed: {command:02x} {response:02x?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "127.0.0.1:3240:1-2".parse::<Target>().unwrap(),
            Target::UsbIp {
                addr: "127.0.0.1:3240".parse().unwrap(),
                bus_id: "1-2".into()
            }
        );
        assert_eq!(
            "/dev/hidraw3".parse::<Target>().unwrap(),
            Target::Hidraw("/dev/hidraw3".into())
        );
        for bad in ["", "1-1", "127.0.0.1:3240:", "nohost:1-1"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
