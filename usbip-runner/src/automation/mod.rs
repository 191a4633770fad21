//! Test automation on the control socket, after W3C WebAuthn "Automation" (WebDriver) and
//! Chrome's DevTools `WebAuthn` domain: a test seeds the key with known credentials, reads
//! back what was registered (with the private keys), removes credentials, sets a signature
//! counter, and follows credential events.
//!
//! ```text
//! > credentials BUS                 Get Credentials: a JSON array of Credential Parameters
//! > add-credential BUS JSON         Add Credential: one Credential Parameters object
//! > remove-credential BUS ID        Remove Credential (ID in base64url)
//! > clear-credentials BUS           Remove All Credentials (those the key stores)
//! > set-counter BUS ID N            the credential's signCount: its next signature carries N+1
//! > events [BUS]                    "ok events", then one JSON line per credential event
//! < ok ... | error ...
//! ```
//!
//! Private keys cross only on a key started with `--ephemeral` or `--allow-key-export`:
//! `credentials` and `add-credential` are refused otherwise. A security key whose private keys
//! can be read out is no security key; a test key whose keys a test can read and seed is
//! exactly what a test wants.
//!
//! Each verb is carried out by the key's own thread (which owns its authenticator), between
//! two USB transactions: the control socket sends it a [`Request`] and waits for the reply.

mod events;
pub mod params;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use authenticator::automation::{CounterError, ImportError};
use authenticator::platform::Platform;
use authenticator::Authenticator;
use serde_json::{json, Value as Json};

pub use events::{Events, Observed};
use params::{decode_base64, encode_base64url, CredentialParams};

/// The longest control line the automation verbs need: `add-credential` with the largest
/// Credential Parameters (an RP ID of 256 bytes, a credential ID of 128, a user handle of
/// 64, names, a PKCS#8 key) is under 2 KiB; the bound leaves room for a largeBlob.
pub const MAX_LINE: usize = 64 * 1024;
/// How many non-discoverable credentials a key remembers having made, for `credentials`
/// (the key itself keeps nothing of them: their ID is the sealed credential).
const REMEMBERED: usize = 1000;
/// How long a verb waits for the key's thread.
const KEY_TIMEOUT: Duration = Duration::from_secs(10);

/// A verb for a key's thread.
pub enum Op {
    List,
    Add(Box<CredentialParams>),
    Remove(Vec<u8>),
    Clear,
    SetCounter(Vec<u8>, u32),
}

/// A verb and where its reply goes.
pub struct Request {
    pub op: Op,
    pub reply: SyncSender<String>,
}

/// Hands a request to the thread of the key with this bus id; `false` if there is none.
pub type Router = Box<dyn Fn(&str, Request) -> bool + Send + Sync>;

/// The automation verbs of one runner.
pub struct Automation {
    /// Whether private keys may cross (`--ephemeral` or `--allow-key-export`).
    keys_may_cross: bool,
    events: Arc<Events>,
    router: OnceLock<Router>,
}

impl Automation {
    pub fn new(keys_may_cross: bool) -> Arc<Self> {
        Arc::new(Self {
            keys_may_cross,
            events: Arc::new(Events::default()),
            router: OnceLock::new(),
        })
    }

    /// Where requests go, once the keys run.
    pub fn set_router(&self, router: Router) {
        let _ = self.router.set(router);
    }

    /// What each key posts its events to.
    pub fn events(&self) -> Arc<Events> {
        self.events.clone()
    }

    /// Carry out one line if it is an automation verb (`None` if it is not one).
    pub fn command(&self, line: &str) -> Option<String> {
        let line = line.trim();
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (bus, argument) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
        let argument = argument.trim();
        let op = match verb {
            "credentials" => Op::List,
            "add-credential" => match serde_json::from_str::<CredentialParams>(argument) {
                Ok(params) => Op::Add(Box::new(params)),
                Err(error) => return Some(format!("error add-credential: bad JSON: {error}")),
            },
            "remove-credential" => match decode_base64(argument) {
                Ok(id) if !id.is_empty() => Op::Remove(id),
                _ => return Some("error remove-credential BUS ID: ID in base64url".into()),
            },
            "clear-credentials" => Op::Clear,
            "set-counter" => match set_counter_arguments(argument) {
                Some((id, n)) => Op::SetCounter(id, n),
                None => {
                    return Some(
                        "error set-counter BUS ID N: ID in base64url, N from 0 to 4294967295"
                            .into(),
                    )
                }
            },
            _ => return None,
        };
        if bus.is_empty() {
            return Some(format!("error {verb}: name the key (a bus id, e.g. 1-1)"));
        }
        if matches!(op, Op::List | Op::Add(_)) && !self.keys_may_cross {
            return Some(format!(
                "error {verb} reads or adds private keys, which this key keeps to itself: \
                 start it with --ephemeral or --allow-key-export (test keys only)"
            ));
        }
        Some(self.send(bus, op))
    }

    /// Hand `op` to key `bus` and wait for its reply.
    fn send(&self, bus: &str, op: Op) -> String {
        let Some(router) = self.router.get() else {
            return "error the keys are not running yet".into();
        };
        let (reply, answer) = sync_channel(1);
        if !router(bus, Request { op, reply }) {
            return format!("error unknown bus id {bus:?}");
        }
        answer
            .recv_timeout(KEY_TIMEOUT)
            .unwrap_or_else(|_| format!("error key {bus} did not answer"))
    }

    /// `events [BUS]`: stream this runner's credential events to `writer` until it goes
    /// away. `None` if the line is not that verb.
    pub fn stream_events(&self, line: &str, writer: &mut impl Write) -> Option<()> {
        let mut words = line.split_whitespace();
        if words.next() != Some("events") {
            return None;
        }
        let events = self.events.subscribe(words.next().map(str::to_string));
        if writeln!(writer, "ok events").is_err() {
            return Some(());
        }
        for line in events.iter() {
            if writeln!(writer, "{line}")
                .and_then(|_| writer.flush())
                .is_err()
            {
                return Some(());
            }
        }
        let _ = writeln!(writer, "error events lost: this stream fell too far behind");
        Some(())
    }
}

fn set_counter_arguments(argument: &str) -> Option<(Vec<u8>, u32)> {
    let (id, n) = argument.split_once(' ')?;
    let id = decode_base64(id).ok().filter(|id| !id.is_empty())?;
    Some((id, n.trim().parse().ok()?))
}

/// One key's side: carries out the verbs on its authenticator, posts its events, and
/// remembers the non-discoverable credentials it made.
pub struct KeyAutomation {
    bus_id: String,
    events: Arc<Events>,
    /// Non-discoverable credentials made since the start, oldest first: (RP ID, ID).
    made: VecDeque<(String, Vec<u8>)>,
    /// The RP of the last getAssertion, for the events of its getNextAssertions.
    last_rp: Option<String>,
}

impl KeyAutomation {
    pub fn new(bus_id: &str, events: Arc<Events>) -> Self {
        Self {
            bus_id: bus_id.to_string(),
            events,
            made: VecDeque::new(),
            last_rp: None,
        }
    }

    /// Carry out `request` and reply.
    pub fn handle<P: Platform>(&mut self, auth: &mut Authenticator<'_, P>, request: Request) {
        let reply = match request.op {
            Op::List => self.list(auth),
            Op::Add(params) => self.add(auth, &params),
            Op::Remove(id) => self.remove(auth, &id),
            Op::Clear => self.clear(auth),
            Op::SetCounter(id, n) => self.set_counter(auth, &id, n),
        };
        let _ = request.reply.send(reply);
    }

    fn post(&self, name: &str, params: Json) {
        self.events.post(&self.bus_id, name, params);
    }

    fn remember(&mut self, rp_id: String, id: Vec<u8>) {
        if self.made.len() == REMEMBERED {
            self.made.pop_front();
        }
        self.made.push_back((rp_id, id));
    }

    /// Every stored credential, then the non-discoverable ones made since the start.
    fn list<P: Platform>(&mut self, auth: &mut Authenticator<'_, P>) -> String {
        let mut list = Vec::new();
        let mut after = None;
        loop {
            match auth.next_stored_credential(after) {
                Ok(Some((reference, exported))) => {
                    match params::export(&exported) {
                        Ok(params) => list.push(params),
                        Err(error) => return format!("error {error}"),
                    }
                    after = Some(reference);
                }
                Ok(None) => break,
                Err(error) => return format!("error storage: {error:?}"),
            }
        }
        for (rp_id, id) in &self.made {
            match auth.open_credential(rp_id, id) {
                Ok(Some(exported)) => match params::export(&exported) {
                    Ok(params) => list.push(params),
                    Err(error) => return format!("error {error}"),
                },
                // Made before a reset: no longer a credential.
                Ok(None) => {}
                Err(error) => return format!("error storage: {error:?}"),
            }
        }
        serde_json::to_string(&list).unwrap_or_else(|e| format!("error {e}"))
    }

    fn add<P: Platform>(
        &mut self,
        auth: &mut Authenticator<'_, P>,
        params: &CredentialParams,
    ) -> String {
        if params.large_blob.is_some() {
            return "error add-credential: largeBlob is not supported yet".into();
        }
        let decoded = match params.decode() {
            Ok(decoded) => decoded,
            Err(error) => return format!("error add-credential: {error}"),
        };
        let error = match auth.import_credential(&decoded.import(params)) {
            Ok(()) => {
                let mut credential = json!({
                    "credentialId": encode_base64url(&decoded.credential_id),
                    "isResidentCredential": params.is_resident_credential,
                    "rpId": params.rp_id,
                    "signCount": params.sign_count,
                });
                if let Some(user) = &params.user_handle {
                    credential["userHandle"] = json!(user);
                }
                self.post("credentialAdded", json!({ "credential": credential }));
                return "ok added".into();
            }
            Err(ImportError::BadKey) => "privateKey: not a valid key",
            Err(ImportError::BadId) => "credentialId: 1 to 128 bytes",
            Err(ImportError::BadRpId) => "rpId: 1 to 256 bytes",
            Err(ImportError::NeedsUserHandle) => {
                "userHandle: a resident credential needs one (1 to 64 bytes)"
            }
            Err(ImportError::DuplicateId) => "a credential with this credentialId is on the key",
            Err(ImportError::DuplicateUser) => {
                "a resident credential of this rpId and userHandle is on the key \
                 (remove-credential it first)"
            }
            Err(ImportError::Full) => "the key is full (CTAP2_ERR_KEY_STORE_FULL)",
            Err(ImportError::TooLarge) => "the credential does not fit a slot",
            Err(ImportError::Storage) => "storage failed",
            Err(ImportError::Locked) => "the key is PIN-locked: give its PIN first",
        };
        format!("error add-credential: {error}")
    }

    fn remove<P: Platform>(&mut self, auth: &mut Authenticator<'_, P>, id: &[u8]) -> String {
        match auth.remove_credential(id) {
            Ok(true) => {
                self.post(
                    "credentialDeleted",
                    json!({ "credentialId": encode_base64url(id) }),
                );
                "ok removed".into()
            }
            Ok(false) if self.made.iter().any(|(_, made)| made == id) => {
                "error remove-credential: a non-discoverable credential the key made holds no \
                 state on it (its ID is the sealed credential), so it cannot be removed; only \
                 authenticatorReset ends it"
                    .into()
            }
            Ok(false) => "error remove-credential: no such credential on the key".into(),
            Err(error) => format!("error storage: {error:?}"),
        }
    }

    fn clear<P: Platform>(&mut self, auth: &mut Authenticator<'_, P>) -> String {
        let mut removed = 0;
        loop {
            match auth.next_stored_credential(None) {
                Ok(Some((_, exported))) => match auth.remove_credential(&exported.credential_id) {
                    Ok(true) => {
                        removed += 1;
                        self.post(
                            "credentialDeleted",
                            json!({ "credentialId": encode_base64url(&exported.credential_id) }),
                        );
                    }
                    Ok(false) => return "error storage: a credential could not be removed".into(),
                    Err(error) => return format!("error storage: {error:?}"),
                },
                Ok(None) => break,
                Err(error) => return format!("error storage: {error:?}"),
            }
        }
        format!("ok removed {removed}")
    }

    fn set_counter<P: Platform>(
        &mut self,
        auth: &mut Authenticator<'_, P>,
        id: &[u8],
        n: u32,
    ) -> String {
        let rp_id = self
            .made
            .iter()
            .find(|(_, made)| made == id)
            .map(|(rp, _)| rp.clone());
        match auth.set_sign_count(id, rp_id.as_deref(), n) {
            Ok(()) => {
                self.post(
                    "credentialUpdated",
                    json!({ "credential": {
                        "credentialId": encode_base64url(id), "signCount": n,
                    }}),
                );
                "ok".into()
            }
            Err(CounterError::Backwards(at)) => format!(
                "error set-counter: the credential is at {at}, and a counter never goes back"
            ),
            Err(CounterError::Unknown) => "error set-counter: no such credential on the key".into(),
            Err(CounterError::Storage) => "error storage failed".into(),
        }
    }
}
