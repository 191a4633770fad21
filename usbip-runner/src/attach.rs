//! `--attach`: the runner attaches its own keys to this machine's `vhci-hcd`, as `usbip attach`
//! does, so a job needs neither the `usbip` tool nor a second step; it detaches them when it
//! stops.
//!
//! For each key: a TCP connection to the runner's own listener and the USB/IP import handshake
//! on it (OP_REQ_IMPORT, OP_REP_IMPORT), then the connected socket goes to the kernel through
//! vhci-hcd's sysfs `attach` file, as the line `PORT SOCKFD DEVID SPEED`. The kernel takes its
//! own reference to the socket and speaks USB/IP on it from then on; the runner closes its
//! descriptor. Which port is free comes from the controller's `status` files; which hidraw node
//! the key became comes from sysfs: the port's USB device (the status file's `local_busid`) and
//! the hidraw device below it.
//!
//! Writing `attach` and `detach` is root's (the files are mode 0200). If the runner dies
//! without detaching, its end of each socket closes and the kernel detaches the device itself.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::protocol::{OP_REP_IMPORT, OP_REQ_IMPORT, VERSION};

/// How long a key may take from the attach to its hidraw node (enumeration by the kernel's
/// hub thread and usbhid: well under a second on a real machine, a few seconds in an emulator).
pub const HIDRAW_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a detached port may take to be free again.
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// vhci-hcd's port states (`enum usbip_device_status`): free, and in use by a device.
const VDEV_ST_NULL: u32 = 4;
const VDEV_ST_USED: u32 = 6;

/// What to do when vhci-hcd is missing, in every error that says so.
const LOAD_HINT: &str = "load it with `sudo modprobe vhci-hcd` (on Ubuntu it ships in \
                         linux-modules-extra-$(uname -r)), or use --transport uhid";

/// The kernel's USB/IP host controller, seen through sysfs.
#[derive(Clone, Debug)]
pub struct Vhci {
    /// `/sys/devices/platform/vhci_hcd.0`: `attach`, `detach`, `status` (and `status.N` for
    /// further controllers, whose ports it numbers on from the first's).
    controller: PathBuf,
    /// `/sys`, where the USB devices and hidraw class are.
    sys: PathBuf,
    /// `/dev`, where the hidraw nodes are.
    dev: PathBuf,
}

/// A key attached by the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub bus_id: String,
    /// The vhci-hcd port (`usbip port` shows the same number).
    pub port: u32,
    /// The key's hidraw node, e.g. `/dev/hidraw0`.
    pub hidraw: PathBuf,
}

/// One line of a vhci-hcd status file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortStatus {
    /// `hs` (USB 2: low, full and high speed devices) or `ss` (USB 3).
    high_speed_hub: bool,
    port: u32,
    status: u32,
    /// The USB device's name on this machine (`3-1`) once the kernel enumerated it.
    local_bus_id: String,
}

impl Vhci {
    /// The controller of this machine, checked to be there and writable, so that a runner
    /// that cannot attach says why before it starts.
    pub fn open() -> io::Result<Self> {
        let vhci = Self::at(Path::new("/sys"), Path::new("/dev"));
        vhci.check()?;
        Ok(vhci)
    }

    /// A controller under another sysfs and /dev (tests build a fake one).
    pub fn at(sys: &Path, dev: &Path) -> Self {
        Self {
            controller: sys.join("devices/platform/vhci_hcd.0"),
            sys: sys.to_path_buf(),
            dev: dev.to_path_buf(),
        }
    }

    fn check(&self) -> io::Result<()> {
        if !self.controller.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "vhci-hcd is not loaded (no {}): {LOAD_HINT}",
                    self.controller.display()
                ),
            ));
        }
        // Opening for writing checks the rights without attaching anything.
        self.open_control("attach").map(drop)
    }

    fn open_control(&self, name: &str) -> io::Result<fs::File> {
        let path = self.controller.join(name);
        // Truncating, as a shell's `echo LINE > FILE` does; sysfs ignores it.
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|error| match error.kind() {
                io::ErrorKind::PermissionDenied => io::Error::new(
                    error.kind(),
                    format!(
                        "cannot write {}: attaching a USB/IP device is root's; run \
                         `usbip-runner --attach` as root (e.g. with sudo) ({error})",
                        path.display()
                    ),
                ),
                io::ErrorKind::NotFound => io::Error::new(
                    error.kind(),
                    format!("no {}: {LOAD_HINT} ({error})", path.display()),
                ),
                _ => io::Error::new(error.kind(), format!("{}: {error}", path.display())),
            })
    }

    /// Every port of every vhci-hcd controller.
    fn ports(&self) -> io::Result<Vec<PortStatus>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.controller)?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name == "status" || name.starts_with("status."))
            })
            .collect();
        files.sort();
        let mut ports = Vec::new();
        for file in files {
            ports.extend(parse_status(&fs::read_to_string(&file)?).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {error}", file.display()),
                )
            })?);
        }
        Ok(ports)
    }

    fn port(&self, port: u32) -> io::Result<PortStatus> {
        self.ports()?
            .into_iter()
            .find(|status| status.port == port)
            .ok_or_else(|| io::Error::other(format!("vhci_hcd has no port {port}")))
    }

    /// Import `bus_id` from the runner at `server` and attach it to a free port; returns the
    /// port. The kernel enumerates the device afterwards (see [`Vhci::wait_for_hidraw`]).
    pub fn attach(&self, server: SocketAddr, bus_id: &str) -> io::Result<u32> {
        let (stream, device) = import(server, bus_id)?;
        let free: Vec<u32> = self
            .ports()?
            .into_iter()
            .filter(|port| port.high_speed_hub == device.usb2() && port.status == VDEV_ST_NULL)
            .map(|port| port.port)
            .collect();
        for &port in &free {
            let line = format!(
                "{port} {} {} {}",
                stream.as_raw_fd(),
                device.devid(),
                device.speed
            );
            match self.open_control("attach")?.write_all(line.as_bytes()) {
                Ok(()) => return Ok(port),
                // Taken since we read the status (another attach): try the next one.
                Err(error) if error.raw_os_error() == Some(16 /* EBUSY */) => continue,
                Err(error) => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!(
                            "vhci_hcd refused to attach {bus_id} to port {port} ({error}); \
                             the kernel log (dmesg) says why"
                        ),
                    ))
                }
            }
        }
        Err(io::Error::other(format!(
            "no free vhci_hcd port for {bus_id} (all USB 2 ports in use: `usbip port` lists \
             them, `sudo usbip detach -p N` frees one)"
        )))
    }

    /// Wait until the key at `port` has a hidraw node, and return it. Fails if the kernel
    /// drops the device (the port is free again) or nothing appears within `timeout`.
    pub fn wait_for_hidraw(&self, port: u32, timeout: Duration) -> io::Result<PathBuf> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.port(port)?;
            if status.status == VDEV_ST_NULL {
                return Err(io::Error::other(format!(
                    "the kernel dropped the device on vhci_hcd port {port} (dmesg says why)"
                )));
            }
            if status.status == VDEV_ST_USED {
                if let Some(node) = self.hidraw_below(&status.local_bus_id)? {
                    return Ok(node);
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the key on vhci_hcd port {port} has no hidraw node after {} s (is \
                         usbhid loaded? `sudo modprobe usbhid`)",
                        timeout.as_secs()
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The hidraw node of the USB device `bus_id` (`3-1`), once both sysfs and /dev have it.
    fn hidraw_below(&self, bus_id: &str) -> io::Result<Option<PathBuf>> {
        let Ok(usb_device) = fs::canonicalize(self.sys.join("bus/usb/devices").join(bus_id)) else {
            return Ok(None);
        };
        let Ok(entries) = fs::read_dir(self.sys.join("class/hidraw")) else {
            return Ok(None);
        };
        for entry in entries.filter_map(|entry| entry.ok()) {
            let Ok(device) = fs::canonicalize(entry.path()) else {
                continue;
            };
            if device.starts_with(&usb_device) {
                let node = self.dev.join(entry.file_name());
                return Ok(node.exists().then_some(node));
            }
        }
        Ok(None)
    }

    /// Detach the device on `port` and wait (briefly) for the port to be free.
    pub fn detach(&self, port: u32) -> io::Result<()> {
        self.open_control("detach")?
            .write_all(port.to_string().as_bytes())
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("vhci_hcd did not detach port {port} ({error})"),
                )
            })?;
        let deadline = Instant::now() + DETACH_TIMEOUT;
        while self.port(port)?.status != VDEV_ST_NULL {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("vhci_hcd port {port} still in use after the detach"),
                ));
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }
}

/// Attach every key in `bus_ids` and wait for their hidraw nodes. On an error, the keys
/// already attached are detached again.
pub fn attach_all(
    vhci: &Vhci,
    server: SocketAddr,
    bus_ids: &[String],
) -> io::Result<Vec<Attached>> {
    let mut ports = Vec::new();
    let result = attach_each(vhci, server, bus_ids, &mut ports);
    if result.is_err() {
        for port in ports {
            let _ = vhci.detach(port);
        }
    }
    result
}

/// Attach them all first (the kernel enumerates them side by side), then wait for each node;
/// `ports` holds every port attached, for the caller to undo.
fn attach_each(
    vhci: &Vhci,
    server: SocketAddr,
    bus_ids: &[String],
    ports: &mut Vec<u32>,
) -> io::Result<Vec<Attached>> {
    for bus_id in bus_ids {
        ports.push(vhci.attach(server, bus_id)?);
    }
    bus_ids
        .iter()
        .zip(ports.iter())
        .map(|(bus_id, &port)| {
            Ok(Attached {
                bus_id: bus_id.clone(),
                port,
                hidraw: vhci.wait_for_hidraw(port, HIDRAW_TIMEOUT)?,
            })
        })
        .collect()
}

/// Detach the keys (each one's failure logged: the others are still detached).
pub fn detach_all(vhci: &Vhci, attached: &[Attached]) {
    for key in attached {
        match vhci.detach(key.port) {
            Ok(()) => tracing::info!(bus_id = %key.bus_id, port = key.port, "detached"),
            Err(error) => tracing::warn!(bus_id = %key.bus_id, %error, "cannot detach"),
        }
    }
}

/// What OP_REP_IMPORT says of the device, as vhci-hcd's `attach` wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Imported {
    bus_num: u32,
    dev_num: u32,
    speed: u32,
}

impl Imported {
    /// The device id the kernel puts in every URB it sends (`busnum << 16 | devnum`).
    fn devid(&self) -> u32 {
        (self.bus_num << 16) | (self.dev_num & 0xffff)
    }

    /// USB 1 and 2 devices go on the `hs` hub; USB 3 (`USB_SPEED_SUPER` and above) on `ss`.
    fn usb2(&self) -> bool {
        self.speed < 5
    }
}

/// The server's own listener, from this machine: loopback if it listens on every address.
fn local_address(server: SocketAddr) -> SocketAddr {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, server.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, server.port()).into(),
        _ => server,
    }
}

/// A connection to `server` that has imported `bus_id`, ready for the kernel.
fn import(server: SocketAddr, bus_id: &str) -> io::Result<(TcpStream, Imported)> {
    let mut stream = TcpStream::connect_timeout(&local_address(server), Duration::from_secs(5))?;
    // As `usbip attach` does: small URBs go out at once.
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(&op_req_import(bus_id))?;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header)?;
    let mut record = [0u8; 312];
    let imported = parse_op_rep_import(&header, || {
        stream.read_exact(&mut record)?;
        Ok(record)
    })
    .map_err(|error| io::Error::new(error.kind(), format!("importing {bus_id}: {error}")))?;
    stream.set_read_timeout(None)?;
    Ok((stream, imported))
}

fn op_req_import(bus_id: &str) -> Vec<u8> {
    let mut request = Vec::with_capacity(40);
    request.extend_from_slice(&VERSION.to_be_bytes());
    request.extend_from_slice(&OP_REQ_IMPORT.to_be_bytes());
    request.extend_from_slice(&0u32.to_be_bytes());
    let mut name = [0u8; 32];
    let n = bus_id.len().min(31);
    name[..n].copy_from_slice(&bus_id.as_bytes()[..n]);
    request.extend_from_slice(&name);
    request
}

/// OP_REP_IMPORT: the 8-byte header, then (status 0 only) the 312-byte device record.
fn parse_op_rep_import(
    header: &[u8; 8],
    record: impl FnOnce() -> io::Result<[u8; 312]>,
) -> io::Result<Imported> {
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let version = u16::from_be_bytes([header[0], header[1]]);
    let code = u16::from_be_bytes([header[2], header[3]]);
    if version != VERSION || code != OP_REP_IMPORT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a USB/IP import reply",
        ));
    }
    if be32(&header[4..8]) != 0 {
        return Err(io::Error::other(
            "import refused (no such key, or it is attached already)",
        ));
    }
    // path[256], busid[32], then busnum, devnum, speed.
    let record = record()?;
    Ok(Imported {
        bus_num: be32(&record[288..292]),
        dev_num: be32(&record[292..296]),
        speed: be32(&record[296..300]),
    })
}

/// A vhci-hcd status file (Linux 4.13 and later): a header line, then
/// `hub port sta spd dev sockfd local_busid` per port.
fn parse_status(text: &str) -> Result<Vec<PortStatus>, String> {
    let mut lines = text.lines();
    if lines
        .next()
        .and_then(|header| header.split_whitespace().next())
        != Some("hub")
    {
        return Err("not the status format of Linux 4.13 or later".into());
    }
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| -> Result<u32, String> {
                fields
                    .get(i)
                    .and_then(|field| field.parse().ok())
                    .ok_or_else(|| format!("bad status line {line:?}"))
            };
            Ok(PortStatus {
                high_speed_hub: match fields.first() {
                    Some(&"hs") => true,
                    Some(&"ss") => false,
                    _ => return Err(format!("bad status line {line:?}")),
                },
                port: number(1)?,
                status: number(2)?,
                local_bus_id: fields.get(6).unwrap_or(&"0-0").to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{start, PresenceMode, ServerConfig, StateLocation};

    /// As Linux 6.1 prints it: 8 USB 2 ports, then 8 USB 3 ports; port 1 in use.
    const STATUS: &str = "hub port sta spd dev      sockfd local_busid
hs  0000 004 000 00000000 000000 0-0
hs  0001 006 002 00010002 000003 3-2
hs  0002 004 000 00000000 000000 0-0
ss  0008 004 000 00000000 000000 0-0
";

    #[test]
    fn status_lines_are_parsed() {
        let ports = parse_status(STATUS).unwrap();
        assert_eq!(ports.len(), 4);
        assert_eq!(
            ports[1],
            PortStatus {
                high_speed_hub: true,
                port: 1,
                status: VDEV_ST_USED,
                local_bus_id: "3-2".into(),
            }
        );
        assert!(!ports[3].high_speed_hub);
        assert_eq!(ports[3].port, 8);
        assert!(parse_status("prt sta spd bus dev socket local_busid\n").is_err());
        assert!(parse_status("hub port sta\nhs x 004\n").is_err());
        assert!(parse_status("").is_err());
    }

    /// A fake sysfs and /dev: vhci_hcd.0 with STATUS, its USB bus 3, a hidraw class.
    struct FakeSys(PathBuf);

    impl FakeSys {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir().join(format!("attach-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            let controller = root.join("sys/devices/platform/vhci_hcd.0");
            fs::create_dir_all(&controller).unwrap();
            fs::write(controller.join("status"), STATUS).unwrap();
            fs::write(controller.join("attach"), "").unwrap();
            fs::write(controller.join("detach"), "").unwrap();
            for dir in ["sys/bus/usb/devices", "sys/class/hidraw", "dev"] {
                fs::create_dir_all(root.join(dir)).unwrap();
            }
            Self(root)
        }

        fn vhci(&self) -> Vhci {
            Vhci::at(&self.0.join("sys"), &self.0.join("dev"))
        }

        fn controller(&self) -> PathBuf {
            self.0.join("sys/devices/platform/vhci_hcd.0")
        }

        /// The kernel enumerated a device on `port` as USB device `bus_id` with `hidraw`.
        fn enumerate(&self, port: u32, bus_id: &str, hidraw: &str) {
            let usb = self.controller().join(format!("usb3/{bus_id}"));
            let hid = usb.join(format!("{bus_id}:1.0/0003:1209:0001.0001/hidraw/{hidraw}"));
            fs::create_dir_all(&hid).unwrap();
            std::os::unix::fs::symlink(&usb, self.0.join("sys/bus/usb/devices").join(bus_id))
                .unwrap();
            std::os::unix::fs::symlink(&hid, self.0.join("sys/class/hidraw").join(hidraw)).unwrap();
            fs::write(self.0.join("dev").join(hidraw), "").unwrap();
            let status = fs::read_to_string(self.controller().join("status")).unwrap();
            let line = format!("hs  {port:04} 004 000 00000000 000000 0-0");
            let used = format!("hs  {port:04} 006 002 00010001 000005 {bus_id}");
            fs::write(
                self.controller().join("status"),
                status.replace(&line, &used),
            )
            .unwrap();
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_missing_module_and_missing_rights_are_explained() {
        let fake = FakeSys::new("missing");
        let absent = Vhci::at(&fake.0.join("nowhere"), &fake.0.join("dev"));
        let error = absent.check().unwrap_err();
        assert!(error.to_string().contains("modprobe vhci-hcd"), "{error}");
        assert!(error.to_string().contains("linux-modules-extra"), "{error}");
        fake.vhci().check().unwrap();
    }

    /// The runner imports its own key over a real connection and hands the kernel the line
    /// `PORT SOCKFD DEVID SPEED`, on the first free USB 2 port.
    #[test]
    fn attach_imports_and_writes_the_kernel_line() {
        let fake = FakeSys::new("line");
        let server = start(ServerConfig {
            keys: 2,
            ..ServerConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                PresenceMode::Auto,
                StateLocation::Ephemeral,
            )
        })
        .unwrap();
        let port = fake.vhci().attach(server.addr(), "1-1").unwrap();
        assert_eq!(port, 0, "the first free hs port");
        let line = fs::read_to_string(fake.controller().join("attach")).unwrap();
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[0], "0");
        assert!(
            fields[1].parse::<i32>().unwrap() > 2,
            "a socket descriptor: {line}"
        );
        assert_eq!(fields[2], (1 << 16 | 1).to_string(), "busnum 1, devnum 1");
        assert_eq!(fields[3], "2", "full speed");
        // With port 0 taken too, the next key goes to port 2 (1 is in use), never to ss.
        fake.enumerate(0, "3-1", "hidraw4");
        assert_eq!(fake.vhci().attach(server.addr(), "1-2").unwrap(), 2);
        let line = fs::read_to_string(fake.controller().join("attach")).unwrap();
        assert!(line.starts_with("2 ") && line.ends_with(&format!(" {} 2", 1 << 16 | 2)));
        let error = fake.vhci().attach(server.addr(), "1-9").unwrap_err();
        assert!(error.to_string().contains("import refused"), "{error}");
        server.shutdown();
    }

    #[test]
    fn the_hidraw_node_is_found_below_the_ports_usb_device() {
        let fake = FakeSys::new("hidraw");
        let vhci = fake.vhci();
        // Another key's node (not on our port) must not be taken for ours.
        fake.enumerate(1, "3-2", "hidraw0");
        let error = vhci
            .wait_for_hidraw(0, Duration::from_millis(200))
            .unwrap_err();
        assert!(
            error.to_string().contains("dropped"),
            "port 0 is free: {error}"
        );
        fake.enumerate(0, "3-1", "hidraw7");
        assert_eq!(
            vhci.wait_for_hidraw(0, Duration::from_millis(200)).unwrap(),
            fake.0.join("dev/hidraw7")
        );
        assert_eq!(
            vhci.wait_for_hidraw(1, Duration::from_millis(200)).unwrap(),
            fake.0.join("dev/hidraw0")
        );
    }

    #[test]
    fn import_replies_are_checked() {
        let mut record = [0u8; 312];
        record[288..292].copy_from_slice(&3u32.to_be_bytes());
        record[292..296].copy_from_slice(&7u32.to_be_bytes());
        record[296..300].copy_from_slice(&2u32.to_be_bytes());
        let ok = [1, 0x11, 0, 3, 0, 0, 0, 0];
        let imported = parse_op_rep_import(&ok, || Ok(record)).unwrap();
        assert_eq!(imported.devid(), 3 << 16 | 7);
        assert!(imported.usb2());
        let refused = [1, 0x11, 0, 3, 0, 0, 0, 1];
        assert!(parse_op_rep_import(&refused, || Ok(record)).is_err());
        let devlist = [1, 0x11, 0, 5, 0, 0, 0, 0];
        assert!(parse_op_rep_import(&devlist, || Ok(record)).is_err());
        assert_eq!(op_req_import("1-1").len(), 40);
    }
}
