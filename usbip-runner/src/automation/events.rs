//! Credential events, as Chrome's DevTools protocol names them (`WebAuthn.credentialAdded`,
//! `credentialAsserted`, `credentialDeleted`, `credentialUpdated`): one JSON line per
//! credential created, used, deleted or changed, on every `events` stream of the control
//! socket. They carry what `--trace` redacts (the credential ID, the RP, the counter), never
//! a private key.
//!
//! The key's traffic is read as it passes ([`Observed`]): a makeCredential, getAssertion or
//! U2F answer says which credential and which counter; the request says which RP.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;

use authenticator::ctaphid::{App, Outcome, Transaction};
use ciborium::Value as Cbor;
use serde_json::{json, Value as Json};

use super::params::encode_base64url;
use super::KeyAutomation;

/// Events a stream may have waiting; a reader that falls this far behind is dropped (and
/// told so), rather than the key waiting for it or events being lost silently.
const STREAM_BACKLOG: usize = 4096;

/// The event streams of one runner, shared by its keys.
#[derive(Default)]
pub struct Events {
    subscribers: Mutex<Vec<Subscriber>>,
}

struct Subscriber {
    /// Only this key's events (`None`: every key's).
    bus: Option<String>,
    sender: SyncSender<String>,
}

impl Events {
    /// A new stream of the events of `bus` (every key's if `None`) from now on.
    pub fn subscribe(&self, bus: Option<String>) -> Receiver<String> {
        let (sender, receiver) = sync_channel(STREAM_BACKLOG);
        self.lock().push(Subscriber { bus, sender });
        receiver
    }

    /// Send one event of key `bus` to every stream that wants it.
    pub fn post(&self, bus: &str, name: &str, mut params: Json) {
        let mut subscribers = self.lock();
        if subscribers.is_empty() {
            return;
        }
        params["authenticatorId"] = json!(bus);
        let line = json!({ "event": name, "params": params }).to_string();
        subscribers.retain(|s| {
            if s.bus.as_deref().is_some_and(|b| b != bus) {
                return true;
            }
            match s.sender.try_send(line.clone()) {
                Ok(()) => true,
                // Too far behind, or gone: its stream ends (the reader sees why).
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An [`App`] whose answers become credential events (and whose non-discoverable
/// registrations the key remembers for `credentials`).
pub struct Observed<'a, A: App> {
    pub app: &'a mut A,
    pub key: &'a mut KeyAutomation,
}

impl<A: App> App for Observed<'_, A> {
    fn call(
        &mut self,
        transaction: Transaction,
        request: &[u8],
        response: &mut Vec<u8>,
    ) -> Outcome {
        let outcome = self.app.call(transaction, request, response);
        if outcome == Outcome::Done {
            match transaction {
                Transaction::Cbor => self.key.observe_ctap2(request, response),
                Transaction::Msg => self.key.observe_u2f(request, response),
                Transaction::Provision => {}
            }
        }
        outcome
    }

    fn cancel(&mut self) {
        self.app.cancel();
    }

    fn abort(&mut self) {
        self.app.abort();
    }

    fn wink(&mut self) {
        self.app.wink();
    }

    fn speaks_cbor(&self) -> bool {
        self.app.speaks_cbor()
    }
}

/// authenticatorData's counter and, with attested credential data, the credential ID.
fn auth_data(raw: &[u8]) -> Option<(u32, Option<Vec<u8>>)> {
    let counter = u32::from_be_bytes(raw.get(33..37)?.try_into().ok()?);
    let id = if raw.get(32)? & 0x40 != 0 {
        let len = usize::from(u16::from_be_bytes(raw.get(53..55)?.try_into().ok()?));
        Some(raw.get(55..55 + len)?.to_vec())
    } else {
        None
    };
    Some((counter, id))
}

fn member(map: &Cbor, key: i64) -> Option<&Cbor> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_integer().and_then(|i| i64::try_from(i).ok()) == Some(key))
        .map(|(_, v)| v)
}

fn text_member<'v>(map: &'v Cbor, key: &str) -> Option<&'v Cbor> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

impl KeyAutomation {
    /// A CTAP2 exchange that created, used, deleted or changed a credential.
    fn observe_ctap2(&mut self, request: &[u8], response: &[u8]) {
        let (Some(&command), Some(&0)) = (request.first(), response.first()) else {
            return;
        };
        let parse = |bytes: &[u8]| ciborium::from_reader::<Cbor, _>(bytes).ok();
        let (Some(params), answer) = (
            parse(request.get(1..).unwrap_or(&[])),
            parse(response.get(1..).unwrap_or(&[])),
        ) else {
            return;
        };
        match command {
            0x01 => self.made_credential(&params, answer.as_ref()),
            0x02 | 0x08 => {
                if command == 0x02 {
                    self.last_rp = member(&params, 1)
                        .and_then(Cbor::as_text)
                        .map(str::to_string);
                }
                self.asserted(answer.as_ref());
            }
            0x0A | 0x41 => self.managed(&params),
            _ => {}
        }
    }

    fn made_credential(&mut self, params: &Cbor, answer: Option<&Cbor>) {
        let rp_id = member(params, 2)
            .and_then(|rp| text_member(rp, "id"))
            .and_then(Cbor::as_text);
        let user = member(params, 3)
            .and_then(|user| text_member(user, "id"))
            .and_then(Cbor::as_bytes);
        let resident = member(params, 7)
            .and_then(|options| text_member(options, "rk"))
            .and_then(Cbor::as_bool)
            .unwrap_or(false);
        let Some((counter, Some(id))) = answer
            .and_then(|a| member(a, 2))
            .and_then(Cbor::as_bytes)
            .and_then(|raw| auth_data(raw))
        else {
            return;
        };
        let rp_id = rp_id.unwrap_or("").to_string();
        let mut credential = json!({
            "credentialId": encode_base64url(&id),
            "isResidentCredential": resident,
            "rpId": rp_id,
            "signCount": counter,
        });
        if let (Some(user), true) = (user, resident) {
            credential["userHandle"] = json!(encode_base64url(user));
        }
        self.post("credentialAdded", json!({ "credential": credential }));
        if !resident {
            self.remember(rp_id, id);
        }
    }

    fn asserted(&mut self, answer: Option<&Cbor>) {
        let Some(answer) = answer else { return };
        let id = member(answer, 1)
            .and_then(|d| text_member(d, "id"))
            .and_then(Cbor::as_bytes);
        let counter = member(answer, 2)
            .and_then(Cbor::as_bytes)
            .and_then(|raw| auth_data(raw));
        let (Some(id), Some((counter, _))) = (id, counter) else {
            return;
        };
        let mut credential = json!({
            "credentialId": encode_base64url(id),
            "rpId": self.last_rp.clone().unwrap_or_default(),
            "signCount": counter,
        });
        if let Some(user) = member(answer, 4)
            .and_then(|u| text_member(u, "id"))
            .and_then(Cbor::as_bytes)
        {
            credential["userHandle"] = json!(encode_base64url(user));
        }
        self.post("credentialAsserted", json!({ "credential": credential }));
    }

    /// credentialManagement: deleteCredential (6) and updateUserInformation (7).
    fn managed(&mut self, params: &Cbor) {
        let subcommand = member(params, 1).and_then(|s| s.as_integer());
        let id = member(params, 2)
            .and_then(|p| member(p, 2))
            .and_then(|d| text_member(d, "id"))
            .and_then(Cbor::as_bytes);
        let (Some(subcommand), Some(id)) = (subcommand, id) else {
            return;
        };
        let id = encode_base64url(id);
        match i64::try_from(subcommand) {
            Ok(6) => self.post("credentialDeleted", json!({ "credentialId": id })),
            Ok(7) => self.post(
                "credentialUpdated",
                json!({ "credential": { "credentialId": id } }),
            ),
            _ => {}
        }
    }

    /// U2F register and authenticate: the RP is known only by its hash (the application
    /// parameter), given as `rpIdHash`.
    fn observe_u2f(&mut self, request: &[u8], response: &[u8]) {
        if !response.ends_with(&[0x90, 0x00]) || request.len() < 5 {
            return;
        }
        // Extended length (0, Lc as two bytes) or short (Lc as one byte).
        let data = match request[4] {
            0 if request.len() >= 7 => {
                let len = usize::from(u16::from_be_bytes([request[5], request[6]]));
                request.get(7..7 + len)
            }
            len => request.get(5..5 + usize::from(len)),
        };
        let Some(data) = data.filter(|d| d.len() >= 64) else {
            return;
        };
        let app = hex(&data[32..64]);
        match request[1] {
            // Response: 0x05, public key (65), key handle length, key handle, ...
            0x01 => {
                let Some(&len) = response.get(66) else { return };
                let Some(handle) = response.get(67..67 + usize::from(len)) else {
                    return;
                };
                self.post(
                    "credentialAdded",
                    json!({ "credential": {
                        "credentialId": encode_base64url(handle),
                        "isResidentCredential": false, "rpIdHash": app, "signCount": 0,
                    }}),
                );
            }
            // Request: challenge, application, handle length, handle; response: flags,
            // counter, signature.
            0x02 => {
                let len = data.get(64).map(|&l| usize::from(l)).unwrap_or(0);
                let (Some(handle), Some(counter)) = (data.get(65..65 + len), response.get(1..5))
                else {
                    return;
                };
                let counter = u32::from_be_bytes(counter.try_into().unwrap_or([0; 4]));
                self.post(
                    "credentialAsserted",
                    json!({ "credential": {
                        "credentialId": encode_base64url(handle),
                        "rpIdHash": app, "signCount": counter,
                    }}),
                );
            }
            _ => {}
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_reader_is_dropped_not_waited_for() {
        let events = Events::default();
        let everything = events.subscribe(None);
        let other_key = events.subscribe(Some("1-2".into()));
        for _ in 0..STREAM_BACKLOG + 1 {
            events.post("1-1", "credentialAsserted", json!({}));
        }
        assert_eq!(events.lock().len(), 1, "the full stream was dropped");
        let first: Json = serde_json::from_str(&everything.recv().unwrap()).unwrap();
        assert_eq!(first["event"], "credentialAsserted");
        assert_eq!(first["params"]["authenticatorId"], "1-1");
        assert!(
            other_key.try_recv().is_err(),
            "another key's stream hears nothing"
        );
    }

    #[test]
    fn auth_data_gives_the_counter_and_the_credential_id() {
        let mut raw = vec![0u8; 37];
        raw[32] = 0x41;
        raw[33..37].copy_from_slice(&7u32.to_be_bytes());
        raw.extend_from_slice(&[0; 16]);
        raw.extend_from_slice(&[0, 3, 9, 8, 7]);
        assert_eq!(auth_data(&raw), Some((7, Some(vec![9, 8, 7]))));
        assert_eq!(auth_data(&raw[..40]), None);
        raw[32] = 0x01;
        assert_eq!(auth_data(&raw[..37]), Some((7, None)));
    }
}
