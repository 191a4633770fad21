//! Presence under script control: a Unix socket with a line protocol, so a CI job can approve,
//! deny or time out the touch a key waits for, and test its "user did not touch" and "user
//! cancelled" paths.
//!
//! ```text
//! > approve [BUS]     approve the pending request of key BUS (or the only one waiting);
//! < ok waiting        ... "ok armed" if none waits: it then answers the next request
//! > hold [BUS]        a long touch: approves any request, including a reset that needs one
//! > deny [BUS]        refuse it (CTAP2_ERR_OPERATION_DENIED)
//! > timeout [BUS]     end it now as if nobody touched (CTAP2_ERR_USER_ACTION_TIMEOUT)
//! > status            "waiting 1-1 1-3": the keys with a request waiting
//! < error ...         an unknown command or bus id
//! ```
//!
//! `uv`, `presence` and `fault` (built-in UV, the presence mode at run time, faults) are
//! [`crate::simulation`]'s; the test automation verbs (`credentials`, `add-credential`,
//! `events`, ...) share the socket too: they are [`crate::automation`]'s.
//!
//! `approve` is a short touch. Once the owner enabled longTouchForReset, authenticatorReset
//! waits for a long touch: as on a real key, a short one does not answer it (the reply is an
//! error saying so, and the request keeps waiting), and an `approve` armed in advance is not
//! spent on it.
//!
//! The socket is the owner's: 0600, and each client's uid (SO_PEERCRED) must be the runner's
//! own or root's; anyone else gets `error refused: ...` and is closed, and the runner logs it.
//! A line longer than [`MAX_LINE`] bytes gets an error and ends the connection.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use authenticator::platform::{PresenceAnswer, Touch};

use crate::automation::{self, Automation};
use crate::peer::{Peer, Policy};
use crate::simulation::Simulation;

/// An answer from the control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Approve,
    /// A long touch.
    Hold,
    Deny,
    Timeout,
}

impl Answer {
    pub fn presence(self) -> PresenceAnswer {
        match self {
            Answer::Approve | Answer::Hold => PresenceAnswer::Granted,
            Answer::Deny => PresenceAnswer::Denied,
            Answer::Timeout => PresenceAnswer::TimedOut,
        }
    }

    /// Whether this answers a wait for `touch`: a short touch does not make a long one.
    fn answers(self, touch: Touch) -> bool {
        !(self == Answer::Approve && touch == Touch::Long)
    }
}

#[derive(Default)]
pub struct KeyState {
    /// The touch the waiting request needs; `None` while no request waits.
    waiting: Option<Touch>,
    /// Answer for the request waiting now.
    answer: Option<Answer>,
    /// Answer given while nothing waited: for the next request.
    pub(crate) armed: Option<Answer>,
    /// Built-in UV, the presence mode at run time, faults.
    pub(crate) sim: Simulation,
}

/// The presence state of every key, shared by the keys and the control socket.
#[derive(Default)]
pub struct Control {
    keys: Mutex<BTreeMap<String, KeyState>>,
    /// The test automation verbs, once the runner has them.
    automation: OnceLock<Arc<Automation>>,
}

impl Control {
    pub fn new(bus_ids: &[String]) -> Arc<Self> {
        let keys = bus_ids
            .iter()
            .map(|id| (id.clone(), KeyState::default()))
            .collect();
        Arc::new(Self {
            keys: Mutex::new(keys),
            automation: OnceLock::new(),
        })
    }

    /// Serve the test automation verbs too.
    pub fn set_automation(&self, automation: Arc<Automation>) {
        let _ = self.automation.set(automation);
    }

    pub(crate) fn with<R>(&self, bus_id: &str, f: impl FnOnce(&mut KeyState) -> R) -> Option<R> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get_mut(bus_id).map(f)
    }

    /// The bus ids of the keys `which` picks.
    pub(crate) fn bus_ids_where(&self, which: impl Fn(&KeyState) -> bool) -> Vec<String> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter(|(_, key)| which(key))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The one key `waiting` picks, or else the only key.
    pub(crate) fn only_key(&self, waiting: impl Fn(&KeyState) -> bool) -> Option<String> {
        let picked = self.bus_ids_where(waiting);
        let all = self.bus_ids_where(|_| true);
        match (picked.as_slice(), all.as_slice()) {
            ([one], _) | ([], [one]) => Some(one.clone()),
            _ => None,
        }
    }

    /// A key starts waiting for a `touch`.
    pub fn start(&self, bus_id: &str, touch: Touch) {
        self.with(bus_id, |key| {
            key.waiting = Some(touch);
            key.answer = key.armed.take_if(|armed| armed.answers(touch));
        });
    }

    /// Has the waiting request been answered?
    pub fn poll(&self, bus_id: &str) -> PresenceAnswer {
        self.with(bus_id, |key| key.answer.take())
            .flatten()
            .map_or(PresenceAnswer::Pending, Answer::presence)
    }

    /// The wait is over.
    pub fn stop(&self, bus_id: &str) {
        self.with(bus_id, |key| {
            key.waiting = None;
            key.answer = None;
        });
    }

    /// Carry out one line of the protocol; returns the reply line.
    pub fn command(&self, line: &str) -> String {
        if let Some(reply) = self.automation.get().and_then(|a| a.command(line)) {
            return reply;
        }
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        if matches!(verb, "uv" | "presence" | "fault") {
            return self.simulation_command(verb, words);
        }
        let bus = words.next();
        let answer = match verb {
            "approve" => Answer::Approve,
            "hold" => Answer::Hold,
            "deny" => Answer::Deny,
            "timeout" => Answer::Timeout,
            "status" => {
                let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
                let waiting: Vec<&str> = keys
                    .iter()
                    .filter(|(_, k)| k.waiting.is_some())
                    .map(|(id, _)| id.as_str())
                    .collect();
                return format!("waiting {}", waiting.join(" "))
                    .trim_end()
                    .to_string();
            }
            _ => return format!("error unknown command {verb:?}"),
        };
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let bus = match bus {
            Some(bus) => bus.to_string(),
            // The only key waiting, or the only key.
            None => {
                let waiting: Vec<&String> = keys
                    .iter()
                    .filter(|(_, k)| k.waiting.is_some())
                    .map(|(id, _)| id)
                    .collect();
                match (waiting.as_slice(), keys.len()) {
                    ([one], _) => (*one).clone(),
                    ([], 1) => keys.keys().next().cloned().unwrap_or_default(),
                    _ => return "error name a bus id: several keys".to_string(),
                }
            }
        };
        let Some(key) = keys.get_mut(&bus) else {
            return format!("error unknown bus id {bus:?}");
        };
        match key.waiting {
            Some(touch) if !answer.answers(touch) => {
                format!("error {bus} waits for a long touch: hold {bus}")
            }
            Some(_) => {
                key.answer = Some(answer);
                "ok waiting".to_string()
            }
            None => {
                key.armed = Some(answer);
                "ok armed".to_string()
            }
        }
    }
}

/// The longest control line the runner reads (what test automation's `add-credential` may
/// need); a longer one is refused, never buffered whole.
pub const MAX_LINE: usize = automation::MAX_LINE;

/// Serve the control socket at `path`: 0600, for the runner's own user and root only (see
/// [`crate::private::bind_private_socket`] for where it may be and what it may replace).
pub fn serve(path: &Path, control: Arc<Control>) -> std::io::Result<Listening> {
    let listener = crate::private::bind_private_socket(path)?;
    let policy = Policy::owner_only();
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Err(reason) = admit(&stream, policy) {
                    tracing::warn!("control socket: refused a client: {reason}");
                    // Short and to a fresh socket: it cannot block the loop for long.
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                    let _ = writeln!(&stream, "error refused: {reason}");
                    continue;
                }
                let control = control.clone();
                std::thread::spawn(move || serve_client(stream, &control));
            }
        })?;
    Ok(Listening {
        path: path.to_path_buf(),
        stopping,
        thread: Some(thread),
    })
}

/// A control socket being served; stopping it closes the socket and removes its file.
pub struct Listening {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listening {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting (clients being served finish their line) and remove the socket file, so
    /// the next runner on this path starts without a stale one.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread; if the path is gone nobody can connect, so leave it be.
        if UnixStream::connect(&self.path).is_ok() {
            let _ = thread.join();
            crate::private::remove_own_socket(&self.path);
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The peer's uid, as the kernel recorded it when it connected (SO_PEERCRED).
fn admit(stream: &UnixStream, policy: Policy) -> Result<(), String> {
    match crate::peer::unix_peer_uid(stream) {
        Ok(uid) => match policy.refusal(Peer::Local { uid }) {
            Some(reason) => Err(reason),
            None => Ok(()),
        },
        Err(error) => Err(format!("cannot tell who it is: {error}")),
    }
}

fn serve_client(stream: UnixStream, control: &Control) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let line = match read_line(&mut reader) {
            Line::End => break,
            Line::TooLong => {
                let _ = writeln!(writer, "error line longer than {MAX_LINE} bytes");
                break;
            }
            Line::NotText => {
                if writeln!(writer, "error not UTF-8").is_err() {
                    break;
                }
                continue;
            }
            Line::Text(line) => line,
        };
        // `events` keeps the connection, streaming, until the client goes.
        if let Some(automation) = control.automation.get() {
            if automation.stream_events(&line, &mut writer).is_some() {
                break;
            }
        }
        let reply = control.command(&line);
        if writeln!(writer, "{reply}").is_err() {
            break;
        }
    }
}

enum Line {
    Text(String),
    NotText,
    /// More than [`MAX_LINE`] bytes without a newline.
    TooLong,
    /// The client closed (or the connection failed).
    End,
}

/// One line, read at most [`MAX_LINE`] bytes (and its newline) at a time.
fn read_line(reader: &mut impl BufRead) -> Line {
    let mut line = Vec::new();
    match reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
    {
        Ok(0) | Err(_) => return Line::End,
        Ok(_) => {}
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE {
        return Line::TooLong;
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_or(Line::NotText, Line::Text)
}

/// Connect to a runner's control socket. Whoever serves it hears the commands and writes the
/// replies: a user talks only to their own runner or root's (a socket planted in /tmp could pose
/// as one); root to anyone's.
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let stream = UnixStream::connect(path)?;
    let (me, server) = (crate::peer::own_uid(), crate::peer::unix_peer_uid(&stream)?);
    if me != 0 && server != me && server != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("served by uid {server}, not by this user (uid {me}) or root: not sending"),
        ));
    }
    Ok(stream)
}

/// `events`: send the line, then copy every line the runner streams to `out` until it ends.
pub fn stream(path: &Path, line: &str, out: &mut impl Write) -> std::io::Result<()> {
    let mut stream = connect(path)?;
    writeln!(stream, "{line}")?;
    for line in BufReader::new(stream).lines() {
        writeln!(out, "{}", line?)?;
        out.flush()?;
    }
    Ok(())
}

/// One command from the command line: send it, print the reply.
pub fn send(path: &Path, line: &str) -> std::io::Result<String> {
    let mut stream = connect(path)?;
    writeln!(stream, "{line}")?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_socket_is_removed_and_its_path_served_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let control = Control::new(&["1-1".to_string()]);
        let mut socket = serve(&path, control.clone()).unwrap();
        assert_eq!(send(&path, "status").unwrap(), "waiting");
        socket.stop();
        assert!(!path.exists());
        let _again = serve(&path, control).unwrap();
        assert_eq!(send(&path, "status").unwrap(), "waiting");
    }

    #[test]
    fn lines_are_read_with_a_bound() {
        let mut input = &b"approve 1-1\r\nstatus"[..];
        assert!(matches!(read_line(&mut input), Line::Text(l) if l == "approve 1-1"));
        assert!(matches!(read_line(&mut input), Line::Text(l) if l == "status"));
        assert!(matches!(read_line(&mut input), Line::End));

        let mut exact = vec![b'x'; MAX_LINE];
        exact.push(b'\n');
        assert!(matches!(read_line(&mut &exact[..]), Line::Text(l) if l.len() == MAX_LINE));
        // An endless line: refused after MAX_LINE + 1 bytes, the rest never read.
        let mut endless = std::io::BufReader::new(std::io::repeat(b'x'));
        assert!(matches!(read_line(&mut endless), Line::TooLong));
        assert!(matches!(read_line(&mut &b"\xff\n"[..]), Line::NotText));
    }
}
