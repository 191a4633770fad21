//! The authenticator's state on a littlefs2 filesystem.
//!
//! Small files with one owner each. littlefs commits a file write atomically when the file is
//! closed, so a power cut during any write leaves either the old or the new file:
//!
//! ```text
//! /dev/ctr            signature counter reservation (u32, big-endian)
//! /dev/pin            PIN retries left
//! /dev/cfg            authenticatorConfig settings (alwaysUv, minimum PIN length, ...)
//! /dev/uv             built-in user verification: uvRetries left, attempts since the PIN
//! /dev/lb             the serialized large-blob array (absent: the empty array)
//! /cr/<d>/<f>         discoverable credentials, packed in fixed-size slots (see [`resident`])
//! ```
//!
//! Nothing secret lives in littlefs, which frees blocks without erasing them and keeps earlier
//! commits of small files in its metadata logs. The device secrets (key-wrapping key,
//! persistent token, attestation keys) and the PIN verifier live in the vault, two raw slots
//! beside the partition (see [`vault`] and `store/device.rs`), sealed under the PIN when the owner
//! turned the PIN lock on. authenticatorReset erases the whole partition and rewrites only the
//! counter (see [`Store::reset`]).
//!
//! Keys of the first layout kept one file per discoverable credential in `/rk`; they are moved
//! into slots when the store is first prepared (see [`Store::prepare`]). Keys from before the
//! vault kept their secrets in `/dev/kwk`, `/dev/pin`, `/dev/att` and `/dev/eatt`; they move
//! into the vault at the first power-up of this code, and littlefs is then scrubbed of their
//! stale copies (`Store::device_from_littlefs`, then `Store::scrub`).
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
use zeroize::Zeroizing;

use crate::attestation::{Attestation, EnterpriseAttestation};
use crate::fallible::{self, OutOfMemory};
use crate::platform::Vault;

/// How far ahead the signature counter is reserved on storage.
pub const COUNTER_STEP: u32 = 64;
/// The most a serialized settings or PIN file takes: settings may list
/// [`MAX_MIN_PIN_LENGTH_RP_IDS`] RP IDs of 256 bytes.
const MAX_DEVICE_RECORD_LEN: usize = 1280;
/// The most a discoverable credential of the first layout takes.
const MAX_RECORD_LEN: usize = resident::RECORD_LEN;

pub mod ahead;
mod device;
mod resident;
pub mod vault;

pub use device::PinKdf;
use device::{Device, Key, PinKeys, Secrets, Verifier};
pub(crate) use resident::RECORD_LEN;
pub use resident::{capacity, ResidentRef, StoredRp, Visibility, RESERVED_BLOCKS, SLOTS_PER_FILE};
use resident::{Index, Residents};

/// Whether the vault records an authenticatorReset whose wipe is not finished (see
/// [`Store::reset`]): the partition may then not mount (a power cut erased part of it), and the
/// next power-up formats it and finishes the wipe.
pub fn wipe_pending<S: Vault>(storage: &mut S) -> bool {
    matches!(
        vault::recover(storage),
        Ok(Some((_, body))) if Device::from_cbor(&body).is_ok_and(|d| d.wipe_floor.is_some())
    )
}

/// Mount the filesystem on `storage`, formatting it first if it holds none (first power-up).
pub fn mount<'a, S: littlefs2::driver::Storage>(
    alloc: &'a mut Allocation<S>,
    storage: &'a mut S,
) -> littlefs2::io::Result<Filesystem<'a, S>> {
    Filesystem::mount_or_else(alloc, storage, |_err, storage, _alloc| {
        Filesystem::format(storage)
    })
}

/// Why a store operation failed. Never carries stored bytes: a cause may be logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No room left for what was asked.
    Full,
    /// littlefs, or the device under it or the vault, failed: littlefs's error code (negative,
    /// lfs.h's `LFS_ERR_*`: -5 I/O, -84 corrupt, -2 no such entry, ...).
    Filesystem(i32),
    /// The state holds something unreadable (a record that does not decode, a field of the
    /// wrong length), or the filesystem is not mounted.
    Io,
    /// The heap could not hold what was read.
    OutOfMemory,
    /// The secrets are sealed under the PIN, which has not been given since power-up.
    Locked,
    /// The vault was written once but holds no readable record now: both slots damaged
    /// (tampering with the flash, bit rot), its record undecodable, or both slots erased while
    /// littlefs still holds the state that went with it. No power cut leaves this (see
    /// [`vault`]). The key refuses to serve until authenticatorReset starts it over.
    VaultUnreadable,
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
            StoreError::Filesystem(error.code())
        }
    }
}

/// A step of [`Store::prepare`] that failed at power-up, and why: the platform may log it
/// ([`crate::platform::Platform::store_failed`]); the key goes on, and the step's failure
/// surfaces again at first real use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareFailure {
    pub step: PrepareStep,
    pub error: StoreError,
}

/// The steps of [`Store::prepare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrepareStep {
    /// Reading the vault (or making or moving the device secrets), finishing a wipe or scrub.
    Vault,
    /// Making littlefs's directories.
    Directories,
    /// Moving credentials of the first layout into slots.
    FirstLayout,
    /// Reading the index of slots.
    Index,
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
    /// An imported credential (test automation, see [`crate::automation`]): its ID is the one
    /// it was made with elsewhere, and the sealed credential holding its private key is kept
    /// here instead. Absent for the key's own credentials, whose ID is the sealed credential.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<heapless_bytes::Bytes<{ crate::credential::MAX_ID_LEN }>>,
    /// The credential's own signature counter, the last value it signed with: imported
    /// credentials carry the count they reached elsewhere. Absent: the key's global counter.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<u32>,
    /// Not discoverable: an imported non-discoverable credential, kept only because its ID is
    /// not a sealed credential. Found by its ID (allow lists, U2F), never by discovery or
    /// credential management's enumerations.
    #[serde(rename = "x", default, skip_serializing_if = "core::ops::Not::not")]
    pub listed_only: bool,
}

impl ResidentCredential {
    /// The sealed credential (see [`crate::credential`]) that holds the private key.
    pub fn sealed_credential(&self) -> &[u8] {
        self.sealed.as_deref().unwrap_or(&self.id)
    }
}

/// The largest serialized large-blob array (maxSerializedLargeBlobArray).
pub const MAX_LARGE_BLOB_ARRAY: usize = 8192;

/// PIN retries a new PIN starts with (§6.5.2).
pub const PIN_RETRIES: u8 = 8;
/// The default minimum PIN length, in code points.
pub const DEFAULT_MIN_PIN_LENGTH: u8 = 4;
/// How many RP IDs setMinPINLength may list (maxRPIDsForSetMinPINLength).
pub const MAX_MIN_PIN_LENGTH_RP_IDS: usize = 4;

/// The PIN retries left, written at every attempt (not secret: the PIN's verifier is in the
/// vault).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinState {
    #[serde(rename = "r")]
    pub retries: u8,
}

impl Default for PinState {
    fn default() -> Self {
        Self {
            retries: PIN_RETRIES,
        }
    }
}

/// `/dev/pin` as keys before the vault wrote it: the PIN's hash (LEFT(SHA-256(PIN), 16), the
/// very value a platform sends), its length and the persistent token, beside the retries.
#[derive(Deserialize)]
struct PinStateBeforeVault {
    #[serde(rename = "h", default)]
    hash: Option<heapless_bytes::Bytes<16>>,
    #[serde(rename = "r")]
    retries: u8,
    #[serde(rename = "l", default)]
    code_points: u8,
    #[serde(rename = "p", default)]
    persistent_token: Option<heapless_bytes::Bytes<32>>,
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

#[derive(Clone, Copy)]
struct Counter {
    next: u32,
    reserved: u32,
}

/// The authenticator's persistent state.
pub struct Store<'a, S: littlefs2::driver::Storage + Vault> {
    /// The filesystem: `None` only while the raw device is in use (vault writes, the wipe), or
    /// if it could not be mounted again after that.
    fs: Option<Filesystem<'a, S>>,
    counter: Option<Counter>,
    pin: Option<PinState>,
    settings: Option<Settings>,
    uv: Option<UvState>,
    /// The vault's record as read at power-up and since written, and where it is.
    device: Option<Device>,
    position: Option<vault::Position>,
    /// Since the first correct PIN of this power-up: what later PIN checks and writes need.
    unlocked: Option<Unlocked>,
    /// The discoverable credentials' RAM index, read at first use.
    index: Option<Index>,
    /// A runner's limit on discoverable credentials, below what the geometry holds.
    capacity_limit: Option<usize>,
    /// The vault was unreadable at power-up ([`StoreError::VaultUnreadable`]): until a reset,
    /// the key serves nothing (see [`Store::refused`]).
    refused: bool,
}

/// What the first correct PIN of a power-up leaves in RAM: the key the secrets are sealed
/// under, and a fast check of the PIN (HMAC under a key made for this power-up), so that later
/// PIN entries cost no KDF evaluation.
struct Unlocked {
    seal: Key,
    boot_key: Key,
    fast: Key,
}

impl Unlocked {
    fn new(keys: PinKeys, pin_hash: &[u8; 16], rng: &mut impl CryptoRng) -> Self {
        let mut boot_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut boot_key[..]);
        let fast = device::hmac(&boot_key[..], pin_hash);
        Self {
            seal: keys.seal,
            boot_key,
            fast,
        }
    }

    fn matches(&self, pin_hash: &[u8; 16]) -> bool {
        use subtle::ConstantTimeEq;
        device::hmac(&self.boot_key[..], pin_hash)
            .ct_eq(&*self.fast)
            .into()
    }
}

impl<T: littlefs2::driver::Storage + Vault> Store<'_, ahead::EraseAhead<T>> {
    /// One step of erasing ahead (see [`ahead`]), for a platform to run while no request is
    /// using the store (between requests, or while one waits for the user): make the plan or
    /// erase one planned block, with littlefs unmounted meanwhile and mounted again after, so
    /// its allocator starts where the plan says. Returns whether another step has work. A
    /// failed step fails no request: littlefs then erases as it always did.
    pub fn erase_ahead_step(&mut self) -> bool {
        self.with_device(|storage| {
            if storage.needs_plan() {
                storage.plan();
            } else {
                storage.erase_next()?;
            }
            Ok(storage.has_work())
        })
        .unwrap_or(false)
    }

    /// The flash under the store, with what erasing ahead did (benchmarks, wear figures).
    pub fn erase_ahead_counts(&mut self) -> Option<ahead::Counts> {
        self.with_device(|storage| Ok(storage.counts())).ok()
    }
}

impl<'a, S: littlefs2::driver::Storage + Vault> Store<'a, S> {
    pub fn new(fs: Filesystem<'a, S>) -> Self {
        Self {
            fs: Some(fs),
            counter: None,
            pin: None,
            settings: None,
            uv: None,
            device: None,
            position: None,
            unlocked: None,
            index: None,
            capacity_limit: None,
            refused: false,
        }
    }

    fn fs(&self) -> Result<&Filesystem<'a, S>> {
        self.fs.as_ref().ok_or(StoreError::Io)
    }

    /// Run `f` on the raw device (the vault, or the whole partition): littlefs is unmounted
    /// meanwhile and mounted again after. Nothing in RAM describes littlefs blocks, so nothing
    /// goes stale.
    fn with_device<R>(&mut self, f: impl FnOnce(&mut S) -> Result<R>) -> Result<R> {
        let (alloc, storage) = self.fs.take().ok_or(StoreError::Io)?.into_inner();
        let result = f(storage);
        self.fs = Some(Filesystem::mount(alloc, storage)?);
        result
    }

    /// On power-up: read the vault (making the device secrets on first use, or moving them
    /// from littlefs on a state of the layout before the vault), finish a wipe or a scrub a
    /// power cut interrupted, move credentials of the first layout into slots, and read the
    /// index, so that requests find it ready. A failed step does not stop the others; the
    /// failures are returned for the platform to log, and surface again at first real use (an
    /// unfinished step resumes at the next power-up). A vault that will not read stops them
    /// all: the key then refuses until reset (see [`Store::refused`]).
    pub fn prepare(
        &mut self,
        rng: &mut impl CryptoRng,
        kdf: PinKdf,
    ) -> heapless::Vec<PrepareFailure, 4> {
        let vault = self.open_vault(rng, kdf);
        self.refused = vault == Err(StoreError::VaultUnreadable);
        if self.refused {
            // The other steps would only fail for want of the secrets, or read what the
            // refusal keeps back: the one failure to report is the vault's.
            let mut failures = heapless::Vec::new();
            let _ = failures.push(PrepareFailure {
                step: PrepareStep::Vault,
                error: StoreError::VaultUnreadable,
            });
            return failures;
        }
        let directories = match self.fs() {
            Ok(fs) => fs.create_dir_all(&path("/cr")).map_err(StoreError::from),
            Err(error) => Err(error),
        };
        let first_layout = self.migrate_first_layout();
        let index = self.slots().map(|_| ());
        let steps = [
            (PrepareStep::Vault, vault),
            (PrepareStep::Directories, directories),
            (PrepareStep::FirstLayout, first_layout),
            (PrepareStep::Index, index),
        ];
        steps
            .into_iter()
            .filter_map(|(step, result)| {
                Some(PrepareFailure {
                    step,
                    error: result.err()?,
                })
            })
            .collect()
    }

    fn open_vault(&mut self, rng: &mut impl CryptoRng, kdf: PinKdf) -> Result<()> {
        match self.with_device(|storage| vault::recover(storage))? {
            Some((position, body)) => {
                // Kept even if the record does not decode: a reset's record must follow it.
                self.position = Some(position);
                let device = Device::from_cbor(&body).map_err(|error| match error {
                    StoreError::Io => StoreError::VaultUnreadable,
                    error => error,
                })?;
                self.device = Some(device);
            }
            None => {
                let device = self.device_from_littlefs(rng, kdf)?;
                // No vault and no secrets of the layout before it, yet littlefs holds what only
                // a key with secrets writes: the vault that went with it is gone. Starting
                // over would serve the owner's records from a key without their PIN.
                if !device.scrub && self.holds_state()? {
                    return Err(StoreError::VaultUnreadable);
                }
                self.commit(device, None, rng)?;
            }
        }
        let device = self.device()?;
        if let Some(floor) = device.wipe_floor {
            self.finish_wipe(floor, rng)?;
        }
        if self.device()?.scrub {
            self.scrub(rng)?;
        }
        Ok(())
    }

    fn device(&self) -> Result<&Device> {
        self.device.as_ref().ok_or(StoreError::Io)
    }

    /// Does littlefs hold anything a key writes only after its vault: a file in `/dev`
    /// (counter, PIN retries, settings, large blobs, UV counters) or in `/cr` (credentials)?
    /// A new key's littlefs, and a wiped one's before its counter is written back, holds none.
    fn holds_state(&self) -> Result<bool> {
        let fs = self.fs()?;
        for dir in ["/dev", "/cr"] {
            let dir = path(dir);
            if !fs.exists(&dir) {
                continue;
            }
            let any = fs.read_dir_and_then(&dir, |entries| {
                for entry in entries {
                    if !matches!(entry?.file_name().as_str(), "." | "..") {
                        return Ok(true);
                    }
                }
                Ok(false)
            })?;
            if any {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the key refuses to serve: its vault was unreadable at power-up (see
    /// [`StoreError::VaultUnreadable`]). Only getInfo, selection and authenticatorReset are
    /// answered; the reset clears it.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Write `device` as the vault's record, sealing its secrets under `seal` (or the key of
    /// this power-up's unlock) if the lock asks for it; then it is the record in RAM too.
    fn commit(
        &mut self,
        mut device: Device,
        seal: Option<&Key>,
        rng: &mut impl CryptoRng,
    ) -> Result<()> {
        let seal = seal.or(self.unlocked.as_ref().map(|u| &u.seal));
        let body = device.to_cbor(seal, rng)?;
        let current = self.position;
        match self.with_device(|storage| vault::write(storage, current, &body)) {
            Ok(position) => {
                self.position = Some(position);
                device.written();
                self.device = Some(device);
                Ok(())
            }
            Err(error) => {
                // The new record may have landed or not: until the next power-up decides,
                // nothing may be sealed or signed with either record's secrets.
                self.device = None;
                self.position = None;
                self.unlocked = None;
                Err(error)
            }
        }
    }

    /// The vault's record to change: a copy, written back with [`Store::commit`]. Its secrets
    /// must be readable (a locked key's are not), or they would be lost.
    fn device_to_change(&self) -> Result<Device> {
        let device = self.device()?;
        if device.secrets.is_none() {
            return Err(StoreError::Locked);
        }
        Ok(device.clone())
    }

    fn secrets(&self) -> Result<&Secrets> {
        self.device()?.secrets.as_ref().ok_or(StoreError::Locked)
    }

    /// The key-wrapping key. The copy handed out is wiped when dropped.
    pub fn kwk(&mut self) -> Result<Zeroizing<[u8; 32]>> {
        Ok(self.secrets()?.kwk.clone())
    }

    /// The next signature counter value: strictly greater than every value handed out before,
    /// across restarts and power cuts.
    pub fn next_counter(&mut self) -> Result<u32> {
        let path = path("/dev/ctr");
        let counter = match self.counter.take() {
            Some(counter) => counter,
            None => {
                let reserved = self.reserved_counter()?;
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
            self.fs()?.create_dir_all(&crate::store::path("/dev"))?;
            self.fs()?.write(&path, &reserved.to_be_bytes())?;
            counter.reserved = reserved;
        }
        let value = counter.next;
        counter.next += 1;
        self.counter = Some(counter);
        Ok(value)
    }

    /// The counter's reservation on storage: above every value handed out so far.
    fn reserved_counter(&self) -> Result<u32> {
        if let Some(counter) = &self.counter {
            return Ok(counter.reserved);
        }
        match self.fs()?.read::<4>(&path("/dev/ctr")) {
            // Empty: cut while first created, before any value was handed out.
            Ok(bytes) if bytes.is_empty() => Ok(1),
            Ok(bytes) => Ok(u32::from_be_bytes(
                bytes.as_slice().try_into().map_err(|_| StoreError::Io)?,
            )),
            Err(e) if e == FsError::NO_SUCH_ENTRY => Ok(1),
            Err(e) => Err(e.into()),
        }
    }

    /// The PIN retries (full until a PIN is set).
    pub fn pin(&mut self) -> Result<PinState> {
        if self.pin.is_none() {
            self.pin = Some(self.load("/dev/pin")?.unwrap_or_default());
        }
        Ok(self.pin.clone().unwrap_or_default())
    }

    /// Write the PIN retries; they are on storage when this returns.
    pub fn save_pin(&mut self, pin: &PinState) -> Result<()> {
        self.save("/dev/pin", pin)?;
        self.pin = Some(pin.clone());
        Ok(())
    }

    /// Is a PIN set? (An unreadable vault counts as "set": fail closed.)
    pub fn pin_is_set(&mut self) -> bool {
        self.device().map_or(true, |d| d.pin.is_some())
    }

    /// The current PIN's length in code points, if a PIN is set.
    pub fn pin_code_points(&mut self) -> Option<u8> {
        self.device().ok()?.pin.as_ref().map(|v| v.code_points)
    }

    /// Check pinHash against the PIN verifier. The first correct PIN of a power-up costs one KDF
    /// evaluation and opens sealed secrets; later ones are checked against a fast check kept in
    /// RAM. The caller has spent a retry first.
    pub fn check_pin(&mut self, pin_hash: &[u8; 16], rng: &mut impl CryptoRng) -> Result<bool> {
        let verifier = self.device()?.pin.clone().ok_or(StoreError::Io)?;
        if let Some(unlocked) = &self.unlocked {
            return Ok(unlocked.matches(pin_hash));
        }
        let Some(keys) = verifier.check(pin_hash)? else {
            return Ok(false);
        };
        if let Some(device) = &mut self.device {
            device.unseal(&keys.seal)?;
        }
        self.unlocked = Some(Unlocked::new(keys, pin_hash, rng));
        Ok(true)
    }

    /// Set or change the PIN: a new salt and verifier (under `kdf`), a new persistent token,
    /// and the secrets sealed again under the new PIN if the lock is on, in one vault write.
    pub fn set_pin(
        &mut self,
        pin_hash: &[u8; 16],
        code_points: u8,
        kdf: PinKdf,
        rng: &mut impl CryptoRng,
    ) -> Result<()> {
        let mut device = self.device_to_change()?;
        let (verifier, keys) = Verifier::new(kdf, pin_hash, code_points, rng)?;
        device.pin = Some(verifier);
        if let Some(secrets) = &mut device.secrets {
            secrets.persistent_token = Some(random_key(rng));
        }
        let unlocked = Unlocked::new(keys, pin_hash, rng);
        self.commit(device, Some(&unlocked.seal), rng)?;
        self.unlocked = Some(unlocked);
        Ok(())
    }

    /// Whether the owner turned the PIN lock on.
    pub fn lock_enabled(&mut self) -> bool {
        self.device().is_ok_and(|d| d.lock)
    }

    /// Whether the key is locked: the lock on, a PIN set, and no correct PIN since power-up, so
    /// the secrets are still sealed. (An unreadable vault counts as locked: fail closed.)
    pub fn locked(&mut self) -> bool {
        self.device().map_or(true, |d| d.secrets.is_none())
    }

    /// Turn the PIN lock on or off. With a PIN set, the secrets are sealed (or unsealed) in the
    /// same write; that needs this power-up's correct PIN, which a token proves.
    pub fn set_lock(&mut self, on: bool, rng: &mut impl CryptoRng) -> Result<()> {
        let mut device = self.device_to_change()?;
        if device.lock == on {
            return Ok(());
        }
        device.lock = on;
        self.commit(device, None, rng)
    }

    /// The persistent PIN/UV auth token, if one was made (sealed while locked).
    pub fn persistent_token(&mut self) -> Result<Option<Key>> {
        Ok(self.secrets()?.persistent_token.clone())
    }

    /// Replace the persistent token (a forced PIN change ends it, a PIN from before it existed
    /// gets one).
    pub fn renew_persistent_token(&mut self, rng: &mut impl CryptoRng) -> Result<Key> {
        let mut device = self.device_to_change()?;
        let token = random_key(rng);
        if let Some(secrets) = &mut device.secrets {
            secrets.persistent_token = Some(token.clone());
        }
        self.commit(device, None, rng)?;
        Ok(token)
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
        let read = self.fs()?.open_file_and_then(&path(name), |file| {
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

    /// The installed batch attestation, if any. authenticatorReset keeps it (unless the key
    /// was locked: then it is sealed under the PIN the reset forgets).
    pub fn attestation(&mut self) -> Result<Option<&Attestation>> {
        Ok(self.secrets()?.attestation.as_ref())
    }

    /// The batch certificate's AAGUID, known even while the key is locked.
    pub fn attestation_aaguid(&mut self) -> Option<[u8; 16]> {
        self.device().ok()?.aaguid()
    }

    /// Whether an enterprise attestation is installed, known even while the key is locked.
    pub fn has_enterprise_attestation(&mut self) -> bool {
        self.device().is_ok_and(Device::has_enterprise)
    }

    /// Install a batch attestation; it is in the vault when this returns.
    pub fn save_attestation(
        &mut self,
        attestation: &Attestation,
        rng: &mut impl CryptoRng,
    ) -> Result<()> {
        let mut device = self.device_to_change()?;
        if let Some(secrets) = &mut device.secrets {
            secrets.attestation = Some(attestation.clone());
        }
        self.commit(device, None, rng)
    }

    /// The installed enterprise attestation, if any. authenticatorReset keeps it (and
    /// disables it, see [`Settings::enterprise_attestation`]).
    pub fn enterprise_attestation(&mut self) -> Result<Option<&EnterpriseAttestation>> {
        Ok(self.secrets()?.enterprise.as_ref())
    }

    /// Install an enterprise attestation: one vault write, so a power cut leaves none or all.
    pub fn save_enterprise_attestation(
        &mut self,
        attestation: EnterpriseAttestation,
        rng: &mut impl CryptoRng,
    ) -> Result<()> {
        let mut device = self.device_to_change()?;
        if let Some(secrets) = &mut device.secrets {
            secrets.enterprise = Some(attestation);
        }
        self.commit(device, None, rng)
    }

    /// CBOR [] and the first 16 bytes of its SHA-256.
    fn empty_large_blob_array() -> core::result::Result<Vec<u8>, OutOfMemory> {
        fallible::concat(&[&[0x80], &sha256(&[0x80])[..16]])
    }

    /// Replace the large-blob array (atomically, like every file).
    pub fn save_large_blob_array(&mut self, bytes: &[u8]) -> Result<()> {
        self.fs()?.create_dir_all(&path("/dev"))?;
        self.fs()?.write(&path("/dev/lb"), bytes)?;
        Ok(())
    }

    fn load<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.fs()?.read::<MAX_DEVICE_RECORD_LEN>(&path(name)) {
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
        self.fs()?.create_dir_all(&path("/dev"))?;
        self.fs()?.write(&path(name), bytes)?;
        Ok(())
    }

    /// The discoverable credentials: their slot files and the RAM index, read at first use.
    fn slots(&mut self) -> Result<Residents<'_, 'a, S>> {
        // A refusing key keeps its records back from every path (see `Store::refused`).
        if self.refused {
            return Err(StoreError::VaultUnreadable);
        }
        if self.index.is_none() {
            // Slot files must fit in one block: a geometry of smaller blocks holds none.
            let capacity = if S::BLOCK_SIZE >= resident::FILE_LEN {
                resident::capacity(S::BLOCK_COUNT)
            } else {
                0
            };
            self.index = Some(Index::load(self.fs()?, capacity)?);
        }
        match (&self.fs, &mut self.index) {
            (Some(fs), Some(index)) => Ok(Residents { fs, index }),
            _ => Err(StoreError::Io),
        }
    }

    /// [`Self::slots`], with the index checked against the slot files first (if it was read
    /// from its copy): a change starts from what the slot files hold, never from the copy.
    fn slots_to_change(&mut self) -> Result<Residents<'_, 'a, S>> {
        let slots = self.slots()?;
        slots.index.check_all(slots.fs)?;
        Ok(slots)
    }

    /// One step of the index's idle work, for a platform to run between requests: check one
    /// slot file against an index read from its copy, or (`write_copy`, once the key has been
    /// quiet a while) store a copy of the index if none matching is stored (see
    /// `resident`'s `Index::save_copy`). Returns `Some(true)` if more steps have work now,
    /// `Some(false)` if only the copy waits (for `write_copy`), `None` when all is done. A
    /// failed step fails no request: a change checks the index first anyway, and a missing
    /// copy only makes the next power-up read every slot file.
    pub fn index_step(&mut self, write_copy: bool) -> Option<bool> {
        if self.refused {
            return None;
        }
        let (Some(fs), Some(index)) = (&self.fs, &mut self.index) else {
            return None;
        };
        if index.check_pending() {
            return index.check_step(fs).is_ok().then_some(true);
        }
        if !index.copy_due::<S>() {
            return None;
        }
        if write_copy {
            let _ = index.save_copy(fs);
            return None;
        }
        Some(false)
    }

    /// Hold at most `limit` discoverable credentials (fewer than the geometry allows): how a
    /// runner gives a test key a small, exact capacity. Credentials already stored stay.
    pub fn set_capacity_limit(&mut self, limit: usize) {
        self.capacity_limit = Some(limit);
    }

    /// Store a discoverable credential, replacing the one of the same RP and user.id.
    pub fn save_resident(&mut self, credential: &ResidentCredential) -> Result<()> {
        let limit = self.capacity_limit;
        let mut slots = self.slots_to_change()?;
        if limit.is_some_and(|limit| slots.index.used() >= limit)
            && !slots.holds_user(credential)?
        {
            return Err(StoreError::Full);
        }
        slots.save(credential)
    }

    /// Store an imported credential (see [`crate::automation`]) in a slot of its own, counted
    /// against the capacity like any discoverable credential.
    pub fn save_imported(&mut self, credential: &ResidentCredential) -> Result<()> {
        let limit = self.capacity_limit;
        let mut slots = self.slots_to_change()?;
        if limit.is_some_and(|limit| slots.index.used() >= limit) {
            return Err(StoreError::Full);
        }
        slots.save_new(credential)
    }

    /// Write a changed record (its signature counter) back where `reference` found it;
    /// `false` if it was deleted or replaced since.
    pub fn rewrite_resident(
        &mut self,
        reference: &ResidentRef,
        credential: &ResidentCredential,
    ) -> Result<bool> {
        self.slots_to_change()?.rewrite(reference, credential)
    }

    /// Delete the stored credential with this ID, discoverable or imported; `false` if none.
    pub fn delete_resident_id(&mut self, id: &[u8]) -> Result<bool> {
        self.slots_to_change()?.delete_id(id)
    }

    /// Every stored credential in turn, discoverable or not: the one after `after` (the first
    /// if `None`), with its record.
    pub fn next_stored(
        &mut self,
        after: Option<ResidentRef>,
    ) -> Result<Option<(ResidentRef, ResidentCredential)>> {
        self.slots()?.next_any(after)
    }

    /// The value the next signature on the global counter gets (nothing is reserved).
    pub fn peek_counter(&mut self) -> Result<u32> {
        if let Some(counter) = &self.counter {
            return Ok(counter.next);
        }
        match self.fs()?.read::<4>(&path("/dev/ctr")) {
            Ok(bytes) if bytes.is_empty() => Ok(1),
            Ok(bytes) => Ok(u32::from_be_bytes(
                bytes.as_slice().try_into().map_err(|_| StoreError::Io)?,
            )),
            Err(e) if e == FsError::NO_SUCH_ENTRY => Ok(1),
            Err(e) => Err(e.into()),
        }
    }

    /// Move the global counter forward so that the next signature gets `next`; a counter
    /// never goes back, so a `next` below [`Store::peek_counter`] is refused (`Ok(false)`).
    pub fn raise_counter(&mut self, next: u32) -> Result<bool> {
        if next < self.peek_counter()? {
            return Ok(false);
        }
        self.fs()?.create_dir_all(&path("/dev"))?;
        self.fs()?.write(&path("/dev/ctr"), &next.to_be_bytes())?;
        self.counter = Some(Counter {
            next,
            reserved: next,
        });
        Ok(true)
    }

    /// Does the store hold a discoverable credential of this one's RP and user.id?
    pub fn holds_user_of(&mut self, credential: &ResidentCredential) -> Result<bool> {
        self.slots()?.holds_user(credential)
    }

    /// Delete a discoverable credential (by its RP and user.id).
    pub fn delete_resident(&mut self, credential: &ResidentCredential) -> Result<()> {
        self.slots_to_change()?.delete(credential)
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
    fn migrate_first_layout(&mut self) -> Result<()> {
        let old = path("/rk");
        if !self.fs()?.exists(&old) {
            return Ok(());
        }
        let kwk = self.kwk()?;
        loop {
            // A few names at a time: the directory changes as records move out of it.
            let names = self.fs()?.read_dir_and_then(&old, |entries| {
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
                let bytes = self.fs()?.read::<MAX_RECORD_LEN>(name)?;
                // One that does not parse was never usable (the first layout skipped it too).
                if let Ok(mut record) = cbor_smol::cbor_deserialize::<ResidentCredential>(&bytes) {
                    let rp_id_hash = sha256(record.rp_id.as_bytes());
                    record.cred_protect =
                        crate::credential::Credential::open(&kwk, &rp_id_hash, &record.id)
                            .map_or(1, |credential| credential.cred_protect as u8);
                    self.slots_to_change()?.save(&record)?;
                }
                self.fs()?.remove(name)?;
            }
        }
        self.fs()?.remove_dir(&old)?;
        Ok(())
    }

    /// An empty vault: a new key, or the state of a key from before the vault, whose secrets
    /// are still in littlefs. Then the record is built from those files (the PIN verifier is
    /// KDF(stored hash, new salt): no PIN is needed), marked for the scrub that removes them.
    fn device_from_littlefs(&mut self, rng: &mut impl CryptoRng, kdf: PinKdf) -> Result<Device> {
        let mut secrets = Secrets::new(rng);
        let mut old_files = false;
        if let Some(bytes) = self.read_whole("/dev/kwk")? {
            old_files = true;
            let bytes = Zeroizing::new(bytes);
            // Anything but 32 bytes sealed no credential: a new key is as good.
            if let Ok(kwk) = <[u8; 32]>::try_from(&bytes[..]) {
                secrets.kwk = Zeroizing::new(kwk);
            }
        }
        // An attestation that does not parse was never usable: it is dropped.
        if let Some(record) = self.read_whole("/dev/att")?.map(Zeroizing::new) {
            old_files = true;
            secrets.attestation = Attestation::from_record(&record);
        }
        if let Some(record) = self.read_whole("/dev/eatt")?.map(Zeroizing::new) {
            old_files = true;
            secrets.enterprise = EnterpriseAttestation::from_record(&record);
        }
        let old_pin: Option<PinStateBeforeVault> = self.load("/dev/pin")?;
        let mut verifier = None;
        if let Some(old_pin) = old_pin {
            if let Some(token) = old_pin.persistent_token {
                old_files = true;
                let token: [u8; 32] = token.as_slice().try_into().map_err(|_| StoreError::Io)?;
                secrets.persistent_token = Some(Zeroizing::new(token));
            }
            if let Some(hash) = old_pin.hash {
                old_files = true;
                let hash: [u8; 16] = hash.as_slice().try_into().map_err(|_| StoreError::Io)?;
                verifier = Some(Verifier::new(kdf, &hash, old_pin.code_points, rng)?.0);
            }
            let _ = old_pin.retries;
        }
        let mut device = Device::new(secrets);
        device.pin = verifier;
        device.scrub = old_files;
        Ok(device)
    }

    /// The migration's second half, resumable at every step: the files that held secrets go,
    /// and so does every stale copy of them littlefs may keep (earlier commits in the device
    /// directory's metadata log, freed blocks):
    /// 1. `/dev` is renamed `/old`; the files that survive (counter, retries, settings, large
    ///    blobs) are copied into a new `/dev`, the PIN state without its hash and token, each
    ///    removed from `/old` once copied; then `/old` goes, with the secrets' files;
    /// 2. a scratch file fills every free block (littlefs erases each before writing it) and is
    ///    removed;
    /// 3. the vault's mark is cleared.
    fn scrub(&mut self, rng: &mut impl CryptoRng) -> Result<()> {
        let (dev, old) = (path("/dev"), path("/old"));
        if self.fs()?.exists(&dev) && !self.fs()?.exists(&old) {
            self.fs()?.rename(&dev, &old)?;
        }
        if self.fs()?.exists(&old) {
            self.fs()?.create_dir_all(&dev)?;
            for name in ["ctr", "pin", "cfg", "lb"] {
                let from = path(&alloc::format!("/old/{name}"));
                let Some(bytes) = self.read_whole(&alloc::format!("/old/{name}"))? else {
                    continue;
                };
                let bytes = Zeroizing::new(bytes);
                let to = path(&alloc::format!("/dev/{name}"));
                if name == "pin" {
                    let old_pin: PinStateBeforeVault =
                        cbor_smol::cbor_deserialize(&bytes).map_err(|_| StoreError::Io)?;
                    self.pin = None;
                    self.save(
                        "/dev/pin",
                        &PinState {
                            retries: old_pin.retries,
                        },
                    )?;
                } else {
                    self.fs()?.write(&to, &bytes)?;
                }
                self.fs()?.remove(&from)?;
            }
            self.fs()?.remove_dir_all(&old)?;
        }
        self.fill_free_blocks()?;
        let mut device = self.device()?.clone();
        device.scrub = false;
        self.commit(device, None, rng)
    }

    /// Write a scratch file until littlefs has no free block left, then remove it: every block
    /// that was free, and so might hold a stale copy of something removed, is erased and
    /// overwritten.
    fn fill_free_blocks(&mut self) -> Result<()> {
        let scratch = path("/scrub");
        let fs = self.fs()?;
        match fs.remove(&scratch) {
            Ok(()) => {}
            Err(e) if e == FsError::NO_SUCH_ENTRY => {}
            Err(e) => return Err(e.into()),
        }
        let chunk = [0u8; 512];
        let filled = fs.open_file_with_options_and_then(
            |options| options.write(true).create(true).truncate(true),
            &scratch,
            |file| loop {
                match file.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if e == FsError::NO_SPACE => return Ok(()),
                    Err(e) => return Err(e),
                }
            },
        );
        match filled {
            Ok(()) => {}
            // Closing a file that met a full disk may fail the same way: what it wrote has
            // reached the blocks either way.
            Err(e) if e == FsError::NO_SPACE => {}
            Err(e) => return Err(e.into()),
        }
        match fs.remove(&scratch) {
            Ok(()) => Ok(()),
            Err(e) if e == FsError::NO_SUCH_ENTRY => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// authenticatorReset: a new key-wrapping key (every old credential ID becomes unopenable),
    /// no PIN, the lock off, and no byte of what came before left anywhere in the state:
    /// 1. the vault gets a record with the new secrets and a "wipe pending" mark with the
    ///    signature counter's floor; writing it erases the old record, so the old key-wrapping
    ///    key, PIN verifier and tokens are gone;
    /// 2. the whole littlefs partition is erased and formatted, and the counter written back
    ///    at its floor (it must never go back);
    /// 3. the mark is cleared.
    ///
    /// A power cut before 1 completes leaves the old key; after it, the next power-up redoes 2
    /// and 3. The batch and enterprise attestations belong to the device, not its owner: they
    /// are kept if readable. A locked key's are sealed under the PIN, which the reset forgets:
    /// they are lost, and the key attests itself until provisioned again.
    pub fn reset(&mut self, rng: &mut impl CryptoRng) -> Result<()> {
        let floor = self.reserved_counter()?;
        let mut secrets = Secrets::new(rng);
        if let Some(old) = self.device.as_ref().and_then(|d| d.secrets.as_ref()) {
            secrets.attestation = old.attestation.clone();
            secrets.enterprise = old.enterprise.clone();
        }
        let mut device = Device::new(secrets);
        device.wipe_floor = Some(floor);
        self.unlocked = None;
        self.commit(device, None, rng)?;
        self.refused = false;
        self.finish_wipe(floor, rng)
    }

    /// Steps 2 and 3 of [`Store::reset`].
    fn finish_wipe(&mut self, floor: u32, rng: &mut impl CryptoRng) -> Result<()> {
        self.with_device(|storage| {
            storage.erase(0, S::BLOCK_SIZE * S::BLOCK_COUNT)?;
            Filesystem::format(storage)?;
            Ok(())
        })?;
        self.counter = None;
        self.pin = None;
        self.settings = None;
        self.uv = None;
        self.index = None;
        let fs = self.fs()?;
        fs.create_dir_all(&path("/dev"))?;
        fs.write(&path("/dev/ctr"), &floor.to_be_bytes())?;
        fs.create_dir_all(&path("/cr"))?;
        let mut device = self.device()?.clone();
        device.wipe_floor = None;
        self.commit(device, None, rng)
    }
}

fn random_key(rng: &mut impl CryptoRng) -> Key {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut key[..]);
    key
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn path(s: &str) -> PathBuf {
    PathBuf::try_from(s).expect("static paths are valid")
}

/// A littlefs2 block device of `BLOCKS` 4 KiB blocks in RAM, and a vault beside it: the
/// virtual key's `--ephemeral` state, and the tests' and fuzzers' storage.
pub struct RamStorage<const BLOCKS: usize> {
    bytes: Vec<u8>,
    vault: vault::RamVault,
}

impl<const BLOCKS: usize> Default for RamStorage<BLOCKS> {
    fn default() -> Self {
        Self {
            bytes: alloc::vec![0xff; RAM_BLOCK_SIZE * BLOCKS],
            vault: vault::RamVault::default(),
        }
    }
}

impl<const BLOCKS: usize> RamStorage<BLOCKS> {
    /// The littlefs partition's image, e.g. to save it across a simulated power cycle.
    pub fn image(&self) -> &[u8] {
        &self.bytes
    }

    /// The vault's two slots.
    pub fn vault(&self) -> &vault::RamVault {
        &self.vault
    }

    /// The vault, to change it as a power cut would.
    pub fn vault_mut(&mut self) -> &mut vault::RamVault {
        &mut self.vault
    }

    /// A device holding these images (a copy of another's, or one a test made).
    pub fn from_images(partition: &[u8], vault: &[u8]) -> Self {
        let mut storage = Self::default();
        storage.bytes.copy_from_slice(partition);
        storage.vault = vault::RamVault::from_image(vault);
        storage
    }
}

impl<const BLOCKS: usize> Vault for RamStorage<BLOCKS> {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        self.vault.read(offset, buf)
    }
    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        self.vault.program(offset, data)
    }
    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        self.vault.erase(offset)
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
