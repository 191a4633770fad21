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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use authenticator::platform::{Presence, Touch};

use crate::automation::{self, Automation};
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
    pub fn presence(self) -> Presence {
        match self {
            Answer::Approve | Answer::Hold => Presence::Granted,
            Answer::Deny => Presence::Denied,
            Answer::Timeout => Presence::TimedOut,
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
    pub fn poll(&self, bus_id: &str) -> Presence {
        self.with(bus_id, |key| key.answer.take())
            .flatten()
            .map_or(Presence::Pending, Answer::presence)
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

/// Serve the control socket at `path` (replacing a stale socket file).
pub fn serve(path: &Path, control: Arc<Control>) -> std::io::Result<PathBuf> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let control = control.clone();
                std::thread::spawn(move || serve_client(stream, &control));
            }
        })?;
    Ok(path.to_path_buf())
}

fn serve_client(stream: UnixStream, control: &Control) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        if line.len() > automation::MAX_LINE {
            break;
        }
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

/// `events`: send the line, then copy every line the runner streams to `out` until it ends.
pub fn stream(path: &Path, line: &str, out: &mut impl Write) -> std::io::Result<()> {
    let mut stream = UnixStream::connect(path)?;
    writeln!(stream, "{line}")?;
    for line in BufReader::new(stream).lines() {
        writeln!(out, "{}", line?)?;
        out.flush()?;
    }
    Ok(())
}

/// One command from the command line: send it, print the reply.
pub fn send(path: &Path, line: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    writeln!(stream, "{line}")?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_string())
}
