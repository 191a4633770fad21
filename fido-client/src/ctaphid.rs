//! A CTAPHID host (CTAP 2.1 §11.2) over the USB/IP client: channel setup, message framing,
//! keepalives.

use std::io;
use std::time::{Duration, Instant};

use crate::usbip::Device;

// The command codes and the broadcast channel, as the core defines them: one definition of the
// wire's numbers. The core's CTAPHID tests (authenticator/tests/ctaphid.rs) restate them from
// the spec, and python-fido2 and the kernel speak to the key with their own, so a wrong value
// cannot pass unseen for both sides at once.
pub use authenticator::ctaphid::command::{
    CANCEL, CBOR, ERROR, INIT, KEEPALIVE, LOCK, MSG, PING, WINK,
};
pub use authenticator::ctaphid::BROADCAST_CID as BROADCAST;

/// How long a test waits for one packet: above the 30 s presence timeout.
pub const PACKET_TIMEOUT: Duration = Duration::from_secs(40);

/// A keepalive as the host saw it.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    pub status: u8,
    pub at: Instant,
}

/// Where a host's HID reports go: a USB/IP device, or a Linux hidraw node.
pub trait Reports {
    fn write_report(&mut self, report: &[u8; 64]) -> io::Result<()>;
    fn read_report(&mut self, timeout: Duration) -> io::Result<[u8; 64]>;
}

impl Reports for Device {
    fn write_report(&mut self, report: &[u8; 64]) -> io::Result<()> {
        Device::write_report(self, report)
    }

    fn read_report(&mut self, timeout: Duration) -> io::Result<[u8; 64]> {
        Device::read_report(self, timeout)
    }
}

/// A CTAPHID channel on a device.
pub struct Channel<D: Reports = Device> {
    pub device: D,
    pub cid: u32,
    /// Keepalives received during the last transaction.
    pub keepalives: Vec<Keepalive>,
    /// Capabilities and version from INIT.
    pub init_response: Vec<u8>,
}

/// Frame a message into INIT + CONT packets.
pub fn packets(cid: u32, command: u8, payload: &[u8]) -> Vec<[u8; 64]> {
    let mut out = Vec::new();
    let mut first = [0u8; 64];
    first[..4].copy_from_slice(&cid.to_be_bytes());
    first[4] = command;
    first[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    let n = payload.len().min(57);
    first[7..7 + n].copy_from_slice(&payload[..n]);
    out.push(first);
    for (seq, chunk) in payload[n..].chunks(59).enumerate() {
        let mut cont = [0u8; 64];
        cont[..4].copy_from_slice(&cid.to_be_bytes());
        cont[4] = seq as u8;
        cont[5..5 + chunk.len()].copy_from_slice(chunk);
        out.push(cont);
    }
    out
}

impl<D: Reports> Channel<D> {
    /// INIT on the broadcast channel: a new channel for this host.
    pub fn open(mut device: D) -> io::Result<Self> {
        let nonce: [u8; 8] = rand_nonce();
        for packet in packets(BROADCAST, INIT, &nonce) {
            device.write_report(&packet)?;
        }
        let mut channel = Self {
            device,
            cid: BROADCAST,
            keepalives: Vec::new(),
            init_response: Vec::new(),
        };
        let (command, payload) = channel.receive()?;
        if command != INIT || payload.len() < 17 || payload[..8] != nonce {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad INIT response {payload:02x?}"),
            ));
        }
        channel.cid = u32::from_be_bytes(payload[8..12].try_into().unwrap());
        channel.init_response = payload;
        Ok(channel)
    }

    /// Send a whole message on this channel.
    pub fn send(&mut self, command: u8, payload: &[u8]) -> io::Result<()> {
        for packet in packets(self.cid, command, payload) {
            self.device.write_report(&packet)?;
        }
        Ok(())
    }

    /// Receive one message on this channel, skipping keepalives (recorded) and checking the
    /// framing strictly.
    pub fn receive(&mut self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            let packet = self.device.read_report(PACKET_TIMEOUT)?;
            let cid = u32::from_be_bytes(packet[..4].try_into().unwrap());
            if cid != self.cid {
                return Err(bad(format!(
                    "packet for channel {cid:08x}, expected {:08x}",
                    self.cid
                )));
            }
            let command = packet[4];
            if command & 0x80 == 0 {
                return Err(bad(
                    "continuation packet where a message should start".into()
                ));
            }
            let length = usize::from(u16::from_be_bytes([packet[5], packet[6]]));
            if command == KEEPALIVE {
                self.keepalives.push(Keepalive {
                    status: packet[7],
                    at: Instant::now(),
                });
                continue;
            }
            let mut payload = packet[7..7 + length.min(57)].to_vec();
            let mut seq = 0u8;
            while payload.len() < length {
                let packet = self.device.read_report(PACKET_TIMEOUT)?;
                if packet[..4] != self.cid.to_be_bytes() || packet[4] != seq {
                    return Err(bad(format!("bad continuation {:02x?}", &packet[..5])));
                }
                let n = (length - payload.len()).min(59);
                payload.extend_from_slice(&packet[5..5 + n]);
                seq += 1;
            }
            return Ok((command, payload));
        }
    }

    /// One request and its response.
    pub fn transact(&mut self, command: u8, payload: &[u8]) -> io::Result<(u8, Vec<u8>)> {
        self.keepalives.clear();
        self.send(command, payload)?;
        self.receive()
    }

    /// A CTAP2 command: returns (status, CBOR body).
    pub fn cbor(&mut self, request: &[u8]) -> io::Result<(u8, Vec<u8>)> {
        let (command, payload) = self.transact(CBOR, request)?;
        if command != CBOR || payload.is_empty() {
            return Err(bad(format!(
                "CBOR answered with command {command:02x} {payload:02x?}"
            )));
        }
        Ok((payload[0], payload[1..].to_vec()))
    }

    /// A U2F APDU: returns (data, status word).
    pub fn msg(&mut self, apdu: &[u8]) -> io::Result<(Vec<u8>, u16)> {
        let (command, mut payload) = self.transact(MSG, apdu)?;
        if command != MSG || payload.len() < 2 {
            return Err(bad(format!(
                "MSG answered with command {command:02x} {payload:02x?}"
            )));
        }
        let sw = u16::from_be_bytes([payload[payload.len() - 2], payload[payload.len() - 1]]);
        payload.truncate(payload.len() - 2);
        Ok((payload, sw))
    }
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn rand_nonce() -> [u8; 8] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    (t as u64 ^ 0x5DEECE66D).to_be_bytes()
}
