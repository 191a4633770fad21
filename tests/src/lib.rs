//! End-to-end tests of the key as real clients drive it, through the host-side client crate
//! [`fido_client`] (re-exported here: [`usbip`], [`ctaphid`], [`ctap`], [`pin`], [`hidraw`]).
//!
//! [`Key`] starts a virtual key: in-process (fast) or as the `usbip-runner` binary (for
//! restarts and kills), which `cargo build -p usbip-runner` must have built.

pub use fido_client::{ctap, ctaphid, hidraw, pin, usbip};

pub mod flash_copy;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use usbip_runner::{PresenceMode, Server, ServerConfig, StateLocation};

/// A running virtual key.
pub enum Key {
    InProcess(Server),
    Process {
        runner: RunnerProcess,
        addr: SocketAddr,
    },
}

/// A `usbip-runner` process, killed if the test drops it.
pub struct RunnerProcess {
    child: Option<Child>,
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Key {
    /// An ephemeral key in this process.
    pub fn start(presence: PresenceMode) -> Self {
        Self::start_with(presence, StateLocation::Ephemeral)
    }

    pub fn start_with(presence: PresenceMode, state: StateLocation) -> Self {
        Self::start_config(ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            presence,
            state,
        ))
    }

    /// A key in this process, configured in full (several keys, a control socket).
    pub fn start_config(config: ServerConfig) -> Self {
        let server = usbip_runner::start(config).expect("the key starts");
        Key::InProcess(server)
    }

    /// The `usbip-runner` binary, with these arguments (plus `--listen 127.0.0.1:0`).
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// The binary with extra environment variables (e.g. the fault injection of the storage).
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_logging(args, env, "warn", Stdio::inherit())
    }

    /// The binary logging at `level` (`USBIP_RUNNER_LOG`) to `stderr`.
    pub fn spawn_logging(
        args: &[&str],
        env: &[(&str, &str)],
        level: &str,
        stderr: impl Into<Stdio>,
    ) -> Self {
        let mut command = Command::new(runner_binary());
        command
            .envs(env.iter().copied())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("USBIP_RUNNER_LOG", level)
            .stderr(stderr);
        Self::spawn_command(command)
    }

    /// A runner started by `command` (any program that ends by running the runner: a shell
    /// that sets the umask first, for example), once it prints its address.
    pub fn spawn_command(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", command.get_program()));
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the runner prints its address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Key::Process {
            runner: RunnerProcess { child: Some(child) },
            addr: addr.parse().expect("an address"),
        }
    }

    /// The process id of a process key (for its figures in /proc).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Key::InProcess(_) => None,
            Key::Process { runner, .. } => runner.child.as_ref().map(Child::id),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Key::InProcess(server) => server.addr(),
            Key::Process { addr, .. } => *addr,
        }
    }

    /// Import bus id 1-1 and enumerate it.
    pub fn attach(&self) -> usbip::Device {
        self.attach_bus("1-1")
    }

    /// Import a bus id and enumerate it.
    pub fn attach_bus(&self, bus_id: &str) -> usbip::Device {
        usbip::Device::import_when_free(self.addr(), bus_id, std::time::Duration::from_secs(2))
            .expect("import and enumeration")
    }

    /// The in-process server (for its control interface).
    pub fn server(&self) -> Option<&Server> {
        match self {
            Key::InProcess(server) => Some(server),
            Key::Process { .. } => None,
        }
    }

    /// Attach and open a CTAPHID channel.
    pub fn channel(&self) -> ctaphid::Channel {
        ctaphid::Channel::open(self.attach()).expect("CTAPHID INIT")
    }

    /// SIGTERM (a process key) and wait; true if it exited cleanly.
    pub fn terminate(self) -> bool {
        match self {
            Key::InProcess(server) => {
                server.shutdown();
                true
            }
            Key::Process { mut runner, .. } => {
                let Some(mut child) = runner.child.take() else {
                    return false;
                };
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                child.wait().map(|s| s.success()).unwrap_or(false)
            }
        }
    }

    /// SIGKILL: a crash, or a power cut (dropping the key does the same).
    pub fn kill(self) {}

    /// Wait for a process key to exit on its own; true if it died abnormally (a signal).
    pub fn wait_crash(self) -> bool {
        match self {
            Key::InProcess(_) => false,
            Key::Process { mut runner, .. } => {
                let Some(mut child) = runner.child.take() else {
                    return false;
                };
                child
                    .wait()
                    .map(|status| status.code().is_none())
                    .unwrap_or(false)
            }
        }
    }
}

/// `target/<profile>/usbip-runner`, next to this test binary's directory.
pub fn runner_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let binary = profile_dir.join("usbip-runner");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p usbip-runner` first",
        binary.display()
    );
    // A binary older than the code it is built from would test yesterday's key.
    let built = modified(&binary);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["usbip-runner/src", "authenticator/src"] {
        if let Some(newer) = newest_source(&workspace.join(dir)).filter(|(t, _)| *t > built) {
            panic!(
                "{} is older than {}: run `cargo build -p usbip-runner` first",
                binary.display(),
                newer.1.display()
            );
        }
    }
    binary
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
}

/// The most recently modified `.rs` file under `dir`, and when.
fn newest_source(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs") {
            Some((modified(&path), path))
        } else {
            None
        };
        if let Some(c) = candidate.filter(|c| newest.as_ref().is_none_or(|n| c.0 > n.0)) {
            newest = Some(c);
        }
    }
    newest
}
