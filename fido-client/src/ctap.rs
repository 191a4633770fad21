//! CTAP2 test vocabulary: CBOR building and reading, authenticatorData parsing, signature
//! checks. Shared by the core's tests (through `test-support`) and the end-to-end tests, so both
//! speak the same way to the key; it uses only ciborium, p256 and ed25519-dalek.

use ciborium::Value;

pub fn map(entries: Vec<(Value, Value)>) -> Value {
    Value::Map(entries)
}

pub fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

/// Look up an integer key in a CBOR map.
pub fn get(value: &Value, key: i64) -> Option<&Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_integer() == Some(key.into()))
        .map(|(_, v)| v)
}

pub fn get_text<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

pub fn make_credential_request(rp: &str, user_id: &[u8], algs: &[i64], rk: bool) -> Value {
    let params = algs
        .iter()
        .map(|a| {
            map(vec![
                (text("alg"), int(*a)),
                (text("type"), text("public-key")),
            ])
        })
        .collect();
    let mut entries = vec![
        (int(1), bytes(&[7u8; 32])),
        (int(2), map(vec![(text("id"), text(rp))])),
        (
            int(3),
            map(vec![
                (text("id"), bytes(user_id)),
                (text("name"), text("user")),
            ]),
        ),
        (int(4), Value::Array(params)),
    ];
    if rk {
        entries.push((int(7), map(vec![(text("rk"), Value::Bool(true))])));
    }
    map(entries)
}

pub fn get_assertion_request(rp: &str, client_data_hash: &[u8; 32], allow: &[&[u8]]) -> Value {
    let mut entries = vec![(int(1), text(rp)), (int(2), bytes(client_data_hash))];
    if !allow.is_empty() {
        let list = allow
            .iter()
            .map(|id| {
                map(vec![
                    (text("id"), bytes(id)),
                    (text("type"), text("public-key")),
                ])
            })
            .collect();
        entries.push((int(3), Value::Array(list)));
    }
    map(entries)
}

/// authenticatorData fields: (rpIdHash, flags, counter, credential id, COSE key bytes).
pub struct AuthData {
    pub rp_id_hash: [u8; 32],
    pub flags: u8,
    pub counter: u32,
    pub credential_id: Vec<u8>,
    pub public_key: Option<Value>,
    /// The extension outputs (flag ED), a CBOR map.
    pub extensions: Option<Value>,
    pub raw: Vec<u8>,
}

pub fn parse_auth_data(raw: &[u8]) -> AuthData {
    let rp_id_hash = raw[..32].try_into().unwrap();
    let flags = raw[32];
    let counter = u32::from_be_bytes(raw[33..37].try_into().unwrap());
    let mut rest = &raw[37..];
    let (credential_id, public_key) = if flags & 0x40 != 0 {
        let len = u16::from_be_bytes([rest[16], rest[17]]) as usize;
        let id = rest[18..18 + len].to_vec();
        rest = &rest[18 + len..];
        let key: Value = ciborium::from_reader(&mut rest).unwrap();
        (id, Some(key))
    } else {
        (Vec::new(), None)
    };
    let extensions = (flags & 0x80 != 0).then(|| ciborium::from_reader(&mut rest).unwrap());
    assert!(rest.is_empty(), "bytes after authenticatorData's last part");
    AuthData {
        rp_id_hash,
        flags,
        counter,
        credential_id,
        public_key,
        extensions,
        raw: raw.to_vec(),
    }
}

/// Verify a signature over `message` with a COSE public key.
pub fn verify(cose: &Value, message: &[u8], signature: &[u8]) {
    let alg = get(cose, 3)
        .and_then(|v| v.as_integer())
        .map(i64::try_from)
        .unwrap()
        .unwrap();
    match alg {
        -7 => {
            use p256::ecdsa::signature::Verifier;
            let x = get(cose, -2).unwrap().as_bytes().unwrap();
            let y = get(cose, -3).unwrap().as_bytes().unwrap();
            let mut sec1 = vec![4u8];
            sec1.extend_from_slice(x);
            sec1.extend_from_slice(y);
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
            let sig = p256::ecdsa::Signature::from_der(signature).unwrap();
            key.verify(message, &sig).expect("ES256 signature verifies");
        }
        -8 => {
            use ed25519_dalek::Verifier;
            let x: [u8; 32] = get(cose, -2)
                .unwrap()
                .as_bytes()
                .unwrap()
                .as_slice()
                .try_into()
                .unwrap();
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
            let sig = ed25519_dalek::Signature::from_slice(signature).unwrap();
            key.verify(message, &sig).expect("EdDSA signature verifies");
        }
        other => panic!("unexpected alg {other}"),
    }
}

/// A CTAP2 request: the command byte, then the CBOR body.
pub fn request(command: u8, body: Option<&Value>) -> Vec<u8> {
    let mut out = vec![command];
    if let Some(body) = body {
        ciborium::into_writer(body, &mut out).expect("CBOR encodes");
    }
    out
}

/// Decode a response body (after the status byte).
pub fn decode_body(body: &[u8]) -> Option<Value> {
    (!body.is_empty()).then(|| ciborium::from_reader(body).expect("the key answers valid CBOR"))
}

pub fn as_int(value: &Value) -> i64 {
    i64::try_from(value.as_integer().expect("an integer")).expect("fits i64")
}

/// Something that answers CTAP2 requests: the core directly (in its tests) or a key over
/// USB/IP. Test helpers written against it serve both.
pub trait Transport {
    /// Send a CTAP2 request (command byte, then CBOR); returns the status and the body.
    fn ctap2_raw(&mut self, request: &[u8]) -> (u8, Vec<u8>);
}

/// A CTAP2 command with a CBOR body; returns the status and the decoded body.
pub fn call(
    transport: &mut impl Transport,
    command: u8,
    body: Option<Value>,
) -> (u8, Option<Value>) {
    let (status, body) = transport.ctap2_raw(&request(command, body.as_ref()));
    (status, decode_body(&body))
}
