//! `--trace`: every CTAP request and response as one JSON line, for debugging WebAuthn flows.
//!
//! Byte strings are never written, only their lengths: credential IDs, signatures, key
//! material, encrypted PINs and tokens all travel as byte strings, so nothing secret (and no
//! signature) reaches the trace. Text (RP IDs, user names, option names) is kept.

use std::io::Write;
use std::sync::{Arc, Mutex};

use authenticator::ctaphid::{App, Outcome, Transaction};
use serde_json::{json, Map, Value as Json};

/// Where trace lines go; shared by the keys of one runner.
pub type TraceSink = Arc<Mutex<Box<dyn Write + Send>>>;

/// An [`App`] that writes its traffic to a sink.
pub struct Traced<'a, A: App> {
    pub app: &'a mut A,
    pub sink: Option<&'a TraceSink>,
    pub key: &'a str,
    /// The request being traced, so a waiting request is written once.
    pub in_flight: &'a mut Option<Vec<u8>>,
}

impl<A: App> App for Traced<'_, A> {
    fn call(
        &mut self,
        transaction: Transaction,
        request: &[u8],
        response: &mut Vec<u8>,
    ) -> Outcome {
        if let Some(sink) = self.sink {
            if self.in_flight.as_deref() != Some(request) {
                write(sink, describe_request(self.key, transaction, request));
                *self.in_flight = Some(request.to_vec());
            }
        }
        let outcome = self.app.call(transaction, request, response);
        if let (Some(sink), Outcome::Done) = (self.sink, outcome) {
            write(
                sink,
                describe_response(self.key, transaction, request, response),
            );
            *self.in_flight = None;
        }
        outcome
    }

    fn cancel(&mut self) {
        self.app.cancel();
    }

    fn abort(&mut self) {
        *self.in_flight = None;
        self.app.abort();
    }

    fn wink(&mut self) {
        self.app.wink();
    }

    fn speaks_cbor(&self) -> bool {
        self.app.speaks_cbor()
    }
}

fn write(sink: &TraceSink, line: Json) {
    let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(sink, "{line}");
    let _ = sink.flush();
}

fn command_name(command: u8) -> &'static str {
    match command {
        0x01 => "makeCredential",
        0x02 => "getAssertion",
        0x04 => "getInfo",
        0x06 => "clientPIN",
        0x07 => "reset",
        0x08 => "getNextAssertion",
        0x0A | 0x41 => "credentialManagement",
        0x0B => "selection",
        0x0C => "largeBlobs",
        0x0D => "authenticatorConfig",
        _ => "unknown",
    }
}

fn u2f_name(ins: u8) -> &'static str {
    match ins {
        0x01 => "register",
        0x02 => "authenticate",
        0x03 => "version",
        _ => "unknown",
    }
}

fn describe_request(key: &str, transaction: Transaction, request: &[u8]) -> Json {
    match transaction {
        Transaction::Cbor => {
            let command = request.first().copied().unwrap_or(0);
            json!({
                "key": key, "dir": "request", "protocol": "ctap2",
                "command": command_name(command), "code": command,
                "params": decode(request.get(1..).unwrap_or(&[])),
            })
        }
        Transaction::Msg => json!({
            "key": key, "dir": "request", "protocol": "u2f",
            "command": u2f_name(request.get(1).copied().unwrap_or(0)),
            "p1": request.get(2).copied().unwrap_or(0), "length": request.len(),
        }),
        // Carries the attestation private key: nothing of it is traced.
        Transaction::Provision => json!({
            "key": key, "dir": "request", "protocol": "vendor",
            "command": "provisionAttestation", "length": request.len(),
        }),
    }
}

fn describe_response(key: &str, transaction: Transaction, request: &[u8], response: &[u8]) -> Json {
    match transaction {
        Transaction::Cbor => json!({
            "key": key, "dir": "response", "protocol": "ctap2",
            "command": command_name(request.first().copied().unwrap_or(0)),
            "status": response.first().copied().unwrap_or(0),
            "body": decode(response.get(1..).unwrap_or(&[])),
        }),
        Transaction::Msg => {
            let sw = response
                .len()
                .checked_sub(2)
                .map(|i| u16::from_be_bytes([response[i], response[i + 1]]));
            json!({
                "key": key, "dir": "response", "protocol": "u2f",
                "command": u2f_name(request.get(1).copied().unwrap_or(0)),
                "sw": sw.map(|sw| format!("{sw:04x}")), "length": response.len(),
            })
        }
        Transaction::Provision => json!({
            "key": key, "dir": "response", "protocol": "vendor",
            "command": "provisionAttestation",
            "status": response.first().copied().unwrap_or(0),
        }),
    }
}

/// CBOR as JSON, byte strings replaced by their length.
fn decode(bytes: &[u8]) -> Json {
    if bytes.is_empty() {
        return Json::Null;
    }
    match ciborium::from_reader::<ciborium::Value, _>(bytes) {
        Ok(value) => redact(&value),
        Err(_) => json!({ "undecodable": bytes.len() }),
    }
}

fn redact(value: &ciborium::Value) -> Json {
    use ciborium::Value as Cbor;
    match value {
        Cbor::Bytes(bytes) => json!({ "bytes": bytes.len() }),
        Cbor::Text(text) => Json::String(text.clone()),
        Cbor::Integer(i) => i64::try_from(*i).map(Json::from).unwrap_or(Json::Null),
        Cbor::Bool(b) => Json::Bool(*b),
        Cbor::Float(f) => json!(f),
        Cbor::Null => Json::Null,
        Cbor::Array(items) => Json::Array(items.iter().map(redact).collect()),
        Cbor::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let key = match k {
                    Cbor::Text(t) => t.clone(),
                    Cbor::Integer(i) => {
                        i64::try_from(*i).map(|i| i.to_string()).unwrap_or_default()
                    }
                    _ => "?".into(),
                };
                map.insert(key, redact(v));
            }
            Json::Object(map)
        }
        Cbor::Tag(_, inner) => redact(inner),
        _ => Json::Null,
    }
}
