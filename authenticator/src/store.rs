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
//! /dev/lb             the serialized large-blob array (absent: the empty array)
//! /rk/<rp>.<user>     one discoverable credential; <rp> and <user> are hex digests
//! ```
//!
//! The signature counter is reserved ahead in steps of [`COUNTER_STEP`]: the file holds a value
//! no signature has used yet, so after a crash the counter resumes above anything already
//! signed, and flash is written once per step instead of once per assertion.

use alloc::vec::Vec;
use core::fmt::Write as _;

use ctap_types::webauthn::PublicKeyCredentialUserEntity;
use littlefs2::fs::{Allocation, Filesystem};
use littlefs2::io::Error as FsError;
use littlefs2::path::PathBuf;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::attestation::Attestation;

/// How far ahead the signature counter is reserved on storage.
pub const COUNTER_STEP: u32 = 64;
/// Free blocks kept back so that metadata updates, the counter and deletions always fit.
const RESERVED_BLOCKS: usize = 8;
/// The most a serialized discoverable credential takes.
const MAX_RECORD_LEN: usize = 768;

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
}

impl Default for PinState {
    fn default() -> Self {
        Self {
            hash: None,
            retries: PIN_RETRIES,
            code_points: 0,
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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            always_uv: false,
            min_pin_length: DEFAULT_MIN_PIN_LENGTH,
            min_pin_length_rp_ids: heapless::Vec::new(),
            force_pin_change: false,
        }
    }
}

/// A discoverable credential by name, small enough to keep hundreds of in RAM: what a
/// getAssertion series or an enumeration walks through, reading each record when its turn comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidentRef {
    pub created: u32,
    rp_id_hash: [u8; 32],
    user_digest: [u8; 8],
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
    /// The attestation as last read or written (`Some(None)`: none installed).
    attestation: Option<Option<Attestation>>,
}

impl<'a, S: littlefs2::driver::Storage> Store<'a, S> {
    pub fn new(fs: Filesystem<'a, S>) -> Self {
        Self {
            fs,
            counter: None,
            kwk: None,
            pin: None,
            settings: None,
            attestation: None,
        }
    }

    /// Make the key-wrapping key and the directories on first power-up, so that what getInfo
    /// reports as room is room for credentials alone. Failures surface at first real use.
    pub fn prepare(&mut self, rng: &mut impl CryptoRng) {
        let _ = self.kwk(rng);
        let _ = self.fs.create_dir_all(&path("/rk"));
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

    /// The serialized large-blob array (§6.10): the empty array until one is written.
    pub fn large_blob_array(&self) -> Result<Vec<u8>> {
        Ok(self
            .read_whole("/dev/lb")?
            .unwrap_or_else(Self::empty_large_blob_array))
    }

    /// A whole file of any length; `None` if absent, or empty because the power was cut while
    /// it was first created (its write was never acknowledged).
    fn read_whole(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let read = self.fs.open_file_and_then(&path(name), |file| {
            let mut bytes = alloc::vec![0u8; file.len()?];
            let n = file.read(&mut bytes)?;
            bytes.truncate(n);
            Ok(bytes)
        });
        match read {
            Ok(bytes) if !bytes.is_empty() => Ok(Some(bytes)),
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

    /// CBOR [] and the first 16 bytes of its SHA-256.
    fn empty_large_blob_array() -> Vec<u8> {
        let mut empty = alloc::vec![0x80];
        empty.extend_from_slice(&sha256(&[0x80])[..16]);
        empty
    }

    /// Replace the large-blob array (atomically, like every file).
    pub fn save_large_blob_array(&mut self, bytes: &[u8]) -> Result<()> {
        self.fs.create_dir_all(&path("/dev"))?;
        self.fs.write(&path("/dev/lb"), bytes)?;
        Ok(())
    }

    fn load<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.fs.read::<MAX_RECORD_LEN>(&path(name)) {
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
        let mut buffer = [0u8; MAX_RECORD_LEN];
        let bytes = cbor_smol::cbor_serialize(value, &mut buffer).map_err(|_| StoreError::Io)?;
        self.fs.create_dir_all(&path("/dev"))?;
        self.fs.write(&path(name), bytes)?;
        Ok(())
    }

    /// Store a discoverable credential, replacing the one of the same RP and user.id.
    pub fn save_resident(&mut self, credential: &ResidentCredential) -> Result<()> {
        let mut buffer = [0u8; MAX_RECORD_LEN];
        cbor_smol::cbor_serialize(credential, &mut buffer).map_err(|_| StoreError::Io)?;
        // Every record is written at its full, fixed length: larger than littlefs inlines into
        // directory metadata, so each takes exactly one block of its own, whatever its names.
        // That is what makes the remaining count exact (see `remaining_resident_slots`).
        let bytes = &buffer[..];
        let rp_id_hash = sha256(credential.rp_id.as_bytes());
        let replacing = self
            .fs
            .exists(&resident_path(&rp_id_hash, &credential.user.id));
        if !replacing && self.remaining_resident_slots() == 0 {
            return Err(StoreError::Full);
        }
        self.fs.create_dir_all(&path("/rk"))?;
        self.fs
            .write(&resident_path(&rp_id_hash, &credential.user.id), bytes)?;
        Ok(())
    }

    /// Is there a discoverable credential with this ID for this RP?
    pub fn resident_exists(&self, rp_id_hash: &[u8; 32], id: &[u8]) -> bool {
        self.residents(rp_id_hash)
            .map(|all| all.iter().any(|c| c.id.as_slice() == id))
            .unwrap_or(false)
    }

    /// Every discoverable credential of one RP, newest first.
    pub fn residents(&self, rp_id_hash: &[u8; 32]) -> Result<Vec<ResidentCredential>> {
        let mut found = Vec::new();
        for reference in self.resident_refs(rp_id_hash)? {
            if let Some(credential) = self.load_resident(&reference)? {
                found.push(credential);
            }
        }
        Ok(found)
    }

    /// References to every discoverable credential of one RP that passes `keep`, newest first.
    pub fn resident_refs_where(
        &self,
        rp_id_hash: &[u8; 32],
        keep: impl Fn(&ResidentCredential) -> bool,
    ) -> Result<Vec<ResidentRef>> {
        let prefix = rp_prefix(rp_id_hash);
        let mut refs = Vec::new();
        for name in self.resident_names()? {
            let Some(user_digest) = parse_resident_name(&name, &prefix) else {
                continue;
            };
            let Some(credential) = self.read_record(&name)? else {
                continue;
            };
            // Another RP whose hash shares the name prefix is not this RP.
            if sha256(credential.rp_id.as_bytes()) == *rp_id_hash && keep(&credential) {
                refs.push(ResidentRef {
                    created: credential.created,
                    rp_id_hash: *rp_id_hash,
                    user_digest,
                });
            }
        }
        refs.sort_by_key(|r| core::cmp::Reverse(r.created));
        Ok(refs)
    }

    /// References to every discoverable credential of one RP, newest first.
    pub fn resident_refs(&self, rp_id_hash: &[u8; 32]) -> Result<Vec<ResidentRef>> {
        self.resident_refs_where(rp_id_hash, |_| true)
    }

    /// The credential a reference names, unless it was deleted since.
    pub fn load_resident(&self, reference: &ResidentRef) -> Result<Option<ResidentCredential>> {
        let mut s = heapless::String::<64>::new();
        let _ = s.push_str("/rk/");
        let _ = s.push_str(&rp_prefix(&reference.rp_id_hash));
        let _ = s.push('.');
        hex_name(&mut s, &reference.user_digest);
        match self.read_record(&path(&s)) {
            Err(StoreError::Io) if !self.fs.exists(&path(&s)) => Ok(None),
            other => other,
        }
    }

    fn read_record(&self, name: &PathBuf) -> Result<Option<ResidentCredential>> {
        let bytes = self.fs.read::<MAX_RECORD_LEN>(name)?;
        // A record that does not parse is skipped, not fatal: the others still work.
        Ok(cbor_smol::cbor_deserialize::<ResidentCredential>(&bytes).ok())
    }

    fn resident_names(&self) -> Result<Vec<PathBuf>> {
        match self.list(&path("/rk"), true) {
            Ok(names) => Ok(names),
            Err(e) if e == FsError::NO_SUCH_ENTRY => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every RP with discoverable credentials: (RP ID, RP ID hash), sorted by RP ID.
    pub fn resident_rps(&self) -> Result<Vec<(heapless::String<256>, [u8; 32])>> {
        let mut rps: Vec<(heapless::String<256>, [u8; 32])> = Vec::new();
        for credential in self.all_residents()? {
            let hash = sha256(credential.rp_id.as_bytes());
            if !rps.iter().any(|(_, h)| *h == hash) {
                rps.push((credential.rp_id, hash));
            }
        }
        rps.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rps)
    }

    /// How many discoverable credentials are stored.
    pub fn resident_count(&self) -> Result<usize> {
        Ok(self.all_residents()?.len())
    }

    /// The stored discoverable credential with this ID, whatever its RP.
    pub fn find_resident(&self, id: &[u8]) -> Result<Option<ResidentCredential>> {
        Ok(self
            .all_residents()?
            .into_iter()
            .find(|c| c.id.as_slice() == id))
    }

    /// Delete a discoverable credential.
    pub fn delete_resident(&mut self, credential: &ResidentCredential) -> Result<()> {
        let rp_id_hash = sha256(credential.rp_id.as_bytes());
        self.fs
            .remove(&resident_path(&rp_id_hash, &credential.user.id))?;
        Ok(())
    }

    fn all_residents(&self) -> Result<Vec<ResidentCredential>> {
        let mut all = Vec::new();
        for name in self.resident_names()? {
            if let Some(credential) = self.read_record(&name)? {
                all.push(credential);
            }
        }
        Ok(all)
    }

    /// The files (or directories) in a directory.
    fn list(&self, dir: &PathBuf, files: bool) -> littlefs2::io::Result<Vec<PathBuf>> {
        self.fs.read_dir_and_then(dir, |entries| {
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().as_str();
                if name == "." || name == ".." {
                    continue;
                }
                if entry.file_type().is_file() == files {
                    names.push(PathBuf::from(entry.path()));
                }
            }
            Ok(names)
        })
    }

    /// How many more discoverable credentials fit: each takes one block of its own (records are
    /// larger than littlefs inlines), and [`RESERVED_BLOCKS`] stay free for metadata and the
    /// device files. Reported in getInfo and enforced in [`Store::save_resident`], so the number
    /// is what the key will actually accept.
    pub fn remaining_resident_slots(&self) -> usize {
        let free = self.fs.available_blocks().unwrap_or(0);
        free.saturating_sub(RESERVED_BLOCKS)
    }

    /// authenticatorReset: forget every credential (a new key-wrapping key makes every old ID
    /// unopenable), the PIN and the settings. The signature counter is kept: it must never go
    /// back; so is the batch attestation, which belongs to the device, not its owner.
    pub fn reset(&mut self, rng: &mut impl CryptoRng) -> Result<()> {
        for file in ["/dev/pin", "/dev/cfg", "/dev/lb"] {
            match self.fs.remove(&path(file)) {
                Ok(()) => {}
                Err(e) if e == FsError::NO_SUCH_ENTRY => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pin = None;
        self.settings = None;
        match self.fs.remove_dir_all(&path("/rk")) {
            Ok(()) => {}
            Err(e) if e == FsError::NO_SUCH_ENTRY => {}
            Err(e) => return Err(e.into()),
        }
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

fn hex_name(out: &mut heapless::String<64>, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// The user digest in a credential's file name, if the name has this RP prefix.
fn parse_resident_name(name: &PathBuf, prefix: &str) -> Option<[u8; 8]> {
    let file_name = name.file_name()?.as_str();
    let hex = file_name.strip_prefix(prefix)?.strip_prefix('.')?;
    if hex.len() != 16 {
        return None;
    }
    let mut digest = [0u8; 8];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

/// The first half of a credential's file name: its RP.
fn rp_prefix(rp_id_hash: &[u8; 32]) -> heapless::String<64> {
    let mut s = heapless::String::<64>::new();
    hex_name(&mut s, &rp_id_hash[..8]);
    s
}

fn resident_path(rp_id_hash: &[u8; 32], user_id: &[u8]) -> PathBuf {
    let mut hasher = Sha256::new();
    hasher.update(rp_id_hash);
    hasher.update(user_id);
    let digest: [u8; 32] = hasher.finalize().into();
    let mut s = heapless::String::<64>::new();
    let _ = s.push_str("/rk/");
    let _ = s.push_str(&rp_prefix(rp_id_hash));
    let _ = s.push('.');
    hex_name(&mut s, &digest[..8]);
    path(&s)
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
