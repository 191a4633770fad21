//! The USB/IP server: accepts connections, answers the device list and imports, and hands each
//! imported connection's URBs to its key's thread.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use authenticator::attestation::Attestation;
use authenticator::Profile;

use crate::automation::{self, Automation};
use crate::control::{Control, Listening};
use crate::device::{self, Event, KeySetup};
use crate::peer::{self, own_uid, Peer, Policy};
use crate::platform::{PresenceMode, Prompt, RunnerPlatform};
use crate::private::{create_private_file, PrivateDir};
use crate::protocol::{self, OpRequest};
use crate::simulation::UvMode;
use crate::storage::{FileStorage, RamStorage};
use crate::trace::TraceSink;
use crate::uhid;

/// A client that stops reading is dropped after this long, so it cannot stall its key.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that sends nothing before importing is closed after this long.
const IDLE_BEFORE_IMPORT: Duration = Duration::from_secs(30);
/// Events (mostly URBs, each at most `MAX_TRANSFER` bytes) waiting for a key's thread.
const EVENT_QUEUE: usize = 64;

/// Where a key keeps its state.
#[derive(Clone, Debug)]
pub enum StateLocation {
    /// `DIR/state.lfs` (key `n` of several: `DIR/key-n/state.lfs`).
    Dir(PathBuf),
    /// In memory only.
    Ephemeral,
}

/// How the keys reach the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// A USB/IP server: `usbip attach` (vhci-hcd) makes each key a USB device.
    #[default]
    Usbip,
    /// Linux's uhid at this path (`/dev/uhid`): each key a HID device, no USB and no network.
    Uhid(PathBuf),
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where USB/IP listens (unused with [`Transport::Uhid`]).
    pub listen: SocketAddr,
    pub transport: Transport,
    pub presence: PresenceMode,
    pub state: StateLocation,
    /// Independent keys to serve, at bus ids 1-1 … 1-N.
    pub keys: usize,
    /// Where the control socket listens; by default `DIR/control.sock` with `--state DIR`, and
    /// none for an ephemeral key (unless presence is `control`, which requires one).
    pub control: Option<PathBuf>,
    /// Write every CTAP request and response as a JSON line here (`-`: standard error).
    pub trace: Option<PathBuf>,
    /// A batch attestation to install on every key that has none (see [`crate::attestation`]).
    pub attestation: Option<Attestation>,
    /// Connections served at once (each has a thread); more are closed as they arrive. More
    /// than `keys`: each attached key holds one, and a host needs one more to list or attach.
    pub max_connections: usize,
    /// Hold at most this many discoverable credentials per key (a small, exact capacity for
    /// tests of an RP's "key full" path); `None`: what the 16 MiB state holds (19,740).
    pub max_credentials: Option<usize>,
    /// Serve USB/IP to every local user (`--allow-other-users`); by default only the runner's
    /// own user and root (see [`crate::peer`]).
    pub allow_other_users: bool,
    /// Allow a `listen` address other than loopback, and serve peers on other machines
    /// (`--listen-remote`). USB/IP has no authentication.
    pub listen_remote: bool,
    /// What kind of key each one presents itself as (see [`Profile`]).
    pub profile: Profile,
    /// Built-in user verification (a simulated fingerprint sensor, enrolled at start), its
    /// attempts answered as this says; `None`: no built-in UV.
    pub builtin_uv: Option<UvMode>,
    /// Let test automation read and add private keys (`credentials`, `add-credential`) on a
    /// key with state on disk; an ephemeral key always lets it (see [`crate::automation`]).
    pub allow_key_export: bool,
}

/// The default of [`ServerConfig::max_connections`]: far above what clients of a few keys
/// need (a host keeps one connection per attached key, plus short device lists).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

impl ServerConfig {
    /// One key, state kept `state`, presence by `presence`, on `listen`.
    pub fn new(listen: SocketAddr, presence: PresenceMode, state: StateLocation) -> Self {
        Self {
            listen,
            transport: Transport::Usbip,
            presence,
            state,
            keys: 1,
            control: None,
            trace: None,
            attestation: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_credentials: None,
            allow_other_users: false,
            listen_remote: false,
            profile: Profile::Full,
            builtin_uv: None,
            allow_key_export: false,
        }
    }

    /// Whether the configuration can be served, checked before anything starts. The errors
    /// name the fields; the command line maps them to its flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.transport == Transport::Usbip && self.max_connections <= self.keys {
            return Err(ConfigError::NoConnectionToSpare {
                max_connections: self.max_connections,
                keys: self.keys,
            });
        }
        if self.transport == Transport::Usbip
            && !self.listen.ip().is_loopback()
            && !self.listen_remote
        {
            return Err(ConfigError::NotLoopback(self.listen));
        }
        if self.builtin_uv.is_some() && !self.profile.speaks_cbor() {
            return Err(ConfigError::BuiltinUvWithoutCtap2);
        }
        let no_socket = self.control_socket().is_none();
        if self.presence == PresenceMode::Control && no_socket {
            return Err(ConfigError::PresenceControlWithoutSocket);
        }
        if self.builtin_uv == Some(UvMode::Control) && no_socket {
            return Err(ConfigError::UvControlWithoutSocket);
        }
        Ok(())
    }

    /// Where the control socket listens: `control`, else `DIR/control.sock` for state kept in
    /// `DIR`; none for an ephemeral key without `control`.
    pub fn control_socket(&self) -> Option<PathBuf> {
        match (&self.control, &self.state) {
            (Some(path), _) => Some(path.clone()),
            (None, StateLocation::Dir(dir)) => Some(dir.join("control.sock")),
            (None, StateLocation::Ephemeral) => None,
        }
    }

    /// The keys' bus ids, 1-1 … 1-N.
    fn bus_ids(&self) -> Vec<String> {
        (1..=self.keys.max(1)).map(|n| format!("1-{n}")).collect()
    }

    /// Whether test automation may read and add private keys: on a test key only.
    fn keys_may_cross(&self) -> bool {
        self.allow_key_export || matches!(self.state, StateLocation::Ephemeral)
    }
}

/// What is wrong with a [`ServerConfig`]: [`ServerConfig::validate`] finds it before anything
/// starts, and [`start`] refuses it as [`io::ErrorKind::InvalidInput`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `max_connections` is not more than `keys` with USB/IP: each attached key holds a
    /// connection, and a host needs one more to list or attach.
    NoConnectionToSpare { max_connections: usize, keys: usize },
    /// `listen` is not a loopback address and `listen_remote` is off: USB/IP has no
    /// authentication.
    NotLoopback(SocketAddr),
    /// Built-in user verification on a profile without CTAP2 (u2f-only).
    BuiltinUvWithoutCtap2,
    /// Presence answered over the control socket, but there is none.
    PresenceControlWithoutSocket,
    /// Built-in UV answered over the control socket, but there is none.
    UvControlWithoutSocket,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::NoConnectionToSpare {
                max_connections,
                keys,
            } => write!(
                f,
                "{max_connections} connections at most for {keys} keys: each attached key holds \
                 a connection, and listing or attaching needs one more"
            ),
            ConfigError::NotLoopback(listen) => write!(
                f,
                "{listen} is not a loopback address: USB/IP has no authentication, so anyone \
                 who can reach it could use the key (listen_remote allows it)"
            ),
            ConfigError::BuiltinUvWithoutCtap2 => {
                write!(
                    f,
                    "built-in user verification needs CTAP2: not with the u2f-only profile"
                )
            }
            ConfigError::PresenceControlWithoutSocket => {
                write!(
                    f,
                    "presence answered over the control socket, but there is none"
                )
            }
            ConfigError::UvControlWithoutSocket => {
                write!(
                    f,
                    "built-in UV answered over the control socket, but there is none"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for io::Error {
    fn from(error: ConfigError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, error)
    }
}

struct KeySlot {
    bus_id: String,
    events: Inbox,
    attached: Arc<AtomicBool>,
}

/// Where a key's thread takes its events from.
enum Inbox {
    Usbip(SyncSender<Event>),
    Uhid(SyncSender<uhid::Input>),
}

impl Inbox {
    /// A USB/IP key's events (a connection on a uhid key has none to send).
    fn usbip(&self) -> io::Result<&SyncSender<Event>> {
        match self {
            Inbox::Usbip(events) => Ok(events),
            Inbox::Uhid(_) => Err(io::Error::other("not a USB/IP key")),
        }
    }

    /// Hand the key's thread a test automation verb; `false` if it has stopped.
    fn automation(&self, request: automation::Request) -> bool {
        match self {
            Inbox::Usbip(events) => events.send(Event::Automation(request)).is_ok(),
            Inbox::Uhid(inputs) => inputs.send(uhid::Input::Automation(request)).is_ok(),
        }
    }

    /// Tell the key's thread to stop (one that has ended already needs no telling).
    fn shutdown(&self) {
        match self {
            Inbox::Usbip(events) => {
                let _ = events.send(Event::Shutdown);
            }
            Inbox::Uhid(inputs) => {
                let _ = inputs.send(uhid::Input::Shutdown);
            }
        }
    }
}

/// A running server.
pub struct Server {
    /// Where USB/IP listens; with uhid, the configured address, never bound.
    addr: SocketAddr,
    control: Option<(Listening, Arc<Control>)>,
    automation: Arc<Automation>,
    stopping: Arc<AtomicBool>,
    keys: Arc<Vec<KeySlot>>,
    /// Each key's thread, joined at shutdown.
    threads: Vec<JoinHandle<()>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// The address the server listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The control socket's path, if there is one.
    pub fn control_socket(&self) -> Option<&std::path::Path> {
        self.control.as_ref().map(|(socket, _)| socket.path())
    }

    /// Answer presence requests in-process, with the control protocol's lines.
    pub fn control(&self, line: &str) -> Option<String> {
        self.control
            .as_ref()
            .map(|(_, control)| control.command(line))
    }

    /// Carry out a test automation verb in-process (`add-credential 1-1 {...}`, ...), as the
    /// control socket would; `None` if the line is not one.
    pub fn automation(&self, line: &str) -> Option<String> {
        self.automation.command(line)
    }

    /// Bus ids of the keys, as `usbip list` shows them.
    pub fn bus_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.bus_id.clone()).collect()
    }

    /// Stop accepting, stop the keys (their state is already on storage), and wait for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(acceptor) = self.acceptor.take() {
            // Wake the acceptor, which is blocked in accept().
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = acceptor.join();
        }
        if let Some((socket, _)) = &mut self.control {
            socket.stop();
        }
        for key in self.keys.iter() {
            key.events.shutdown();
        }
        // Joined from here, not through `keys`: connections and test automation share that list.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the server and its keys.
pub fn start(config: ServerConfig) -> io::Result<Server> {
    config.validate()?;
    let listener = listen(&config)?;
    let addr = match &listener {
        Some(listener) => listener.local_addr()?,
        None => config.listen,
    };
    let bus_ids = config.bus_ids();
    let shared = Shared::new(&config, &bus_ids)?;
    let control = match config.control_socket() {
        Some(path) => Some((
            crate::control::serve(&path, shared.control.clone())?,
            shared.control.clone(),
        )),
        None => None,
    };
    let trace = open_trace(config.trace.as_deref())?;
    let (keys, threads) = spawn_keys(&config, &bus_ids, &shared, trace)?;
    let keys = Arc::new(keys);
    let route = keys.clone();
    shared.automation.set_router(Box::new(move |bus, request| {
        route
            .iter()
            .find(|key| key.bus_id == bus)
            .is_some_and(|key| key.events.automation(request))
    }));
    let stopping = Arc::new(AtomicBool::new(false));
    let acceptor = match listener {
        Some(listener) => Some(spawn_acceptor(
            listener,
            &config,
            keys.clone(),
            stopping.clone(),
        )?),
        None => None,
    };
    Ok(Server {
        addr,
        control,
        automation: shared.automation,
        stopping,
        keys,
        threads,
        acceptor,
    })
}

/// USB/IP's listening socket (a non-loopback address warned about); none for uhid keys.
fn listen(config: &ServerConfig) -> io::Result<Option<TcpListener>> {
    match &config.transport {
        Transport::Usbip => {
            if !config.listen.ip().is_loopback() {
                tracing::warn!(
                    listen = %config.listen,
                    "--listen-remote: USB/IP has no authentication; anyone who can reach this \
                     address can import the key and use it (local users are still checked, \
                     remote ones cannot be)"
                );
            }
            let listener = TcpListener::bind(config.listen).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
            })?;
            Ok(Some(listener))
        }
        Transport::Uhid(path) => {
            uhid::warn_if_open_to_all(path);
            Ok(None)
        }
    }
}

/// What every key of a server shares.
struct Shared {
    /// The terminal prompt, when a touch or a finger is asked for there.
    prompt: Option<Arc<Prompt>>,
    /// Presence and UV answered over the control socket.
    control: Arc<Control>,
    automation: Arc<Automation>,
    /// The state directory, for state kept on disk.
    state_dir: Option<PrivateDir>,
}

impl Shared {
    fn new(config: &ServerConfig, bus_ids: &[String]) -> io::Result<Self> {
        let prompted =
            config.presence == PresenceMode::Prompt || config.builtin_uv == Some(UvMode::Prompt);
        let prompt = prompted.then(Prompt::spawn_reader);
        let control = Control::new(bus_ids);
        let automation = Automation::new(config.keys_may_cross());
        control.set_automation(automation.clone());
        let state_dir = match &config.state {
            StateLocation::Dir(dir) => Some(PrivateDir::open(dir)?),
            StateLocation::Ephemeral => None,
        };
        Ok(Self {
            prompt,
            control,
            automation,
            state_dir,
        })
    }
}

/// The trace's sink: standard error for `-`, else a private file.
fn open_trace(path: Option<&std::path::Path>) -> io::Result<Option<TraceSink>> {
    Ok(match path {
        Some(path) if path.as_os_str() == "-" => Some(Arc::new(Mutex::new(Box::new(io::stderr())))),
        Some(path) => Some(Arc::new(Mutex::new(Box::new(create_private_file(path)?)))),
        None => None,
    })
}

/// Every key's slot and thread, each key with its own state.
fn spawn_keys(
    config: &ServerConfig,
    bus_ids: &[String],
    shared: &Shared,
    trace: Option<TraceSink>,
) -> io::Result<(Vec<KeySlot>, Vec<JoinHandle<()>>)> {
    let keys = bus_ids
        .iter()
        .enumerate()
        .map(|(i, bus_id)| {
            let storage = shared
                .state_dir
                .as_ref()
                .map(|dir| Ok::<_, io::Error>((key_storage(dir, i)?, key_state_file(dir, i))))
                .transpose()?;
            spawn_key(bus_id, config, shared, storage, trace.clone())
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(keys.into_iter().unzip())
}

/// The thread that accepts USB/IP connections, serving the peers `config` allows.
fn spawn_acceptor(
    listener: TcpListener,
    config: &ServerConfig,
    keys: Arc<Vec<KeySlot>>,
    stopping: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let peers = Policy {
        owner: own_uid(),
        other_users: config.allow_other_users,
        remote: config.listen_remote,
    };
    if peers.other_users {
        tracing::warn!(
            "--allow-other-users: every user on this machine can import the key and use \
             it (sign in as you, set or try its PIN, reset it)"
        );
    }
    let addr = listener.local_addr()?;
    let (count, max_connections) = (keys.len(), config.max_connections);
    let acceptor = std::thread::Builder::new()
        .name("usbip-accept".into())
        .spawn(move || accept_loop(listener, keys, stopping, max_connections, peers))?;
    tracing::info!(%addr, keys = count, "USB/IP server listening");
    Ok(acceptor)
}

/// Key `index`'s state: `DIR/state.lfs` for the first, `DIR/key-N/state.lfs` for the others.
fn key_storage(dir: &PrivateDir, index: usize) -> io::Result<FileStorage> {
    let file = match index {
        0 => dir.open_file("state.lfs")?,
        _ => dir
            .subdir(&format!("key-{}", index + 1))?
            .open_file("state.lfs")?,
    };
    FileStorage::new(file)
}

/// Key `index`'s state file's path, for the log.
fn key_state_file(dir: &PrivateDir, index: usize) -> std::path::PathBuf {
    match index {
        0 => dir.path().join("state.lfs"),
        _ => dir
            .path()
            .join(format!("key-{}", index + 1))
            .join("state.lfs"),
    }
}

/// Start key `bus_id`, its state in `storage` (a file, and its path; in memory if `None`).
fn spawn_key(
    bus_id: &str,
    config: &ServerConfig,
    shared: &Shared,
    storage: Option<(FileStorage, std::path::PathBuf)>,
    trace: Option<TraceSink>,
) -> io::Result<(KeySlot, JoinHandle<()>)> {
    let serial = key_serial(config, bus_id);
    let (events, body) = match &config.transport {
        Transport::Usbip => Body::usbip(),
        Transport::Uhid(path) => Body::uhid(path, bus_id, &serial)?,
    };
    let key = KeyThread {
        name: format!("key-{bus_id}"),
        label: bus_id.to_string(),
        state_file: storage.as_ref().map(|(_, path)| path.clone()),
        serial,
        body,
        setup: KeySetup {
            attestation: config.attestation.clone(),
            max_credentials: config.max_credentials,
            profile: config.profile,
            events: Some(shared.automation.events()),
        },
        trace,
    };
    let thread = match storage {
        Some((storage, _)) => key.spawn(storage, config, shared)?,
        None => key.spawn(RamStorage::default(), config, shared)?,
    };
    let slot = KeySlot {
        bus_id: bus_id.to_string(),
        events,
        attached: Arc::new(AtomicBool::new(false)),
    };
    Ok((slot, thread))
}

/// A key's serial number: `usbip-1-1`, `uhid-1-2-ephemeral`.
fn key_serial(config: &ServerConfig, bus_id: &str) -> String {
    let prefix = match config.transport {
        Transport::Usbip => "usbip",
        Transport::Uhid(_) => "uhid",
    };
    match &config.state {
        StateLocation::Dir(_) => format!("{prefix}-{bus_id}"),
        StateLocation::Ephemeral => format!("{prefix}-{bus_id}-ephemeral"),
    }
}

/// Everything a key's thread runs on but its state.
struct KeyThread {
    name: String,
    label: String,
    /// Where the key's state is (`None`: in memory).
    state_file: Option<std::path::PathBuf>,
    serial: String,
    body: Body,
    setup: KeySetup,
    trace: Option<TraceSink>,
}

impl KeyThread {
    /// Run the key on `storage`, presence and built-in UV as `config` says.
    fn spawn<S>(
        self,
        storage: S,
        config: &ServerConfig,
        shared: &Shared,
    ) -> io::Result<JoinHandle<()>>
    where
        S: authenticator::platform::StateStorage + Send + 'static,
    {
        let platform = key_platform(config, shared, self.label)?;
        let platform = match self.state_file {
            Some(path) => platform.with_state_file(path),
            None => platform,
        };
        let (body, serial, setup, trace) = (self.body, self.serial, self.setup, self.trace);
        std::thread::Builder::new()
            .name(self.name)
            .spawn(move || body.run(storage, platform, serial, setup, trace))
    }
}

/// A key's body: presence and built-in UV as `config` says.
fn key_platform<S>(
    config: &ServerConfig,
    shared: &Shared,
    label: String,
) -> io::Result<RunnerPlatform<S>> {
    let platform = RunnerPlatform::new(
        config.presence,
        shared.prompt.clone(),
        Some(shared.control.clone()),
        label,
    )?;
    Ok(match config.builtin_uv {
        Some(mode) => platform.with_builtin_uv(mode),
        None => platform,
    })
}

/// What a key's thread runs: the USB device over USB/IP, or a uhid device.
enum Body {
    Usbip(Receiver<Event>),
    Uhid {
        device: std::fs::File,
        inputs: Receiver<uhid::Input>,
        identity: uhid::Identity,
    },
}

impl Body {
    /// A USB/IP key's: its events come from the connection that imported it. Bounded: a
    /// connection that sends faster than its key works waits in its read, so the client feels
    /// TCP's backpressure instead of the runner buffering whatever it sends.
    fn usbip() -> (Inbox, Body) {
        let (events, receiver) = sync_channel(EVENT_QUEUE);
        (Inbox::Usbip(events), Body::Usbip(receiver))
    }

    /// A uhid key's: a HID device made through `path`, its reports read by a thread of its own.
    fn uhid(path: &std::path::Path, bus_id: &str, serial: &str) -> io::Result<(Inbox, Body)> {
        let device = uhid::open(path)?;
        let reader = device.try_clone()?;
        let (inputs, receiver) = sync_channel(EVENT_QUEUE);
        let to_key = inputs.clone();
        std::thread::Builder::new()
            .name(format!("uhid-read-{bus_id}"))
            .spawn(move || uhid::read_events(reader, to_key))?;
        let identity = uhid::Identity {
            name: device::PRODUCT_UHID.to_string(),
            phys: format!("usbip-runner/uhid/{bus_id}"),
            uniq: serial.to_string(),
            vendor: device::VENDOR_ID,
            product: device::PRODUCT_ID,
            version: device::BCD_DEVICE,
        };
        let body = Body::Uhid {
            device,
            inputs: receiver,
            identity,
        };
        Ok((Inbox::Uhid(inputs), body))
    }

    fn run<S: authenticator::platform::StateStorage>(
        self,
        storage: S,
        platform: RunnerPlatform<S>,
        serial: String,
        setup: KeySetup,
        trace: Option<TraceSink>,
    ) {
        match self {
            Body::Usbip(events) => device::run(storage, platform, serial, setup, trace, events),
            Body::Uhid {
                device,
                inputs,
                identity,
            } => uhid::run(storage, platform, identity, setup, trace, device, inputs),
        }
    }
}

/// Counts a connection as open until its thread ends.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    keys: Arc<Vec<KeySlot>>,
    stopping: Arc<AtomicBool>,
    max_connections: usize,
    peers: Policy,
) {
    let ids = Arc::new(AtomicU64::new(1));
    let open = Arc::new(AtomicUsize::new(0));
    // Logged once when refusing starts, not once per refused connection of a flood.
    let mut refusing = false;
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if open.load(Ordering::SeqCst) >= max_connections {
            if !refusing {
                tracing::warn!(
                    max_connections,
                    "refusing connections: {max_connections} already open (--max-connections)"
                );
                refusing = true;
            }
            drop(stream);
            continue;
        }
        if refusing {
            tracing::info!("accepting connections again");
            refusing = false;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenConnection(open.clone());
        let keys = keys.clone();
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name(format!("usbip-conn-{id}"))
            .spawn(move || {
                let _open = guard;
                if let Err(error) = serve_connection(stream, &keys, id, peers) {
                    tracing::debug!(%error, connection = id, "connection ended");
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot serve a connection");
        }
    }
}

/// One client connection: any number of device lists, then at most one import, whose URBs go
/// to the key until the client goes away. Malformed input ends this connection only. A peer the
/// key does not serve gets its first request refused, and nothing else.
fn serve_connection(
    mut stream: TcpStream,
    keys: &[KeySlot],
    id: u64,
    peers: Policy,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_read_timeout(Some(IDLE_BEFORE_IMPORT))?;
    if let Some(reason) = refusal(&stream, peers, id) {
        let request = protocol::read_op_request(&mut stream)?;
        tracing::warn!(
            connection = id,
            peer = ?stream.peer_addr().ok(),
            "USB/IP {request:?} refused: {reason}"
        );
        stream.write_all(&protocol::op_rep_refused(&request))?;
        return Ok(());
    }
    loop {
        match protocol::read_op_request(&mut stream)? {
            OpRequest::DevList => {
                let devices: Vec<_> = keys
                    .iter()
                    .map(|k| device::device_info(&k.bus_id))
                    .collect();
                stream.write_all(&protocol::op_rep_devlist(&devices))?;
            }
            OpRequest::Import { bus_id } => {
                let Some(key) = keys.iter().find(|k| k.bus_id == bus_id) else {
                    stream.write_all(&protocol::op_rep_import(None))?;
                    continue;
                };
                if key.attached.swap(true, Ordering::SeqCst) {
                    tracing::info!(%bus_id, "import refused: already attached");
                    stream.write_all(&protocol::op_rep_import(None))?;
                    continue;
                }
                let result = run_imported(&mut stream, key, &bus_id, id);
                key.attached.store(false, Ordering::SeqCst);
                if let Ok(events) = key.events.usbip() {
                    let _ = events.send(Event::Detach { id });
                }
                let _ = stream.shutdown(Shutdown::Both);
                return result;
            }
        }
    }
}

/// Why the peer of `stream` is not served, if it is not.
fn refusal(stream: &TcpStream, peers: Policy, id: u64) -> Option<String> {
    if peers.other_users && peers.remote {
        return None; // anyone at all: nothing to look up
    }
    match peer::tcp_peer(stream) {
        Ok(peer) => {
            tracing::debug!(connection = id, ?peer, "USB/IP peer");
            let reason = peers.refusal(peer)?;
            Some(match peer {
                Peer::Local { .. } => {
                    format!("{reason} (--allow-other-users serves every local user)")
                }
                Peer::Remote => format!("{reason} (--listen-remote serves other machines)"),
            })
        }
        // Fail closed: an unknown peer is not served.
        Err(error) => Some(format!("cannot tell who the peer is: {error}")),
    }
}

fn run_imported(stream: &mut TcpStream, key: &KeySlot, bus_id: &str, id: u64) -> io::Result<()> {
    stream.write_all(&protocol::op_rep_import(Some(&device::device_info(bus_id))))?;
    // An attached device may be idle for as long as the host likes.
    stream.set_read_timeout(None)?;
    let writer = stream.try_clone()?;
    let events = key.events.usbip()?;
    if events.send(Event::Attach { id, writer }).is_err() {
        return Err(io::Error::other("key stopped"));
    }
    loop {
        let command = protocol::read_command(stream)?;
        if events.send(Event::Command { id, command }).is_err() {
            return Err(io::Error::other("key stopped"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_key() -> ServerConfig {
        ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            PresenceMode::Auto,
            StateLocation::Ephemeral,
        )
    }

    /// Each refusal `validate` makes, and the configuration next to it that it accepts.
    #[test]
    fn validate_says_what_is_wrong() {
        assert_eq!(one_key().validate(), Ok(()));

        let mut config = one_key();
        config.keys = 4;
        config.max_connections = 4;
        let spare = ConfigError::NoConnectionToSpare {
            max_connections: 4,
            keys: 4,
        };
        assert_eq!(config.validate(), Err(spare));
        config.transport = Transport::Uhid("/dev/uhid".into());
        assert_eq!(config.validate(), Ok(()), "uhid keys hold no connection");

        let mut config = one_key();
        config.listen = "192.0.2.1:3240".parse().unwrap();
        let listen = config.listen;
        assert_eq!(config.validate(), Err(ConfigError::NotLoopback(listen)));
        config.listen_remote = true;
        assert_eq!(config.validate(), Ok(()));

        let mut config = one_key();
        config.builtin_uv = Some(UvMode::Auto);
        assert_eq!(config.validate(), Ok(()));
        config.profile = Profile::U2fOnly;
        assert_eq!(config.validate(), Err(ConfigError::BuiltinUvWithoutCtap2));
    }

    /// Presence or UV answered over the control socket needs one: given, or the state
    /// directory's.
    #[test]
    fn control_answers_need_a_control_socket() {
        let mut config = one_key();
        config.presence = PresenceMode::Control;
        let no_socket = ConfigError::PresenceControlWithoutSocket;
        assert_eq!(config.validate(), Err(no_socket));
        config.state = StateLocation::Dir("/nonexistent/state".into());
        assert_eq!(
            config.control_socket(),
            Some(PathBuf::from("/nonexistent/state/control.sock"))
        );
        assert_eq!(config.validate(), Ok(()));

        let mut config = one_key();
        config.builtin_uv = Some(UvMode::Control);
        assert_eq!(config.validate(), Err(ConfigError::UvControlWithoutSocket));
        config.control = Some("/nonexistent/control.sock".into());
        assert_eq!(config.validate(), Ok(()));
    }

    /// `start` refuses what `validate` refuses, as invalid input, before it binds or opens
    /// anything.
    #[test]
    fn start_refuses_an_invalid_configuration() {
        let mut config = one_key();
        config.presence = PresenceMode::Control;
        let error = start(config).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let inner = error.into_inner().expect("the configuration error");
        let inner = inner.downcast::<ConfigError>().expect("a ConfigError");
        assert_eq!(*inner, ConfigError::PresenceControlWithoutSocket);
    }

    /// Shutdown waits for every key's thread (SIGTERM's "every state change is on disk", and
    /// a uhid key's UHID_DESTROY, happen there), however many hold the list of keys.
    #[test]
    fn shutdown_joins_every_key() {
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            PresenceMode::Auto,
            StateLocation::Ephemeral,
        );
        config.keys = 2;
        let mut server = start(config).unwrap();
        server.stop();
        assert!(server.threads.is_empty(), "a key's thread was left running");
    }
}
