//! Power cuts at every flash operation of a second scripted session (reset, U2F, a counter
//! reservation used up within one boot); `power_cut.rs` covers PIN, deletion and large blobs.
//!
//! [`CutStorage`] is a littlefs2 block device in RAM that counts program and erase operations
//! and, when armed with N, loses power at the Nth: that operation fails (optionally after a
//! prefix of it reached the image: a torn write or a partly-erased block) and so does every
//! later operation. The session ([`SCRIPT`]) is replayed once without a cut to count the
//! operations, then once per cut point and tear mode. After each cut the image is remounted and
//! the invariants are checked against what the host saw acknowledged before the cut:
//!
//! - the filesystem mounts (without formatting);
//! - a new signature counter is strictly greater than every counter seen before;
//! - every credential whose registration was acknowledged still signs, non-discoverable ones
//!   through an allow list (or U2F authenticate) and discoverable ones through getAssertion
//!   without an allow list;
//! - every discoverable credential listed is one we registered (or were registering when power
//!   went) and signs with its registered key; an unacknowledged one may be absent;
//! - nothing panics.
//!
//! The session also uses up one counter reservation within a boot ([`Step::AssertRepeatedly`]).
//! New steps (PIN changes, deletions, large blobs) are new [`Step`] variants plus their effect
//! on [`Expected`].

use std::panic::{catch_unwind, AssertUnwindSafe};

use authenticator::ctaphid::{App, Outcome, Transaction};
use authenticator::platform::{Indicator, Platform, PresenceAnswer, Touch};
use authenticator::store::vault::RamVault;
use authenticator::{Authenticator, Config};
use ciborium::Value;
use littlefs2::consts;
use littlefs2::fs::{Allocation, Filesystem};
use p256::ecdsa::signature::Verifier;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use test_support::{
    get, get_assertion_request, get_text, make_credential_request, parse_auth_data, verify, AAGUID,
};

const BLOCK: usize = 4096;
const BLOCKS: usize = 32;

const MAKE_CREDENTIAL: u8 = 0x01;
const GET_ASSERTION: u8 = 0x02;
const RESET: u8 = 0x07;
const GET_NEXT_ASSERTION: u8 = 0x08;
const CTAP2_ERR_NO_CREDENTIALS: u8 = 0x2E;
const SW_NO_ERROR: u16 = 0x9000;

/// How the Nth operation fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Nothing of the operation reaches the image.
    Clean,
    /// Half of a write reaches the image; half of an erased range is erased.
    Torn,
}

/// The state: the partition's bytes and the vault's.
type Image = (Vec<u8>, RamVault);

/// A RAM block device (and vault) that loses power at a chosen program/erase operation.
struct CutStorage {
    image: Vec<u8>,
    vault: RamVault,
    /// Program and erase operations so far.
    ops: usize,
    /// Lose power at this operation (1-based).
    cut_at: Option<(usize, Cut)>,
    dead: bool,
}

impl CutStorage {
    fn new((image, vault): Image) -> Self {
        Self {
            image,
            vault,
            ops: 0,
            cut_at: None,
            dead: false,
        }
    }

    /// Count one program/erase operation; true if power is lost at it (or already was).
    fn power_lost(&mut self) -> Option<Cut> {
        if self.dead {
            return Some(Cut::Clean);
        }
        self.ops += 1;
        match self.cut_at {
            Some((n, cut)) if n == self.ops => {
                self.dead = true;
                Some(cut)
            }
            _ => None,
        }
    }
}

impl littlefs2::driver::Storage for CutStorage {
    const READ_SIZE: usize = 16;
    const WRITE_SIZE: usize = 16;
    const BLOCK_SIZE: usize = BLOCK;
    const BLOCK_COUNT: usize = BLOCKS;
    const BLOCK_CYCLES: isize = 100;
    type CACHE_SIZE = consts::U256;
    type LOOKAHEAD_SIZE = consts::U2;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        if self.dead {
            return Err(littlefs2::io::Error::IO);
        }
        buf.copy_from_slice(&self.image[off..off + buf.len()]);
        Ok(buf.len())
    }

    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        let reached = match self.power_lost() {
            None => data.len(),
            Some(Cut::Torn) => data.len() / 2,
            Some(Cut::Clean) => 0,
        };
        self.image[off..off + reached].copy_from_slice(&data[..reached]);
        if reached < data.len() {
            return Err(littlefs2::io::Error::IO);
        }
        Ok(data.len())
    }

    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        let reached = match self.power_lost() {
            None => len,
            Some(Cut::Torn) => len / 2,
            Some(Cut::Clean) => 0,
        };
        self.image[off..off + reached].fill(0xff);
        if reached < len {
            return Err(littlefs2::io::Error::IO);
        }
        Ok(len)
    }
}

/// The vault loses power like the partition: its programs and erases are counted and cut too.
impl authenticator::platform::Vault for CutStorage {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        if self.dead {
            return Err(littlefs2::io::Error::IO);
        }
        self.vault.read(offset, buf)
    }

    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        match self.power_lost() {
            None => self.vault.program(offset, data),
            Some(cut) => {
                if cut == Cut::Torn {
                    let half = data.len() / 2 / 256 * 256;
                    self.vault.program(offset, &data[..half])?;
                }
                Err(littlefs2::io::Error::IO)
            }
        }
    }

    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        match self.power_lost() {
            None => self.vault.erase(offset),
            Some(cut) => {
                if cut == Cut::Torn {
                    self.vault
                        .erase_part(offset, authenticator::platform::VAULT_SLOT_SIZE / 2)?;
                }
                Err(littlefs2::io::Error::IO)
            }
        }
    }
}

struct CutPlatform {
    rng: rand_chacha::ChaCha20Rng,
}

impl Platform for CutPlatform {
    type Rng = rand_chacha::ChaCha20Rng;
    type Storage = CutStorage;
    fn rng(&mut self) -> &mut Self::Rng {
        &mut self.rng
    }
    fn now_ms(&self) -> u64 {
        0
    }
    fn start_presence(&mut self, _touch: Touch) {}
    fn poll_presence(&mut self) -> PresenceAnswer {
        PresenceAnswer::Granted
    }
    fn stop_presence(&mut self) {}
    fn indicate(&mut self, _indicator: Indicator) {}
}

/// Boot the key on `storage` (which must already hold a filesystem) and run `f`.
fn with_key<R>(
    storage: &mut CutStorage,
    seed: u64,
    f: impl FnOnce(&mut Authenticator<'_, CutPlatform>) -> R,
) -> R {
    let mut alloc = Allocation::new();
    let fs = Filesystem::mount(&mut alloc, storage).expect("the image mounts");
    let platform = CutPlatform {
        rng: rand_chacha::ChaCha20Rng::seed_from_u64(seed),
    };
    let config = Config {
        aaguid: AAGUID,
        firmware_version: 1,
        pin_kdf: test_support::TEST_KDF,
    };
    f(&mut Authenticator::new(platform, fs, config))
}

/// A formatted image, as the key leaves the factory (or its first boot).
fn blank_image() -> Image {
    let mut storage = CutStorage::new((vec![0xff; BLOCK * BLOCKS], RamVault::default()));
    Filesystem::format(&mut storage).expect("format");
    (storage.image, storage.vault)
}

// ---------------------------------------------------------------------------------------------
// The scripted session.

/// One host action. Credentials are named by labels so later steps can refer to them.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// CTAP2 makeCredential (ES256) for `rp` and `user`, discoverable or not.
    Register {
        label: &'static str,
        rp: &'static str,
        user: &'static [u8],
        rk: bool,
    },
    /// CTAP2 getAssertion with the credential in the allow list.
    Assert { label: &'static str },
    /// As many getAssertions, enough to use up a counter reservation within one boot.
    AssertRepeatedly { label: &'static str, times: usize },
    /// CTAP2 getAssertion without an allow list (discoverable credentials of `rp`).
    AssertDiscoverable { rp: &'static str },
    /// U2F register for the application `app` (a byte repeated into the appId hash).
    U2fRegister { label: &'static str, app: u8 },
    /// U2F authenticate with enforced presence.
    U2fAuthenticate { label: &'static str },
    /// authenticatorReset: every credential made before is gone.
    Reset,
}

const SCRIPT: &[Step] = &[
    Step::Register {
        label: "a",
        rp: "example.com",
        user: b"alice",
        rk: false,
    },
    Step::Register {
        label: "b",
        rp: "example.com",
        user: b"bob",
        rk: true,
    },
    Step::Assert { label: "a" },
    Step::AssertDiscoverable { rp: "example.com" },
    Step::U2fRegister { label: "u", app: 1 },
    Step::U2fAuthenticate { label: "u" },
    Step::Reset,
    Step::Register {
        label: "c",
        rp: "example.org",
        user: b"carol",
        rk: true,
    },
    Step::Register {
        label: "d",
        rp: "example.org",
        user: b"dave",
        rk: true,
    },
    Step::Register {
        label: "e",
        rp: "example.net",
        user: b"erin",
        rk: false,
    },
    Step::AssertDiscoverable { rp: "example.org" },
    Step::Assert { label: "e" },
    Step::U2fRegister { label: "v", app: 2 },
    Step::U2fAuthenticate { label: "v" },
    Step::Assert { label: "c" },
    Step::AssertRepeatedly {
        label: "e",
        times: authenticator::store::COUNTER_STEP as usize,
    },
];

/// How to verify a credential's signatures.
#[derive(Clone, Debug)]
enum PublicKey {
    Cose(Value),
    U2f(p256::ecdsa::VerifyingKey),
}

/// Is the credential there for sure, or only perhaps (its registration, or a reset after it,
/// was cut short)?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Certainty {
    Must,
    May,
}

#[derive(Clone, Debug)]
struct Known {
    label: &'static str,
    /// The RP ID (CTAP2) or the appId hash's repeated byte (U2F, as "u2f:<n>").
    rp: String,
    user: Vec<u8>,
    rk: bool,
    id: Vec<u8>,
    public_key: PublicKey,
    certainty: Certainty,
}

/// What the host was told before the cut.
#[derive(Default, Debug)]
struct Expected {
    credentials: Vec<Known>,
    /// Registrations that did not complete: (rp, user). A discoverable one may exist now.
    unfinished: Vec<(String, Vec<u8>)>,
    /// The largest signature counter the host has seen.
    max_counter: u32,
    /// Steps that failed (only allowed once power is lost).
    failed_steps: usize,
}

impl Expected {
    fn saw_counter(&mut self, counter: u32, context: &str) {
        assert!(
            counter > self.max_counter || (counter == 0 && self.max_counter == 0),
            "{context}: counter {counter} after {}",
            self.max_counter
        );
        self.max_counter = counter;
    }

    fn find(&self, label: &str) -> Option<&Known> {
        self.credentials.iter().find(|c| c.label == label)
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn u2f_app(app: u8) -> [u8; 32] {
    [app; 32]
}

fn ctap2(key: &mut impl App, command: u8, body: Option<Value>) -> (u8, Option<Value>) {
    let mut request = vec![command];
    if let Some(body) = body {
        ciborium::into_writer(&body, &mut request).unwrap();
    }
    let mut response = Vec::new();
    assert_eq!(
        key.call(Transaction::Cbor, &request, &mut response),
        Outcome::Done
    );
    let body = (response.len() > 1)
        .then(|| ciborium::from_reader(&response[1..]).expect("a response body is valid CBOR"));
    (response[0], body)
}

fn msg(key: &mut impl App, apdu: &[u8]) -> (Vec<u8>, u16) {
    let mut response = Vec::new();
    assert_eq!(
        key.call(Transaction::Msg, apdu, &mut response),
        Outcome::Done
    );
    assert!(
        response.len() >= 2,
        "a U2F response ends with a status word"
    );
    let sw = u16::from_be_bytes([response[response.len() - 2], response[response.len() - 1]]);
    response.truncate(response.len() - 2);
    (response, sw)
}

fn apdu(ins: u8, p1: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, ins, p1, 0, 0, (data.len() >> 8) as u8, data.len() as u8];
    out.extend_from_slice(data);
    out.extend_from_slice(&[0, 0]);
    out
}

/// Client data hashes differ per call so every signature is over something new.
fn challenge(n: usize) -> [u8; 32] {
    sha256(&n.to_be_bytes())
}

/// Run one step. Returns false if it failed (which is only allowed after power is lost).
fn run_step(key: &mut impl App, step: &Step, n: usize, expected: &mut Expected) -> bool {
    match *step {
        Step::Register {
            label,
            rp,
            user,
            rk,
        } => {
            let request = make_credential_request(rp, user, &[-7], rk);
            let (status, body) = ctap2(key, MAKE_CREDENTIAL, Some(request));
            if status != 0 {
                expected.unfinished.push((rp.into(), user.to_vec()));
                return false;
            }
            let body = body.expect("makeCredential body");
            let raw = get(&body, 2).unwrap().as_bytes().unwrap();
            let auth_data = parse_auth_data(raw);
            let public_key = auth_data.public_key.clone().unwrap();
            let sig = get_text(get(&body, 3).unwrap(), "sig")
                .unwrap()
                .as_bytes()
                .unwrap();
            let signed = [raw.as_slice(), &[7u8; 32]].concat();
            verify(&public_key, &signed, sig);
            expected.saw_counter(auth_data.counter, label);
            expected.credentials.push(Known {
                label,
                rp: rp.into(),
                user: user.to_vec(),
                rk,
                id: auth_data.credential_id,
                public_key: PublicKey::Cose(public_key),
                certainty: Certainty::Must,
            });
            true
        }
        Step::Assert { label } => {
            let Some(known) = expected.find(label).cloned() else {
                return true; // its registration failed: nothing to do
            };
            match assert_allowed(key, &known, n) {
                Some(counter) => {
                    expected.saw_counter(counter, label);
                    true
                }
                None => false,
            }
        }
        Step::AssertRepeatedly { label, times } => {
            // Every assertion runs even after one fails: some need no storage.
            let mut all_ok = true;
            for i in 0..times {
                all_ok &= run_step(key, &Step::Assert { label }, n * 1000 + i, expected);
            }
            all_ok
        }
        Step::AssertDiscoverable { rp } => match assert_discoverable(key, rp, n, expected) {
            Some(counters) => {
                for counter in counters {
                    expected.saw_counter(counter, rp);
                }
                true
            }
            None => false,
        },
        Step::U2fRegister { label, app } => {
            let app_hash = u2f_app(app);
            let cdh = challenge(n);
            let (data, sw) = msg(key, &apdu(0x01, 0, &[&cdh[..], &app_hash[..]].concat()));
            if sw != SW_NO_ERROR {
                return false;
            }
            let public_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&data[1..66]).unwrap();
            let kh_len = data[66] as usize;
            expected.credentials.push(Known {
                label,
                rp: format!("u2f:{app}"),
                user: Vec::new(),
                rk: false,
                id: data[67..67 + kh_len].to_vec(),
                public_key: PublicKey::U2f(public_key),
                certainty: Certainty::Must,
            });
            true
        }
        Step::U2fAuthenticate { label } => {
            let Some(known) = expected.find(label).cloned() else {
                return true;
            };
            match u2f_authenticate(key, &known, n) {
                Some(counter) => {
                    expected.saw_counter(counter, label);
                    true
                }
                None => false,
            }
        }
        Step::Reset => {
            let (status, _) = ctap2(key, RESET, None);
            if status == 0 {
                expected.credentials.clear();
                expected.unfinished.clear();
                true
            } else {
                // Perhaps done, perhaps not: every credential so far may or may not survive.
                for c in &mut expected.credentials {
                    c.certainty = Certainty::May;
                }
                false
            }
        }
    }
}

/// getAssertion with `known` in the allow list; the verified counter, or None on failure.
fn assert_allowed(key: &mut impl App, known: &Known, n: usize) -> Option<u32> {
    if let PublicKey::U2f(_) = known.public_key {
        return u2f_authenticate(key, known, n);
    }
    let cdh = challenge(n);
    let request = get_assertion_request(&known.rp, &cdh, &[&known.id]);
    let (status, body) = ctap2(key, GET_ASSERTION, Some(request));
    if status != 0 {
        return None;
    }
    Some(check_assertion(&body.unwrap(), known, &cdh))
}

fn check_assertion(body: &Value, known: &Known, cdh: &[u8; 32]) -> u32 {
    let PublicKey::Cose(public_key) = &known.public_key else {
        unreachable!("CTAP2 credentials have COSE keys")
    };
    let raw = get(body, 2).unwrap().as_bytes().unwrap();
    let sig = get(body, 3).unwrap().as_bytes().unwrap();
    let signed = [raw.as_slice(), cdh].concat();
    verify(public_key, &signed, sig);
    let auth_data = parse_auth_data(raw);
    assert_eq!(auth_data.rp_id_hash, sha256(known.rp.as_bytes()));
    auth_data.counter
}

/// U2F authenticate; the verified counter, or None on failure.
fn u2f_authenticate(key: &mut impl App, known: &Known, n: usize) -> Option<u32> {
    let PublicKey::U2f(public_key) = &known.public_key else {
        unreachable!("U2F credentials have P-256 keys")
    };
    let app: u8 = known.rp.trim_start_matches("u2f:").parse().unwrap();
    let app = u2f_app(app);
    let cdh = challenge(n);
    let data = [&cdh[..], &app[..], &[known.id.len() as u8], &known.id].concat();
    let (data, sw) = msg(key, &apdu(0x02, 0x03, &data));
    if sw != SW_NO_ERROR {
        return None;
    }
    let signed = [&app[..], &data[..5], &cdh].concat();
    let signature = p256::ecdsa::Signature::from_der(&data[5..]).unwrap();
    public_key
        .verify(&signed, &signature)
        .expect("U2F signature verifies");
    Some(u32::from_be_bytes(data[1..5].try_into().unwrap()))
}

/// getAssertion without an allow list, then getNextAssertion for the rest. Every credential
/// listed must be one we know of (or were registering) and sign with its key. Returns the
/// counters in order, or None if a command failed.
fn assert_discoverable(
    key: &mut impl App,
    rp: &str,
    n: usize,
    expected: &Expected,
) -> Option<Vec<u32>> {
    let cdh = challenge(n);
    let (status, body) = ctap2(
        key,
        GET_ASSERTION,
        Some(get_assertion_request(rp, &cdh, &[])),
    );
    let mut counters = Vec::new();
    if status == CTAP2_ERR_NO_CREDENTIALS {
        return Some(counters);
    }
    if status != 0 {
        eprintln!("getAssertion({rp}) without an allow list: status {status:#04x}");
        return None;
    }
    let first = body.unwrap();
    let count = get(&first, 5)
        .map(|v| i64::try_from(v.as_integer().unwrap()).unwrap())
        .unwrap_or(1);
    let mut bodies = vec![first];
    for _ in 1..count {
        let (status, body) = ctap2(key, GET_NEXT_ASSERTION, None);
        if status != 0 {
            return None;
        }
        bodies.push(body.unwrap());
    }
    for body in &bodies {
        let id = get_text(get(body, 1).unwrap(), "id")
            .unwrap()
            .as_bytes()
            .unwrap();
        let user_id = get_text(get(body, 4).expect("discoverable: user"), "id")
            .unwrap()
            .as_bytes()
            .unwrap();
        match expected
            .credentials
            .iter()
            .find(|c| c.rk && c.rp == rp && c.id == *id)
        {
            Some(known) => {
                assert_eq!(*user_id, known.user, "{}: user", known.label);
                counters.push(check_assertion(body, known, &cdh));
            }
            None => {
                // Only a registration cut short may leave a credential the host never saw.
                assert!(
                    expected
                        .unfinished
                        .iter()
                        .any(|(r, u)| r == rp && u == user_id),
                    "{rp}: an unknown discoverable credential"
                );
                let raw = get(body, 2).unwrap().as_bytes().unwrap();
                counters.push(parse_auth_data(raw).counter);
            }
        }
    }
    Some(counters)
}

/// Run the whole session on `storage`; every step runs even after power is lost (some succeed
/// without storage), and what the host saw is returned.
fn session(storage: &mut CutStorage) -> Expected {
    let mut expected = Expected::default();
    with_key(storage, 1, |key| {
        for (n, step) in SCRIPT.iter().enumerate() {
            if !run_step(key, step, n, &mut expected) {
                expected.failed_steps += 1;
            }
        }
    });
    expected
}

/// After the cut: remount and check every invariant against what the host saw.
fn check_after_cut(image: Image, mut expected: Expected) {
    let mut storage = CutStorage::new(image);
    {
        let mut alloc = Allocation::new();
        // A cut during a reset's wipe (once the vault holds the new key and the mark) may
        // leave the partition half erased: the key's power-up formats it (`store::mount`) and
        // finishes the wipe. At every other cut it mounts as it is.
        let wiping = authenticator::store::wipe_pending(&mut storage);
        assert!(
            Filesystem::mount(&mut alloc, &mut storage).is_ok() || wiping,
            "the filesystem mounts after the cut"
        );
    }
    {
        let mut alloc = Allocation::new();
        authenticator::store::mount(&mut alloc, &mut storage).expect("the key boots");
    }
    with_key(&mut storage, 2, |key| {
        let mut n = 1000;
        let credentials = expected.credentials.clone();
        for known in credentials.iter().filter(|c| !c.rk) {
            n += 1;
            match assert_allowed(key, known, n) {
                Some(counter) => expected.saw_counter(counter, known.label),
                None => assert_eq!(
                    known.certainty,
                    Certainty::May,
                    "{}: an acknowledged credential no longer signs",
                    known.label
                ),
            }
        }
        let mut rps: Vec<String> = credentials
            .iter()
            .filter(|c| c.rk)
            .map(|c| c.rp.clone())
            .chain(expected.unfinished.iter().map(|(rp, _)| rp.clone()))
            .filter(|rp| !rp.starts_with("u2f:"))
            .collect();
        rps.sort();
        rps.dedup();
        for rp in rps {
            n += 1;
            let listed = assert_discoverable(key, &rp, n, &expected)
                .unwrap_or_else(|| panic!("{rp}: getAssertion without an allow list failed"));
            for counter in listed {
                expected.saw_counter(counter, &rp);
            }
        }
        for known in credentials.iter().filter(|c| c.rk) {
            // Listed ones were checked above; here: is every certain one listed and signing?
            n += 1;
            let counter = assert_allowed(key, known, n);
            match counter {
                Some(counter) => expected.saw_counter(counter, known.label),
                None => assert_eq!(
                    known.certainty,
                    Certainty::May,
                    "{}: an acknowledged discoverable credential is gone",
                    known.label
                ),
            }
        }
        // A fresh credential's counter is above everything seen before the cut, too.
        n += 1;
        let request = make_credential_request("after.cut", b"zed", &[-7], false);
        let (status, body) = ctap2(key, MAKE_CREDENTIAL, Some(request));
        assert_eq!(status, 0, "makeCredential after the cut");
        let raw = get(&body.unwrap(), 2).unwrap().as_bytes().unwrap().clone();
        expected.saw_counter(parse_auth_data(&raw).counter, "after the cut");
        let _ = n;
    });
}

/// The operation count of an uncut session, checking that it succeeds entirely.
fn reference_ops() -> usize {
    let mut storage = CutStorage::new(blank_image());
    let expected = session(&mut storage);
    assert_eq!(expected.failed_steps, 0, "the session works without a cut");
    assert!(!storage.dead);
    storage.ops
}

/// Replay with a cut at `n`; Err(description) if an invariant broke (or something panicked).
fn replay(n: usize, cut: Cut) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut storage = CutStorage::new(blank_image());
        storage.cut_at = Some((n, cut));
        let expected = session(&mut storage);
        assert!(storage.dead, "the cut happened");
        check_after_cut((storage.image, storage.vault), expected);
    }));
    outcome.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("cut at op {n} ({cut:?}): {message}")
    })
}

fn run_cut_points(points: impl Iterator<Item = usize>) -> usize {
    let mut tried = 0;
    let mut failures = Vec::new();
    for n in points {
        for cut in [Cut::Clean, Cut::Torn] {
            tried += 1;
            if let Err(failure) = replay(n, cut) {
                failures.push(failure);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tried} cut points broke an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
    tried
}

/// Every cut point of the session, clean and torn.
#[test]
fn power_cut_at_every_operation() {
    let total = reference_ops();
    let tried = run_cut_points(1..=total);
    eprintln!("power_cut_at_every_operation: {tried} cut points ({total} operations x 2 modes)");
}

/// The first registration creates /dev/kwk and /dev/ctr. littlefs commits a new file's empty
/// directory entry when it is opened and its content only when it is closed, so a cut in between
/// leaves an empty file. The key must treat it as absent (nothing was ever sealed or counted
/// with it), not fail every later command.
#[test]
fn a_cut_while_creating_the_first_files_does_not_brick_the_key() {
    for n in 1..=7 {
        for cut in [Cut::Clean, Cut::Torn] {
            let mut storage = CutStorage::new(blank_image());
            storage.cut_at = Some((n, cut));
            with_key(&mut storage, 1, |key| {
                let request = make_credential_request("example.com", b"alice", &[-7], false);
                ctap2(key, MAKE_CREDENTIAL, Some(request));
            });
            let mut storage = CutStorage::new((storage.image, storage.vault));
            with_key(&mut storage, 2, |key| {
                let request = make_credential_request("example.com", b"alice", &[-7], false);
                let (status, _) = ctap2(key, MAKE_CREDENTIAL, Some(request));
                assert_eq!(status, 0, "makeCredential after a cut at op {n} ({cut:?})");
            });
        }
    }
}

#[test]
fn cut_storage_fails_from_the_cut_on() {
    use littlefs2::driver::Storage;
    let mut storage = CutStorage::new((vec![0xff; BLOCK * BLOCKS], RamVault::default()));
    storage.cut_at = Some((2, Cut::Torn));
    assert!(storage.write(0, &[0; 16]).is_ok());
    assert!(storage.write(16, &[0; 16]).is_err());
    assert_eq!(&storage.image[16..24], &[0; 8], "the torn prefix landed");
    assert_eq!(&storage.image[24..32], &[0xff; 8], "the rest did not");
    assert!(storage.erase(0, BLOCK).is_err(), "power stays off");
    assert!(storage.read(0, &mut [0; 16]).is_err());
    assert_eq!(storage.ops, 2);
}
