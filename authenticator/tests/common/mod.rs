//! A test body for the core: RAM storage, a scripted clock and presence, CBOR helpers.
#![allow(dead_code)]

use std::cell::Cell;
use std::rc::Rc;

use authenticator::ctaphid::{App, Outcome, Transaction};
use authenticator::platform::{Indicator, Platform, Presence};
use authenticator::{Authenticator, Config};
use ciborium::Value;
use littlefs2::consts;
use littlefs2::fs::Allocation;
use rand_chacha::rand_core::SeedableRng;

pub const BLOCK: usize = 4096;
pub const BLOCKS: usize = 64;

/// A littlefs2 block device of `N` blocks in RAM.
pub struct RamStorageOf<const N: usize>(pub Vec<u8>);

/// The usual test device: 64 blocks of 4 KiB.
pub type RamStorage = RamStorageOf<BLOCKS>;

impl<const N: usize> Default for RamStorageOf<N> {
    fn default() -> Self {
        Self(vec![0xff; BLOCK * N])
    }
}

impl<const N: usize> littlefs2::driver::Storage for RamStorageOf<N> {
    const READ_SIZE: usize = 16;
    const WRITE_SIZE: usize = 16;
    const BLOCK_SIZE: usize = BLOCK;
    const BLOCK_COUNT: usize = N;
    const BLOCK_CYCLES: isize = 100;
    type CACHE_SIZE = consts::U256;
    type LOOKAHEAD_SIZE = consts::U2;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        buf.copy_from_slice(&self.0[off..off + buf.len()]);
        Ok(buf.len())
    }
    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        self.0[off..off + data.len()].copy_from_slice(data);
        Ok(data.len())
    }
    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        self.0[off..off + len].fill(0xff);
        Ok(len)
    }
}

/// Shared knobs of the test platform.
#[derive(Clone)]
pub struct Knobs {
    pub now_ms: Rc<Cell<u64>>,
    pub presence: Rc<Cell<Presence>>,
    pub prompts: Rc<Cell<u32>>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            now_ms: Rc::new(Cell::new(0)),
            presence: Rc::new(Cell::new(Presence::Granted)),
            prompts: Rc::new(Cell::new(0)),
        }
    }
}

pub struct TestPlatform<S = RamStorage> {
    rng: rand_chacha::ChaCha20Rng,
    knobs: Knobs,
    storage: std::marker::PhantomData<S>,
}

impl<S: littlefs2::driver::Storage> Platform for TestPlatform<S> {
    type Rng = rand_chacha::ChaCha20Rng;
    type Storage = S;
    fn rng(&mut self) -> &mut Self::Rng {
        &mut self.rng
    }
    fn now_ms(&self) -> u64 {
        self.knobs.now_ms.get()
    }
    fn start_presence(&mut self) {
        self.knobs.prompts.set(self.knobs.prompts.get() + 1);
    }
    fn poll_presence(&mut self) -> Presence {
        self.knobs.presence.get()
    }
    fn stop_presence(&mut self) {}
    fn indicate(&mut self, _indicator: Indicator) {}
}

pub const AAGUID: [u8; 16] = *b"test-aaguid-0001";

/// Run `f` with an authenticator on `storage` (mounted, formatted if blank).
pub fn with_key<S: littlefs2::driver::Storage, R>(
    storage: &mut S,
    knobs: &Knobs,
    seed: u64,
    f: impl FnOnce(&mut Authenticator<'_, TestPlatform<S>>) -> R,
) -> R {
    let mut alloc = Allocation::new();
    let fs = authenticator::store::mount(&mut alloc, storage).expect("mount");
    let platform = TestPlatform {
        rng: rand_chacha::ChaCha20Rng::seed_from_u64(seed),
        knobs: knobs.clone(),
        storage: std::marker::PhantomData,
    };
    let mut key = Authenticator::new(
        platform,
        fs,
        Config {
            aaguid: AAGUID,
            firmware_version: 1,
        },
    );
    f(&mut key)
}

/// Send a CTAP2 command; returns (status, decoded body).
pub fn ctap2(key: &mut impl App, command: u8, body: Option<Value>) -> (u8, Option<Value>) {
    let mut request = vec![command];
    if let Some(body) = body {
        ciborium::into_writer(&body, &mut request).unwrap();
    }
    ctap2_raw(key, &request)
}

pub fn ctap2_raw(key: &mut impl App, request: &[u8]) -> (u8, Option<Value>) {
    let mut response = Vec::new();
    assert_eq!(
        key.call(Transaction::Cbor, request, &mut response),
        Outcome::Done
    );
    decode(&response)
}

pub fn decode(response: &[u8]) -> (u8, Option<Value>) {
    let status = response[0];
    let body = if response.len() > 1 {
        Some(ciborium::from_reader(&response[1..]).expect("valid CBOR"))
    } else {
        None
    };
    (status, body)
}

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
    pub raw: Vec<u8>,
}

pub fn parse_auth_data(raw: &[u8]) -> AuthData {
    let rp_id_hash = raw[..32].try_into().unwrap();
    let flags = raw[32];
    let counter = u32::from_be_bytes(raw[33..37].try_into().unwrap());
    let (credential_id, public_key) = if flags & 0x40 != 0 {
        let len = u16::from_be_bytes([raw[53], raw[54]]) as usize;
        let id = raw[55..55 + len].to_vec();
        let key: Value = ciborium::from_reader(&raw[55 + len..]).unwrap();
        (id, Some(key))
    } else {
        (Vec::new(), None)
    };
    AuthData {
        rp_id_hash,
        flags,
        counter,
        credential_id,
        public_key,
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
pub mod pin_client;
