//! USB/IP protocol 0x0111 PDUs: the operations before import (device list, import) and the
//! URB commands after it (CMD_SUBMIT/RET_SUBMIT, CMD_UNLINK/RET_UNLINK). All integers are
//! big-endian. Everything read from the network is checked before it is trusted.

use std::io::{self, Read};

pub const VERSION: u16 = 0x0111;
pub const OP_REQ_DEVLIST: u16 = 0x8005;
pub const OP_REP_DEVLIST: u16 = 0x0005;
pub const OP_REQ_IMPORT: u16 = 0x8003;
pub const OP_REP_IMPORT: u16 = 0x0003;

pub const CMD_SUBMIT: u32 = 1;
pub const CMD_UNLINK: u32 = 2;
pub const RET_SUBMIT: u32 = 3;
pub const RET_UNLINK: u32 = 4;

pub const DIR_OUT: u32 = 0;
pub const DIR_IN: u32 = 1;

/// Linux error numbers, negated in URB status fields.
pub const EPIPE: i32 = -32;
pub const EOVERFLOW: i32 = -75;
pub const ECONNRESET: i32 = -104;

/// The largest transfer we accept: far above anything a HID device needs, far below what
/// would let a client make us allocate without bound.
pub const MAX_TRANSFER: u32 = 64 * 1024;

/// Size of a URB header (command header plus the command's own fields).
pub const HEADER_LEN: usize = 48;

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// What a device looks like in OP_REP_DEVLIST and OP_REP_IMPORT.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub path: String,
    pub bus_id: String,
    pub bus_num: u32,
    pub dev_num: u32,
    /// USB_SPEED_FULL is 2.
    pub speed: u32,
    pub vendor_id: u16,
    pub product_id: u16,
    pub bcd_device: u16,
    pub class: (u8, u8, u8),
    pub configuration_value: u8,
    pub num_configurations: u8,
    /// (class, subclass, protocol) of each interface.
    pub interfaces: Vec<(u8, u8, u8)>,
}

impl DeviceInfo {
    /// The 312-byte device record, and with `interfaces` the 4 bytes per interface that
    /// OP_REP_DEVLIST adds (a short record makes `usbip list` hang).
    pub fn encode(&self, out: &mut Vec<u8>, interfaces: bool) {
        let mut path = [0u8; 256];
        let n = self.path.len().min(255);
        path[..n].copy_from_slice(&self.path.as_bytes()[..n]);
        out.extend_from_slice(&path);
        let mut bus_id = [0u8; 32];
        let n = self.bus_id.len().min(31);
        bus_id[..n].copy_from_slice(&self.bus_id.as_bytes()[..n]);
        out.extend_from_slice(&bus_id);
        for value in [self.bus_num, self.dev_num, self.speed] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        for value in [self.vendor_id, self.product_id, self.bcd_device] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        out.extend_from_slice(&[
            self.class.0,
            self.class.1,
            self.class.2,
            self.configuration_value,
            self.num_configurations,
            self.interfaces.len() as u8,
        ]);
        if interfaces {
            for &(class, subclass, protocol) in &self.interfaces {
                out.extend_from_slice(&[class, subclass, protocol, 0]);
            }
        }
    }
}

/// A request before import.
#[derive(Debug, PartialEq, Eq)]
pub enum OpRequest {
    DevList,
    Import { bus_id: String },
}

/// Read one operation request; an unknown version or code is an error (drop the connection).
pub fn read_op_request(reader: &mut impl Read) -> io::Result<OpRequest> {
    let mut header = [0u8; 8];
    reader.read_exact(&mut header)?;
    if be16(&header[0..2]) != VERSION {
        return Err(invalid("unsupported USB/IP version"));
    }
    match be16(&header[2..4]) {
        OP_REQ_DEVLIST => Ok(OpRequest::DevList),
        OP_REQ_IMPORT => {
            let mut bus_id = [0u8; 32];
            reader.read_exact(&mut bus_id)?;
            let end = bus_id.iter().position(|&b| b == 0).unwrap_or(bus_id.len());
            let bus_id = String::from_utf8_lossy(&bus_id[..end]).into_owned();
            Ok(OpRequest::Import { bus_id })
        }
        _ => Err(invalid("unknown USB/IP operation")),
    }
}

fn op_header(code: u16, status: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&status.to_be_bytes());
}

pub fn op_rep_devlist(devices: &[DeviceInfo]) -> Vec<u8> {
    let mut out = Vec::new();
    op_header(OP_REP_DEVLIST, 0, &mut out);
    out.extend_from_slice(&(devices.len() as u32).to_be_bytes());
    for device in devices {
        device.encode(&mut out, true);
    }
    out
}

/// The reply to a request from a peer the key does not serve: status ST_NA ("not available")
/// and no device (`usbip list` and `usbip attach` report that the request failed).
pub fn op_rep_refused(request: &OpRequest) -> Vec<u8> {
    let mut out = Vec::new();
    match request {
        OpRequest::DevList => {
            op_header(OP_REP_DEVLIST, 1, &mut out);
            out.extend_from_slice(&0u32.to_be_bytes()); // no devices
        }
        OpRequest::Import { .. } => op_header(OP_REP_IMPORT, 1, &mut out),
    }
    out
}

/// OP_REP_IMPORT: the device record on success, status 1 without one on failure.
pub fn op_rep_import(device: Option<&DeviceInfo>) -> Vec<u8> {
    let mut out = Vec::new();
    op_header(OP_REP_IMPORT, u32::from(device.is_none()), &mut out);
    if let Some(device) = device {
        device.encode(&mut out, false);
    }
    out
}

/// CMD_SUBMIT, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submit {
    pub seqnum: u32,
    pub direction: u32,
    pub endpoint: u8,
    pub transfer_buffer_length: u32,
    pub setup: [u8; 8],
    /// OUT data (empty for IN).
    pub data: Vec<u8>,
}

/// A URB command after import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Submit(Submit),
    Unlink { seqnum: u32, unlink_seqnum: u32 },
}

/// Read one URB command. Anything malformed is an error: the caller drops the connection.
pub fn read_command(reader: &mut impl Read) -> io::Result<Command> {
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header)?;
    let command = be32(&header[0..4]);
    let seqnum = be32(&header[4..8]);
    let direction = be32(&header[12..16]);
    let endpoint = be32(&header[16..20]);
    if direction > DIR_IN || endpoint > 15 {
        return Err(invalid("bad direction or endpoint"));
    }
    match command {
        CMD_SUBMIT => {
            // After the 20-byte basic header: transfer_flags, transfer_buffer_length,
            // start_frame, number_of_packets, interval (which the kernel fills with the
            // endpoint's polling interval on interrupt URBs), then the setup packet.
            let transfer_buffer_length = be32(&header[24..28]);
            let number_of_packets = be32(&header[32..36]);
            if transfer_buffer_length > MAX_TRANSFER {
                return Err(invalid("transfer too long"));
            }
            // Isochronous transfers do not exist on this device.
            if number_of_packets != 0 && number_of_packets != u32::MAX {
                return Err(invalid("isochronous URB"));
            }
            let mut setup = [0u8; 8];
            setup.copy_from_slice(&header[40..48]);
            let mut data = Vec::new();
            if direction == DIR_OUT && transfer_buffer_length > 0 {
                data = vec![0u8; transfer_buffer_length as usize];
                reader.read_exact(&mut data)?;
            }
            Ok(Command::Submit(Submit {
                seqnum,
                direction,
                endpoint: endpoint as u8,
                transfer_buffer_length,
                setup,
                data,
            }))
        }
        CMD_UNLINK => Ok(Command::Unlink {
            seqnum,
            unlink_seqnum: be32(&header[20..24]),
        }),
        _ => Err(invalid("unknown URB command")),
    }
}

fn ret_header(command: u32, seqnum: u32, out: &mut Vec<u8>) {
    for value in [command, seqnum, 0, 0, 0] {
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// RET_SUBMIT carrying `data` (IN data; for OUT, pass the accepted length and no data).
pub fn ret_submit(seqnum: u32, status: i32, actual_length: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    ret_header(RET_SUBMIT, seqnum, &mut out);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&actual_length.to_be_bytes());
    // start_frame, number_of_packets, error_count, then 8 bytes of padding.
    out.extend_from_slice(&[0u8; 20]);
    out.extend_from_slice(data);
    out
}

pub fn ret_unlink(seqnum: u32, status: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    ret_header(RET_UNLINK, seqnum, &mut out);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&[0u8; 24]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceInfo {
        DeviceInfo {
            path: "/sys/devices/usbip/1-1".into(),
            bus_id: "1-1".into(),
            bus_num: 1,
            dev_num: 1,
            speed: 2,
            vendor_id: 0x1209,
            product_id: 0x0001,
            bcd_device: 0x0100,
            class: (0, 0, 0),
            configuration_value: 1,
            num_configurations: 1,
            interfaces: vec![(3, 0, 0)],
        }
    }

    #[test]
    fn records_have_the_sizes_the_kernel_expects() {
        let list = op_rep_devlist(&[device()]);
        assert_eq!(list.len(), 8 + 4 + 312 + 4);
        let import = op_rep_import(Some(&device()));
        assert_eq!(import.len(), 8 + 312);
        assert_eq!(op_rep_import(None).len(), 8);
        assert_eq!(ret_submit(1, 0, 3, &[1, 2, 3]).len(), HEADER_LEN + 3);
        assert_eq!(ret_unlink(1, 0).len(), HEADER_LEN);
    }

    /// A CMD_SUBMIT laid out as the kernel's vhci-hcd sends it.
    fn kernel_submit(endpoint: u32, number_of_packets: u32, interval: u32) -> Vec<u8> {
        let mut pdu = Vec::new();
        // command, seqnum, devid, direction (in), ep, transfer_flags (URB_DIR_IN),
        // transfer_buffer_length, start_frame, number_of_packets, interval
        for value in [
            CMD_SUBMIT,
            7,
            0x0001_0002,
            DIR_IN,
            endpoint,
            0x200,
            64,
            0,
            number_of_packets,
            interval,
        ] {
            pdu.extend_from_slice(&value.to_be_bytes());
        }
        pdu.extend_from_slice(&[0u8; 8]);
        pdu
    }

    /// Regression: the kernel puts the endpoint's polling interval into every interrupt URB;
    /// reading it as number_of_packets dropped the device at the first hidraw open.
    #[test]
    fn interrupt_urbs_with_an_interval_are_not_isochronous() {
        let command = read_command(&mut &kernel_submit(1, 0, 5)[..]).unwrap();
        let Command::Submit(submit) = command else {
            panic!("not a submit: {command:?}");
        };
        assert_eq!(
            (submit.seqnum, submit.endpoint, submit.direction),
            (7, 1, DIR_IN)
        );
        assert_eq!(submit.transfer_buffer_length, 64);
        assert!(read_command(&mut &kernel_submit(1, u32::MAX, 5)[..]).is_ok());
        assert!(
            read_command(&mut &kernel_submit(1, 3, 0)[..]).is_err(),
            "isochronous URBs are refused"
        );
    }

    #[test]
    fn malformed_commands_are_errors_not_panics() {
        let mut header = [0u8; HEADER_LEN];
        header[3] = 1; // CMD_SUBMIT
        header[27] = 0;
        header[24..28].copy_from_slice(&(MAX_TRANSFER + 1).to_be_bytes());
        assert!(
            read_command(&mut &header[..]).is_err(),
            "4 GiB-ish lengths refused"
        );
        header[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_command(&mut &header[..]).is_err());
        header[24..28].copy_from_slice(&[0, 0, 0, 64]);
        assert!(read_command(&mut &header[..]).is_err(), "OUT data missing");
        assert!(
            read_command(&mut &header[..10]).is_err(),
            "truncated header"
        );
        header[3] = 9;
        assert!(read_command(&mut &header[..]).is_err(), "unknown command");
        assert!(
            read_op_request(&mut &[2u8, 0x00, 0x80, 0x05, 0, 0, 0, 0][..]).is_err(),
            "bad version"
        );
        // Any byte soup: an error or a command, never a panic.
        let mut seed = 7u64;
        for _ in 0..10_000 {
            let mut bytes = [0u8; 100];
            for b in bytes.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            bytes[0..3].fill(0);
            bytes[3] = (seed % 3) as u8;
            let _ = read_command(&mut &bytes[..]);
            let _ = read_op_request(&mut &bytes[..]);
        }
    }
}
