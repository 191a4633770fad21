//! One virtual key: a thread that owns the USB stack (usb-device + the FIDO HID class), the
//! CTAPHID state machine and the authenticator, and turns USB/IP URBs into bus traffic.
//!
//! Nothing here sleeps on a fixed period: the thread waits for the next URB or for the next
//! CTAPHID deadline (a keepalive, a presence poll, a message timeout), whichever comes first.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use authenticator::attestation::{Attestation, AttestationError};
use authenticator::ctaphid::{App, Ctaphid, DeviceVersion, Packet};
use authenticator::platform::Platform;
use authenticator::usb::FidoHid;
use authenticator::{Authenticator, Config};
use littlefs2::fs::Allocation;
use usb_device::bus::UsbBusAllocator;
use usb_device::device::{StringDescriptors, UsbDevice, UsbDeviceBuilder, UsbVidPid};
use usb_device::UsbDirection;

use crate::automation::{self, KeyAutomation, Observed};
use crate::bus::{new_bus, BusHandle, UsbIpBus};
use crate::platform::RunnerPlatform;
use crate::protocol::{self, Command, DeviceInfo, Submit};
use crate::trace::{TraceSink, Traced};

/// pid.codes' test VID/PID, until the project has an ID of its own.
pub const VENDOR_ID: u16 = 0x1209;
pub const PRODUCT_ID: u16 = 0x0001;
pub const BCD_DEVICE: u16 = 0x0100;
const MANUFACTURER: &str = "Open FIDO Key";
const PRODUCT: &str = "Open FIDO Key (USB/IP)";
/// The HID device's name through uhid (where USB would show "manufacturer product").
pub const PRODUCT_UHID: &str = "Open FIDO Key (uhid)";

/// This authenticator model's AAGUID.
/// The virtual key's PIN verifier: Argon2id, memory-hard, at a cost measured on a 2-core build
/// machine (`cargo run --release -p authenticator --example pin_kdf --features argon2`; see
/// docs/threat-model.md): the first PIN after start pays it once, and so does every guess of
/// someone holding a copy of the state.
pub const PIN_KDF: authenticator::store::PinKdf = authenticator::store::PinKdf::Argon2id {
    memory_kib: 64 * 1024,
    passes: 2,
};

pub const AAGUID: [u8; 16] = [
    197, 110, 109, 110, 61, 126, 64, 121, 129, 151, 118, 4, 146, 40, 155, 46,
];

/// Bound on stack polls per event, so a misbehaving client cannot spin the thread.
const MAX_ROUNDS: usize = 512;
/// URBs a client may have waiting at once. The kernel's usbhid keeps one or two per endpoint;
/// a client that queues more is flooding, and is dropped before it can fill the memory.
const MAX_PENDING_URBS: usize = 64;
/// OUT data a client may have waiting at once, in bytes.
const MAX_PENDING_OUT_BYTES: usize = 256 * 1024;

/// What the connection threads tell a key.
pub enum Event {
    /// A client imported the key; replies go to `writer`.
    Attach {
        id: u64,
        writer: TcpStream,
    },
    Command {
        id: u64,
        command: Command,
    },
    /// The client's connection ended.
    Detach {
        id: u64,
    },
    /// A test automation verb from the control socket.
    Automation(automation::Request),
    Shutdown,
}

/// The device as OP_REP_DEVLIST describes it; it matches the descriptors the stack serves.
pub fn device_info(bus_id: &str) -> DeviceInfo {
    DeviceInfo {
        path: format!("/sys/devices/platform/usbip-runner/usb1/{bus_id}"),
        bus_id: bus_id.to_string(),
        bus_num: 1,
        dev_num: bus_id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
        speed: 2, // full speed
        vendor_id: VENDOR_ID,
        product_id: PRODUCT_ID,
        bcd_device: BCD_DEVICE,
        class: (0, 0, 0),
        configuration_value: 1,
        num_configurations: 1,
        interfaces: vec![(3, 0, 0)],
    }
}

fn firmware_version() -> u32 {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    (major << 16) | (minor << 8) | patch
}

/// The attached client.
struct Connection {
    id: u64,
    writer: TcpStream,
    /// Interrupt IN URBs waiting for a report.
    in_urbs: VecDeque<Submit>,
    /// Interrupt OUT URBs waiting to be delivered; the first may be on the bus already.
    out_urbs: VecDeque<Submit>,
    out_on_bus: bool,
}

impl Connection {
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).is_ok()
    }
}

/// Everything one key owns besides the USB stack (which borrows its bus allocator).
struct Key<'k, 'a, S: authenticator::platform::StateStorage> {
    auth: &'k mut Authenticator<'a, RunnerPlatform<S>>,
    ctaphid: Ctaphid,
    bus: BusHandle,
    connection: Option<Connection>,
    /// A CTAPHID packet the IN endpoint could not take yet.
    pending_packet: Option<Packet>,
    serial: String,
    bus_id: String,
    trace: Option<TraceSink>,
    /// The request being traced (see [`Traced`]).
    traced_request: Option<Vec<u8>>,
    /// Test automation: credential events, and what the verbs need.
    automation: KeyAutomation,
}

/// `--attestation`: install the batch, unless the key has an attestation already; a key keeps
/// the first one it was given for life, as over the provisioning command.
fn install_attestation<S: authenticator::platform::StateStorage>(
    auth: &mut Authenticator<'_, RunnerPlatform<S>>,
    attestation: &Attestation,
    serial: &str,
) {
    match auth.install_attestation(attestation) {
        Ok(()) => tracing::info!(serial, "batch attestation installed"),
        Err(AttestationError::AlreadyProvisioned) if auth.attestation() == Some(attestation) => {}
        Err(AttestationError::AlreadyProvisioned) => tracing::warn!(
            serial,
            "this key already has another batch attestation, which it keeps: --attestation ignored"
        ),
        // A PIN-locked key's attestation is sealed: whether it has one is not known until the
        // PIN is given, and one it has is kept for life anyway.
        Err(AttestationError::Locked) => tracing::info!(
            serial,
            "this key is PIN-locked: --attestation is not checked until its PIN is given"
        ),
        Err(error) => tracing::error!(serial, %error, "cannot install the batch attestation"),
    }
}

/// What a key is given at start beyond its state.
#[derive(Clone, Default)]
pub struct KeySetup {
    /// A batch attestation to install if the key has none.
    pub attestation: Option<Attestation>,
    /// At most this many discoverable credentials (below what the state's geometry holds).
    pub max_credentials: Option<usize>,
    /// What kind of key it presents itself as.
    pub profile: authenticator::Profile,
    /// Where test automation's credential events go.
    pub events: Option<Arc<automation::Events>>,
}

impl KeySetup {
    /// The key's side of test automation.
    pub fn automation(&self, bus_id: &str) -> KeyAutomation {
        KeyAutomation::new(bus_id, self.events.clone().unwrap_or_default())
    }
}

/// Run a key until `Shutdown` (or until every sender is gone).
pub fn run<S: authenticator::platform::StateStorage>(
    storage: S,
    platform: RunnerPlatform<S>,
    serial: String,
    setup: KeySetup,
    trace: Option<TraceSink>,
    events: Receiver<Event>,
) {
    let bus_id = bus_id_of(&serial);
    let automation = setup.automation(&bus_id);
    with_authenticator(storage, platform, &serial, setup, |auth| {
        serve_usb(auth, serial.clone(), trace, events, automation)
    });
}

/// Mount the key's state and give `f` its authenticator, set up as `setup` asks; both
/// transports (USB/IP here, uhid) run their key inside this.
pub fn with_authenticator<S: authenticator::platform::StateStorage>(
    mut storage: S,
    platform: RunnerPlatform<S>,
    serial: &str,
    setup: KeySetup,
    f: impl FnOnce(&mut Authenticator<'_, RunnerPlatform<S>>),
) {
    let mut alloc = Allocation::new();
    let fs = match authenticator::store::mount(&mut alloc, &mut storage) {
        Ok(fs) => fs,
        Err(error) => {
            tracing::error!(?error, serial, "cannot mount the key's state");
            return;
        }
    };
    let mut auth = Authenticator::new(
        platform,
        fs,
        Config {
            aaguid: AAGUID,
            firmware_version: firmware_version(),
            pin_kdf: PIN_KDF,
        },
    );
    if let Some(attestation) = setup.attestation {
        install_attestation(&mut auth, &attestation, serial);
    }
    if let Some(limit) = setup.max_credentials {
        auth.set_credential_limit(limit);
    }
    auth.set_profile(setup.profile);
    f(&mut auth);
}

/// The USB device over USB/IP, until `Shutdown` (or until every sender is gone).
fn serve_usb<S: authenticator::platform::StateStorage>(
    auth: &mut Authenticator<'_, RunnerPlatform<S>>,
    serial: String,
    trace: Option<TraceSink>,
    events: Receiver<Event>,
    automation: KeyAutomation,
) {
    let (bus, handle) = new_bus();
    let usb_alloc = UsbBusAllocator::new(bus);
    let mut hid = FidoHid::new(&usb_alloc);
    let strings = StringDescriptors::default()
        .manufacturer(MANUFACTURER)
        .product(PRODUCT)
        .serial_number(&serial);
    let mut usb = match UsbDeviceBuilder::new(&usb_alloc, UsbVidPid(VENDOR_ID, PRODUCT_ID))
        .strings(&[strings])
        .and_then(|b| b.max_packet_size_0(64))
    {
        Ok(builder) => builder.device_class(0).device_release(BCD_DEVICE).build(),
        Err(error) => {
            tracing::error!(?error, "cannot build the USB device");
            return;
        }
    };
    let mut key = Key {
        auth,
        ctaphid: Ctaphid::new(version()),
        bus: handle,
        connection: None,
        pending_packet: None,
        bus_id: bus_id_of(&serial),
        serial: serial.clone(),
        trace,
        traced_request: None,
        automation,
    };
    loop {
        let Some(event) = key.next_event(&events) else {
            break;
        };
        match event {
            Some(Event::Shutdown) => break,
            Some(event) => key.handle_event(event, &mut usb, &mut hid),
            None => {}
        }
        key.service(&mut usb, &mut hid);
    }
    tracing::info!(serial = %key.serial, "key stopped");
}

/// The bus id in a USB/IP key's serial number (`usbip-1-1`, `usbip-1-1-ephemeral`).
fn bus_id_of(serial: &str) -> String {
    serial
        .trim_start_matches("usbip-")
        .trim_end_matches("-ephemeral")
        .to_string()
}

/// The firmware version in CTAPHID INIT answers.
pub fn version() -> DeviceVersion {
    let v = firmware_version();
    DeviceVersion {
        major: (v >> 16) as u8,
        minor: (v >> 8) as u8,
        build: v as u8,
    }
}

impl<S: authenticator::platform::StateStorage> Key<'_, '_, S> {
    fn now(&mut self) -> u64 {
        self.auth.platform().now_ms()
    }

    /// The next event, or `Some(None)` when a CTAPHID deadline passes first; `None` when every
    /// sender is gone.
    fn next_event(&mut self, events: &Receiver<Event>) -> Option<Option<Event>> {
        // A host asks for its next report tens of microseconds after the last one completed.
        if let Some(event) = spin_recv::try_recv_spinning(events) {
            return Some(Some(event));
        }
        match self.ctaphid.next_deadline() {
            Some(deadline) => {
                let wait = deadline.saturating_sub(self.now());
                match events.recv_timeout(Duration::from_millis(wait)) {
                    Ok(event) => Some(Some(event)),
                    Err(RecvTimeoutError::Timeout) => Some(None),
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
            None => events.recv().ok().map(Some),
        }
    }

    fn handle_event(
        &mut self,
        event: Event,
        usb: &mut UsbDevice<'_, UsbIpBus>,
        hid: &mut FidoHid<'_, UsbIpBus>,
    ) {
        match event {
            Event::Attach { id, writer } => {
                tracing::info!(serial = %self.serial, "client attached");
                // A new host session: nothing of the previous one may leak into it.
                self.auth.abort();
                self.ctaphid = Ctaphid::new(version());
                self.pending_packet = None;
                self.bus.reset();
                self.connection = Some(Connection {
                    id,
                    writer,
                    in_urbs: VecDeque::new(),
                    out_urbs: VecDeque::new(),
                    out_on_bus: false,
                });
            }
            Event::Detach { id } => {
                if self.connection.as_ref().is_some_and(|c| c.id == id) {
                    tracing::info!(serial = %self.serial, "client detached");
                    self.connection = None;
                }
            }
            Event::Command { id, command } => {
                if self.connection.as_ref().is_some_and(|c| c.id == id) {
                    self.command(command, usb, hid);
                }
            }
            Event::Automation(request) => self.automation.handle(self.auth, request),
            Event::Shutdown => {}
        }
    }

    fn command(
        &mut self,
        command: Command,
        usb: &mut UsbDevice<'_, UsbIpBus>,
        hid: &mut FidoHid<'_, UsbIpBus>,
    ) {
        match command {
            Command::Submit(urb) if urb.endpoint == 0 => {
                let (status, data) = control_transfer(usb, hid, &self.bus, &urb);
                let reply = if urb.direction == protocol::DIR_IN {
                    protocol::ret_submit(urb.seqnum, status, data.len() as u32, &data)
                } else {
                    protocol::ret_submit(
                        urb.seqnum,
                        status,
                        if status == 0 {
                            urb.data.len() as u32
                        } else {
                            0
                        },
                        &[],
                    )
                };
                self.send(&reply);
            }
            Command::Submit(urb) => {
                let direction = if urb.direction == protocol::DIR_IN {
                    UsbDirection::In
                } else {
                    UsbDirection::Out
                };
                if !self.bus.is_endpoint(urb.endpoint, direction) {
                    self.send(&protocol::ret_submit(urb.seqnum, protocol::EPIPE, 0, &[]));
                } else if direction == UsbDirection::In
                    && (urb.transfer_buffer_length as usize) < authenticator::ctaphid::PACKET_SIZE
                {
                    // A report would not fit: never complete a URB with more than it asked for.
                    self.send(&protocol::ret_submit(
                        urb.seqnum,
                        protocol::EOVERFLOW,
                        0,
                        &[],
                    ));
                } else if let Some(connection) = &mut self.connection {
                    let pending_out: usize = connection.out_urbs.iter().map(|u| u.data.len()).sum();
                    if connection.in_urbs.len() + connection.out_urbs.len() >= MAX_PENDING_URBS
                        || pending_out + urb.data.len() > MAX_PENDING_OUT_BYTES
                    {
                        tracing::warn!(serial = %self.serial, "client flooding URBs: dropping it");
                        let _ = connection.writer.shutdown(Shutdown::Both);
                        self.connection = None;
                        return;
                    }
                    match direction {
                        UsbDirection::In => connection.in_urbs.push_back(urb),
                        UsbDirection::Out => connection.out_urbs.push_back(urb),
                    }
                }
            }
            Command::Unlink {
                seqnum,
                unlink_seqnum,
            } => {
                let Some(connection) = &mut self.connection else {
                    return;
                };
                let before = connection.in_urbs.len() + connection.out_urbs.len();
                connection.in_urbs.retain(|u| u.seqnum != unlink_seqnum);
                let front = connection.out_urbs.front().map(|u| u.seqnum);
                connection.out_urbs.retain(|u| u.seqnum != unlink_seqnum);
                if front == Some(unlink_seqnum) {
                    connection.out_on_bus = false;
                }
                let removed = before != connection.in_urbs.len() + connection.out_urbs.len();
                let status = if removed { protocol::ECONNRESET } else { 0 };
                self.send(&protocol::ret_unlink(seqnum, status));
            }
        }
    }

    /// Send to the client; a client that cannot take it (gone, or not reading) is dropped.
    fn send(&mut self, bytes: &[u8]) {
        if let Some(connection) = &mut self.connection {
            if !connection.send(bytes) {
                tracing::warn!(serial = %self.serial, "client not reading: dropping it");
                let _ = connection.writer.shutdown(Shutdown::Both);
                self.connection = None;
            }
        }
    }

    /// Move everything that can move: deadlines, OUT reports into CTAPHID, CTAPHID packets out
    /// to waiting IN URBs.
    fn service(&mut self, usb: &mut UsbDevice<'_, UsbIpBus>, hid: &mut FidoHid<'_, UsbIpBus>) {
        let now = self.now();
        if self.ctaphid.next_deadline().is_some_and(|d| d <= now) {
            let mut observed = Observed {
                app: &mut *self.auth,
                key: &mut self.automation,
            };
            let mut app = Traced {
                app: &mut observed,
                sink: self.trace.as_ref(),
                key: &self.bus_id,
                in_flight: &mut self.traced_request,
            };
            self.ctaphid.poll(now, &mut app);
        }
        for _ in 0..MAX_ROUNDS {
            let mut progress = false;
            for _ in 0..MAX_ROUNDS {
                if !self.bus.has_events() {
                    break;
                }
                usb.poll(&mut [hid]);
            }
            progress |= self.deliver_out(usb, hid);
            while let Some(report) = hid.read_report() {
                let now = self.now();
                let mut observed = Observed {
                    app: &mut *self.auth,
                    key: &mut self.automation,
                };
                let mut app = Traced {
                    app: &mut observed,
                    sink: self.trace.as_ref(),
                    key: &self.bus_id,
                    in_flight: &mut self.traced_request,
                };
                self.ctaphid.handle_packet(&report, now, &mut app);
                progress = true;
            }
            progress |= self.complete_out();
            progress |= self.queue_in(hid);
            progress |= self.complete_in();
            if !progress {
                break;
            }
        }
    }

    fn deliver_out(
        &mut self,
        usb: &mut UsbDevice<'_, UsbIpBus>,
        hid: &mut FidoHid<'_, UsbIpBus>,
    ) -> bool {
        let Some(connection) = &mut self.connection else {
            return false;
        };
        let Some(urb) = connection.out_urbs.front() else {
            return false;
        };
        if connection.out_on_bus || !self.bus.put_out(urb.endpoint, &urb.data) {
            return false;
        }
        connection.out_on_bus = true;
        usb.poll(&mut [hid]);
        true
    }

    fn complete_out(&mut self) -> bool {
        let Some(connection) = &mut self.connection else {
            return false;
        };
        let Some(urb) = connection.out_urbs.front() else {
            return false;
        };
        if !connection.out_on_bus || !self.bus.out_consumed(urb.endpoint) {
            return false;
        }
        let reply = protocol::ret_submit(urb.seqnum, 0, urb.data.len() as u32, &[]);
        connection.out_urbs.pop_front();
        connection.out_on_bus = false;
        self.send(&reply);
        true
    }

    fn queue_in(&mut self, hid: &mut FidoHid<'_, UsbIpBus>) -> bool {
        if self.pending_packet.is_none() {
            self.pending_packet = self.ctaphid.pop_packet();
        }
        match &self.pending_packet {
            Some(packet) if hid.write_report(packet) => {
                self.pending_packet = None;
                true
            }
            _ => false,
        }
    }

    fn complete_in(&mut self) -> bool {
        let Some(connection) = &mut self.connection else {
            return false;
        };
        let Some(endpoint) = connection.in_urbs.front().map(|u| u.endpoint) else {
            return false;
        };
        let Some(report) = self.bus.take_in(endpoint) else {
            return false;
        };
        let Some(urb) = connection.in_urbs.pop_front() else {
            return false;
        };
        self.send(&protocol::ret_submit(
            urb.seqnum,
            0,
            report.len() as u32,
            &report,
        ));
        true
    }
}

/// Run one control transfer through the stack, answered in the URB that asked: the SETUP, the
/// OUT data stage if any, IN data collected across the stack's 64-byte writes, and the status
/// stage. The answer never holds more than wLength or the URB's buffer.
fn control_transfer(
    usb: &mut UsbDevice<'_, UsbIpBus>,
    hid: &mut FidoHid<'_, UsbIpBus>,
    bus: &BusHandle,
    urb: &Submit,
) -> (i32, Vec<u8>) {
    let setup = urb.setup;
    let device_to_host = setup[0] & 0x80 != 0;
    let w_length = usize::from(u16::from_le_bytes([setup[6], setup[7]]));
    bus.setup(setup);
    let mut out_data: &[u8] = if device_to_host {
        &[]
    } else {
        &urb.data[..urb.data.len().min(w_length)]
    };
    let mut collected = Vec::new();
    for _ in 0..MAX_ROUNDS {
        if bus.has_events() {
            usb.poll(&mut [hid]);
            if let Some(chunk) = bus.take_in(0) {
                collected.extend_from_slice(&chunk);
            }
            if bus.control_stalled() {
                return (protocol::EPIPE, Vec::new());
            }
        } else if !out_data.is_empty() && bus.out_consumed(0) {
            let n = out_data.len().min(64);
            bus.put_out(0, &out_data[..n]);
            out_data = &out_data[n..];
        } else {
            break;
        }
    }
    if device_to_host {
        // The host's zero-length status packet ends the transfer.
        bus.put_out(0, &[]);
        for _ in 0..4 {
            if !bus.has_events() {
                break;
            }
            usb.poll(&mut [hid]);
        }
        collected.truncate(w_length.min(urb.transfer_buffer_length as usize));
    }
    (0, collected)
}
