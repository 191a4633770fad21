//! The key through Linux's uhid (`/dev/uhid`) instead of USB/IP: the kernel makes a HID device
//! of it, seen as `/dev/hidrawN` by browsers, libfido2 and python-fido2 like any security key,
//! with no `vhci-hcd`, no `usbip` tool and no root (a container needs only `/dev/uhid`).
//!
//! The protocol (linux/include/uapi/linux/uhid.h) is one packed `struct uhid_event` per read and
//! per write: a 32-bit type, then the type's payload. This module encodes the events the key
//! writes (CREATE2, INPUT2, DESTROY, the replies to GET_REPORT and SET_REPORT) and decodes the
//! ones it reads, with the offsets written out; [`run`] is one key's thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use authenticator::ctaphid::{App, Ctaphid, Packet, PACKET_SIZE};
use authenticator::platform::Platform;
use authenticator::usb::REPORT_DESCRIPTOR;

use crate::device::{self, KeySetup};
use crate::platform::RunnerPlatform;
use crate::trace::{TraceSink, Traced};

/// `sizeof(struct uhid_event)`: every read returns one, every write sends one.
pub const EVENT_SIZE: usize = 4380;
/// The largest report or descriptor an event carries (`UHID_DATA_MAX`).
const DATA_MAX: usize = 4096;

const DESTROY: u32 = 1;
const START: u32 = 2;
const STOP: u32 = 3;
const OPEN: u32 = 4;
const CLOSE: u32 = 5;
const OUTPUT: u32 = 6;
const GET_REPORT: u32 = 9;
const GET_REPORT_REPLY: u32 = 10;
const CREATE2: u32 = 11;
const INPUT2: u32 = 12;
const SET_REPORT: u32 = 13;
const SET_REPORT_REPLY: u32 = 14;

/// `BUS_USB` from linux/input.h: udev rules written for the USB key match this one too.
const BUS_USB: u16 = 0x03;
/// The error a GET_REPORT or SET_REPORT gets: a FIDO key has no feature reports.
const EIO: u16 = 5;

/// What the kernel is told the device is.
pub struct Identity {
    pub name: String,
    pub phys: String,
    /// The serial number (udev's `ID_SERIAL_SHORT`, hidraw's `HID_UNIQ`).
    pub uniq: String,
    pub vendor: u16,
    pub product: u16,
    pub version: u16,
}

fn event(kind: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; EVENT_SIZE];
    bytes[..4].copy_from_slice(&kind.to_ne_bytes());
    bytes
}

/// Copy a string into a fixed, NUL-terminated field, cut to fit.
fn put_str(field: &mut [u8], value: &str) {
    let n = value.len().min(field.len() - 1);
    field[..n].copy_from_slice(&value.as_bytes()[..n]);
}

/// UHID_CREATE2: `name[128] phys[64] uniq[64] rd_size:u16 bus:u16 vendor:u32 product:u32
/// version:u32 country:u32 rd_data[4096]`, after the type.
pub fn create2(identity: &Identity, descriptor: &[u8]) -> Vec<u8> {
    let mut bytes = event(CREATE2);
    put_str(&mut bytes[4..132], &identity.name);
    put_str(&mut bytes[132..196], &identity.phys);
    put_str(&mut bytes[196..260], &identity.uniq);
    let len = descriptor.len().min(DATA_MAX);
    bytes[260..262].copy_from_slice(&(len as u16).to_ne_bytes());
    bytes[262..264].copy_from_slice(&BUS_USB.to_ne_bytes());
    bytes[264..268].copy_from_slice(&u32::from(identity.vendor).to_ne_bytes());
    bytes[268..272].copy_from_slice(&u32::from(identity.product).to_ne_bytes());
    bytes[272..276].copy_from_slice(&u32::from(identity.version).to_ne_bytes());
    // country stays 0: not localised.
    bytes[280..280 + len].copy_from_slice(&descriptor[..len]);
    bytes
}

/// UHID_INPUT2: `size:u16 data[4096]`: one input report to the host.
pub fn input2(report: &Packet) -> Vec<u8> {
    let mut bytes = event(INPUT2);
    bytes[4..6].copy_from_slice(&(report.len() as u16).to_ne_bytes());
    bytes[6..6 + report.len()].copy_from_slice(report);
    bytes
}

pub fn destroy() -> Vec<u8> {
    event(DESTROY)
}

/// UHID_GET_REPORT_REPLY (id:u32 err:u16 size:u16 data) or UHID_SET_REPORT_REPLY (id:u32
/// err:u16), refusing: the kernel waits for a reply to each request it forwards.
fn refuse(request: u32, id: u32) -> Vec<u8> {
    let mut bytes = event(if request == GET_REPORT {
        GET_REPORT_REPLY
    } else {
        SET_REPORT_REPLY
    });
    bytes[4..8].copy_from_slice(&id.to_ne_bytes());
    bytes[8..10].copy_from_slice(&EIO.to_ne_bytes());
    bytes
}

/// An event read from `/dev/uhid`.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The kernel took the device (START) or let it go (STOP).
    Start,
    Stop,
    /// The first reader opened the hidraw node, or the last one closed it.
    Open,
    Close,
    /// An output report: a CTAPHID packet from the host.
    Output(Packet),
    /// A GET_REPORT (9) or SET_REPORT (13) request, which must be answered.
    ReportRequest {
        kind: u32,
        id: u32,
    },
    /// Anything else, ignored.
    Other(u32),
}

/// Decode one event; `None` if it is shorter than its type says.
pub fn parse(bytes: &[u8]) -> Option<Event> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    Some(match kind {
        START => Event::Start,
        STOP => Event::Stop,
        OPEN => Event::Open,
        CLOSE => Event::Close,
        // UHID_OUTPUT: data[4096] size:u16 rtype:u8.
        OUTPUT => {
            let size = usize::from(u16::from_ne_bytes(bytes.get(4100..4102)?.try_into().ok()?));
            let data = bytes.get(4..4 + size.min(DATA_MAX))?;
            Event::Output(output_report(data))
        }
        GET_REPORT | SET_REPORT => Event::ReportRequest {
            kind,
            id: u32::from_ne_bytes(bytes.get(4..8)?.try_into().ok()?),
        },
        other => Event::Other(other),
    })
}

/// The 64-byte report in an output event. A hidraw write carries the report number first
/// (0: the descriptor has no report IDs), which usbhid strips and uhid passes on: 65 bytes
/// starting with 0 lose it. Shorter reports are padded with zeros, longer ones cut, so any
/// write becomes one packet for CTAPHID to judge.
fn output_report(data: &[u8]) -> Packet {
    let data = match data {
        [0, rest @ ..] if rest.len() == PACKET_SIZE => rest,
        _ => data,
    };
    let mut packet = [0u8; PACKET_SIZE];
    let n = data.len().min(PACKET_SIZE);
    packet[..n].copy_from_slice(&data[..n]);
    packet
}

/// Open `/dev/uhid` (or `path`) for reading and writing, with errors that say what to do.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|error| {
            let hint = match error.kind() {
                io::ErrorKind::NotFound => {
                    "no such device: load the uhid module (`sudo modprobe uhid`), or give a \
                     container the device (`--device /dev/uhid`)"
                }
                io::ErrorKind::PermissionDenied => {
                    "permission denied: run as root, or let your user alone open it (a udev \
                     rule `KERNEL==\"uhid\", TAG+=\"uaccess\"` for the user at the machine's \
                     seat, or `KERNEL==\"uhid\", GROUP=\"uhid\", MODE=\"0660\"` with only your \
                     user in that group: whoever opens /dev/uhid can make any input device, a \
                     keyboard included, so never make it 0666)"
                }
                _ => "cannot open it",
            };
            io::Error::new(
                error.kind(),
                format!("{}: {hint} ({error})", path.display()),
            )
        })
}

/// Warn when every user may open the uhid device: any of them can then make input devices, a
/// keyboard typing into other users' sessions among them (the machine's setting, not ours to
/// change; the hidraw node each key gets is udev's business too: root's alone unless a rule
/// gives it to a user or group).
pub fn warn_if_open_to_all(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.mode() & 0o006 != 0 {
            tracing::warn!(
                path = %path.display(),
                "is open to every user on this machine (mode {:04o}): any of them can make \
                 input devices, a keyboard included; give it to one user or group instead \
                 (`KERNEL==\"uhid\", TAG+=\"uaccess\"`, or GROUP= with MODE=\"0660\")",
                meta.mode() & 0o7777
            );
        }
    }
}

/// What a uhid key's thread hears: the device's events (from a reader thread) or the runner.
pub enum Input {
    Uhid(Event),
    /// The device could not be read any more.
    Gone(io::Error),
    /// A test automation verb from the control socket.
    Automation(crate::automation::Request),
    Shutdown,
}

/// Read events from the device until it fails or nobody listens; one thread per key.
pub fn read_events(mut device: File, inputs: SyncSender<Input>) {
    let mut buffer = vec![0u8; EVENT_SIZE];
    loop {
        let input = match device.read(&mut buffer) {
            Ok(0) => Input::Gone(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => match parse(&buffer[..n]) {
                Some(event) => Input::Uhid(event),
                None => {
                    tracing::warn!(bytes = n, "short uhid event ignored");
                    continue;
                }
            },
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => Input::Gone(error),
        };
        let gone = matches!(input, Input::Gone(_));
        if inputs.send(input).is_err() || gone {
            return;
        }
    }
}

/// Run one key on an open uhid device until `Shutdown` or the device fails; the device is
/// destroyed on the way out.
pub fn run<S: authenticator::platform::StateStorage>(
    storage: S,
    platform: RunnerPlatform<S>,
    identity: Identity,
    setup: KeySetup,
    trace: Option<TraceSink>,
    mut device: File,
    inputs: Receiver<Input>,
) {
    let label = identity.phys.rsplit('/').next().unwrap_or("").to_string();
    let serial = identity.uniq.clone();
    if let Err(error) = device.write_all(&create2(&identity, &REPORT_DESCRIPTOR)) {
        tracing::error!(%error, serial, "cannot create the uhid device");
        return;
    }
    tracing::info!(serial, name = identity.name, "uhid device created");
    let mut automation = setup.automation(&label);
    device::with_authenticator(storage, platform, &serial, setup, |auth| {
        let mut ctaphid = Ctaphid::new(device::version());
        let mut traced_request = None;
        loop {
            let input = match ctaphid.next_deadline() {
                Some(deadline) => {
                    let wait = deadline.saturating_sub(auth.platform().now_ms());
                    match inputs.recv_timeout(Duration::from_millis(wait)) {
                        Ok(input) => Some(input),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => Some(Input::Shutdown),
                    }
                }
                None => Some(inputs.recv().unwrap_or(Input::Shutdown)),
            };
            let input = match input {
                Some(Input::Automation(request)) => {
                    automation.handle(auth, request);
                    continue;
                }
                input => input,
            };
            let now = auth.platform().now_ms();
            let mut observed = crate::automation::Observed {
                app: &mut *auth,
                key: &mut automation,
            };
            let mut app = Traced {
                app: &mut observed,
                sink: trace.as_ref(),
                key: &label,
                in_flight: &mut traced_request,
            };
            match input {
                None => ctaphid.poll(now, &mut app),
                Some(Input::Uhid(Event::Output(packet))) => {
                    ctaphid.handle_packet(&packet, now, &mut app);
                }
                Some(Input::Uhid(Event::Close)) => {
                    // The last reader closed the node (a client gone mid-transaction): what it
                    // started is abandoned, as when a USB key is unplugged; nothing stored
                    // changes, and the next client starts clean.
                    if ctaphid.is_busy() {
                        tracing::info!(serial, "hidraw closed mid-transaction: abandoned");
                    }
                    app.app.abort();
                    ctaphid = Ctaphid::new(device::version());
                }
                Some(Input::Uhid(Event::ReportRequest { kind, id })) => {
                    if device.write_all(&refuse(kind, id)).is_err() {
                        break;
                    }
                }
                Some(Input::Uhid(event)) => tracing::debug!(serial, ?event, "uhid event"),
                Some(Input::Gone(error)) => {
                    tracing::error!(%error, serial, "uhid device lost");
                    break;
                }
                Some(Input::Shutdown) => break,
                Some(Input::Automation(_)) => {}
            }
            while let Some(packet) = ctaphid.pop_packet() {
                if let Err(error) = device.write_all(&input2(&packet)) {
                    tracing::warn!(%error, serial, "input report not delivered");
                }
            }
        }
    });
    // Closing the file destroys the device too; say it first, as the protocol asks.
    let _ = device.write_all(&destroy());
    tracing::info!(serial, "uhid device destroyed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            name: "Open FIDO Key (uhid)".into(),
            phys: "usbip-runner/uhid/1-1".into(),
            uniq: "uhid-1-1".into(),
            vendor: 0x1209,
            product: 0x0001,
            version: 0x0100,
        }
    }

    #[test]
    fn create2_lays_out_struct_uhid_create2_req() {
        let bytes = create2(&identity(), &REPORT_DESCRIPTOR);
        assert_eq!(bytes.len(), EVENT_SIZE);
        assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), 11);
        assert_eq!(&bytes[4..24], b"Open FIDO Key (uhid)");
        assert_eq!(bytes[24], 0, "NUL-terminated");
        assert_eq!(&bytes[132..153], b"usbip-runner/uhid/1-1");
        assert_eq!(&bytes[196..204], b"uhid-1-1");
        assert_eq!(u16::from_ne_bytes([bytes[260], bytes[261]]), 34, "rd_size");
        assert_eq!(u16::from_ne_bytes([bytes[262], bytes[263]]), 3, "BUS_USB");
        assert_eq!(
            u32::from_ne_bytes(bytes[264..268].try_into().unwrap()),
            0x1209
        );
        assert_eq!(u32::from_ne_bytes(bytes[268..272].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_ne_bytes(bytes[272..276].try_into().unwrap()),
            0x0100
        );
        assert_eq!(&bytes[280..314], &REPORT_DESCRIPTOR);
        assert!(bytes[314..].iter().all(|&b| b == 0));
    }

    #[test]
    fn long_names_are_cut_and_stay_terminated() {
        let mut id = identity();
        id.name = "n".repeat(500);
        let bytes = create2(&id, &REPORT_DESCRIPTOR);
        assert_eq!(bytes[4 + 127], 0);
        assert_eq!(bytes[4 + 126], b'n');
    }

    #[test]
    fn input2_carries_one_report() {
        let bytes = input2(&[0xAB; 64]);
        assert_eq!(bytes.len(), EVENT_SIZE);
        assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), 12);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 64);
        assert_eq!(&bytes[6..70], &[0xAB; 64]);
        assert_eq!(bytes[70], 0);
    }

    fn output(data: &[u8]) -> Vec<u8> {
        let mut bytes = event(OUTPUT);
        bytes[4..4 + data.len()].copy_from_slice(data);
        bytes[4100..4102].copy_from_slice(&(data.len() as u16).to_ne_bytes());
        bytes[4102] = 1; // UHID_OUTPUT_REPORT
        bytes
    }

    #[test]
    fn output_reports_lose_hidraws_report_number() {
        let mut with_number = vec![0u8];
        with_number.extend_from_slice(&[7; 64]);
        assert_eq!(parse(&output(&with_number)), Some(Event::Output([7; 64])));
        assert_eq!(parse(&output(&[7; 64])), Some(Event::Output([7; 64])));
        let mut short = [0u8; 64];
        short[..3].copy_from_slice(&[1, 2, 3]);
        assert_eq!(parse(&output(&[1, 2, 3])), Some(Event::Output(short)));
    }

    #[test]
    fn bad_events_never_panic() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[6, 0, 0]), None);
        assert_eq!(parse(&6u32.to_ne_bytes()), None, "OUTPUT without its body");
        let mut huge = output(&[1; 10]);
        huge[4100..4102].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert!(
            matches!(parse(&huge), Some(Event::Output(_))),
            "size cut to 4096"
        );
        assert_eq!(parse(&99u32.to_ne_bytes()), Some(Event::Other(99)));
        let mut get = event(GET_REPORT);
        get[4..8].copy_from_slice(&42u32.to_ne_bytes());
        assert_eq!(parse(&get), Some(Event::ReportRequest { kind: 9, id: 42 }));
        let reply = refuse(9, 42);
        assert_eq!(u32::from_ne_bytes(reply[..4].try_into().unwrap()), 10);
        assert_eq!(u32::from_ne_bytes(reply[4..8].try_into().unwrap()), 42);
        assert_eq!(u16::from_ne_bytes([reply[8], reply[9]]), 5);
        assert_eq!(
            u32::from_ne_bytes(refuse(13, 1)[..4].try_into().unwrap()),
            14
        );
    }

    /// `run` over a pipe instead of /dev/uhid: every event it writes, in order.
    #[test]
    fn the_key_loop_speaks_uhid() {
        use std::sync::mpsc::sync_channel;
        let (mut written, writer) = std::io::pipe().unwrap();
        let device = File::from(std::os::fd::OwnedFd::from(writer));
        let (inputs, receiver) = sync_channel(16);
        let key = std::thread::spawn(move || {
            let platform =
                RunnerPlatform::new(crate::PresenceMode::Auto, None, None, "1-1".into()).unwrap();
            let storage = crate::storage::RamStorage::default();
            run(
                storage,
                platform,
                identity(),
                KeySetup::default(),
                None,
                device,
                receiver,
            );
        });
        let mut next = || {
            let mut event = vec![0u8; EVENT_SIZE];
            written.read_exact(&mut event).unwrap();
            event
        };
        let kind = |event: &[u8]| u32::from_ne_bytes(event[..4].try_into().unwrap());
        assert_eq!(
            next(),
            create2(&identity(), &REPORT_DESCRIPTOR),
            "CREATE2 first"
        );

        // CTAPHID_INIT on the broadcast channel, as hidraw passes it (report number first).
        let mut init = [0u8; PACKET_SIZE];
        init[..5].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x86]);
        init[6] = 8;
        init[7..15].copy_from_slice(b"abcdefgh");
        let with_number = [&[0u8][..], &init].concat();
        inputs
            .send(Input::Uhid(parse(&output(&with_number)).unwrap()))
            .unwrap();
        let answer = next();
        assert_eq!(kind(&answer), INPUT2);
        assert_eq!(u16::from_ne_bytes([answer[4], answer[5]]), 64);
        assert_eq!(&answer[6..11], &[0xFF, 0xFF, 0xFF, 0xFF, 0x86]);
        assert_eq!(&answer[13..21], b"abcdefgh");
        let cid: [u8; 4] = answer[21..25].try_into().unwrap();

        // Feature reports are refused at once; noise is ignored.
        inputs
            .send(Input::Uhid(Event::ReportRequest {
                kind: GET_REPORT,
                id: 7,
            }))
            .unwrap();
        assert_eq!(next(), refuse(GET_REPORT, 7));
        inputs.send(Input::Uhid(Event::Other(99))).unwrap();
        inputs.send(Input::Uhid(Event::Start)).unwrap();

        // The first packet of a 100-byte PING, then the node is closed: the message is
        // abandoned, so the next client's PING on a new channel is answered, not BUSY.
        let mut ping = [0u8; PACKET_SIZE];
        ping[..4].copy_from_slice(&cid);
        ping[4..7].copy_from_slice(&[0x81, 0, 100]);
        inputs.send(Input::Uhid(Event::Output(ping))).unwrap();
        inputs.send(Input::Uhid(Event::Close)).unwrap();
        inputs.send(Input::Uhid(Event::Output(init))).unwrap();
        let answer = next();
        let cid2: [u8; 4] = answer[21..25].try_into().unwrap();
        let mut short_ping = [0u8; PACKET_SIZE];
        short_ping[..4].copy_from_slice(&cid2);
        short_ping[4..8].copy_from_slice(&[0x81, 0, 1, 0x5A]);
        inputs.send(Input::Uhid(Event::Output(short_ping))).unwrap();
        let answer = next();
        assert_eq!(
            &answer[6..14],
            &[cid2[0], cid2[1], cid2[2], cid2[3], 0x81, 0, 1, 0x5A]
        );

        // Shutdown: UHID_DESTROY last.
        inputs.send(Input::Shutdown).unwrap();
        assert_eq!(kind(&next()), DESTROY);
        key.join().unwrap();
    }

    #[test]
    fn a_missing_device_says_which_module_to_load() {
        let error = open(Path::new("/nonexistent/uhid")).unwrap_err();
        assert!(error.to_string().contains("modprobe uhid"), "{error}");
    }
}
