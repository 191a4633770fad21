//! A second user on the same machine, as attacks: the virtual key serves its owner alone.
//!
//! The runner runs as this test's user (root in CI); the attacker is `local-attacker` (this
//! crate's binary) under uid 65534 through `setpriv`, in a home directory anyone may enter, as
//! on a shared machine. Each attack also runs where it must succeed (as the owner, or against a
//! key opened to every user), so a harness that could not attack at all would fail here.
//! Without root (no second uid to be) the tests that need one say so and pass.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::ctap::*;
use e2e_tests::{runner_binary, Key};

const NOBODY: &str = "65534";

/// A directory for the test, enterable by everyone (0755, like a home directory on Debian).
fn shared_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    chmod(home.path(), 0o755);
    home
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The attacker: `local-attacker`, copied where uid 65534 can run it.
struct Attacker {
    dir: tempfile::TempDir,
}

impl Attacker {
    /// `None` (and a note) where this test cannot be another user.
    fn new(test: &str) -> Option<Self> {
        if !is_root() {
            eprintln!("{test}: SKIPPED: needs root to run the attacker as a second uid");
            return None;
        }
        let dir = shared_home();
        let binary = dir.path().join("local-attacker");
        std::fs::copy(env!("CARGO_BIN_EXE_local-attacker"), &binary).unwrap();
        chmod(&binary, 0o755);
        let attacker = Self { dir };
        let id = Command::new("setpriv")
            .args(attacker.as_nobody())
            .args(["id", "-u"])
            .output()
            .expect("setpriv (util-linux) runs");
        assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), NOBODY);
        Some(attacker)
    }

    fn binary(&self) -> PathBuf {
        self.dir.path().join("local-attacker")
    }

    fn as_nobody(&self) -> [&'static str; 4] {
        ["--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    }

    /// Run as uid 65534.
    fn run(&self, args: &[&str]) -> Output {
        let output = as_uid(NOBODY)
            .arg(self.binary())
            .args(args)
            .output()
            .unwrap();
        eprintln!(
            "uid {NOBODY}: {args:?}: {}",
            String::from_utf8_lossy(&output.stdout).trim()
        );
        output
    }

    /// Run as the key's owner (this test's user).
    fn run_as_owner(&self, args: &[&str]) -> Output {
        let output = Command::new(self.binary()).args(args).output().unwrap();
        eprintln!(
            "owner: {args:?}: {}",
            String::from_utf8_lossy(&output.stdout).trim()
        );
        output
    }
}

/// A command that runs the program it is given as `uid` (and that uid as its group, no others).
fn as_uid(uid: &str) -> Command {
    let mut command = Command::new("setpriv");
    command.args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        "--",
    ]);
    command
}

/// The runner under `umask`, logging to `log`.
fn spawn(umask: &str, args: &[&str], log: &Path) -> Key {
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"umask "$0" && exec "$@""#, umask])
        .arg(runner_binary())
        .args(args)
        .env("USBIP_RUNNER_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap());
    Key::spawn_command(command)
}

/// The runner's answer when it must refuse to start: its exit status and standard error.
fn refused_start(args: &[&str]) -> String {
    let listen = if args.contains(&"--listen") {
        &[][..]
    } else {
        &["--listen", "127.0.0.1:0"][..]
    };
    let mut child = Command::new(runner_binary())
        .args(listen)
        .args(["--presence", "auto"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A runner that starts prints its address and keeps running: stop it, and fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!(
            "the runner started with {args:?}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "{args:?}: exit status 0");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("{args:?}: {}", stderr.trim());
    stderr
}

/// Every file under `dir`, directories included.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            walk(&path, out);
        }
        out.push(path);
    }
}

fn make_discoverable_credential(key: &Key, user: &[u8]) {
    let mut channel = key.channel();
    let (status, _) = channel
        .cbor(&request(
            0x01,
            Some(&make_credential_request("example.com", user, &[-7], true)),
        ))
        .unwrap();
    assert_eq!(status, 0, "makeCredential");
}

#[test]
fn another_user_cannot_read_the_state() {
    let Some(attacker) = Attacker::new("another_user_cannot_read_the_state") else {
        return;
    };
    let home = shared_home();
    let state = home.path().join("state");
    let log = home.path().join("runner.log");
    // umask 022, the usual one, under which the runner once left its state world-readable.
    let key = spawn(
        "022",
        &[
            "--listen",
            "127.0.0.1:0",
            "--state",
            state.to_str().unwrap(),
        ]
        .iter()
        .chain(&["--presence", "auto", "--keys", "2"])
        .copied()
        .collect::<Vec<_>>(),
        &log,
    );
    make_discoverable_credential(&key, b"alice");

    // The harness can read what is open to it: a world-readable file beside the state.
    let readable = home.path().join("readable");
    std::fs::write(&readable, b"public").unwrap();
    chmod(&readable, 0o644);
    assert!(attacker
        .run(&["read", readable.to_str().unwrap()])
        .status
        .success());

    // The state directory, each key's directory and every file in them (state.lfs, the control
    // socket, and whatever else the key keeps there): private, and unreadable by uid 65534.
    let mut files = vec![state.clone()];
    walk(&state, &mut files);
    assert!(files.contains(&state.join("state.lfs")));
    assert!(files.contains(&state.join("key-2/state.lfs")));
    for path in files.iter().filter(|p| p.is_file()) {
        let output = attacker.run(&["read", path.to_str().unwrap()]);
        assert!(
            !output.status.success(),
            "uid 65534 read {}",
            path.display()
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("Permission denied"));
    }
    for path in &files {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(path), expected, "{} under umask 022", path.display());
    }
    key.kill();
}

#[test]
fn state_left_open_by_an_earlier_runner_is_made_private() {
    let home = shared_home();
    let state = home.path().join("state");
    let log = home.path().join("runner.log");
    // What an earlier runner left under umask 022.
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o755);
    let key = spawn(
        "022",
        &[
            "--listen",
            "127.0.0.1:0",
            "--state",
            state.to_str().unwrap(),
            "--presence",
            "auto",
        ],
        &log,
    );
    make_discoverable_credential(&key, b"alice");
    key.kill();
    chmod(&state, 0o755);
    chmod(&state.join("state.lfs"), 0o644);

    let key = spawn(
        "022",
        &[
            "--listen",
            "127.0.0.1:0",
            "--state",
            state.to_str().unwrap(),
            "--presence",
            "auto",
        ],
        &log,
    );
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("state.lfs")), 0o600);
    // The credential made before is still there.
    let mut channel = key.channel();
    let (status, _) = channel
        .cbor(&request(
            0x02,
            Some(&get_assertion_request("example.com", &[0; 32], &[])),
        ))
        .unwrap();
    assert_eq!(status, 0);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("was readable by other users (mode 0644)"),
        "the runner warns: {log}"
    );
}

/// A control line to the socket, as the owner; the reply.
fn control(path: &Path, line: &str) -> String {
    let mut stream = UnixStream::connect(path).unwrap();
    writeln!(stream, "{line}").unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    reply.trim_end().to_string()
}

#[test]
fn another_user_cannot_use_the_control_socket() {
    let Some(attacker) = Attacker::new("another_user_cannot_use_the_control_socket") else {
        return;
    };
    let home = shared_home();
    let socket = home.path().join("key.sock");
    let socket_arg = socket.to_str().unwrap();
    let log = home.path().join("runner.log");
    // umask 0: whatever the runner makes, it makes private itself.
    let key = spawn(
        "0",
        &[
            "--listen",
            "127.0.0.1:0",
            "--ephemeral",
            "--presence",
            "control",
            "--control",
            socket_arg,
        ],
        &log,
    );
    // A registration waits for a touch.
    let addr = key.addr();
    let waiting = std::thread::spawn(move || {
        let mut channel = e2e_tests::ctaphid::Channel::open(
            e2e_tests::usbip::Device::import(addr, "1-1").unwrap(),
        )
        .unwrap();
        channel
            .cbor(&request(
                0x01,
                Some(&make_credential_request(
                    "example.com",
                    b"alice",
                    &[-7],
                    true,
                )),
            ))
            .unwrap()
            .0
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while control(&socket, "status") != "waiting 1-1" {
        assert!(Instant::now() < deadline, "the registration never waited");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The owner's client is served (the attacker program itself works).
    let output = attacker.run_as_owner(&["control", socket_arg, "status"]);
    assert!(output.status.success());

    // uid 65534 cannot connect (0600), so cannot approve.
    let output = attacker.run(&["control", socket_arg, "approve"]);
    assert!(
        !output.status.success(),
        "uid 65534 used the control socket"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Permission denied"));
    assert_eq!(mode(&socket), 0o600, "the socket under umask 0");

    // Even with the socket opened to everyone by hand, the runner checks who connects.
    chmod(&socket, 0o666);
    let output = attacker.run(&["control", socket_arg, "approve"]);
    assert!(
        !output.status.success(),
        "uid 65534 used the control socket"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("error refused"));
    // Its approve did not count: the registration still waits, until the owner denies it.
    assert_eq!(control(&socket, "status"), "waiting 1-1");
    assert_eq!(control(&socket, "deny"), "ok waiting");
    assert_eq!(waiting.join().unwrap(), 0x27, "CTAP2_ERR_OPERATION_DENIED");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("control socket: refused a client: uid 65534 is another user"),
        "the runner logs the refusal: {log}"
    );
    key.kill();
}

#[test]
fn a_users_runner_and_its_clients_trust_that_user_and_root_alone() {
    let Some(attacker) =
        Attacker::new("a_users_runner_and_its_clients_trust_that_user_and_root_alone")
    else {
        return;
    };
    // The runner as uid 65534, in a directory of that user's: what a user's own runner is.
    let runner = attacker.dir.path().join("usbip-runner");
    std::fs::copy(runner_binary(), &runner).unwrap();
    chmod(&runner, 0o755);
    let home = shared_home();
    let theirs = home.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chmod(&theirs, 0o700);
    let chowned = Command::new("chown")
        .args([&format!("{NOBODY}:{NOBODY}"), theirs.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chowned.success());
    let socket = theirs.join("key.sock");
    let socket_arg = socket.to_str().unwrap();
    let mut command = as_uid(NOBODY);
    command
        .arg(&runner)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--state",
            theirs.to_str().unwrap(),
        ])
        .args(["--presence", "control", "--control", socket_arg])
        .env("USBIP_RUNNER_LOG", "warn");
    let key = Key::spawn_command(command);
    assert_eq!(mode(&theirs), 0o700);
    assert_eq!(mode(&theirs.join("state.lfs")), 0o600);

    // Its user and root are served, over the control socket and over USB/IP.
    let status = |command: &mut Command| {
        let output = command
            .arg(&runner)
            .args(["control", socket_arg, "status"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        eprintln!("control status: {}", said.trim());
        (output.status.success(), said)
    };
    assert!(status(&mut as_uid(NOBODY)).0, "its user");
    assert!(status(&mut Command::new("env")).0, "root"); // env: as this test's user, root
    let addr = key.addr().to_string();
    assert!(attacker.run(&["import", &addr, "1-1"]).status.success());
    assert!(attacker
        .run_as_owner(&["import", &addr, "1-1"])
        .status
        .success());

    // A third user, 65533, even with the socket opened to everyone: the runner refuses it, and
    // its own client will not talk to another user's runner in the first place.
    chmod(&theirs, 0o711);
    chmod(&socket, 0o666);
    let (served, said) = status(&mut as_uid("65533"));
    assert!(!served, "uid 65533 talked to uid 65534's runner");
    assert!(said.contains("served by uid 65534, not by this user (uid 65533) or root"));
    let output = as_uid("65533")
        .arg(attacker.binary())
        .args(["import", &addr, "1-1"])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "uid 65533 imported uid 65534's key"
    );
    key.kill();
}

#[test]
fn another_user_cannot_import_the_key() {
    let Some(attacker) = Attacker::new("another_user_cannot_import_the_key") else {
        return;
    };
    let home = shared_home();
    let log = home.path().join("runner.log");
    let key = spawn(
        "022",
        &[
            "--listen",
            "127.0.0.1:0",
            "--ephemeral",
            "--presence",
            "auto",
        ],
        &log,
    );
    let addr = key.addr().to_string();
    // The owner lists and imports it, and gets an answer.
    assert!(attacker.run_as_owner(&["devlist", &addr]).status.success());
    assert!(attacker
        .run_as_owner(&["import", &addr, "1-1"])
        .status
        .success());
    // uid 65534 can neither import nor list it.
    let output = attacker.run(&["import", &addr, "1-1"]);
    assert!(!output.status.success(), "uid 65534 imported the key");
    assert!(String::from_utf8_lossy(&output.stdout).contains("import refused"));
    assert!(
        !attacker.run(&["devlist", &addr]).status.success(),
        "uid 65534 listed the key"
    );
    // The owner still can (the refusals held nothing).
    assert!(attacker
        .run_as_owner(&["import", &addr, "1-1"])
        .status
        .success());
    key.kill();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("refused: uid 65534 is another user"),
        "the runner logs the refusal: {logged}"
    );

    // Opened to every user on purpose: uid 65534 imports it (so the refusal above was the
    // runner's doing), and the runner says what that means.
    let key = spawn(
        "022",
        &[
            "--listen",
            "127.0.0.1:0",
            "--ephemeral",
            "--presence",
            "auto",
            "--allow-other-users",
        ],
        &log,
    );
    let addr = key.addr().to_string();
    assert!(attacker.run(&["import", &addr, "1-1"]).status.success());
    key.kill();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("--allow-other-users: every user on this machine can import the key"));
}

#[test]
fn a_non_loopback_address_needs_its_own_flag() {
    let stderr = refused_start(&["--ephemeral", "--listen", "0.0.0.0:0"]);
    assert!(stderr.contains("not a loopback address") && stderr.contains("--listen-remote"));

    // With it: a warning, and users of this machine are still checked, whatever address they
    // connect to (a peer with no socket here would be remote, and served).
    let Some(attacker) = Attacker::new("a_non_loopback_address_needs_its_own_flag") else {
        return;
    };
    let home = shared_home();
    let log = home.path().join("runner.log");
    let key = spawn(
        "022",
        &[
            "--listen",
            "0.0.0.0:0",
            "--listen-remote",
            "--ephemeral",
            "--presence",
            "auto",
        ],
        &log,
    );
    let addr = format!("127.0.0.1:{}", key.addr().port());
    assert!(attacker
        .run_as_owner(&["import", &addr, "1-1"])
        .status
        .success());
    assert!(!attacker.run(&["import", &addr, "1-1"]).status.success());
    key.kill();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("USB/IP has no authentication"));
}

#[test]
fn planted_or_writable_state_is_refused() {
    let home = shared_home();
    let arg = |p: &Path| p.to_str().unwrap().to_string();

    // A directory others may write in: they could have planted a state with a key they know.
    let group_writable = home.path().join("group-writable");
    std::fs::create_dir(&group_writable).unwrap();
    chmod(&group_writable, 0o770);
    let stderr = refused_start(&["--state", &arg(&group_writable)]);
    assert!(stderr.contains(&format!(
        "{} is writable by its group",
        group_writable.display()
    )));
    assert!(stderr.contains("chmod 0700"));

    // A state image others may write.
    let dir = home.path().join("private");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    std::fs::write(dir.join("state.lfs"), b"").unwrap();
    chmod(&dir.join("state.lfs"), 0o666);
    let stderr = refused_start(&["--state", &arg(&dir)]);
    assert!(stderr.contains("state.lfs is writable by its group or by others"));

    // Links: the state directory, the image, the trace file. Their targets stay untouched.
    let target = home.path().join("target");
    std::fs::write(&target, b"untouched").unwrap();
    let linked_dir = home.path().join("linked-dir");
    std::os::unix::fs::symlink(&dir, &linked_dir).unwrap();
    let stderr = refused_start(&["--state", &arg(&linked_dir)]);
    assert!(stderr.contains("is a symbolic link"));
    let with_link = home.path().join("with-link");
    std::fs::create_dir(&with_link).unwrap();
    std::os::unix::fs::symlink(&target, with_link.join("state.lfs")).unwrap();
    let stderr = refused_start(&["--state", &arg(&with_link)]);
    assert!(stderr.contains("state.lfs is a symbolic link"));
    let trace = home.path().join("trace.jsonl");
    std::os::unix::fs::symlink(&target, &trace).unwrap();
    let stderr = refused_start(&["--ephemeral", "--trace", &arg(&trace)]);
    assert!(stderr.contains("trace.jsonl is a symbolic link"));
    assert_eq!(std::fs::read(&target).unwrap(), b"untouched");

    // A file where the control socket goes is not removed.
    let not_a_socket = home.path().join("not-a-socket");
    std::fs::write(&not_a_socket, b"untouched").unwrap();
    let stderr = refused_start(&["--ephemeral", "--control", &arg(&not_a_socket)]);
    assert!(stderr.contains("is not a control socket of this user's"));
    assert_eq!(std::fs::read(&not_a_socket).unwrap(), b"untouched");

    // Owned by another user (making one needs root).
    if !is_root() {
        eprintln!("planted state of another user: SKIPPED: needs root to chown");
        return;
    }
    let chown = |path: &Path| {
        let status = Command::new("chown")
            .args([&format!("{NOBODY}:{NOBODY}"), path.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let planted = home.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    chmod(&planted, 0o700);
    std::fs::write(
        planted.join("state.lfs"),
        b"a state whose keys uid 65534 knows",
    )
    .unwrap();
    chown(&planted.join("state.lfs"));
    chown(&planted);
    let stderr = refused_start(&["--state", &arg(&planted)]);
    assert!(stderr.contains(&format!("{} is owned by uid 65534", planted.display())));
    // A planted image in a directory of ours.
    let ours = home.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    chmod(&ours, 0o700);
    std::fs::write(ours.join("state.lfs"), b"").unwrap();
    chmod(&ours.join("state.lfs"), 0o600);
    chown(&ours.join("state.lfs"));
    let stderr = refused_start(&["--state", &arg(&ours)]);
    assert!(stderr.contains("state.lfs is owned by uid 65534"));
    // A trace file of another user's is neither written nor truncated.
    let theirs = home.path().join("their-trace");
    std::fs::write(&theirs, b"untouched").unwrap();
    chown(&theirs);
    let stderr = refused_start(&["--ephemeral", "--trace", &arg(&theirs)]);
    assert!(stderr.contains("their-trace is owned by uid 65534"));
    assert_eq!(std::fs::read(&theirs).unwrap(), b"untouched");
    // A socket of another user's where the control socket goes.
    let their_socket = home.path().join("their.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&their_socket).unwrap();
    chown(&their_socket);
    let stderr = refused_start(&["--ephemeral", "--control", &arg(&their_socket)]);
    assert!(stderr.contains("(a socket owned by uid 65534)"));
    assert!(their_socket.exists());
}
