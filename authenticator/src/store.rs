//! The authenticator's state on a littlefs2 filesystem.
//!
//! Small files with one owner each. littlefs commits a file write atomically when the file is
//! closed, so a power cut during any write leaves either the old or the new file:
//!
//! ```text
//! /dev/kwk            key-wrapping key (32 bytes): seals every credential ID
//! /dev/ctr            signature counter reservation (u32, big-endian)
//! /dev/pin            PIN hash and retries left
//! /dev/cfg            authenticatorConfig settings (alwaysUv, minimum PIN length, ...)
//! /dev/uv             built-in user verification: uvRetries left, attempts since the PIN
//! /dev/lb             the serialized large-blob array (absent: the empty array)
//! /dev/att            the batch attestation (key and certificate), if provisioned
//! /dev/eatt           the enterprise attestation (key, certificate, RP IDs), if provisioned
//! /cr/<d>/<f>         discoverable credentials, packed in fixed-size slots (see [`resident`])
//! ```
//!
//! Keys of the first layout kept one file per discoverable credential in `/rk`; they are moved
//! into slots when the store is first prepared (see [`Store::prepare`]).
//!
//! The signature counter is reserved ahead in steps of [`COUNTER_STEP`]: the file holds a value
//! no signature has used yet, so after a crash the counter resumes above anything already
//! signed, and flash is written once per step instead of once per assertion.

use alloc::vec::Vec;

use ctap_types::webauthn::PublicKeyCredentialUserEntity;
use littlefs2::fs::{Allocation, Filesystem};
use littlefs2::io::Error as FsError;
use littlefs2::path::PathBuf;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::attestation::{Attestation, EnterpriseAttestation};
use crate::fallible::{self, OutOfMemory};

/// How far ahead the signature counter is reserved on storage.
pub const COUNTER_STEP: u32 = 64;
/// The most a serialized settings or PIN file takes: settings may list
/// [`MAX_MIN_PIN_LENGTH_RP_IDS`] RP IDs of 256 bytes.
const MAX_DEVICE_RECORD_LEN: usize = 1280;
/// The most a discoverable credential of the first layout takes.
const MAX_RECORD_LEN: usize = resident::RECORD_LEN;

mod resident;

pub use resident::{capacity, ResidentRef, StoredRp, Visibility, RESERVED_BLOCKS, SLOTS_PER_FILE};
use resident::{Index, Residents};

/// Mount the filesystem on `storage`, formatting it first if it holds none (first power-up).
pub fn mount<'a, S: littlefs2::driver::Storage>(
    alloc: &'a mut Allocation<S>,
    storage: &'a mut S,
) -> littlefs2::io::Result<Filesystem<'a, S>> {
    Filesystem::mount_or_else(alloc, storage, |_err, storage, _alloc| {
        Filesystem::format(storage)
    })
}

/// Why a store operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No room left for what was asked.
    Full,
    /// The filesystem failed or holds something unreadable.
    Io,
    /// The heap could not hold what was read.
    OutOfMemory,
}

impl From<OutOfMemory> for StoreError {
    fn from(_: OutOfMemory) -> Self {
        StoreError::OutOfMemory
    }
}

impl From<FsError> for StoreError {
    fn from(error: FsError) -> Self {
        if error == FsError::NO_SPACE {
            StoreError::Full
        } else {
            StoreError::Io
        }
    }
}

pub type Result<T> = core::result::Result<T, StoreError>;

/// A discoverable credential as stored: what getAssertion without an allow list must return.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidentCredential {
    #[serde(rename = "r")]
    pub rp_id: heapless::String<256>,
    #[serde(rename = "u")]
    pub user: PublicKeyCredentialUserEntity,
    /// The sealed credential (see [`crate::credential`]): the private key lives only in here.
    #[serde(rename = "i")]
    pub id: heapless_bytes::Bytes<{ crate::credential::MAX_ID_LEN }>,
    /// Creation order: later credentials have larger values.
    #[serde(rename = "c")]
    pub created: u32,
    /// credProtect level (1 to 3; 0 in records of the first layout, which did not keep it).
    #[serde(rename = "p", default)]
    pub cred_protect: u8,
}

/// The largest serialized large-blob array (maxSerializedLargeBlobArray).
pub const MAX_LARGE_BLOB_ARRAY: usize = 8192;

/// PIN retries a new PIN starts with (§6.5.2).
pub const PIN_RETRIES: u8 = 8;
/// The default minimum PIN length, in code points.
pub const DEFAULT_MIN_PIN_LENGTH: u8 = 4;
/// How many RP IDs setMinPINLength may list (maxRPIDsForSetMinPINLength).
pub const MAX_MIN_PIN_LENGTH_RP_IDS: usize = 4;

/// The PIN: LEFT(SHA-256(PIN), 16) as CTAP defines it, and the retries left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinState {
    #[serde(rename = "h")]
    pub hash: Option<heapless_bytes::Bytes<16>>,
    #[serde(rename = "r")]
    pub retries: u8,
    /// Length of the current PIN in code points: a raised minimum may force a change.
    #[serde(rename = "l")]
    pub code_points: u8,
    /// CTAP 2.2's persistentPinUvAuthToken (pcmr: read-only credential management): made with
    /// each new PIN, so it lasts across power cycles until the PIN changes, a change is forced,
    /// or the key is reset. A PIN set before it existed has none until first asked for one.
    #[serde(rename = "p", default)]
    pub persistent_token: Option<heapless_bytes::Bytes<32>>,
}

impl Default for PinState {
    fn default() -> Self {
        Self {
            hash: None,
            retries: PIN_RETRIES,
            code_points: 0,
            persistent_token: None,
        }
    }
}

/// authenticatorConfig's persistent settings (§6.11).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    #[serde(rename = "u")]
    pub always_uv: bool,
    #[serde(rename = "m")]
    pub min_pin_length: u8,
    #[serde(rename = "r")]
    pub min_pin_length_rp_ids: heapless::Vec<heapless::String<256>, MAX_MIN_PIN_LENGTH_RP_IDS>,
    #[serde(rename = "f")]
    pub force_pin_change: bool,
    /// CTAP 2.2's pinComplexityPolicy: new PINs must pass `pin_policy::complex_enough`. Once
    /// on, only authenticatorReset turns it off (settings written before it read as off).
    #[serde(rename = "c", default)]
    pub pin_complexity: bool,
    /// Enterprise attestation enabled (getInfo's `ep`), by authenticatorConfig; settings
    /// written before it read as disabled, and authenticatorReset disables it (CTAP 2.1 §7.1).
    #[serde(rename = "e", default)]
    pub enterprise_attestation: bool,
    /// CTAP 2.2 longTouchForReset enabled by authenticatorConfig: authenticatorReset then needs
    /// a long touch. Settings written before it read as off; authenticatorReset turns it off
    /// (the settings file goes, as for every other setting).
    #[serde(rename = "l", default)]
    pub long_touch_for_reset: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            always_uv: false,
            min_pin_length: DEFAULT_MIN_PIN_LENGTH,
            min_pin_length_rp_ids: heapless::Vec::new(),
            force_pin_change: false,
            pin_complexity: false,
            enterprise_attestation: false,
            long_touch_for_reset: false,
        }
    }
}

/// The most uvRetries (maxUvRetries, CTAP 2.1 §6.5.2.2: 1 to 25): what a correct finger or a
/// correct PIN restores.
pub const UV_RETRIES: u8 = 5;

/// Built-in user verification's counters (a key whose body has no such method never writes
/// them). Kept on storage like the PIN's: cutting power never hands back a spent attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UvState {
    /// uvRetries: attempts left before built-in UV is blocked (until a correct PIN).
    #[serde(rename = "r")]
    pub retries: u8,
    /// uvCountSinceLastPinEntry: attempts, matched or not, since the last correct PIN.
    #[serde(rename = "n")]
    pub since_pin: u32,
}

impl Default for UvState {
    fn default() -> Self {
        Self {
            retries: UV_RETRIES,
            since_pin: 0,
        }
    }
}

struct Counter {
    next: u32,
    reserved: u32,
}

/// The authenticator's persistent state.
pub struct Store<'a, S: littlefs2::driver::Storage> {
    fs: Filesystem<'a, S>,
    counter: Option<Counter>,
    kwk: Option<Zeroizing<[u8; 32]>>,
    pin: Option<PinState>,
    settings: Option<Settings>,
    uv: Option<UvState>,
    /// The attestation as last read or written (`Some(None)`: none installed).
    attestation: Option<Option<Attestation>>,
    /// The enterprise attestation, likewise.
    enterprise_attestation: Option<Option<EnterpriseAttestation>>,
    /// The discoverable credentials' RAM index, read at first use.
    index: Option<Index>,
    /// A runner's limit on discoverable credentials, below what the geometry holds.
    capacity_limit: Option<usize>,
}

impl<'a, S: littlefs2::driver::Storage> Store<'a, S> {
    pub fn new(fs: Filesystem<'a, S>) -> Self {
        Self {
            fs,
            counter: None,
            kwk: None,
            pin: None,
            settings: None,
            uv: None,
            attestation: None,
            enterprise_attestation: None,
            index: None,
            capacity_limit: None,
        }
    }

    /// On power-up: make the key-wrapping key on first use, move credentials of the first
    /// layout into slots, and read the index, so that requests find it ready. Failures surface
    /// at first real use (and an unfinished migration resumes at the next power-up).
    pub fn prepare(&mut self, rng: &mut impl CryptoRng) {
        let _ = self.kwk(rng);
        let _ = self.fs.create_dir_all(&path("/cr"));
        let _ = self.migrate_first_layout(rng);
        let _ = self.slots();
    }

    fn new_kwk(&mut self, rng: &mut impl CryptoRng) -> Result<Zeroizing<[u8; 32]>> {
        let mut kwk = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *kwk);
        self.fs.create_dir_all(&path("/dev"))?;
        self.fs.write(&path("/dev/kwk"), &*kwk)?;
        let value = kwk.clone();
        self.kwk = Some(kwk);
        Ok(value)
    }

    /// The key-wrapping key, made on first use. The copy handed out is wiped when dropped.
    pub fn kwk(&mut self, rng: &mut impl CryptoRng) -> Result<Zeroizing<[u8; 32]>> {
        if let Some(kwk) = &self.kwk {
            return Ok(kwk.clone());
        }
        let path = path("/dev/kwk");
        let mut kwk = Zeroizing::new([0u8; 32]);
        match self.fs.read::<32>(&path) {
            Ok(mut bytes) if bytes.len() == 32 => {
                kwk.copy_from_slice(&bytes);
                bytes.as_mut_slice().zeroize();
            }
            // Empty: the power was cut while the file was first created (littlefs commits a new
            // file's name before its contents), so no credential was ever sealed with it.
            Ok(bytes) if bytes.is_empty() => return self.new_kwk(rng),
            Ok(_) => return Err(StoreError::Io),
            Err(e) if e == FsError::NO_SUCH_ENTRY => {
                rng.fill_bytes(&mut *kwk);
                self.fs.create_dir_all(&crate::store::path("/dev"))?;
                self.fs.write(&path, &*kwk)?;
            }
            Err(e) => return Err(e.into()),
        }
        let value = kwk.clone();
        self.kwk = Some(kwk);
        Ok(value)
    }

    /// The next signature counter value: strictly greater than every value handed out before,
    /// across restarts and power cuts.
    pub fn next_counter(&mut self) -> Result<u32> {
        let path = path("/dev/ctr");
        let counter = match self.counter.take() {
            Some(counter) => counter,
            None => {
                let reserved = match self.fs.read::<4>(&path) {
                    // Empty: cut while first created, before any value was handed out.
                    Ok(bytes) if bytes.is_empty() => 1,
                    Ok(bytes) => {
                        u32::from_be_bytes(bytes.as_slice().try_into().map_err(|_| StoreError::Io)?)
                    }
                    Err(e) if e == FsError::NO_SUCH_ENTRY => 1,
                    Err(e) => return Err(e.into()),
                };
                // Nothing at or above `reserved` was used before this boot.
                Counter {
                    next: reserved,
                    reserved,
                }
            }
        };
        let mut counter = counter;
        if counter.next >= counter.reserved {
            let reserved = counter
                .next
                .checked_add(COUNTER_STEP)
                .ok_or(StoreError::Full)?;
            self.fs.create_dir_all(&crate::store::path("/dev"))?;
            self.fs.write(&path, &reserved.to_be_bytes())?;
            counter.reserved = reserved;
        }
        let value = counter.next;
        counter.next += 1;
        self.counter = Some(counter);
        Ok(value)
    }

    /// The PIN state (no PIN and full retries until one is set).
    pub fn pin(&mut self) -> Result<PinState> {
        if self.pin.is_none() {
            self.pin = Some(self.load("/dev/pin")?.unwrap_or_default());
        }
        Ok(self.pin.clone().unwrap_or_default())
    }

    /// Write the PIN state; it is on storage when this returns.
    pub fn save_pin(&mut self, pin: &PinState) -> Result<()> {
        self.save("/dev/pin", pin)?;
        self.pin = Some(pin.clone());
        Ok(())
    }

    /// Is a PIN set? (Storage errors count as "set": fail closed.)
    pub fn pin_is_set(&mut self) -> bool {
        self.pin().map(|p| p.hash.is_some()).unwrap_or(true)
    }

    /// authenticatorConfig's settings.
    pub fn settings(&mut self) -> Result<Settings> {
        if self.settings.is_none() {
            self.settings = Some(self.load("/dev/cfg")?.unwrap_or_default());
        }
        Ok(self.settings.clone().unwrap_or_default())
    }

    pub fn save_settings(&mut self, settings: &Settings) -> Result<()> {
        self.save("/dev/cfg", settings)?;
        self.settings = Some(settings.clone());
        Ok(())
    }

    /// Built-in user verification's counters (full retries until first written).
    pub fn uv_state(&mut self) -> Result<UvState> {
        if self.uv.is_none() {
            self.uv = Some(self.load("/dev/uv")?.unwrap_or_default());
        }
        Ok(self.uv.clone().unwrap_or_default())
    }

    /// Write built-in user verification's counters; they are on storage when this returns.
    pub fn save_uv_state(&mut self, uv: &UvState) -> Result<()> {
        self.save("/dev/uv", uv)?;
        self.uv = Some(uv.clone());
        Ok(())
    }

    /// The serialized large-blob array (§6.10): the empty array until one is written.
    pub fn large_blob_array(&self) -> Result<Vec<u8>> {
        Ok(self
            .read_whole("/dev/lb")?
            .map_or_else(Self::empty_large_blob_array, Ok)?)
    }

    /// A whole file of any length; `None` if absent, or empty because the power was cut while
    /// it was first created (its write was never acknowledged).
    fn read_whole(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let read = self.fs.open_file_and_then(&path(name), |file| {
            let Ok(mut bytes) = fallible::zeroed(file.len()?) else {
                return Ok(Err(OutOfMemory));
            };
            let n = file.read(&mut bytes)?;
            bytes.truncate(n);
            Ok(Ok(bytes))
        });
        match read {
            Ok(Err(OutOfMemory)) => Err(StoreError::OutOfMemory),
            Ok(Ok(bytes)) if !bytes.is_empty() => Ok(Some(bytes)),
            Ok(_) => Ok(None),
            Err(e) if e == FsError::NO_SUCH_ENTRY => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The installed batch attestation, if any. authenticatorReset keeps it.
    pub fn attestation(&mut self) -> Result<Option<&Attestation>> {
        if self.attestation.is_none() {
            let record = self.read_whole("/dev/att")?.map(Zeroizing::new);
            let attestation = match record {
                Some(record) => Some(Attestation::from_record(&record).ok_or(StoreError::Io)?),
                None => None,
            };
            self.attestation = Some(attestation);
        }
        Ok(self.attestation.as_ref().and_then(Option::as_ref))
    }

    /// Install a batch attestation; it is on storage when this returns.
    pub fn save_attestation(&mut self, attestation: &Attestation) -> Result<()> {
        self.fs.create_dir_all(&path("/dev"))?;
        self.fs.write(&path("/dev/att"), &attestation.to_record())?;
        self.attestation = Some(Some(attestation.clone()));
        Ok(())
    }

    /// The installed enterprise attestation, if any. authenticatorReset keeps it (and
    /// disables it, see [`Settings::enterprise_attestation`]).
    pub fn enterprise_attestation(&mut self) -> Result<Option<&EnterpriseAttestation>> {
        if self.enterprise_attestation.is_none() {
            let record = self.read_whole("/dev/eatt")?.map(Zeroizing::new);
            let attestation = match record {
                Some(record) => {
                    Some(EnterpriseAttestation::from_record(&record).ok_or(StoreError::Io)?)
                }
                None => None,
            };
            self.enterprise_attestation = Some(attestation);
        }
        Ok(self
            .enterprise_attestation
            .as_ref()
            .and_then(Option::as_ref))
    }

    /// Install an enterprise attestation: one file write, so a power cut leaves none or all.
    pub fn save_enterprise_attestation(
        &mut self,
        attestation: EnterpriseAttestation,
    ) -> Result<()> {
        let record = attestation
            .to_record()
            .map_err(|_| StoreError::OutOfMemory)?;
        self.fs.create_dir_all(&path("/dev"))?;
        self.fs.write(&path("/dev/eatt"), &record)?;
        self.enterprise_attestation = Some(Some(attestation));
        Ok(())
    }

    /// CBOR [] and the first 16 bytes of its SHA-256.
    fn empty_large_blob_array() -> core::result::Result<Vec<u8>, OutOfMemory> {
        fallible::concat(&[&[0x80], &sha256(&[0x80])[..16]])
    }

    /// Replace the large-blob array (atomically, like every file).
    pub fn save_large_blob_array(&mut self, bytes: &[u8]) -> Result<()> {
        self.fs.create_dir_all(&path("/dev"))?;
        self.fs.write(&path("/dev/lb"), bytes)?;
        Ok(())
    }

    fn load<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.fs.read::<MAX_DEVICE_RECORD_LEN>(&path(name)) {
            // Empty: cut while first created; the write was never acknowledged.
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => cbor_smol::cbor_deserialize(&bytes)
                .map(Some)
                .map_err(|_| StoreError::Io),
            Err(e) if e == FsError::NO_SUCH_ENTRY => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn save<T: Serialize>(&mut self, name: &str, value: &T) -> Result<()> {
        let mut buffer = [0u8; MAX_DEVICE_RECORD_LEN];
        let bytes = cbor_smol::cbor_serialize(value, &mut buffer).map_err(|_| StoreError::Io)?;
        self.fs.create_dir_all(&path("/dev"))?;
        self.fs.write(&path(name), bytes)?;
        Ok(())
    }

    /// The discoverable credentials: their slot files and the RAM index, read at first use.
    fn slots(&mut self) -> Result<Residents<'_, 'a, S>> {
        if self.index.is_none() {
            // Slot files must fit in one block: a geometry of smaller blocks holds none.
            let capacity = if S::BLOCK_SIZE >= resident::FILE_LEN {
                resident::capacity(S::BLOCK_COUNT)
            } else {
                0
            };
            self.index = Some(Index::load(&self.fs, capacity)?);
        }
        match &mut self.index {
            Some(index) => Ok(Residents {
                fs: &self.fs,
                index,
            }),
            None => Err(StoreError::Io),
        }
    }

    /// Hold at most `limit` discoverable credentials (fewer than the geometry allows): how a
    /// runner gives a test key a small, exact capacity. Credentials already stored stay.
    pub fn set_capacity_limit(&mut self, limit: usize) {
        self.capacity_limit = Some(limit);
    }

    /// Store a discoverable credential, replacing the one of the same RP and user.id.
    pub fn save_resident(&mut self, credential: &ResidentCredential) -> Result<()> {
        let limit = self.capacity_limit;
        let mut slots = self.slots()?;
        if limit.is_some_and(|limit| slots.index.used() >= limit)
            && !slots.holds_user(credential)?
        {
            return Err(StoreError::Full);
        }
        slots.save(credential)
    }

    /// Delete a discoverable credential (by its RP and user.id).
    pub fn delete_resident(&mut self, credential: &ResidentCredential) -> Result<()> {
        self.slots()?.delete(credential)
    }

    /// The credential a reference names, unless it was deleted or replaced since.
    pub fn load_resident(&mut self, reference: &ResidentRef) -> Result<Option<ResidentCredential>> {
        self.slots()?.load(reference)
    }

    /// The stored discoverable credential with this ID, whatever its RP.
    pub fn find_resident(&mut self, id: &[u8]) -> Result<Option<ResidentCredential>> {
        self.slots()?.find(id)
    }

    /// The stored discoverable credential with this ID for this RP.
    pub fn resident_ref(
        &mut self,
        rp_id_hash: &[u8; 32],
        id: &[u8],
    ) -> Result<Option<ResidentRef>> {
        self.slots()?.reference_to(rp_id_hash, id)
    }

    /// Is there a discoverable credential with this ID for this RP? (Errors count as no.)
    pub fn resident_exists(&mut self, rp_id_hash: &[u8; 32], id: &[u8]) -> bool {
        matches!(self.resident_ref(rp_id_hash, id), Ok(Some(_)))
    }

    /// The RP's newest visible credential older than `after` (the newest if `None`): one step
    /// of a getAssertion series or an enumeration, which keep only the last reference.
    pub fn next_resident(
        &mut self,
        rp_id_hash: &[u8; 32],
        visibility: Visibility,
        after: Option<ResidentRef>,
    ) -> Result<Option<ResidentRef>> {
        Ok(self
            .next_resident_record(rp_id_hash, visibility, after)?
            .map(|(r, _)| r))
    }

    /// `next_resident` with the record it had to read to be sure of it, so that a caller who
    /// answers with the credential does not read it twice.
    pub fn next_resident_record(
        &mut self,
        rp_id_hash: &[u8; 32],
        visibility: Visibility,
        after: Option<ResidentRef>,
    ) -> Result<Option<(ResidentRef, ResidentCredential)>> {
        self.slots()?.next(rp_id_hash, visibility, after)
    }

    /// How many of the RP's credentials a walk with `visibility` visits.
    pub fn resident_count_of(
        &mut self,
        rp_id_hash: &[u8; 32],
        visibility: Visibility,
    ) -> Result<usize> {
        Ok(self.slots()?.count(rp_id_hash, visibility))
    }

    /// Every discoverable credential of one RP, newest first. Allocates for each one: for
    /// tests and tools, never on a request path.
    pub fn residents(&mut self, rp_id_hash: &[u8; 32]) -> Result<Vec<ResidentCredential>> {
        let mut found = Vec::new();
        let mut after = None;
        while let Some(reference) = self.next_resident(rp_id_hash, Visibility::All, after)? {
            if let Some(credential) = self.load_resident(&reference)? {
                found.push(credential);
            }
            after = Some(reference);
        }
        Ok(found)
    }

    /// The next RP with discoverable credentials after `after` (the first if `None`), in an
    /// order fixed by the RP ID hash.
    pub fn next_rp(&mut self, after: Option<[u8; 8]>) -> Result<Option<StoredRp>> {
        self.slots()?.next_rp(after)
    }

    /// How many RPs have discoverable credentials.
    pub fn rp_count(&mut self) -> Result<usize> {
        Ok(self.slots()?.rp_count())
    }

    /// How many discoverable credentials are stored.
    pub fn resident_count(&mut self) -> Result<usize> {
        Ok(self.slots()?.index.used())
    }

    /// A number that changes with every change to the discoverable credentials (creation,
    /// replacement, update, deletion) and with nothing else; it starts again at reset.
    pub fn resident_generation(&mut self) -> Result<u32> {
        Ok(self.slots()?.generation())
    }

    /// How many more discoverable credentials fit: exactly, since the capacity is fixed by the
    /// geometry (see [`resident::capacity`]) or the runner's limit. Reported in getInfo and
    /// enforced in [`Store::save_resident`], so the number is what the key will accept.
    pub fn remaining_resident_slots(&mut self) -> usize {
        let limit = self.capacity_limit.unwrap_or(usize::MAX);
        match self.slots() {
            Ok(slots) => slots
                .index
                .capacity()
                .min(limit)
                .saturating_sub(slots.index.used()),
            Err(_) => 0,
        }
    }

    /// Move credentials of the first layout (`/rk/<rp>.<user>`, one file each) into slots.
    /// Power-cut safe at every write: a record is removed only after its slot is written, and
    /// one migrated twice lands in the same slot (same RP and user.id), so none is lost or
    /// doubled; its creation order is kept.
    fn migrate_first_layout(&mut self, rng: &mut impl CryptoRng) -> Result<()> {
        let old = path("/rk");
        if !self.fs.exists(&old) {
            return Ok(());
        }
        let kwk = self.kwk(rng)?;
        loop {
            // A few names at a time: the directory changes as records move out of it.
            let names = self.fs.read_dir_and_then(&old, |entries| {
                let mut names = heapless::Vec::<PathBuf, 4>::new();
                for entry in entries {
                    let entry = entry?;
                    if entry.file_type().is_file()
                        && names.push(PathBuf::from(entry.path())).is_err()
                    {
                        break;
                    }
                }
                Ok(names)
            })?;
            if names.is_empty() {
                break;
            }
            for name in &names {
                let bytes = self.fs.read::<MAX_RECORD_LEN>(name)?;
                // One that does not parse was never usable (the first layout skipped it too).
                if let Ok(mut record) = cbor_smol::cbor_deserialize::<ResidentCredential>(&bytes) {
                    let rp_id_hash = sha256(record.rp_id.as_bytes());
                    record.cred_protect =
                        crate::credential::Credential::open(&kwk, &rp_id_hash, &record.id)
                            .map_or(1, |credential| credential.cred_protect as u8);
                    self.slots()?.save(&record)?;
                }
                self.fs.remove(name)?;
            }
        }
        self.fs.remove_dir(&old)?;
        Ok(())
    }

    /// authenticatorReset: forget every credential (a new key-wrapping key makes every old ID
    /// unopenable), the PIN and the settings. The signature counter is kept: it must never go
    /// back; so is the batch attestation, which belongs to the device, not its owner.
    pub fn reset(&mut self, rng: &mut impl CryptoRng) -> Result<()> {
        for file in ["/dev/pin", "/dev/cfg", "/dev/lb", "/dev/uv"] {
            match self.fs.remove(&path(file)) {
                Ok(()) => {}
                Err(e) if e == FsError::NO_SUCH_ENTRY => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pin = None;
        self.settings = None;
        self.uv = None;
        for dir in ["/rk", "/cr"] {
            match self.fs.remove_dir_all(&path(dir)) {
                Ok(()) => {}
                Err(e) if e == FsError::NO_SUCH_ENTRY => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.index = None;
        let mut kwk = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *kwk);
        self.fs.create_dir_all(&path("/dev"))?;
        self.fs.write(&path("/dev/kwk"), &*kwk)?;
        self.kwk = Some(kwk);
        Ok(())
    }
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn path(s: &str) -> PathBuf {
    PathBuf::try_from(s).expect("static paths are valid")
}

/// A littlefs2 block device of `BLOCKS` 4 KiB blocks in RAM: the virtual key's `--ephemeral`
/// state, and the tests' and fuzzers' storage.
pub struct RamStorage<const BLOCKS: usize> {
    bytes: Vec<u8>,
}

impl<const BLOCKS: usize> Default for RamStorage<BLOCKS> {
    fn default() -> Self {
        Self {
            bytes: alloc::vec![0xff; RAM_BLOCK_SIZE * BLOCKS],
        }
    }
}

impl<const BLOCKS: usize> RamStorage<BLOCKS> {
    /// The whole image, e.g. to save it across a simulated power cycle.
    pub fn image(&self) -> &[u8] {
        &self.bytes
    }
}

const RAM_BLOCK_SIZE: usize = 4096;

impl<const BLOCKS: usize> littlefs2::driver::Storage for RamStorage<BLOCKS> {
    const READ_SIZE: usize = 16;
    const WRITE_SIZE: usize = 16;
    const BLOCK_SIZE: usize = RAM_BLOCK_SIZE;
    const BLOCK_COUNT: usize = BLOCKS;
    const BLOCK_CYCLES: isize = 500;
    type CACHE_SIZE = littlefs2::consts::U256;
    type LOOKAHEAD_SIZE = littlefs2::consts::U16;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        let src = self.bytes.get(off..off + buf.len()).ok_or(FsError::IO)?;
        buf.copy_from_slice(src);
        Ok(buf.len())
    }

    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        self.bytes
            .get_mut(off..off + data.len())
            .ok_or(FsError::IO)?
            .copy_from_slice(data);
        Ok(data.len())
    }

    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        self.bytes
            .get_mut(off..off + len)
            .ok_or(FsError::IO)?
            .fill(0xff);
        Ok(len)
    }
}
