//! A userspace USB/IP client as strict as the Linux kernel: it enumerates the device like
//! vhci-hcd + usbhid do, keeps an interrupt IN URB outstanding, and fails on anything the
//! kernel would drop the device for (a completion longer than its URB, a reply to a URB that
//! does not exist, a short device record).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const VERSION: u16 = 0x0111;
const DIR_OUT: u32 = 0;
const DIR_IN: u32 = 1;
const DEVICE_RECORD: usize = 312;
/// The interrupt endpoints' bInterval (authenticator::usb::POLL_INTERVAL_MS), which the kernel
/// copies into every interrupt URB it submits.
const INTERRUPT_INTERVAL: u32 = 5;

/// A device as OP_REP_DEVLIST lists it.
#[derive(Clone, Debug)]
pub struct ListedDevice {
    pub bus_id: String,
    pub speed: u32,
    pub vendor_id: u16,
    pub product_id: u16,
    pub configuration_value: u8,
    pub interfaces: Vec<(u8, u8, u8)>,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn protocol_error(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// OP_REQ_DEVLIST on a fresh connection.
pub fn list(addr: SocketAddr) -> io::Result<Vec<ListedDevice>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(&[0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0])?;
    let mut header = [0u8; 12];
    stream.read_exact(&mut header)?;
    if be16(&header[0..2]) != VERSION || be16(&header[2..4]) != 0x0005 || be32(&header[4..8]) != 0 {
        return Err(protocol_error(format!(
            "bad OP_REP_DEVLIST header {header:02x?}"
        )));
    }
    let count = be32(&header[8..12]);
    let mut devices = Vec::new();
    for _ in 0..count {
        let mut record = [0u8; DEVICE_RECORD];
        stream.read_exact(&mut record)?;
        let mut device = parse_record(&record);
        for _ in 0..record[311] {
            let mut interface = [0u8; 4];
            stream.read_exact(&mut interface)?;
            device
                .interfaces
                .push((interface[0], interface[1], interface[2]));
        }
        devices.push(device);
    }
    // Nothing may follow the list.
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut extra = [0u8; 1];
    match stream.read(&mut extra) {
        Ok(0) | Err(_) => Ok(devices),
        Ok(_) => Err(protocol_error("bytes after the device list".into())),
    }
}

fn parse_record(record: &[u8; DEVICE_RECORD]) -> ListedDevice {
    let bus_id = &record[256..288];
    let end = bus_id.iter().position(|&b| b == 0).unwrap_or(32);
    ListedDevice {
        bus_id: String::from_utf8_lossy(&bus_id[..end]).into_owned(),
        speed: be32(&record[296..300]),
        vendor_id: be16(&record[300..302]),
        product_id: be16(&record[302..304]),
        configuration_value: record[309],
        interfaces: Vec::new(),
    }
}

/// A RET_SUBMIT.
#[derive(Debug)]
pub struct Completion {
    pub status: i32,
    pub data: Vec<u8>,
}

enum Reply {
    Submit {
        seqnum: u32,
        status: i32,
        data: Vec<u8>,
    },
    Unlink {
        seqnum: u32,
        status: i32,
    },
}

/// An imported device.
pub struct Device {
    stream: TcpStream,
    replies: Receiver<io::Result<Reply>>,
    next_seqnum: u32,
    /// Direction and length of every URB still outstanding, by seqnum (shared with the reader
    /// thread, which needs the direction to know whether data follows a RET_SUBMIT).
    outstanding: Arc<Mutex<HashMap<u32, (u32, u32)>>>,
    completions: HashMap<u32, Completion>,
    unlinks: HashMap<u32, i32>,
    pub ep_in: u8,
    pub ep_out: u8,
    /// Interrupt IN URBs outstanding, oldest first.
    in_urbs: VecDeque<u32>,
    /// Completed IN reports not yet read.
    reports: VecDeque<[u8; 64]>,
    pub descriptors: Descriptors,
}

/// What enumeration read.
#[derive(Clone, Debug, Default)]
pub struct Descriptors {
    pub device: Vec<u8>,
    pub configuration: Vec<u8>,
    pub report: Vec<u8>,
    pub manufacturer: String,
    pub product: String,
    pub serial: String,
}

impl Device {
    /// OP_REQ_IMPORT, then enumeration as the kernel does it.
    pub fn import(addr: SocketAddr, bus_id: &str) -> io::Result<Self> {
        let mut device = Self::import_raw(addr, bus_id)?;
        device.enumerate()?;
        Ok(device)
    }

    /// [`Device::import`], waiting up to `wait` while the server still counts the device as
    /// attached: a client that just detached is closing its connection, which the server learns
    /// a moment later.
    pub fn import_when_free(addr: SocketAddr, bus_id: &str, wait: Duration) -> io::Result<Self> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::import(addr, bus_id) {
                Err(e)
                    if e.kind() == io::ErrorKind::ConnectionRefused
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                result => return result,
            }
        }
    }

    /// OP_REQ_IMPORT only.
    pub fn import_raw(addr: SocketAddr, bus_id: &str) -> io::Result<Self> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut request = vec![0x01, 0x11, 0x80, 0x03, 0, 0, 0, 0];
        let mut id = [0u8; 32];
        id[..bus_id.len()].copy_from_slice(bus_id.as_bytes());
        request.extend_from_slice(&id);
        stream.write_all(&request)?;
        let mut header = [0u8; 8];
        stream.read_exact(&mut header)?;
        if be16(&header[0..2]) != VERSION || be16(&header[2..4]) != 0x0003 {
            return Err(protocol_error(format!(
                "bad OP_REP_IMPORT header {header:02x?}"
            )));
        }
        if be32(&header[4..8]) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "import refused",
            ));
        }
        let mut record = [0u8; DEVICE_RECORD];
        stream.read_exact(&mut record)?;
        let listed = parse_record(&record);
        if listed.bus_id != bus_id || listed.configuration_value == 0 || listed.speed == 0 {
            return Err(protocol_error(format!("bad device record {listed:?}")));
        }
        stream.set_read_timeout(None)?;
        let (sender, replies) = channel();
        let mut reader = stream.try_clone()?;
        let outstanding = Arc::new(Mutex::new(HashMap::new()));
        let shared = outstanding.clone();
        std::thread::spawn(move || loop {
            let reply = read_reply(&mut reader, &shared);
            let failed = reply.is_err();
            if sender.send(reply).is_err() || failed {
                break;
            }
        });
        Ok(Self {
            stream,
            replies,
            next_seqnum: 1,
            outstanding,
            completions: HashMap::new(),
            unlinks: HashMap::new(),
            ep_in: 0,
            ep_out: 0,
            in_urbs: VecDeque::new(),
            reports: VecDeque::new(),
            descriptors: Descriptors::default(),
        })
    }

    /// CMD_SUBMIT; returns its seqnum.
    pub fn submit(
        &mut self,
        endpoint: u8,
        direction: u32,
        setup: [u8; 8],
        data: &[u8],
        length: u32,
    ) -> io::Result<u32> {
        let seqnum = self.next_seqnum;
        self.next_seqnum += 1;
        let mut pdu = Vec::with_capacity(48 + data.len());
        // As the kernel does: an interrupt URB carries its endpoint's polling interval (in
        // frames at full speed) in the last field before the setup packet.
        let interval = if endpoint == 0 { 0 } else { INTERRUPT_INTERVAL };
        for value in [
            1u32,
            seqnum,
            0x0001_0002,
            direction,
            u32::from(endpoint),
            0,
            length,
            0,
            0,
            interval,
        ] {
            pdu.extend_from_slice(&value.to_be_bytes());
        }
        pdu.extend_from_slice(&setup);
        pdu.extend_from_slice(data);
        self.outstanding
            .lock()
            .unwrap()
            .insert(seqnum, (direction, length));
        self.stream.write_all(&pdu)?;
        Ok(seqnum)
    }

    /// CMD_UNLINK of `target`; returns the RET_UNLINK status.
    pub fn unlink(&mut self, target: u32) -> io::Result<i32> {
        let seqnum = self.next_seqnum;
        self.next_seqnum += 1;
        let mut pdu = Vec::with_capacity(48);
        for value in [2u32, seqnum, 0x0001_0002, 0, 0, target] {
            pdu.extend_from_slice(&value.to_be_bytes());
        }
        pdu.extend_from_slice(&[0u8; 24]);
        self.stream.write_all(&pdu)?;
        loop {
            if let Some(status) = self.unlinks.remove(&seqnum) {
                if status != 0 {
                    self.outstanding.lock().unwrap().remove(&target);
                    self.in_urbs.retain(|&s| s != target);
                }
                return Ok(status);
            }
            self.receive(Duration::from_secs(10))?;
        }
    }

    /// Wait for one reply and file it; strict about what the kernel would refuse.
    fn receive(&mut self, timeout: Duration) -> io::Result<()> {
        // The reader thread hands each reply over; as the kernel completes URBs without a
        // second thread's wake-up, the client does not pay one on each of a message's packets
        // either.
        let reply = match spin_recv::try_recv_spinning(&self.replies)
            .map_or_else(|| self.replies.recv_timeout(timeout), Ok)
        {
            Ok(reply) => reply?,
            Err(RecvTimeoutError::Timeout) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply"))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"))
            }
        };
        match reply {
            Reply::Submit {
                seqnum,
                status,
                data,
            } => {
                if self.in_urbs.front() == Some(&seqnum) {
                    self.in_urbs.pop_front();
                    if status == 0 {
                        let report: [u8; 64] = data.as_slice().try_into().map_err(|_| {
                            protocol_error(format!("interrupt IN of {} bytes", data.len()))
                        })?;
                        if report == [0u8; 64] {
                            return Err(protocol_error("a zero-filled report".into()));
                        }
                        self.reports.push_back(report);
                    }
                } else {
                    self.completions.insert(seqnum, Completion { status, data });
                }
            }
            Reply::Unlink { seqnum, status } => {
                self.unlinks.insert(seqnum, status);
            }
        }
        Ok(())
    }

    /// Wait for the completion of one URB.
    pub fn wait(&mut self, seqnum: u32, timeout: Duration) -> io::Result<Completion> {
        loop {
            if let Some(completion) = self.completions.remove(&seqnum) {
                return Ok(completion);
            }
            self.receive(timeout)?;
        }
    }

    /// A control transfer on endpoint 0; the data returned is checked against `length`.
    pub fn control(&mut self, setup: [u8; 8], data: &[u8]) -> io::Result<Completion> {
        let length = u16::from_le_bytes([setup[6], setup[7]]);
        let direction = if setup[0] & 0x80 != 0 {
            DIR_IN
        } else {
            DIR_OUT
        };
        let seqnum = self.submit(0, direction, setup, data, u32::from(length))?;
        self.wait(seqnum, Duration::from_secs(10))
    }

    /// GET_DESCRIPTOR (to the device or, with `interface`, to an interface).
    pub fn get_descriptor(
        &mut self,
        kind: u8,
        index: u8,
        interface: Option<u16>,
        length: u16,
    ) -> io::Result<Vec<u8>> {
        let request_type = if interface.is_some() { 0x81 } else { 0x80 };
        let language = if kind == 3 && index != 0 {
            0x0409u16
        } else {
            0
        };
        let w_index = interface.unwrap_or(language);
        let mut setup = [request_type, 0x06, index, kind, 0, 0, 0, 0];
        setup[4..6].copy_from_slice(&w_index.to_le_bytes());
        setup[6..8].copy_from_slice(&length.to_le_bytes());
        let completion = self.control(setup, &[])?;
        if completion.status != 0 {
            return Err(protocol_error(format!(
                "GET_DESCRIPTOR {kind} failed: {}",
                completion.status
            )));
        }
        Ok(completion.data)
    }

    fn string(&mut self, index: u8) -> io::Result<String> {
        if index == 0 {
            return Ok(String::new());
        }
        let bytes = self.get_descriptor(3, index, None, 255)?;
        let units: Vec<u16> = bytes
            .get(2..)
            .unwrap_or(&[])
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        Ok(String::from_utf16_lossy(&units))
    }

    /// What the kernel does after attach: device descriptor (8, then 18 bytes), configuration
    /// (9, then all), strings, SET_CONFIGURATION, the HID report descriptor, SET_IDLE.
    pub fn enumerate(&mut self) -> io::Result<()> {
        let head = self.get_descriptor(1, 0, None, 8)?;
        if head.len() != 8 || head[1] != 1 || head[7] == 0 {
            return Err(protocol_error(format!(
                "bad device descriptor head {head:02x?}"
            )));
        }
        let device = self.get_descriptor(1, 0, None, 18)?;
        if device.len() != 18 {
            return Err(protocol_error("device descriptor is not 18 bytes".into()));
        }
        let short = self.get_descriptor(2, 0, None, 9)?;
        let total = u16::from_le_bytes([short[2], short[3]]);
        let configuration = self.get_descriptor(2, 0, None, total)?;
        if configuration.len() != usize::from(total) {
            return Err(protocol_error(
                "configuration descriptor length mismatch".into(),
            ));
        }
        self.descriptors.manufacturer = self.string(device[14])?;
        self.descriptors.product = self.string(device[15])?;
        self.descriptors.serial = self.string(device[16])?;
        let set_configuration = self.control([0x00, 0x09, configuration[5], 0, 0, 0, 0, 0], &[])?;
        if set_configuration.status != 0 {
            return Err(protocol_error("SET_CONFIGURATION failed".into()));
        }
        // Walk the configuration: the HID interface and its two interrupt endpoints.
        let mut interface = None;
        let mut report_length = 0u16;
        let mut i = 0;
        while i + 1 < configuration.len() {
            let length = usize::from(configuration[i]);
            if length < 2 || i + length > configuration.len() {
                return Err(protocol_error("malformed configuration descriptor".into()));
            }
            let d = &configuration[i..i + length];
            match d[1] {
                4 if d[5] == 3 => interface = Some(u16::from(d[2])),
                0x21 => report_length = u16::from_le_bytes([d[7], d[8]]),
                5 if d[3] & 3 == 3 => {
                    if d[2] & 0x80 != 0 {
                        self.ep_in = d[2] & 0x0f;
                    } else {
                        self.ep_out = d[2] & 0x0f;
                    }
                    if u16::from_le_bytes([d[4], d[5]]) != 64 {
                        return Err(protocol_error("interrupt endpoint is not 64 bytes".into()));
                    }
                }
                _ => {}
            }
            i += length;
        }
        let interface = interface.ok_or_else(|| protocol_error("no HID interface".into()))?;
        if self.ep_in == 0 || self.ep_out == 0 {
            return Err(protocol_error("no interrupt endpoints".into()));
        }
        let report = self.get_descriptor(0x22, 0, Some(interface), report_length)?;
        let set_idle = self.control([0x21, 0x0A, 0, 0, interface as u8, 0, 0, 0], &[])?;
        if set_idle.status != 0 {
            return Err(protocol_error("SET_IDLE failed".into()));
        }
        self.descriptors.device = device;
        self.descriptors.configuration = configuration;
        self.descriptors.report = report;
        Ok(())
    }

    /// Send one 64-byte report (interrupt OUT) and wait for its completion.
    pub fn write_report(&mut self, report: &[u8; 64]) -> io::Result<()> {
        let seqnum = self.submit(self.ep_out, DIR_OUT, [0; 8], report, 64)?;
        let completion = self.wait(seqnum, Duration::from_secs(10))?;
        if completion.status != 0 {
            return Err(protocol_error(format!(
                "interrupt OUT failed: {}",
                completion.status
            )));
        }
        Ok(())
    }

    /// The next 64-byte report (interrupt IN), keeping one IN URB outstanding as usbhid does.
    pub fn read_report(&mut self, timeout: Duration) -> io::Result<[u8; 64]> {
        loop {
            if let Some(report) = self.reports.pop_front() {
                return Ok(report);
            }
            if self.in_urbs.is_empty() {
                let seqnum = self.submit(self.ep_in, DIR_IN, [0; 8], &[], 64)?;
                self.in_urbs.push_back(seqnum);
            }
            self.receive(timeout)?;
        }
    }

    /// Unlink the outstanding interrupt IN URB, as usbhid does when hidraw is closed.
    pub fn unlink_in(&mut self) -> io::Result<Option<i32>> {
        match self.in_urbs.front().copied() {
            Some(seqnum) => self.unlink(seqnum).map(Some),
            None => Ok(None),
        }
    }

    /// Raw access for error-path tests.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// Read one reply. The checks the kernel makes are here: a RET_SUBMIT must answer an
/// outstanding URB, and never with more bytes than that URB asked for.
impl Drop for Device {
    /// Closing the device closes the connection (the reader thread holds a clone of it).
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn read_reply(
    reader: &mut TcpStream,
    outstanding: &Mutex<HashMap<u32, (u32, u32)>>,
) -> io::Result<Reply> {
    let mut header = [0u8; 48];
    reader.read_exact(&mut header)?;
    let command = be32(&header[0..4]);
    let seqnum = be32(&header[4..8]);
    let status = be32(&header[20..24]) as i32;
    match command {
        3 => {
            let actual_length = be32(&header[24..28]);
            let (direction, length) =
                outstanding.lock().unwrap().remove(&seqnum).ok_or_else(|| {
                    protocol_error(format!("RET_SUBMIT for unknown seqnum {seqnum}"))
                })?;
            if actual_length > length {
                return Err(protocol_error(format!(
                    "completion of {actual_length} bytes for a {length}-byte URB"
                )));
            }
            let mut data = Vec::new();
            if direction == DIR_IN {
                data = vec![0u8; actual_length as usize];
                reader.read_exact(&mut data)?;
            }
            Ok(Reply::Submit {
                seqnum,
                status,
                data,
            })
        }
        4 => Ok(Reply::Unlink { seqnum, status }),
        other => Err(protocol_error(format!("unknown reply command {other}"))),
    }
}
