//! `usbip-runner`: a virtual FIDO2/U2F security key over USB/IP.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use usbip_runner::{
    start, ConfigError, PresenceMode, Profile, ServerConfig, StateLocation, Transport, UvMode,
};

#[derive(Parser)]
#[command(
    version,
    about = "A virtual FIDO2/U2F security key, attachable with `usbip attach`"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Subcommand>,
    /// Address to listen on. Only a loopback address unless --listen-remote is given.
    #[arg(long, default_value = "127.0.0.1:3240")]
    listen: SocketAddr,
    /// Allow a --listen address other than loopback, serving other machines. USB/IP has no
    /// authentication: anyone who can reach the address can import the key and use it (sign,
    /// set or try its PIN, reset it). Logs a warning.
    #[arg(long)]
    listen_remote: bool,
    /// Serve USB/IP to every user on this machine. By default only the runner's own user and
    /// root may list or import the keys (the peer's uid is looked up in the kernel's socket
    /// table); others are refused and logged. Logs a warning.
    #[arg(long)]
    allow_other_users: bool,
    /// How the keys reach the host: usbip (attach with `usbip attach`, needs vhci-hcd) or uhid
    /// (a HID device made through /dev/uhid, no USB, no network, no root if the device is
    /// writable).
    #[arg(long, value_enum, default_value = "usbip")]
    transport: TransportArg,
    /// The uhid device, with --transport uhid.
    #[arg(long, value_name = "PATH", default_value = "/dev/uhid")]
    uhid_device: PathBuf,
    /// Attach the keys to this machine's vhci-hcd yourself (no `usbip` tool), print each
    /// key's hidraw node (`attached 1-1 /dev/hidraw0 ...`) and detach them on exit. Needs root
    /// and the vhci-hcd module.
    #[arg(long)]
    attach: bool,
    /// How a touch is answered: auto approves, deny refuses, prompt asks on the terminal,
    /// control waits for the control socket (also switched at run time: `presence MODE`).
    /// Default: prompt on a terminal, deny otherwise.
    #[arg(long, value_enum)]
    presence: Option<PresenceMode>,
    /// Built-in user verification, as on a fingerprint key: none, or builtin (a simulated
    /// fingerprint sensor, a finger enrolled at start; getInfo's `uv` option, uvModality 2,
    /// getPinUvAuthTokenUsingUvWithPermissions, UV in makeCredential and getAssertion, 5
    /// uvRetries). See docs/automation.md.
    #[arg(long, value_enum, default_value = "none")]
    uv: UvArg,
    /// How a built-in UV attempt is answered: auto matches, deny fails (each failure costs one
    /// of the uvRetries), prompt asks on the terminal, control waits for `uv ok|fail|timeout`
    /// on the control socket (also switched at run time: `uv auto|deny|control`). Default: as
    /// --presence.
    #[arg(long, value_enum, value_name = "MODE")]
    uv_mode: Option<UvMode>,
    /// What kind of key to be, for relying parties' tests: full (everything), u2f-only
    /// (CTAPHID without CBOR), ctap20-no-pin (CTAP 2.0, no clientPIN, no 2.1 features), no-rk
    /// (no discoverable credentials), always-uv (alwaysUv on for good). See docs/automation.md.
    #[arg(long, value_enum, default_value = "full")]
    profile: ProfileArg,
    /// Directory for the key's state (credentials, PIN, counter). Default: the user's data
    /// directory ($XDG_DATA_HOME/usbip-runner or ~/.local/share/usbip-runner). Kept private:
    /// the directory 0700, its files 0600, no symbolic links followed; one owned by another
    /// user or writable by group or others is refused.
    #[arg(long, conflicts_with = "ephemeral")]
    state: Option<PathBuf>,
    /// Keep the state in memory only: a fresh key every start.
    #[arg(long)]
    ephemeral: bool,
    /// Serve N independent keys, N from 1 to 64, at bus ids 1-1 … 1-N, each with its own state
    /// (DIR/state.lfs for the first, DIR/key-N/state.lfs for the others).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    keys: u16,
    /// The control socket (default: DIR/control.sock with --state; none when ephemeral).
    /// Presence: `approve|hold|deny|timeout [BUS]`, `status`, `presence auto|deny|control
    /// [BUS]`. Built-in UV: `uv ok|fail|timeout|auto|deny|control|enroll|unenroll [BUS]`,
    /// `uv status`. Faults: `fault KIND [BUS]`, KIND one of bad-signature, clear-up, clear-uv,
    /// counter-rewind, counter-zero, none. Test automation (W3C WebAuthn Automation): `credentials BUS`,
    /// `add-credential BUS JSON`, `remove-credential BUS ID`, `clear-credentials BUS`,
    /// `set-counter BUS ID N`, `events [BUS]` (see `control --help`).
    /// The socket is made 0600 and serves the runner's own user and root only, in a directory
    /// nobody else can write to (or a sticky one, as /tmp).
    #[arg(long)]
    control: Option<PathBuf>,
    /// Let test automation read and add private keys (`credentials`, `add-credential`,
    /// `--import`) on a key whose state is kept on disk; an --ephemeral key always lets it.
    /// Only for test keys: a key whose private keys can be read out protects nothing.
    #[arg(long)]
    allow_key_export: bool,
    /// At start, add the credentials in FILE (a JSON array of W3C Credential Parameters, as
    /// `credentials` lists them) to every key; one already there is left as it is. Needs
    /// --ephemeral or --allow-key-export.
    #[arg(long, value_name = "FILE")]
    import: Option<PathBuf>,
    /// Write every CTAP request and response as one JSON line to FILE (`-`: standard error);
    /// byte strings (keys, signatures, encrypted PINs) appear only as their length. FILE is
    /// made 0600; a symbolic link, or a file of another user's, is refused.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Install the batch attestation in DIR (batch.key.pem and batch.pem, as the `attestation`
    /// tool makes them) on every key that has none, instead of provisioning it over USB.
    #[arg(long, value_name = "DIR")]
    attestation: Option<PathBuf>,
    /// Serve at most N USB/IP connections at once; more are closed as they arrive (logged).
    /// Default: 64, or the number of keys plus 16 if that is more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    max_connections: Option<u16>,
    /// Hold at most N discoverable credentials per key (default: what the 16 MiB state holds,
    /// 19,740), so a test reaches "key full" in N registrations.
    #[arg(long, value_name = "N")]
    max_credentials: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    Usbip,
    Uhid,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum UvArg {
    None,
    Builtin,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProfileArg {
    Full,
    U2fOnly,
    Ctap20NoPin,
    NoRk,
    AlwaysUv,
}

impl ProfileArg {
    fn profile(self) -> Profile {
        match self {
            ProfileArg::Full => Profile::Full,
            ProfileArg::U2fOnly => Profile::U2fOnly,
            ProfileArg::Ctap20NoPin => Profile::Ctap20NoPin,
            ProfileArg::NoRk => Profile::NoRk,
            ProfileArg::AlwaysUv => Profile::AlwaysUv,
        }
    }
}

#[derive(clap::Subcommand)]
enum Subcommand {
    /// Send one line to a running key's control socket and print the reply, e.g.
    /// `usbip-runner control ~/.local/share/usbip-runner/control.sock approve 1-1`.
    #[command(after_help = CONTROL_VERBS)]
    Control {
        /// The control socket.
        socket: PathBuf,
        /// The verb (below).
        action: String,
        /// Its arguments: the key (bus id) first; add-credential's JSON may also be @FILE, or
        /// - for standard input.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

const CONTROL_VERBS: &str = "\
Presence (BUS: the key, default the one waiting):
  approve [BUS]                 a touch
  hold [BUS]                    a long touch (a reset after enableLongTouchForReset)
  deny [BUS]                    refuse (CTAP2_ERR_OPERATION_DENIED)
  timeout [BUS]                 nobody touched (CTAP2_ERR_USER_ACTION_TIMEOUT)
  status                        the keys that wait for a touch
  presence auto|deny|control [BUS]
                                from now on: approve every touch (CDP
                                setAutomaticPresenceSimulation), refuse it, or wait for the above
Built-in UV, with --uv builtin (W3C Set User Verified: uv auto / uv deny):
  uv ok|fail|timeout [BUS]      the finger awaited matches, does not (a uvRetry spent), or
                                never comes; answered ahead of time if none is awaited
  uv auto|deny|control [BUS]    from now on: every finger matches, fails, or waits for the above
  uv enroll|unenroll [BUS]      a finger enrolled or not (getInfo's uv option)
  uv status                     the keys that wait for a finger
Faults for the next signed response (CDP setResponseOverrideBits, and more):
  fault KIND [BUS]              bad-signature, clear-up, clear-uv, counter-rewind (to 1),
                                counter-zero; none disarms
Test automation (W3C WebAuthn Automation / Chrome DevTools WebAuthn):
  credentials BUS               Get Credentials: a JSON array of Credential Parameters *
  add-credential BUS JSON       Add Credential (credentialId, isResidentCredential, rpId,
                                privateKey as base64url PKCS#8, userHandle, signCount,
                                userName, userDisplayName) *
  remove-credential BUS ID      Remove Credential (ID in base64url)
  clear-credentials BUS         Remove All Credentials the key stores
  set-counter BUS ID N          the credential's signCount (its next signature: N+1; never
                                below where it is)
  events [BUS]                  stream credentialAdded/Asserted/Deleted/Updated, one JSON line
                                each, until interrupted
* private keys: only on a key started with --ephemeral or --allow-key-export";

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("usbip-runner");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/usbip-runner")
}

/// `usbip-runner control SOCKET VERB ARGS...`: send the line, print the reply (every line of
/// it for `events`); exit 1 on an error reply.
fn control_command(socket: &std::path::Path, action: &str, args: &[String]) -> ! {
    let mut words = vec![action.to_string()];
    for (i, arg) in args.iter().enumerate() {
        // add-credential's JSON: from a file or standard input, on one line.
        if action == "add-credential" && i == 1 {
            match one_line_json(arg) {
                Ok(json) => words.push(json),
                Err(error) => {
                    exit_with(format!("add-credential: {error}"), 1);
                }
            }
        } else {
            words.push(arg.clone());
        }
    }
    let line = words.join(" ");
    let result = if action == "events" {
        usbip_runner::control::stream(socket, &line, &mut std::io::stdout()).map(|()| String::new())
    } else {
        usbip_runner::control::send(socket, line.trim())
    };
    match result {
        Ok(reply) => {
            if !reply.is_empty() {
                println!("{reply}");
            }
            std::process::exit(if reply.starts_with("error") { 1 } else { 0 });
        }
        Err(error) => {
            exit_with(format!("{}: {error}", socket.display()), 1);
        }
    }
}

/// JSON given inline, as `@FILE` or as `-` (standard input), on one line.
fn one_line_json(arg: &str) -> Result<String, String> {
    let text = match arg {
        "-" => std::io::read_to_string(std::io::stdin()).map_err(|e| e.to_string())?,
        _ => match arg.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
            None => arg.to_string(),
        },
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("bad JSON: {e}"))?;
    Ok(value.to_string())
}

/// `--import FILE`: a JSON array of Credential Parameters.
fn read_import(path: &std::path::Path) -> Result<Vec<serde_json::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let credentials: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| format!("not a JSON array: {e}"))?;
    for (i, credential) in credentials.iter().enumerate() {
        serde_json::from_value::<usbip_runner::automation::params::CredentialParams>(
            credential.clone(),
        )
        .map_err(|e| format!("credential {i}: {e}"))?;
    }
    Ok(credentials)
}

/// Add `--import`'s credentials to every key, as `add-credential` would; a key that has one
/// already (its state kept from an earlier start) keeps it. Any other refusal stops the start.
fn import_credentials(server: &usbip_runner::Server, credentials: &[serde_json::Value]) {
    for bus in server.bus_ids() {
        for (i, credential) in credentials.iter().enumerate() {
            let reply = server
                .automation(&format!("add-credential {bus} {credential}"))
                .unwrap_or_default();
            if reply.starts_with("ok") {
                continue;
            }
            if reply.contains("credentialId is on the key") {
                tracing::info!(bus, credential = i, "--import: already on the key");
                continue;
            }
            exit_with(format!("--import: credential {i}, key {bus}: {reply}"), 1);
        }
    }
    if !credentials.is_empty() {
        tracing::info!(count = credentials.len(), "--import: credentials added");
    }
}

fn main() {
    init_logging();
    let args = Args::parse();
    if let Some(Subcommand::Control {
        socket,
        action,
        args,
    }) = &args.command
    {
        control_command(socket, action, args);
    }
    if args.uv_mode.is_some() && args.uv == UvArg::None {
        exit_with("--uv-mode needs --uv builtin", 2);
    }
    let config = server_config(&args);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .unwrap_or_else(|error| exit_with(format!("cannot handle signals: {error}"), 1));
    let import = import_flag(&args);
    let vhci = open_vhci(args.attach, &config.transport);
    if let Err(error) = config.validate() {
        exit_with(format!("cannot start: {}", flag_error(&error)), 1);
    }
    let started = Started::of(&config);
    let server =
        start(config).unwrap_or_else(|error| exit_with(format!("cannot start: {error}"), 1));
    import_credentials(&server, &import);
    print_ready(&server, &started.transport);
    let attached = match &vhci {
        None => Vec::new(),
        Some(vhci) => attach(vhci, &server),
    };
    started.log(&server, vhci.is_some());
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    if let Some(vhci) = &vhci {
        usbip_runner::attach::detach_all(vhci, &attached);
    }
    server.shutdown();
}

/// Log to standard error, at the level `USBIP_RUNNER_LOG` says (default: info).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("USBIP_RUNNER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: logs kept in files or pipes stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Stop the runner with `message` on standard error.
fn exit_with(message: impl std::fmt::Display, code: i32) -> ! {
    eprintln!("usbip-runner: {message}");
    std::process::exit(code)
}

/// The server the flags ask for (the runner stops if `--attestation` cannot be loaded).
fn server_config(args: &Args) -> ServerConfig {
    let presence = args.presence.unwrap_or(if std::io::stdin().is_terminal() {
        PresenceMode::Prompt
    } else {
        PresenceMode::Deny
    });
    let state = if args.ephemeral {
        StateLocation::Ephemeral
    } else {
        StateLocation::Dir(args.state.clone().unwrap_or_else(default_state_dir))
    };
    let attestation = args.attestation.as_deref().map(|dir| {
        usbip_runner::attestation::load(dir)
            .unwrap_or_else(|error| exit_with(format!("--attestation: {error}"), 1))
    });
    let transport = match args.transport {
        TransportArg::Usbip => Transport::Usbip,
        TransportArg::Uhid => Transport::Uhid(args.uhid_device.clone()),
    };
    let keys = usize::from(args.keys);
    ServerConfig {
        listen: args.listen,
        transport,
        presence,
        state,
        keys,
        control: args.control.clone(),
        trace: args.trace.clone(),
        attestation,
        max_connections: args.max_connections.map_or(
            usbip_runner::DEFAULT_MAX_CONNECTIONS.max(keys + 16),
            usize::from,
        ),
        max_credentials: args.max_credentials,
        allow_other_users: args.allow_other_users,
        listen_remote: args.listen_remote,
        profile: args.profile.profile(),
        builtin_uv: builtin_uv(args, presence),
        allow_key_export: args.allow_key_export,
    }
}

/// `--uv builtin`'s mode: `--uv-mode`, else as presence is answered.
fn builtin_uv(args: &Args, presence: PresenceMode) -> Option<UvMode> {
    match args.uv {
        UvArg::None => None,
        UvArg::Builtin => Some(args.uv_mode.unwrap_or(match presence {
            PresenceMode::Auto => UvMode::Auto,
            PresenceMode::Deny => UvMode::Deny,
            PresenceMode::Prompt => UvMode::Prompt,
            PresenceMode::Control => UvMode::Control,
        })),
    }
}

/// A configuration error, in the flags' words.
fn flag_error(error: &ConfigError) -> String {
    match error {
        ConfigError::NoConnectionToSpare { .. } => {
            "--max-connections must be more than --keys (each attached key holds a connection)"
                .to_string()
        }
        ConfigError::NotLoopback(listen) => format!(
            "--listen {listen} is not a loopback address: USB/IP has no authentication, so \
             anyone who can reach it could use the key; add --listen-remote if that is what \
             you want"
        ),
        ConfigError::BuiltinUvWithoutCtap2 => {
            "built-in user verification needs CTAP2: not with --profile u2f-only".to_string()
        }
        ConfigError::PresenceControlWithoutSocket => {
            "--presence control needs a control socket (--control PATH)".to_string()
        }
        ConfigError::UvControlWithoutSocket => {
            "--uv-mode control needs a control socket (--control PATH)".to_string()
        }
    }
}

/// `--import`'s credentials, read and checked (none without the flag); the runner stops if
/// they cannot be.
fn import_flag(args: &Args) -> Vec<serde_json::Value> {
    let Some(path) = &args.import else {
        return Vec::new();
    };
    if !(args.ephemeral || args.allow_key_export) {
        exit_with(
            "--import adds private keys: only to an --ephemeral key, or with \
             --allow-key-export (test keys only)",
            1,
        );
    }
    read_import(path)
        .unwrap_or_else(|error| exit_with(format!("--import {}: {error}", path.display()), 1))
}

/// `--attach`'s vhci-hcd, opened before anything starts, so a machine that cannot attach says
/// why at once.
fn open_vhci(attach: bool, transport: &Transport) -> Option<usbip_runner::attach::Vhci> {
    match (attach, transport) {
        (false, _) => None,
        (true, Transport::Uhid(_)) => {
            exit_with("--attach is for --transport usbip (uhid keys need none)", 2)
        }
        (true, Transport::Usbip) => Some(
            usbip_runner::attach::Vhci::open()
                .unwrap_or_else(|error| exit_with(format!("--attach: {error}"), 1)),
        ),
    }
}

/// One line on stdout, for scripts and tests that start us on port 0 (then the control
/// socket's, if there is one). A reader that went away is no reason to stop: errors writing
/// these are ignored.
fn print_ready(server: &usbip_runner::Server, transport: &Transport) {
    let mut stdout = std::io::stdout().lock();
    match transport {
        Transport::Usbip => {
            let _ = writeln!(stdout, "listening on {}", server.addr());
        }
        Transport::Uhid(path) => {
            let _ = writeln!(
                stdout,
                "uhid on {}: keys {}",
                path.display(),
                server.bus_ids().join(" ")
            );
        }
    }
    if let Some(socket) = server.control_socket() {
        let _ = writeln!(stdout, "control socket {}", socket.display());
    }
    let _ = stdout.flush();
}

/// What the log says of a started server, kept from its configuration.
struct Started {
    transport: Transport,
    state: StateLocation,
    presence: PresenceMode,
    profile: Profile,
    builtin_uv: Option<UvMode>,
}

impl Started {
    fn of(config: &ServerConfig) -> Self {
        Self {
            transport: config.transport.clone(),
            state: config.state.clone(),
            presence: config.presence,
            profile: config.profile,
            builtin_uv: config.builtin_uv,
        }
    }

    /// The keys are served: how the host reaches them.
    fn log(&self, server: &usbip_runner::Server, attached: bool) {
        let Started {
            transport,
            state,
            presence,
            profile,
            builtin_uv,
        } = self;
        let bus_ids = server.bus_ids();
        match transport {
            Transport::Usbip if attached => {
                tracing::info!(
                    ?state,
                    ?presence,
                    ?profile,
                    ?builtin_uv,
                    ?bus_ids,
                    "attached: see the hidraw nodes above"
                )
            }
            Transport::Usbip => {
                tracing::info!(
                    ?state,
                    ?presence,
                    ?profile,
                    ?builtin_uv,
                    ?bus_ids,
                    "attach with: usbip attach -r {} -b 1-1 (or run with --attach)",
                    server.addr().ip()
                )
            }
            Transport::Uhid(_) => {
                tracing::info!(
                    ?state,
                    ?presence,
                    ?profile,
                    ?builtin_uv,
                    ?bus_ids,
                    "the keys are HID devices: see /dev/hidraw*"
                )
            }
        }
    }
}

/// `--attach`: every key attached and its line printed (`attached BUS HIDRAW (vhci_hcd port
/// N)`), or the runner stops with the reason.
fn attach(
    vhci: &usbip_runner::attach::Vhci,
    server: &usbip_runner::Server,
) -> Vec<usbip_runner::attach::Attached> {
    match usbip_runner::attach::attach_all(vhci, server.addr(), &server.bus_ids()) {
        Ok(attached) => {
            let mut stdout = std::io::stdout().lock();
            for key in &attached {
                tracing::info!(bus_id = %key.bus_id, port = key.port, hidraw = %key.hidraw.display(), "attached");
                let _ = writeln!(
                    stdout,
                    "attached {} {} (vhci_hcd port {})",
                    key.bus_id,
                    key.hidraw.display(),
                    key.port
                );
            }
            let _ = stdout.flush();
            attached
        }
        Err(error) => {
            exit_with(format!("--attach: {error}"), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line says what is wrong in its own flags' words, and every error has them.
    #[test]
    fn configuration_errors_name_their_flags() {
        let listen = "192.0.2.1:3240".parse().unwrap();
        let cases = [
            (
                ConfigError::NoConnectionToSpare {
                    max_connections: 4,
                    keys: 4,
                },
                &["--max-connections", "--keys"][..],
            ),
            (
                ConfigError::NotLoopback(listen),
                &["--listen 192.0.2.1:3240", "--listen-remote"],
            ),
            (ConfigError::BuiltinUvWithoutCtap2, &["--profile u2f-only"]),
            (
                ConfigError::PresenceControlWithoutSocket,
                &["--presence control", "--control PATH"],
            ),
            (
                ConfigError::UvControlWithoutSocket,
                &["--uv-mode control", "--control PATH"],
            ),
        ];
        for (error, flags) in cases {
            let message = flag_error(&error);
            for flag in flags {
                assert!(
                    message.contains(flag),
                    "{error:?}: {message:?} lacks {flag}"
                );
            }
        }
    }
}
