//! CTAP2 requests, two ways, chosen by the first byte of the input:
//!
//! - below 0x80, raw: any bytes after a command byte, split on 0xFE into up to 8 requests (a
//!   prefix of requests builds state for later ones), as the first byte of each picks one of the
//!   CTAP2 commands;
//! - from 0x80, structured: the input drives a small platform that sends up to 8 requests built
//!   as CBOR maps with each command's own keys, each present or not, plausible or of the wrong
//!   type. The platform can set a PIN and hold a pinUvAuthToken with every permission, so that
//!   pinUvAuthParams (and encrypted PINs, hmac-secret salts, large-blob fragments) are valid when
//!   the input asks for it, and requests reach past authentication into each command: it reuses
//!   credential IDs, RP ID hashes and key agreement keys from earlier answers.
//!
//! Either way the answer is a status byte, and a success carries valid CBOR.
#![no_main]

use authenticator::ctaphid::{App, Outcome, Transaction};
use authenticator::pin_protocol::{KeyAgreement, PinProtocol, SharedSecret};
use authenticator::Authenticator;
use authenticator_fuzz::{with_key, FuzzPlatform};
use std::collections::BTreeMap;

use ciborium::Value;
use libfuzzer_sys::arbitrary::{self, Unstructured};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};

const COMMANDS: [u8; 11] = [
    0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x41,
];
const PIN: &[u8] = b"1234";
const RPS: [&str; 4] = ["example.com", "other.example", "", "localhost"];

type Key<'a> = Authenticator<'a, FuzzPlatform>;

/// Send one request; check the answer's form; return status and body.
fn send(key: &mut Key<'_>, command: u8, body: &[u8]) -> (u8, Option<Value>) {
    let mut message = vec![command];
    message.extend_from_slice(body);
    let mut response = Vec::new();
    // Presence is granted at once: a request never waits here.
    assert_eq!(
        key.call(Transaction::Cbor, &message, &mut response),
        Outcome::Done
    );
    assert!(!response.is_empty(), "a status byte");
    let mut parsed = None;
    if response[0] == 0 && response.len() > 1 {
        let value: Result<Value, _> = ciborium::from_reader(&response[1..]);
        assert!(value.is_ok(), "success bodies are CBOR");
        parsed = value.ok();
    }
    (response[0], parsed)
}

fn raw(data: &[u8]) {
    with_key(|key| {
        for request in data.split(|&b| b == 0xFE).take(8) {
            let Some((&selector, body)) = request.split_first() else {
                continue;
            };
            send(key, COMMANDS[usize::from(selector) % COMMANDS.len()], body);
        }
    });
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

fn get(value: &Value, key: i64) -> Option<&Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_integer() == Some(key.into()))
        .map(|(_, v)| v)
}

fn get_text<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("CBOR encodes");
    out
}

/// Any CBOR value, a few levels deep.
fn junk(u: &mut Unstructured<'_>, depth: u8) -> arbitrary::Result<Value> {
    let kind = u.int_in_range(0..=if depth == 0 { 5 } else { 7u8 })?;
    Ok(match kind {
        0 => int(u.arbitrary()?),
        1 => Value::Bytes(u.arbitrary()?),
        2 => Value::Text(u.arbitrary()?),
        3 => Value::Bool(u.arbitrary()?),
        4 => Value::Null,
        5 => Value::Float(u.arbitrary()?),
        6 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| junk(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut entries = Vec::new();
            for _ in 0..n {
                let key = if u.arbitrary()? {
                    int(u.int_in_range(-4..=12)?)
                } else {
                    Value::Text(u.arbitrary()?)
                };
                entries.push((key, junk(u, depth - 1)?));
            }
            Value::Map(entries)
        }
    })
}

/// The platform: what it knows from earlier answers.
struct Platform {
    rng: rand_chacha::ChaCha20Rng,
    /// Our key agreement key, and the secret shared with the authenticator's current key.
    ours: KeyAgreement,
    shared: Option<SharedSecret>,
    token: Option<Vec<u8>>,
    ids: Vec<Vec<u8>>,
    /// Credentials made here, with their RP: what a getAssertion can find.
    made: Vec<(String, Vec<u8>)>,
    /// The RP of the last makeCredential sent.
    last_rp: String,
    rp_hashes: Vec<Vec<u8>>,
    user_ids: Vec<Vec<u8>>,
}

impl Platform {
    fn new(seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let ours = KeyAgreement::generate(&mut rng);
        Self {
            rng,
            ours,
            shared: None,
            token: None,
            ids: Vec::new(),
            made: Vec::new(),
            last_rp: String::new(),
            rp_hashes: Vec::new(),
            user_ids: Vec::new(),
        }
    }

    fn protocol(&self) -> PinProtocol {
        self.shared
            .as_ref()
            .map_or(PinProtocol::V2, |shared| shared.protocol)
    }

    fn protocol_number(&self) -> i64 {
        match self.protocol() {
            PinProtocol::V1 => 1,
            PinProtocol::V2 => 2,
        }
    }

    /// Our public key as COSE_Key.
    fn platform_key(&self) -> Value {
        let public = self.ours.public_key();
        Value::Map(vec![
            (int(1), int(2)),
            (int(3), int(-25)),
            (int(-1), int(1)),
            (int(-2), bytes(&public.x)),
            (int(-3), bytes(&public.y)),
        ])
    }

    /// Learn the authenticator's key agreement key from a getKeyAgreement answer.
    fn agree(&mut self, protocol: PinProtocol, body: &Value) {
        let Some(cose) = get(body, 1) else { return };
        let (Some(x), Some(y)) = (
            get(cose, -2).and_then(Value::as_bytes),
            get(cose, -3).and_then(Value::as_bytes),
        ) else {
            return;
        };
        let (Ok(x), Ok(y)) = (x.as_slice().try_into(), y.as_slice().try_into()) else {
            return;
        };
        let peer = cosey::EcdhEsHkdf256PublicKey { x, y };
        self.shared = self.ours.shared_secret(protocol, &peer);
    }

    fn key_agreement(&mut self, key: &mut Key<'_>, protocol: PinProtocol) {
        let number = if protocol == PinProtocol::V1 { 1 } else { 2 };
        let request = Value::Map(vec![(int(1), int(number)), (int(2), int(2))]);
        if let (0, Some(body)) = send(key, 0x06, &encode(&request)) {
            self.agree(protocol, &body);
        }
    }

    fn encrypt(&mut self, plain: &[u8]) -> Vec<u8> {
        match &self.shared {
            Some(shared) => shared
                .encrypt(plain, &mut self.rng)
                .expect("the fuzzer's heap is not full"),
            None => plain.to_vec(),
        }
    }

    /// authenticate(key, message), cut to the protocol's length. Keys are 32 bytes (a token
    /// the key gave, a shared secret's HMAC key); any other length makes a param the key
    /// refuses.
    fn mac(&self, key: &[u8], message: &[u8]) -> Vec<u8> {
        let protocol = self.protocol();
        match <&[u8; 32]>::try_from(key) {
            Ok(key) => protocol.authenticate(key, &[message])[..protocol.mac_len()].to_vec(),
            Err(_) => vec![0; protocol.mac_len()],
        }
    }

    fn shared_mac(&self, message: &[u8]) -> Vec<u8> {
        match &self.shared {
            Some(shared) => self.mac(shared.mac_key(), message),
            None => vec![0; 32],
        }
    }

    /// A pinUvAuthParam for `message`: valid (under the token), garbage, or empty.
    fn auth_param(&self, u: &mut Unstructured<'_>, message: &[u8]) -> arbitrary::Result<Value> {
        Ok(match (u.int_in_range(0..=3u8)?, &self.token) {
            (0 | 1, Some(token)) => bytes(&self.mac(token, message)),
            (2, _) => bytes(&[]),
            _ => Value::Bytes(u.arbitrary()?),
        })
    }

    /// Set the PIN and take a token with every permission, bound to `rp` if given.
    fn login(&mut self, key: &mut Key<'_>, protocol: PinProtocol, rp: Option<&str>) {
        self.key_agreement(key, protocol);
        let mut padded = PIN.to_vec();
        padded.resize(64, 0);
        let new_pin_enc = self.encrypt(&padded);
        let set = Value::Map(vec![
            (int(1), int(self.protocol_number())),
            (int(2), int(3)),
            (int(3), self.platform_key()),
            (int(4), bytes(&self.shared_mac(&new_pin_enc))),
            (int(5), bytes(&new_pin_enc)),
        ]);
        send(key, 0x06, &encode(&set));
        // mc, ga, cm, lbw, acfg: every permission this key grants.
        self.get_token(key, 0x37, rp);
    }

    fn get_token(&mut self, key: &mut Key<'_>, permissions: i64, rp: Option<&str>) {
        let pin_hash_enc = self.encrypt(&Sha256::digest(PIN)[..16]);
        let mut request = vec![
            (int(1), int(self.protocol_number())),
            (int(2), int(9)),
            (int(3), self.platform_key()),
            (int(6), bytes(&pin_hash_enc)),
            (int(9), int(permissions)),
        ];
        if let Some(rp) = rp {
            request.push((int(10), text(rp)));
        }
        if let (0, Some(body)) = send(key, 0x06, &encode(&Value::Map(request))) {
            let token = get(&body, 2).and_then(Value::as_bytes);
            if let (Some(token), Some(shared)) = (token, &self.shared) {
                self.token = shared.decrypt(token).ok().flatten().map(|t| t.to_vec());
            }
        }
    }

    /// Remember what an answer tells a platform.
    fn learn(&mut self, command: u8, sub: Option<i64>, body: &Value) {
        match command {
            0x01 => {
                let Some(auth_data) = get(body, 2).and_then(Value::as_bytes) else {
                    return;
                };
                if auth_data.len() > 55 {
                    let len = usize::from(u16::from_be_bytes([auth_data[53], auth_data[54]]));
                    if let Some(id) = auth_data.get(55..55 + len) {
                        self.ids.push(id.to_vec());
                        self.made.push((self.last_rp.clone(), id.to_vec()));
                    }
                }
            }
            0x02 | 0x08 | 0x0A | 0x41 => {
                if let Some(id) = get(body, 1)
                    .or_else(|| get(body, 7))
                    .and_then(|c| get_text(c, "id"))
                    .and_then(Value::as_bytes)
                {
                    self.ids.push(id.clone());
                }
                if let Some(hash) = get(body, 4).and_then(Value::as_bytes) {
                    self.rp_hashes.push(hash.clone());
                }
                if let Some(user) = get(
                    body,
                    if command == 0x02 || command == 0x08 {
                        4
                    } else {
                        6
                    },
                )
                .and_then(|u| get_text(u, "id"))
                .and_then(Value::as_bytes)
                {
                    self.user_ids.push(user.clone());
                }
            }
            0x06 if sub == Some(2) => {
                let protocol = self.protocol();
                self.agree(protocol, body);
            }
            0x06 if matches!(sub, Some(5 | 9)) => {
                let token = get(body, 2).and_then(Value::as_bytes);
                if let (Some(token), Some(shared)) = (token, &self.shared) {
                    self.token = shared.decrypt(token).ok().flatten().map(|t| t.to_vec());
                }
            }
            _ => {}
        }
        for list in [&mut self.ids, &mut self.rp_hashes, &mut self.user_ids] {
            if list.len() > 16 {
                list.remove(0);
            }
        }
    }

    fn pick<'l>(
        &self,
        u: &mut Unstructured<'_>,
        list: &'l [Vec<u8>],
    ) -> arbitrary::Result<Option<&'l [u8]>> {
        if list.is_empty() {
            return Ok(None);
        }
        Ok(Some(&list[u.choose_index(list.len())?]))
    }

    fn rp_id(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
        Ok(match u.int_in_range(0..=5u8)? {
            i @ 0..=3 => RPS[usize::from(i)].to_string(),
            4 => "r".repeat(u.int_in_range(200..=300)?),
            _ => u.arbitrary()?,
        })
    }

    fn credential_descriptor(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
        let id = match self.pick(u, &self.ids)? {
            Some(id) if u.arbitrary()? => id.to_vec(),
            _ => u.arbitrary()?,
        };
        let mut entries = vec![(text("id"), bytes(&id))];
        if u.arbitrary()? {
            entries.push((text("type"), text("public-key")));
        }
        if u.ratio(1, 8)? {
            entries.push((text("transports"), junk(u, 1)?));
        }
        Ok(Value::Map(entries))
    }

    fn credential_list(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
        let n = u.int_in_range(0..=4)?;
        Ok(Value::Array(
            (0..n)
                .map(|_| self.credential_descriptor(u))
                .collect::<Result<_, _>>()?,
        ))
    }

    fn user(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
        let id = match self.pick(u, &self.user_ids)? {
            Some(id) if u.arbitrary()? => id.to_vec(),
            _ => {
                let len = u.int_in_range(0..=70)?;
                vec![u.arbitrary::<u8>()?; len]
            }
        };
        let mut entries = vec![(text("id"), bytes(&id))];
        for field in ["name", "displayName", "icon"] {
            if u.arbitrary()? {
                entries.push((text(field), Value::Text(u.arbitrary()?)));
            }
        }
        Ok(Value::Map(entries))
    }

    fn hmac_secret_input(&mut self, u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
        let salts = vec![u.arbitrary::<u8>()?; if u.arbitrary()? { 32 } else { 64 }];
        let salt_enc = self.encrypt(&salts);
        let salt_auth = if u.arbitrary()? {
            self.shared_mac(&salt_enc)
        } else {
            u.arbitrary()?
        };
        let mut entries = vec![
            (int(1), self.platform_key()),
            (int(2), bytes(&salt_enc)),
            (int(3), bytes(&salt_auth)),
        ];
        if u.arbitrary()? {
            entries.push((int(4), int(self.protocol_number())));
        }
        Ok(Value::Map(entries))
    }

    fn extensions(&mut self, u: &mut Unstructured<'_>, make: bool) -> arbitrary::Result<Value> {
        let mut entries = Vec::new();
        if u.arbitrary()? {
            entries.push((text("credProtect"), int(u.int_in_range(0..=4)?)));
        }
        if u.arbitrary()? {
            let value = if make {
                Value::Bool(u.arbitrary()?)
            } else {
                self.hmac_secret_input(u)?
            };
            entries.push((text("hmac-secret"), value));
        }
        if u.arbitrary()? {
            let value = if make {
                Value::Bytes(u.arbitrary()?)
            } else {
                Value::Bool(u.arbitrary()?)
            };
            entries.push((text("credBlob"), value));
        }
        for name in ["largeBlobKey", "minPinLength"] {
            if u.arbitrary()? {
                entries.push((text(name), Value::Bool(u.arbitrary()?)));
            }
        }
        if u.ratio(1, 8)? {
            entries.push((Value::Text(u.arbitrary()?), junk(u, 1)?));
        }
        Ok(Value::Map(entries))
    }

    fn options(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
        let mut entries = Vec::new();
        for name in ["rk", "up", "uv"] {
            if u.ratio(1, 3)? {
                entries.push((text(name), Value::Bool(u.arbitrary()?)));
            }
        }
        Ok(Value::Map(entries))
    }

    /// Build one request: the command byte and its CBOR body (empty for no parameters).
    fn request(
        &mut self,
        u: &mut Unstructured<'_>,
    ) -> arbitrary::Result<(u8, Option<i64>, Vec<u8>)> {
        let command = COMMANDS[u.choose_index(COMMANDS.len())?];
        let mut entries: Vec<(Value, Value)> = Vec::new();
        let mut sub = None;
        match command {
            0x01 | 0x02 => {
                let cdh: [u8; 32] = u.arbitrary()?;
                let cdh_value = if u.ratio(1, 16)? {
                    Value::Bytes(u.arbitrary()?)
                } else {
                    bytes(&cdh)
                };
                entries.push((int(1), cdh_value));
                // Half the assertions go to an RP we made a credential for.
                let known = match self.made.len() {
                    0 => None,
                    n if command == 0x02 && u.arbitrary()? => {
                        Some(self.made[u.choose_index(n)?].clone())
                    }
                    _ => None,
                };
                let rp = match &known {
                    Some((rp, _)) => rp.clone(),
                    None => self.rp_id(u)?,
                };
                if command == 0x01 {
                    self.last_rp = rp.clone();
                    entries.push((int(2), Value::Map(vec![(text("id"), text(&rp))])));
                    entries.push((int(3), self.user(u)?));
                    let n = u.int_in_range(0..=3)?;
                    let mut params = Vec::new();
                    for _ in 0..n {
                        let alg = match u.int_in_range(0..=3u8)? {
                            0 => -7,
                            1 => -8,
                            2 => -257,
                            _ => u.arbitrary()?,
                        };
                        let kind = if u.ratio(1, 8)? {
                            "other"
                        } else {
                            "public-key"
                        };
                        params.push(Value::Map(vec![
                            (text("alg"), int(alg)),
                            (text("type"), text(kind)),
                        ]));
                    }
                    entries.push((int(4), Value::Array(params)));
                    if u.arbitrary()? {
                        entries.push((int(5), self.credential_list(u)?));
                    }
                } else {
                    entries.insert(0, (int(1), text(&rp)));
                    entries[1].0 = int(2);
                    if let Some((_, id)) = &known {
                        let descriptor = Value::Map(vec![
                            (text("id"), bytes(id)),
                            (text("type"), text("public-key")),
                        ]);
                        entries.push((int(3), Value::Array(vec![descriptor])));
                    } else if u.arbitrary()? {
                        entries.push((int(3), self.credential_list(u)?));
                    }
                }
                if u.arbitrary()? {
                    let extensions = self.extensions(u, command == 0x01)?;
                    entries.push((int(if command == 0x01 { 6 } else { 4 }), extensions));
                }
                if u.arbitrary()? {
                    entries.push((int(if command == 0x01 { 7 } else { 5 }), self.options(u)?));
                }
                if u.arbitrary()? {
                    let param = self.auth_param(u, &cdh)?;
                    entries.push((int(if command == 0x01 { 8 } else { 6 }), param));
                    entries.push((
                        int(if command == 0x01 { 9 } else { 7 }),
                        int(self.protocol_number()),
                    ));
                }
                if command == 0x01 && u.ratio(1, 8)? {
                    entries.push((int(10), int(u.int_in_range(0..=3)?)));
                }
            }
            0x06 => {
                let subcommand = u.int_in_range(1..=10)?;
                sub = Some(subcommand);
                let protocol = if u.ratio(1, 16)? {
                    u.int_in_range(0..=3)?
                } else {
                    self.protocol_number()
                };
                entries.push((int(1), int(protocol)));
                entries.push((int(2), int(subcommand)));
                if subcommand >= 3 && u.ratio(7, 8)? {
                    entries.push((int(3), self.platform_key()));
                }
                let mut pin = PIN.to_vec();
                if u.ratio(1, 3)? {
                    pin = u.arbitrary()?;
                }
                match subcommand {
                    3 | 4 => {
                        let mut padded = pin.clone();
                        padded.resize(if u.ratio(1, 8)? { 32 } else { 64 }, 0);
                        let new_pin_enc = self.encrypt(&padded);
                        let mut message = new_pin_enc.clone();
                        if subcommand == 4 {
                            let pin_hash_enc = self.encrypt(&Sha256::digest(PIN)[..16]);
                            message.extend_from_slice(&pin_hash_enc);
                            entries.push((int(6), bytes(&pin_hash_enc)));
                        }
                        let auth = if u.ratio(3, 4)? {
                            self.shared_mac(&message)
                        } else {
                            u.arbitrary()?
                        };
                        entries.push((int(4), bytes(&auth)));
                        entries.push((int(5), bytes(&new_pin_enc)));
                    }
                    5 | 9 => {
                        let pin_hash_enc = self.encrypt(&Sha256::digest(&pin)[..16]);
                        entries.push((int(6), bytes(&pin_hash_enc)));
                        if subcommand == 9 || u.ratio(1, 8)? {
                            entries.push((int(9), int(u.int_in_range(0..=0x40)?)));
                        }
                        if u.arbitrary()? {
                            entries.push((int(10), text(&self.rp_id(u)?)));
                        }
                    }
                    6 => {
                        entries.push((int(9), int(u.int_in_range(0..=0x40)?)));
                    }
                    _ => {}
                }
            }
            0x0A | 0x41 => {
                let subcommand = u.int_in_range(1..=7)?;
                sub = Some(subcommand);
                entries.push((int(1), int(subcommand)));
                let mut params = Vec::new();
                match subcommand {
                    4 => {
                        let hash = match self.pick(u, &self.rp_hashes)? {
                            Some(hash) if u.arbitrary()? => hash.to_vec(),
                            _ => Sha256::digest(self.rp_id(u)?.as_bytes()).to_vec(),
                        };
                        params.push((int(1), bytes(&hash)));
                    }
                    6 => params.push((int(2), self.credential_descriptor(u)?)),
                    7 => {
                        params.push((int(2), self.credential_descriptor(u)?));
                        params.push((int(3), self.user(u)?));
                    }
                    _ => {}
                }
                let mut message = vec![subcommand as u8];
                if !params.is_empty() {
                    let params = Value::Map(params);
                    message.extend_from_slice(&encode(&params));
                    entries.push((int(2), params));
                }
                // Only the begin and single-shot subcommands are authenticated.
                if !matches!(subcommand, 3 | 5) || u.ratio(1, 8)? {
                    entries.push((int(3), int(self.protocol_number())));
                    entries.push((int(4), self.auth_param(u, &message)?));
                }
            }
            0x0C => {
                let offset = if u.arbitrary()? {
                    0
                } else {
                    u.int_in_range(0..=1100u32)?
                };
                if u.arbitrary()? {
                    entries.push((int(1), int(u.int_in_range(0..=2000)?)));
                } else {
                    let set: Vec<u8> = if u.arbitrary()? {
                        // A whole, valid array: CBOR [] of junk, and its digest.
                        let mut array = encode(&Value::Array(vec![junk(u, 1)?]));
                        let digest = Sha256::digest(&array);
                        array.extend_from_slice(&digest[..16]);
                        array
                    } else {
                        u.arbitrary()?
                    };
                    entries.push((int(2), bytes(&set)));
                    if offset == 0 || u.ratio(1, 8)? {
                        entries.push((int(4), int(set.len() as i64 + u.int_in_range(0..=2)?)));
                    }
                    let mut message = vec![0xff; 32];
                    message.extend_from_slice(&[0x0c, 0x00]);
                    message.extend_from_slice(&offset.to_le_bytes());
                    message.extend_from_slice(&Sha256::digest(&set));
                    entries.push((int(5), self.auth_param(u, &message)?));
                    entries.push((int(6), int(self.protocol_number())));
                }
                entries.push((int(3), int(offset.into())));
            }
            0x0D => {
                let subcommand = u.int_in_range(1..=4)?;
                sub = Some(subcommand);
                entries.push((int(1), int(subcommand)));
                let mut message = vec![0xff; 32];
                message.extend_from_slice(&[0x0d, subcommand as u8]);
                if subcommand == 3 {
                    let mut params = Vec::new();
                    if u.arbitrary()? {
                        params.push((int(1), int(u.int_in_range(0..=70)?)));
                    }
                    if u.arbitrary()? {
                        let n = u.int_in_range(0..=5)?;
                        let rps = (0..n)
                            .map(|_| self.rp_id(u).map(|rp| text(&rp)))
                            .collect::<Result<_, _>>()?;
                        params.push((int(2), Value::Array(rps)));
                    }
                    if u.arbitrary()? {
                        params.push((int(3), Value::Bool(u.arbitrary()?)));
                    }
                    let params = Value::Map(params);
                    message.extend_from_slice(&encode(&params));
                    entries.push((int(2), params));
                }
                entries.push((int(3), int(self.protocol_number())));
                entries.push((int(4), self.auth_param(u, &message)?));
            }
            _ => {
                // getInfo, reset, getNextAssertion, selection: no parameters, or junk.
                if u.ratio(1, 8)? {
                    return Ok((command, None, encode(&junk(u, 2)?)));
                }
                return Ok((command, None, Vec::new()));
            }
        }
        // Now and then: drop a key, or give one the wrong type.
        if !entries.is_empty() && u.ratio(1, 6)? {
            let i = u.choose_index(entries.len())?;
            if u.arbitrary()? {
                entries.remove(i);
            } else {
                entries[i].1 = junk(u, 1)?;
            }
        }
        Ok((command, sub, encode(&Value::Map(entries))))
    }
}

/// Requests counted, and how many got each (command, subcommand, status).
type Stats = (u64, BTreeMap<(u8, i64, u8), u64>);

static STATS: std::sync::Mutex<Stats> = std::sync::Mutex::new((0, BTreeMap::new()));

/// With `FUZZ_CTAP2_STATS=1`: how often each structured command (and subcommand) got each
/// status, printed now and then, to see how deep the requests reach.
fn count(command: u8, sub: Option<i64>, status: u8) {
    if std::env::var_os("FUZZ_CTAP2_STATS").is_none() {
        return;
    }
    let mut stats = STATS.lock().unwrap_or_else(|p| p.into_inner());
    stats.0 += 1;
    *stats
        .1
        .entry((command, sub.unwrap_or(0), status))
        .or_default() += 1;
    if stats.0.is_power_of_two() {
        let lines: Vec<String> = stats
            .1
            .iter()
            .map(|((c, s, st), n)| format!("{c:#04x}/{s} -> {st:#04x}: {n}"))
            .collect();
        eprintln!(
            "ctap2 statuses after {} requests: {}",
            stats.0,
            lines.join("; ")
        );
    }
}

fn structured(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let setup = u.int_in_range(0..=3u8)?;
    let protocol = if u.arbitrary()? {
        PinProtocol::V1
    } else {
        PinProtocol::V2
    };
    let mut result = Ok(());
    with_key(|key| {
        let mut platform = Platform::new(2);
        match setup {
            0 => {}
            1 => platform.key_agreement(key, protocol),
            // A token for one RP, or (as credential management's listings need) for none.
            2 => platform.login(key, protocol, Some(RPS[0])),
            _ => platform.login(key, protocol, None),
        }
        result = (|| {
            for _ in 0..8 {
                if u.is_empty() {
                    break;
                }
                let (command, sub, body) = platform.request(&mut u)?;
                if u.ratio(1, 16)? {
                    // Time passes: tokens and presence expire.
                    key.platform().now_ms += u.int_in_range(1..=700_000u64)?;
                }
                let (status, answer) = send(key, command, &body);
                count(command, sub, status);
                if let (0, Some(answer)) = (status, answer) {
                    platform.learn(command, sub, &answer);
                }
            }
            Ok(())
        })();
    });
    result
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&mode, rest)) if mode >= 0x80 => {
            let _ = structured(rest);
        }
        _ => raw(data),
    }
});
