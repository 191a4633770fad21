//! The store under power cuts: an arbitrary sequence of store operations (discoverable
//! credentials registered, replaced and deleted, signature counters, PINs set and changed, PIN
//! retries spent and restored, the PIN lock turned on and off, settings, large-blob writes,
//! reset) over several boots of a RAM block device and its vault. In each boot the power may be
//! cut at the Nth program or erase (of the partition or the vault), cleanly or tearing that
//! operation (a prefix of the write lands, a prefix of the block is erased). After every boot
//! the image must mount without formatting (unless a reset's wipe was cut: then the vault says
//! so and the power-up formats and finishes it) and hold what was acknowledged:
//!
//! - the signature counter is above every value handed out before;
//! - the PIN retries are the acknowledged ones, or the ones being written at the cut: a spent
//!   retry stays spent; the PIN is the acknowledged one or the one being set at the cut, and
//!   with the lock on the key is locked until it is given;
//! - settings and the large-blob array are the old or the new version, never a mix;
//! - each discoverable credential is the acknowledged record or the one being written at the
//!   cut (a deletion in flight may leave it or not), nothing else appears, and its credential
//!   ID still opens under the key-wrapping key to the same private key;
//! - the key-wrapping key never changes, except through a reset, and then no credential sealed
//!   under the old key remains.
//!
//! Nothing may panic. `FUZZ_STORAGE_STATS=1` prints how many cuts (and distinct cut points)
//! the run has tried.
#![no_main]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Mutex;

use authenticator::credential::{Algorithm, CredProtect, Credential};
use authenticator::platform::{Vault, VAULT_SLOT_SIZE};
use authenticator::store::{
    PinKdf, PinState, ResidentCredential, Settings, Store, StoreError, MAX_LARGE_BLOB_ARRAY,
    PIN_RETRIES,
};
use authenticator_fuzz::RamStorage;
use ctap_types::webauthn::PublicKeyCredentialUserEntity;
use libfuzzer_sys::arbitrary::{self, Unstructured};
use libfuzzer_sys::fuzz_target;
use littlefs2::driver::Storage;
use littlefs2::fs::{Allocation, Filesystem};
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};

const RPS: u8 = 3;
const USERS: u8 = 8;
const MAX_BOOTS: usize = 6;
const MAX_OPS: usize = 24;
/// A PIN verifier that costs nothing to check.
const KDF: PinKdf = PinKdf::Pbkdf2 { iterations: 1 };

/// The power supply of the device: counts program/erase operations and cuts at one of them.
#[derive(Default)]
struct Power {
    /// Operations left until the cut, the cut one included.
    budget: Cell<Option<u32>>,
    /// How much of the cut operation lands, in 256ths.
    tear: Cell<u8>,
    dead: Cell<bool>,
    /// Program/erase operations since the image was formatted.
    ops: Cell<u32>,
}

impl Power {
    /// Count one operation of `len` bytes: Err if there is no power, Ok(Some(n)) if the power
    /// goes during this one after its first n bytes.
    fn spend(&self, len: usize) -> Result<Option<usize>, littlefs2::io::Error> {
        if self.dead.get() {
            return Err(littlefs2::io::Error::IO);
        }
        self.ops.set(self.ops.get() + 1);
        match self.budget.get() {
            Some(n) if n <= 1 => {
                self.dead.set(true);
                self.budget.set(None);
                Ok(Some(len * usize::from(self.tear.get()) / 256))
            }
            Some(n) => {
                self.budget.set(Some(n - 1));
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

struct CutStorage {
    inner: RamStorage,
    power: Rc<Power>,
}

impl Storage for CutStorage {
    const READ_SIZE: usize = RamStorage::READ_SIZE;
    const WRITE_SIZE: usize = RamStorage::WRITE_SIZE;
    const BLOCK_SIZE: usize = RamStorage::BLOCK_SIZE;
    const BLOCK_COUNT: usize = RamStorage::BLOCK_COUNT;
    const BLOCK_CYCLES: isize = RamStorage::BLOCK_CYCLES;
    type CACHE_SIZE = <RamStorage as Storage>::CACHE_SIZE;
    type LOOKAHEAD_SIZE = <RamStorage as Storage>::LOOKAHEAD_SIZE;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        if self.power.dead.get() {
            return Err(littlefs2::io::Error::IO);
        }
        self.inner.read(off, buf)
    }

    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        match self.power.spend(data.len())? {
            Some(landed) => {
                if landed > 0 {
                    self.inner.write(off, &data[..landed])?;
                }
                Err(littlefs2::io::Error::IO)
            }
            None => self.inner.write(off, data),
        }
    }

    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        match self.power.spend(len)? {
            Some(landed) => {
                if landed > 0 {
                    self.inner.erase(off, landed)?;
                }
                Err(littlefs2::io::Error::IO)
            }
            None => self.inner.erase(off, len),
        }
    }
}

impl Vault for CutStorage {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        if self.power.dead.get() {
            return Err(littlefs2::io::Error::IO);
        }
        self.inner.vault_read(offset, buf)
    }

    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        match self.power.spend(data.len())? {
            Some(landed) => {
                let landed = landed / 256 * 256;
                if landed > 0 {
                    self.inner.vault_program(offset, &data[..landed])?;
                }
                Err(littlefs2::io::Error::IO)
            }
            None => self.inner.vault_program(offset, data),
        }
    }

    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        match self.power.spend(VAULT_SLOT_SIZE)? {
            Some(landed) => {
                self.inner.vault_mut().erase_part(offset, landed)?;
                Err(littlefs2::io::Error::IO)
            }
            None => self.inner.vault_erase(offset),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Resident {
    record: ResidentCredential,
    /// Identifies the private key inside the sealed ID (its derived largeBlobKey).
    fingerprint: [u8; 32],
}

type Slot = (u8, u8);

/// What the host saw acknowledged, and what the operation cut by the power may have written.
#[derive(Default)]
struct Model {
    kwk: Option<[u8; 32]>,
    counter_max: Option<u32>,
    pin: PinState,
    pin_maybe: Option<PinState>,
    /// The PIN's hash as acknowledged (None: no PIN), and one being set at the cut.
    pin_hash: Option<[u8; 16]>,
    pin_hash_maybe: Option<[u8; 16]>,
    lock: bool,
    lock_maybe: Option<bool>,
    settings: Settings,
    settings_maybe: Option<Settings>,
    blob: Option<Vec<u8>>,
    blob_maybe: Option<Vec<u8>>,
    residents: BTreeMap<Slot, Resident>,
    /// A registration (Some) or deletion (None) cut by the power.
    resident_maybe: Option<(Slot, Option<Resident>)>,
    reset_maybe: bool,
}

fn rp_id(rp: u8) -> heapless::String<256> {
    let mut id = heapless::String::new();
    let _ = id.push_str(["example.com", "login.example.org", "a.b.c.d.example.net"][rp as usize]);
    id
}

fn rp_hash(rp: u8) -> [u8; 32] {
    Sha256::digest(rp_id(rp).as_bytes()).into()
}

/// User ids of several lengths, up to WebAuthn's 64 bytes.
fn user_id(user: u8) -> Vec<u8> {
    vec![b'u' ^ user; 1 + usize::from(user) * 9]
}

fn slot_of(record: &ResidentCredential) -> Slot {
    let rp = (0..RPS)
        .find(|&rp| rp_id(rp) == record.rp_id)
        .expect("only our RPs are stored");
    let user = (0..USERS)
        .find(|&u| user_id(u) == record.user.id.as_slice())
        .expect("only our users are stored");
    (rp, user)
}

fn fingerprint(kwk: &[u8; 32], record: &ResidentCredential) -> Option<[u8; 32]> {
    let credential = Credential::open(kwk, &rp_hash(slot_of(record).0), &record.id)?;
    Some(*credential.large_blob_key())
}

static STATS: Mutex<(u64, BTreeSet<u32>)> = Mutex::new((0, BTreeSet::new()));

fn count_cut(at: u32) {
    if std::env::var_os("FUZZ_STORAGE_STATS").is_none() {
        return;
    }
    let mut stats = STATS.lock().unwrap_or_else(|p| p.into_inner());
    stats.0 += 1;
    let new = stats.1.insert(at);
    if stats.0.is_power_of_two() || (new && stats.1.len().is_multiple_of(100)) {
        eprintln!(
            "storage: {} cuts tried, at {} distinct operation indices",
            stats.0,
            stats.1.len()
        );
    }
}

/// After a boot ends (cut or not): compare what is stored with the model, then make the model
/// what is stored. Runs with the power on.
fn check<S: Storage + Vault>(
    store: &mut Store<'_, S>,
    model: &mut Model,
    rng: &mut rand_chacha::ChaCha20Rng,
) {
    store.prepare(rng, KDF);
    check_pin(store, model, rng);
    let kwk = *store.kwk().expect("the key-wrapping key reads");
    let new_kwk = model.kwk.is_some_and(|k| k != kwk);
    assert!(
        !new_kwk || model.reset_maybe,
        "the key-wrapping key changed without a reset"
    );
    model.kwk = Some(kwk);

    // Discoverable credentials: every RP listed, every record one we wrote.
    let mut found = BTreeMap::new();
    for rp in 0..RPS {
        for record in store.residents(&rp_hash(rp)).expect("credentials list") {
            let slot = slot_of(&record);
            assert_eq!(slot.0, rp, "a credential listed under another RP");
            let print = fingerprint(&kwk, &record)
                .expect("a stored credential opens under the key-wrapping key");
            let resident = Resident {
                record,
                fingerprint: print,
            };
            let old = model.residents.get(&slot);
            let new = match &model.resident_maybe {
                Some((s, new)) if *s == slot => new.as_ref(),
                _ => None,
            };
            assert!(
                old == Some(&resident) || new == Some(&resident),
                "credential {slot:?} is neither the old nor the new version: \
                 {resident:?} old {old:?} new {new:?}"
            );
            assert!(
                found.insert(slot, resident).is_none(),
                "one file per credential"
            );
        }
    }
    assert!(
        !new_kwk || found.is_empty(),
        "a reset left credentials sealed under the forgotten key"
    );
    for slot in model.residents.keys() {
        let may_vanish =
            model.reset_maybe || matches!(&model.resident_maybe, Some((s, None)) if s == slot);
        assert!(
            found.contains_key(slot) || may_vanish,
            "acknowledged credential {slot:?} lost"
        );
    }
    assert_eq!(
        store.resident_count().expect("count"),
        found.len(),
        "nothing else is stored"
    );
    model.residents = found;
    model.resident_maybe = None;

    // The counter goes on above everything handed out.
    let counter = store.next_counter().expect("the counter reads");
    if let Some(max) = model.counter_max {
        assert!(counter > max, "counter went back: {counter} after {max}");
    }
    model.counter_max = Some(counter);

    let pin = store.pin().expect("the PIN state reads");
    let reset_pin = model.reset_maybe.then(PinState::default);
    assert!(
        pin == model.pin
            || Some(&pin) == model.pin_maybe.as_ref()
            || Some(&pin) == reset_pin.as_ref(),
        "PIN state {pin:?}: neither {:?} nor {:?}",
        model.pin,
        model.pin_maybe
    );
    let most = model
        .pin
        .retries
        .max(model.pin_maybe.as_ref().map_or(0, |p| p.retries))
        .max(reset_pin.map_or(0, |p| p.retries));
    assert!(pin.retries <= most, "a spent PIN retry came back");
    model.pin = pin;
    model.pin_maybe = None;

    let settings = store.settings().expect("settings read");
    assert!(
        settings == model.settings
            || Some(&settings) == model.settings_maybe.as_ref()
            || (model.reset_maybe && settings == Settings::default()),
        "settings are neither old nor new"
    );
    model.settings = settings;
    model.settings_maybe = None;

    let blob = store
        .large_blob_array()
        .expect("the large-blob array reads");
    let empty = store_empty_array();
    let old = model.blob.clone().unwrap_or_else(|| empty.clone());
    assert!(
        blob == old
            || Some(&blob) == model.blob_maybe.as_ref()
            || (model.reset_maybe && blob == empty),
        "the large-blob array is neither old nor new ({} bytes)",
        blob.len()
    );
    model.blob = Some(blob);
    model.blob_maybe = None;
    model.reset_maybe = false;
}

/// The PIN and the lock: the acknowledged ones or those being written at the cut. A key with a
/// PIN and the lock on is locked until the PIN is given, and then opens.
fn check_pin<S: Storage + Vault>(
    store: &mut Store<'_, S>,
    model: &mut Model,
    rng: &mut rand_chacha::ChaCha20Rng,
) {
    let lock = store.lock_enabled();
    assert!(
        lock == model.lock || Some(lock) == model.lock_maybe || (model.reset_maybe && !lock),
        "the lock is {lock}: neither {} nor {:?}",
        model.lock,
        model.lock_maybe
    );
    let hash = if !store.pin_is_set() {
        assert!(
            model.pin_hash.is_none() || model.reset_maybe,
            "an acknowledged PIN was lost"
        );
        None
    } else {
        assert_eq!(store.locked(), lock, "locked exactly when the lock is on");
        let candidates = [model.pin_hash, model.pin_hash_maybe];
        let hash = candidates
            .into_iter()
            .flatten()
            .find(|h| store.check_pin(h, rng).expect("the verifier reads"))
            .expect("the PIN is the acknowledged one or the one being set");
        assert!(!store.locked(), "the right PIN opens the key");
        Some(hash)
    };
    model.pin_hash = hash;
    model.pin_hash_maybe = None;
    model.lock = lock;
    model.lock_maybe = None;
}

fn store_empty_array() -> Vec<u8> {
    let mut empty = vec![0x80];
    empty.extend_from_slice(&Sha256::digest([0x80])[..16]);
    empty
}

/// How one operation ended.
enum End {
    /// Acknowledged (or refused without effect): go on.
    Done,
    /// The power went during it: its effect is in doubt.
    Cut,
}

fn failed(power: &Power, result: Result<(), StoreError>) -> End {
    match result {
        _ if power.dead.get() => End::Cut,
        Ok(()) | Err(StoreError::Full) => End::Done,
        Err(StoreError::Filesystem(_) | StoreError::Io) => panic!("an I/O error with the power on"),
        Err(StoreError::OutOfMemory) => panic!("out of memory with the heap free"),
        Err(StoreError::Locked) => panic!("locked after the PIN was given"),
        Err(StoreError::VaultUnreadable) => panic!("a power cut left the vault unreadable"),
    }
}

/// One store operation, as the authenticator's commands use the store.
fn operate<S: Storage + Vault>(
    u: &mut Unstructured<'_>,
    store: &mut Store<'_, S>,
    model: &mut Model,
    power: &Power,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> arbitrary::Result<End> {
    let end = match u.int_in_range(0..=10u8)? {
        // makeCredential with rk: a counter value, a sealed credential, a record.
        0 | 1 => {
            let slot = (u.int_in_range(0..=RPS - 1)?, u.int_in_range(0..=USERS - 1)?);
            let alg = if u.arbitrary()? {
                Algorithm::EdDsa
            } else {
                Algorithm::Es256
            };
            let protect = CredProtect::from_level(u.int_in_range(1..=3)?).expect("1..=3");
            let blob_len = u.int_in_range(0..=32usize)?;
            let kwk = match store.kwk() {
                Ok(_) if power.dead.get() => return Ok(End::Cut),
                Ok(kwk) => *kwk,
                Err(_) if power.dead.get() => return Ok(End::Cut),
                Err(e) => panic!("the key-wrapping key: {e:?} with the power on"),
            };
            assert!(
                model.kwk.is_none_or(|k| k == kwk),
                "the key-wrapping key changed within a boot"
            );
            model.kwk = Some(kwk);
            let created = match counter(store, model, power) {
                Some(created) => created,
                None => return Ok(End::Cut),
            };
            let mut credential = Credential::generate(rng, alg, true, protect);
            let _ = credential
                .cred_blob
                .extend_from_slice(&[0xB1; 32][..blob_len]);
            let id = credential.seal(&kwk, &rp_hash(slot.0), rng);
            let user = PublicKeyCredentialUserEntity::from(
                user_id(slot.1)
                    .as_slice()
                    .try_into()
                    .expect("64 bytes at most"),
            );
            let record = ResidentCredential {
                rp_id: rp_id(slot.0),
                user,
                id: id.as_slice().try_into().expect("an ID fits"),
                created,
                cred_protect: credential.cred_protect as u8,
                sealed: None,
                counter: None,
                listed_only: false,
            };
            let resident = Resident {
                record: record.clone(),
                fingerprint: *credential.large_blob_key(),
            };
            let result = store.save_resident(&record);
            let end = failed(power, result);
            match (&end, result) {
                (End::Cut, _) => model.resident_maybe = Some((slot, Some(resident))),
                (End::Done, Ok(())) => {
                    model.residents.insert(slot, resident);
                }
                (End::Done, _) => {}
            }
            end
        }
        // getAssertion: signature counters, enough to cross reservations.
        2 => {
            let n = u.int_in_range(1..=150u8)?;
            for _ in 0..n {
                if counter(store, model, power).is_none() {
                    return Ok(End::Cut);
                }
            }
            End::Done
        }
        // setPIN / changePIN: full retries, then a new verifier (and the secrets sealed again
        // under it if the lock is on).
        3 => {
            let hash = [u.arbitrary::<u8>()?; 16];
            let code_points = u.int_in_range(4..=63)?;
            if let End::Cut = save_pin(store, model, power, PinState::default()) {
                return Ok(End::Cut);
            }
            let result = store.set_pin(&hash, code_points, KDF, rng);
            let end = failed(power, result);
            match (&end, result) {
                (End::Cut, _) => model.pin_hash_maybe = Some(hash),
                (End::Done, Ok(())) => model.pin_hash = Some(hash),
                (End::Done, Err(e)) => panic!("setting a PIN: {e:?}"),
            }
            end
        }
        // The PIN lock, on or off (the PIN was given at power-up: check_pin).
        10 => {
            let on = u.arbitrary()?;
            let result = store.set_lock(on, rng);
            let end = failed(power, result);
            match (&end, result) {
                (End::Cut, _) => model.lock_maybe = Some(on),
                (End::Done, Ok(())) => model.lock = on,
                (End::Done, Err(e)) => panic!("the lock: {e:?}"),
            }
            end
        }
        // A PIN check: the retry is spent on storage before the comparison.
        4 => match store.pin() {
            _ if power.dead.get() => End::Cut,
            Ok(mut pin) => {
                pin.retries = pin.retries.saturating_sub(1);
                save_pin(store, model, power, pin)
            }
            Err(e) => panic!("the PIN state: {e:?} with the power on"),
        },
        // A right PIN: retries restored.
        5 => match store.pin() {
            _ if power.dead.get() => End::Cut,
            Ok(mut pin) => {
                pin.retries = PIN_RETRIES;
                save_pin(store, model, power, pin)
            }
            Err(e) => panic!("the PIN state: {e:?} with the power on"),
        },
        // credentialManagement deleteCredential.
        6 => {
            let slot = (u.int_in_range(0..=RPS - 1)?, u.int_in_range(0..=USERS - 1)?);
            let Some(resident) = model.residents.get(&slot).cloned() else {
                return Ok(End::Done);
            };
            let result = store.delete_resident(&resident.record);
            let end = failed(power, result);
            match (&end, result) {
                (End::Cut, _) => model.resident_maybe = Some((slot, None)),
                (End::Done, Ok(())) => {
                    model.residents.remove(&slot);
                }
                (End::Done, Err(e)) => panic!("deleting a stored credential: {e:?}"),
            }
            end
        }
        // largeBlobs: a whole array written at once.
        7 => {
            let len = u.int_in_range(1..=MAX_LARGE_BLOB_ARRAY)?;
            let fill: u8 = u.arbitrary()?;
            let array: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
            let result = store.save_large_blob_array(&array);
            let end = failed(power, result);
            match (&end, result) {
                (End::Cut, _) => model.blob_maybe = Some(array),
                (End::Done, Ok(())) => model.blob = Some(array),
                (End::Done, _) => {}
            }
            end
        }
        // authenticatorConfig.
        8 => {
            let mut settings = model.settings.clone();
            settings.always_uv = u.arbitrary()?;
            settings.min_pin_length = u.int_in_range(4..=63)?;
            settings.force_pin_change = u.arbitrary()?;
            settings.long_touch_for_reset = u.arbitrary()?;
            let result = store.save_settings(&settings);
            let end = failed(power, result);
            match (&end, result) {
                (End::Cut, _) => model.settings_maybe = Some(settings),
                (End::Done, Ok(())) => model.settings = settings,
                (End::Done, _) => {}
            }
            end
        }
        // authenticatorReset.
        9 => {
            let result = store.reset(rng);
            if power.dead.get() || result.is_err() {
                // Several files: each is old or reset (a refusal without a cut, too).
                model.reset_maybe = true;
                return Ok(End::Cut);
            }
            model.pin = PinState::default();
            model.pin_hash = None;
            model.lock = false;
            model.settings = Settings::default();
            model.blob = None;
            model.residents.clear();
            model.kwk = Some(*store.kwk().expect("the new key is cached"));
            End::Done
        }
        _ => unreachable!("0..=10"),
    };
    Ok(end)
}

fn counter<S: Storage + Vault>(store: &mut Store<'_, S>, model: &mut Model, power: &Power) -> Option<u32> {
    match store.next_counter() {
        _ if power.dead.get() => None,
        Ok(value) => {
            if let Some(max) = model.counter_max {
                assert!(value > max, "counter {value} after {max}");
            }
            model.counter_max = Some(value);
            Some(value)
        }
        Err(e) => panic!("the counter: {e:?} with the power on"),
    }
}

fn save_pin<S: Storage + Vault>(
    store: &mut Store<'_, S>,
    model: &mut Model,
    power: &Power,
    pin: PinState,
) -> End {
    let result = store.save_pin(&pin);
    let end = failed(power, result);
    match (&end, result) {
        (End::Cut, _) => model.pin_maybe = Some(pin),
        (End::Done, Ok(())) => model.pin = pin,
        (End::Done, _) => {}
    }
    end
}

fn run(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let power = Rc::new(Power::default());
    let mut storage = CutStorage {
        inner: RamStorage::default(),
        power: power.clone(),
    };
    {
        // The first power-up formats (not under test here: power_cut*.rs cut that too).
        let mut alloc = Allocation::new();
        authenticator::store::mount(&mut alloc, &mut storage).expect("a blank image formats");
    }
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(u.arbitrary()?);
    let mut model = Model::default();
    // Some inputs start from a key of the first layout, which power-ups migrate.
    let mut first_layout = u.arbitrary::<bool>()?;
    if first_layout {
        write_first_layout(&mut u, &mut storage, &mut model, &mut rng)?;
    }
    for _boot in 0..MAX_BOOTS {
        power.dead.set(false);
        power.budget.set(None);
        if authenticator::store::wipe_pending(&mut storage) {
            // A reset's wipe was cut: the power-up formats what does not mount, and the store
            // finishes the wipe.
            let mut alloc = Allocation::new();
            authenticator::store::mount(&mut alloc, &mut storage).expect("formats");
        }
        let mut alloc = Allocation::new();
        let fs = match Filesystem::mount(&mut alloc, &mut storage) {
            Ok(fs) => fs,
            Err(e) => panic!("the image does not mount after a cut: {e:?}"),
        };
        let mut store = Store::new(fs);
        if first_layout {
            // The migration at power-up, perhaps cut: the next power-up resumes it.
            if u.arbitrary::<bool>()? {
                power.budget.set(Some(u.int_in_range(1..=400)?));
                power.tear.set(u.arbitrary()?);
            }
            store.prepare(&mut rng, KDF);
            if power.dead.get() {
                count_cut(power.ops.get());
                continue;
            }
            power.budget.set(None);
            first_layout = false;
        }
        check(&mut store, &mut model, &mut rng);
        if u.is_empty() {
            break;
        }
        if u.arbitrary::<bool>()? {
            power.budget.set(Some(u.int_in_range(1..=200)?));
            power.tear.set(u.arbitrary()?);
        }
        let ops = u.int_in_range(1..=MAX_OPS)?;
        for _ in 0..ops {
            if u.is_empty() {
                break;
            }
            if let End::Cut = operate(&mut u, &mut store, &mut model, &power, &mut rng)? {
                break;
            }
        }
        if power.dead.get() {
            count_cut(power.ops.get());
        }
    }
    Ok(())
}

/// Write what a key of the first layout held: its key-wrapping key and a few discoverable
/// credentials, one 768-byte file each under `/rk` (a CBOR map r, u, i, c, zero-padded).
fn write_first_layout(
    u: &mut Unstructured<'_>,
    storage: &mut CutStorage,
    model: &mut Model,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> arbitrary::Result<()> {
    let kwk: [u8; 32] = u.arbitrary()?;
    let mut alloc = Allocation::new();
    let fs = Filesystem::mount(&mut alloc, storage).expect("a formatted image mounts");
    fs.create_dir_all(littlefs2::path!("/dev"))
        .expect("with the power on");
    fs.write(littlefs2::path!("/dev/kwk"), &kwk)
        .expect("with the power on");
    fs.create_dir_all(littlefs2::path!("/rk"))
        .expect("with the power on");
    for created in 1..=u.int_in_range(1..=8u32)? {
        let slot = (u.int_in_range(0..=RPS - 1)?, u.int_in_range(0..=USERS - 1)?);
        let protect = match u.int_in_range(1..=3u8)? {
            1 => CredProtect::Optional,
            2 => CredProtect::OptionalWithList,
            _ => CredProtect::Required,
        };
        let credential = Credential::generate(rng, Algorithm::Es256, true, protect);
        let id = credential.seal(&kwk, &rp_hash(slot.0), rng);
        let record = ResidentCredential {
            rp_id: rp_id(slot.0),
            user: PublicKeyCredentialUserEntity::from(
                user_id(slot.1)
                    .as_slice()
                    .try_into()
                    .expect("64 bytes at most"),
            ),
            id: id.as_slice().try_into().expect("an ID fits"),
            created,
            cred_protect: protect as u8,
            sealed: None,
            counter: None,
            listed_only: false,
        };
        let Ok(ciborium::Value::Map(mut entries)) = ciborium::Value::serialized(&record) else {
            panic!("a record serializes as a map");
        };
        // The first layout kept no credProtect level: the migration reads it from the ID.
        entries.retain(|(k, _)| k.as_text() != Some("p"));
        let mut bytes = Vec::new();
        ciborium::into_writer(&ciborium::Value::Map(entries), &mut bytes).expect("serializes");
        bytes.resize(768, 0);
        let mut name = String::from("/rk/");
        for b in &rp_hash(slot.0)[..8] {
            name.push_str(&format!("{b:02x}"));
        }
        name.push_str(&format!(".{}-{}", slot.0, slot.1));
        let name = littlefs2::path::PathBuf::try_from(name.as_str()).expect("a short name");
        fs.write(&name, &bytes).expect("with the power on");
        model.residents.insert(
            slot,
            Resident {
                fingerprint: *credential.large_blob_key(),
                record,
            },
        );
    }
    model.kwk = Some(kwk);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
