//! Discoverable credentials: fixed-size slots packed into one-block files, and a RAM index.
//!
//! ```text
//! /cr/<d>/<f>    slot file f (d = f / FILES_PER_DIR): a header of SLOTS_PER_FILE entries,
//!                then SLOTS_PER_FILE records of RECORD_LEN bytes each
//! ```
//!
//! Slot `s` lives in file `s / SLOTS_PER_FILE`. A file never exceeds one block, so writing a
//! credential rewrites one block (littlefs copies it on write and commits the file atomically
//! when it is closed: a power cut leaves the old or the new file). The header entry of a slot
//! (RP ID hash prefix, creation order, short tags of the user and of the credential ID, the
//! credProtect level) is written in the same commit as its record, so the two always agree.
//!
//! At first use the headers alone are read into a RAM index of one 16-byte [`Entry`] per slot:
//! its size is fixed by the capacity, never by what is stored. Every lookup then scans the
//! index in RAM and reads only the records it returns, so a command touches a bounded number
//! of blocks whatever is stored. The tags are hints: a record is always checked before use.
//!
//! Capacity is fixed by the geometry (see [`capacity`]): the blocks that slot files may take
//! are set aside from what the device files and littlefs's metadata can ever need, so the
//! remaining count is exact and a full key still writes its PIN, counter and large blobs.

use littlefs2::fs::Filesystem;
use littlefs2::io::{Error as FsError, SeekFrom};
use littlefs2::path::PathBuf;
use sha2::{Digest, Sha256};

use super::{path, sha256, ResidentCredential, Result, StoreError};

/// The largest serialized record: RP ID (256), user entity (id 64, icon 128, name and
/// displayName 64 each), credential ID (up to 107 in use) and CBOR framing.
pub(crate) const RECORD_LEN: usize = 768;
/// Slots per file: as many records and their header entries as fit in a 4 KiB block.
pub const SLOTS_PER_FILE: usize = 5;
const ENTRY_LEN: usize = 16;
const HEADER_LEN: usize = SLOTS_PER_FILE * ENTRY_LEN;
/// The size of a full slot file: at most one block of the geometries the key runs on.
pub(super) const FILE_LEN: usize = HEADER_LEN + SLOTS_PER_FILE * RECORD_LEN + GENERATION_LEN;
const _: () = assert!(FILE_LEN <= 4096);
/// After the records: the store's generation when the file was last written (u32, little
/// endian), committed with the change it counts. The highest over all files is the store's
/// generation, which moves with every creation, replacement, update and deletion (getInfo's
/// encCredStoreState); files written before it existed end earlier and count as 0.
const GENERATION_LEN: usize = 4;
const GENERATION_OFFSET: usize = HEADER_LEN + SLOTS_PER_FILE * RECORD_LEN;
/// The index's copy (see [`Index::save_copy`]): a head of [`COPY_MAGIC`], the capacity, the
/// store's generation and the count of entries (u32 each, little endian), then the entries.
const COPY_PATH: &str = "/cr/index";
const COPY_MAGIC: [u8; 4] = *b"cri1";
const COPY_HEADER_LEN: usize = 16;
/// Entries are read and written 16 at a time, through a buffer on the stack.
const COPY_CHUNK: usize = 256;

fn copy_len(end: usize) -> usize {
    COPY_HEADER_LEN + end * ENTRY_LEN
}

/// The blocks a copy of `end` entries may take: its data (littlefs's block pointers take a
/// few words a block) and one more.
fn copy_blocks(end: usize, block_size: usize) -> usize {
    copy_len(end).div_ceil(block_size - 16) + 1
}

/// Slot files per directory: keeps each directory to one metadata pair, so opening a file
/// reads a bounded number of metadata blocks.
const FILES_PER_DIR: usize = 64;
/// Blocks never given to slot files: the superblock/root, /dev and /cr metadata pairs, the
/// attestation record, the enterprise attestation record (at most 3,124 bytes: one block), the
/// largest large-blob array twice over (it is rewritten copy-on-write), the settings file twice
/// over, the copy a slot write makes, and littlefs's own relocations.
pub const RESERVED_BLOCKS: usize = 24;

/// One slot's entry in a file header and in the RAM index. All zeros: the slot is free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Entry {
    /// The first 8 bytes of the RP ID hash.
    rp: [u8; 8],
    /// Creation order (the signature counter at creation); 0 for a free slot.
    created: u32,
    /// A 2-byte tag of (RP ID hash, user.id): which slot a replacement overwrites.
    user: u16,
    /// A 1-byte tag of the credential ID.
    id: u8,
    /// credProtect level (1 to 3), and [`LISTED_ONLY`].
    protect: u8,
}

/// In [`Entry::protect`]: the slot holds a credential that is not discoverable (see
/// [`ResidentCredential::listed_only`]), which only lookups by ID see.
const LISTED_ONLY: u8 = 0x80;

impl Entry {
    fn of(credential: &ResidentCredential) -> Self {
        let rp_id_hash = sha256(credential.rp_id.as_bytes());
        Self {
            rp: rp_key(&rp_id_hash),
            created: credential.created.max(1),
            user: user_tag(&rp_id_hash, &credential.user.id),
            id: id_tag(&credential.id),
            protect: credential.cred_protect.clamp(1, 3)
                | if credential.listed_only {
                    LISTED_ONLY
                } else {
                    0
                },
        }
    }

    fn is_free(&self) -> bool {
        self.created == 0
    }

    /// A discoverable credential: one that discovery, enumerations and replacement by user.id
    /// see.
    fn is_discoverable(&self) -> bool {
        !self.is_free() && self.protect & LISTED_ONLY == 0
    }

    fn to_bytes(self) -> [u8; ENTRY_LEN] {
        let mut bytes = [0u8; ENTRY_LEN];
        bytes[..8].copy_from_slice(&self.rp);
        bytes[8..12].copy_from_slice(&self.created.to_le_bytes());
        bytes[12..14].copy_from_slice(&self.user.to_le_bytes());
        bytes[14] = self.id;
        bytes[15] = self.protect;
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let mut entry = Self::default();
        if bytes.len() == ENTRY_LEN {
            entry.rp.copy_from_slice(&bytes[..8]);
            entry.created = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            entry.user = u16::from_le_bytes([bytes[12], bytes[13]]);
            entry.id = bytes[14];
            entry.protect = bytes[15];
        }
        entry
    }
}

/// A stored discoverable credential by position: what a getAssertion series or an enumeration
/// remembers between requests (8 bytes, whatever the record holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidentRef {
    slot: u16,
    created: u32,
}

impl ResidentRef {
    /// Newest first: the order of getAssertion (§6.2.2) and of enumerations.
    fn newer_than(&self, other: &ResidentRef) -> bool {
        (self.created, self.slot) > (other.created, other.slot)
    }
}

/// Which credentials of an RP a walk visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Every one (a verified request, credential management).
    All,
    /// Only credProtect level 1 ones: discovery without user verification (§12.1).
    Unprotected,
}

impl Visibility {
    fn admits(self, protect: u8) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Unprotected => protect <= 1,
        }
    }
}

/// An RP with discoverable credentials, as credential management lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRp {
    pub rp_id: heapless::String<256>,
    pub rp_id_hash: [u8; 32],
    /// Where the next RP of an enumeration starts looking.
    pub key: [u8; 8],
}

/// The RAM index: one entry per slot of the capacity.
pub(super) struct Index {
    entries: alloc::vec::Vec<Entry>,
    used: usize,
    /// One past the highest slot in use: scans stop there (slots are taken lowest first, so
    /// a key holding few credentials scans few entries whatever its capacity).
    end: usize,
    /// The store's generation: the highest any slot file carries.
    generation: u32,
    /// While the index, read from its copy, is not yet checked against the slot files: the
    /// next slot file to check (see [`Index::check_step`]).
    check_from: Option<usize>,
    /// The highest generation the check has read so far.
    checked_generation: u32,
    /// Slot files the check found: what the copy may not take room from.
    files: usize,
    copy: CopyState,
}

/// The index's copy on storage (`/cr/index`, see [`Index::save_copy`]).
#[derive(Clone, Copy, Debug, Default)]
struct CopyState {
    /// A copy file exists (or may: one a power cut left half made).
    present: bool,
    /// The index was read from it and the slot files have not (yet) shown it wrong.
    matches: bool,
    /// A copy was written since power-up: at most one is, so its wear is one a power-up.
    written: bool,
}

/// How many slots a filesystem of `blocks` blocks holds: every block but the reserved ones and
/// the metadata pairs of the slot directories is one slot file.
pub fn capacity(blocks: usize) -> usize {
    let available = blocks.saturating_sub(RESERVED_BLOCKS);
    let mut files = available;
    while files > 0 && files + 2 * files.div_ceil(FILES_PER_DIR) > available {
        files -= 1;
    }
    files * SLOTS_PER_FILE
}

impl Index {
    /// The index at power-up: from its copy if one is stored (a few blocks read in one pass),
    /// to be checked against the slot files later ([`Self::check_step`]); else from every slot
    /// file's header. Memory: `capacity` entries, allocated once.
    pub(super) fn load<S: littlefs2::driver::Storage>(
        fs: &Filesystem<'_, S>,
        capacity: usize,
    ) -> Result<Self> {
        let mut index = Self::empty(capacity)?;
        if capacity > 0 {
            index.read_copy(fs);
        }
        if !index.copy.matches {
            index.check_all(fs)?;
        }
        Ok(index)
    }

    /// An index of `capacity` free slots, not checked against the slot files yet.
    fn empty(capacity: usize) -> Result<Self> {
        let mut entries = alloc::vec::Vec::new();
        entries
            .try_reserve_exact(capacity)
            .map_err(|_| StoreError::OutOfMemory)?;
        entries.resize(capacity, Entry::default());
        Ok(Self {
            entries,
            used: 0,
            end: 0,
            generation: 0,
            check_from: Some(0),
            checked_generation: 0,
            files: 0,
            copy: CopyState::default(),
        })
    }

    /// Fill the index from its copy, if a usable one is stored; one that is not (cut short by
    /// a power cut, or of another geometry) is noted present, to be removed.
    fn read_copy<S: littlefs2::driver::Storage>(&mut self, fs: &Filesystem<'_, S>) {
        let read = fs.open_file_and_then(&path(COPY_PATH), |f| {
            let mut head = [0u8; COPY_HEADER_LEN];
            if f.read(&mut head)? != COPY_HEADER_LEN || head[..4] != COPY_MAGIC {
                return Ok(None);
            }
            let word =
                |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
            let (capacity, generation, end) = (word(4) as usize, word(8), word(12) as usize);
            if capacity != self.capacity() || end > capacity || f.len()? != copy_len(end) {
                return Ok(None);
            }
            let mut chunk = [0u8; COPY_CHUNK];
            let mut slot = 0;
            while slot < end {
                let n = (end - slot).min(COPY_CHUNK / ENTRY_LEN) * ENTRY_LEN;
                if f.read(&mut chunk[..n])? != n {
                    return Ok(None);
                }
                for bytes in chunk[..n].chunks(ENTRY_LEN) {
                    self.set(slot, Entry::from_bytes(bytes));
                    slot += 1;
                }
            }
            Ok(Some(generation))
        });
        match read {
            Ok(Some(generation)) => {
                self.generation = generation;
                self.copy = CopyState {
                    present: true,
                    matches: true,
                    written: false,
                };
            }
            Err(e) if e == FsError::NO_SUCH_ENTRY => {}
            // Unusable, or unreadable: the slot files decide, and it goes once they have.
            Ok(None) | Err(_) => {
                self.clear();
                self.copy.present = true;
            }
        }
    }

    /// Every entry free (a copy that proved unusable half way).
    fn clear(&mut self) {
        self.entries.fill(Entry::default());
        (self.used, self.end, self.generation) = (0, 0, 0);
    }

    /// Check the index against one slot file (or one directory not made yet), correcting it
    /// where the file says otherwise: a few hundred thousand cycles on the Pico, so the idle
    /// loop can run it between requests. After the last file: the generation, and a copy
    /// found wrong is removed. Nothing to do once checked.
    pub(super) fn check_step<S: littlefs2::driver::Storage>(
        &mut self,
        fs: &Filesystem<'_, S>,
    ) -> Result<()> {
        let Some(file) = self.check_from else {
            return Ok(());
        };
        let files = self.capacity() / SLOTS_PER_FILE;
        if file >= files {
            if self.checked_generation != self.generation {
                self.generation = self.checked_generation;
                self.copy.matches = false;
            }
            self.check_from = None;
            if self.copy.present && !self.copy.matches {
                self.remove_copy(fs)?;
            }
            return Ok(());
        }
        // A directory not made yet holds none of its files: all of them at once (each open
        // of a missing file would walk the path again), so a key holding few starts fast.
        if file % FILES_PER_DIR == 0 && !exists(fs, &dir_path(file))? {
            let last = files.min(file + FILES_PER_DIR);
            for f in file..last {
                self.correct(f, &[Entry::default(); SLOTS_PER_FILE]);
            }
            self.check_from = Some(last);
            return Ok(());
        }
        let mut header = [Entry::default(); SLOTS_PER_FILE];
        if let Some(generation) = read_header(fs, file, &mut header)? {
            self.files += 1;
            self.checked_generation = self.checked_generation.max(generation);
        }
        self.correct(file, &header);
        self.check_from = Some(file + 1);
        Ok(())
    }

    pub(super) fn check_pending(&self) -> bool {
        self.check_from.is_some()
    }

    /// Finish the check: before a change, which must start from what the slot files hold.
    pub(super) fn check_all<S: littlefs2::driver::Storage>(
        &mut self,
        fs: &Filesystem<'_, S>,
    ) -> Result<()> {
        while self.check_from.is_some() {
            self.check_step(fs)?;
        }
        Ok(())
    }

    /// Set file `file`'s entries as its header has them, noting whether the index differed.
    fn correct(&mut self, file: usize, header: &[Entry; SLOTS_PER_FILE]) {
        for (i, entry) in header.iter().enumerate() {
            let slot = file * SLOTS_PER_FILE + i;
            if self.entries[slot] != *entry {
                self.set(slot, *entry);
                self.copy.matches = false;
            }
        }
    }

    /// Is the index checked, with no copy of it stored, none written since power-up, and room
    /// for one? Then [`Self::save_copy`] has work to do.
    pub(super) fn copy_due<S: littlefs2::driver::Storage>(&self) -> bool {
        let room = (self.capacity() / SLOTS_PER_FILE).saturating_sub(self.files);
        self.check_from.is_none()
            && !self.copy.present
            && !self.copy.written
            && self.capacity() > 0
            && copy_blocks(self.end, S::BLOCK_SIZE) <= room
    }

    /// Store a copy of the index (`/cr/index`: a 16-byte head, then `end` entries), so the
    /// next power-up reads a few blocks rather than every slot file's header. Written at most
    /// once a power-up, only when none matching is stored, and removed before any change to
    /// the slot files (see [`Residents::write_at`]): a stored copy therefore says what the slot
    /// files said when it was written and still say. A power cut while it is written leaves
    /// none, or one cut short, which [`Self::read_copy`] refuses. It only takes room slot files
    /// have not: removed before any slot write, it is gone before a slot file could need it.
    pub(super) fn save_copy<S: littlefs2::driver::Storage>(
        &mut self,
        fs: &Filesystem<'_, S>,
    ) -> Result<()> {
        if !self.copy_due::<S>() {
            return Ok(());
        }
        self.copy.written = true;
        self.copy.present = true;
        let mut head = [0u8; COPY_HEADER_LEN];
        head[..4].copy_from_slice(&COPY_MAGIC);
        head[4..8].copy_from_slice(&(self.capacity() as u32).to_le_bytes());
        head[8..12].copy_from_slice(&self.generation.to_le_bytes());
        head[12..16].copy_from_slice(&(self.end as u32).to_le_bytes());
        let entries = &self.entries[..self.end];
        fs.open_file_with_options_and_then(
            |options| options.write(true).create(true).truncate(true),
            &path(COPY_PATH),
            |f| {
                write_all(f, &head)?;
                let mut chunk = [0u8; COPY_CHUNK];
                for group in entries.chunks(COPY_CHUNK / ENTRY_LEN) {
                    for (bytes, entry) in chunk.chunks_mut(ENTRY_LEN).zip(group) {
                        bytes.copy_from_slice(&entry.to_bytes());
                    }
                    write_all(f, &chunk[..group.len() * ENTRY_LEN])?;
                }
                Ok(())
            },
        )?;
        self.copy.matches = true;
        Ok(())
    }

    /// Remove the stored copy: it would no longer say what the slot files say.
    fn remove_copy<S: littlefs2::driver::Storage>(&mut self, fs: &Filesystem<'_, S>) -> Result<()> {
        match fs.remove(&path(COPY_PATH)) {
            Ok(()) => {}
            Err(e) if e == FsError::NO_SUCH_ENTRY => {}
            Err(e) => return Err(e.into()),
        }
        self.copy.present = false;
        self.copy.matches = false;
        Ok(())
    }

    pub(super) fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn used(&self) -> usize {
        self.used
    }

    fn slots(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries[..self.end]
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.is_free())
    }

    /// The slots of discoverable credentials: all but the imported non-discoverable ones.
    fn discoverable(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.slots().filter(|(_, e)| e.is_discoverable())
    }

    fn reference(slot: usize, entry: &Entry) -> ResidentRef {
        ResidentRef {
            slot: slot as u16,
            created: entry.created,
        }
    }

    /// Slots whose entry may hold this RP and user.id (tags match; the record decides).
    fn user_candidates<'i>(
        &'i self,
        rp_id_hash: &'i [u8; 32],
        user_id: &'i [u8],
    ) -> impl Iterator<Item = usize> + 'i {
        let (rp, user) = (rp_key(rp_id_hash), user_tag(rp_id_hash, user_id));
        self.discoverable()
            .filter(move |(_, e)| e.rp == rp && e.user == user)
            .map(|(slot, _)| slot)
    }

    /// Slots whose entry may hold this credential ID, of this RP if one is given.
    fn id_candidates<'i>(
        &'i self,
        rp_id_hash: Option<&'i [u8; 32]>,
        id: &'i [u8],
    ) -> impl Iterator<Item = usize> + 'i {
        let rp = rp_id_hash.map(rp_key);
        let tag = id_tag(id);
        self.slots()
            .filter(move |(_, e)| e.id == tag && rp.is_none_or(|rp| e.rp == rp))
            .map(|(slot, _)| slot)
    }

    /// The newest credential of this RP older than `after` (all of them if `None`).
    fn next(
        &self,
        rp_id_hash: &[u8; 32],
        visibility: Visibility,
        after: Option<&ResidentRef>,
    ) -> Option<ResidentRef> {
        let rp = rp_key(rp_id_hash);
        self.discoverable()
            .filter(|(_, e)| e.rp == rp && visibility.admits(e.protect))
            .map(|(slot, e)| Self::reference(slot, e))
            .filter(|r| after.is_none_or(|after| after.newer_than(r)))
            .max_by_key(|r| (r.created, r.slot))
    }

    fn count(&self, rp_id_hash: &[u8; 32], visibility: Visibility) -> usize {
        let rp = rp_key(rp_id_hash);
        self.discoverable()
            .filter(|(_, e)| e.rp == rp && visibility.admits(e.protect))
            .count()
    }

    /// The smallest RP key above `after`, and a slot that holds it.
    fn next_rp(&self, after: Option<[u8; 8]>) -> Option<([u8; 8], usize)> {
        self.discoverable()
            .filter(|(_, e)| after.is_none_or(|after| e.rp > after))
            .min_by_key(|(_, e)| e.rp)
            .map(|(slot, e)| (e.rp, slot))
    }

    /// How many distinct RPs are stored: a walk in key order, one scan per RP.
    fn rp_count(&self) -> usize {
        let mut count = 0;
        let mut after = None;
        while let Some((key, _)) = self.next_rp(after) {
            count += 1;
            after = Some(key);
        }
        count
    }

    fn free_slot(&self) -> Option<usize> {
        self.entries.iter().position(Entry::is_free)
    }

    fn set(&mut self, slot: usize, entry: Entry) {
        let old = core::mem::replace(&mut self.entries[slot], entry);
        match (old.is_free(), entry.is_free()) {
            (true, false) => self.used += 1,
            (false, true) => self.used -= 1,
            _ => {}
        }
        if !entry.is_free() {
            self.end = self.end.max(slot + 1);
        }
        while self.end > 0 && self.entries[self.end - 1].is_free() {
            self.end -= 1;
        }
    }
}

/// The resident-credential operations of the store, on its filesystem and index.
pub(super) struct Residents<'f, 'a, S: littlefs2::driver::Storage> {
    pub fs: &'f Filesystem<'a, S>,
    pub index: &'f mut Index,
}

impl<S: littlefs2::driver::Storage> Residents<'_, '_, S> {
    /// The record in `slot`, if it holds one that parses.
    fn read(&self, slot: usize) -> Result<Option<ResidentCredential>> {
        let mut record = [0u8; RECORD_LEN];
        let read = self
            .fs
            .open_file_and_then(&file_path(slot / SLOTS_PER_FILE), |f| {
                f.seek(SeekFrom::Start(record_offset(slot) as u32))?;
                f.read(&mut record)
            });
        let n = match read {
            Ok(n) => n,
            Err(e) if e == FsError::NO_SUCH_ENTRY => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // A record that does not parse is skipped, not fatal: the others still work.
        Ok(cbor_smol::cbor_deserialize::<ResidentCredential>(&record[..n]).ok())
    }

    /// Write `slot`'s header entry and record in one atomic file commit.
    ///
    /// The whole file is rewritten front to back in one pass: littlefs copies a file's block on
    /// write, and a write after a seek within the same open starts another copy, so writing the
    /// entry, the record and the generation where they lie cost up to three block erases. The
    /// old file is read first and the new one assembled in RAM, so one block is written. The
    /// record's slot is zeroed past its end: nothing of a longer record it replaces remains.
    fn write(&mut self, slot: usize, entry: Entry, record: &[u8]) -> Result<()> {
        let generation = self.index.generation.wrapping_add(1);
        self.write_at(slot, entry, record, generation)
    }

    /// [`Self::write`], the file carrying `generation` (the store's current one for a write
    /// that changes no credential a platform lists: a signature counter).
    fn write_at(
        &mut self,
        slot: usize,
        entry: Entry,
        record: &[u8],
        generation: u32,
    ) -> Result<()> {
        let file = slot / SLOTS_PER_FILE;
        self.fs.create_dir_all(&dir_path(file))?;
        let header_offset = (slot % SLOTS_PER_FILE) * ENTRY_LEN;
        let record_at = record_offset(slot);
        if record.len() > RECORD_LEN {
            return Err(StoreError::Io);
        }
        // A change to what the index holds: the copy would no longer say it (a signature
        // counter's rewrite changes neither the entry nor the generation, and keeps it).
        if self.index.entries[slot] != entry || self.index.generation != generation {
            self.index.remove_copy(self.fs)?;
        }
        let mut contents = [0u8; FILE_LEN];
        let made = self.fs.open_file_with_options_and_then(
            |options| options.read(true).write(true).create(true),
            &file_path(file),
            |f| {
                let made = f.len()? == 0;
                read_all(f, &mut contents)?;
                contents[header_offset..header_offset + ENTRY_LEN]
                    .copy_from_slice(&entry.to_bytes());
                contents[record_at..record_at + RECORD_LEN].fill(0);
                contents[record_at..record_at + record.len()].copy_from_slice(record);
                contents[GENERATION_OFFSET..].copy_from_slice(&generation.to_le_bytes());
                f.seek(SeekFrom::Start(0))?;
                write_all(f, &contents)?;
                Ok(made)
            },
        )?;
        // Counted for the copy's room (see [`Index::copy_due`]).
        if made {
            self.index.files += 1;
        }
        self.index.set(slot, entry);
        self.index.generation = generation;
        Ok(())
    }

    /// The slot holding this RP's credential for `user_id`, and the record.
    fn find_user(
        &self,
        rp_id_hash: &[u8; 32],
        user_id: &[u8],
    ) -> Result<Option<(usize, ResidentCredential)>> {
        for slot in self.index.user_candidates(rp_id_hash, user_id) {
            if let Some(record) = self.read(slot)? {
                if sha256(record.rp_id.as_bytes()) == *rp_id_hash && record.user.id == user_id {
                    return Ok(Some((slot, record)));
                }
            }
        }
        Ok(None)
    }

    /// The slot holding the credential with this ID (of this RP, if given), and the record.
    fn find_id(
        &self,
        rp_id_hash: Option<&[u8; 32]>,
        id: &[u8],
    ) -> Result<Option<(usize, ResidentCredential)>> {
        for slot in self.index.id_candidates(rp_id_hash, id) {
            if let Some(record) = self.read(slot)? {
                let rp_matches =
                    rp_id_hash.is_none_or(|hash| sha256(record.rp_id.as_bytes()) == *hash);
                if rp_matches && record.id.as_slice() == id {
                    return Ok(Some((slot, record)));
                }
            }
        }
        Ok(None)
    }

    /// Does the store hold the RP's credential for this credential's user.id?
    pub fn holds_user(&self, credential: &ResidentCredential) -> Result<bool> {
        let rp_id_hash = sha256(credential.rp_id.as_bytes());
        Ok(self.find_user(&rp_id_hash, &credential.user.id)?.is_some())
    }

    /// Store a credential, replacing the RP's credential for the same user.id (§6.1.2 step 16).
    pub fn save(&mut self, credential: &ResidentCredential) -> Result<()> {
        let mut buffer = [0u8; RECORD_LEN];
        let record =
            cbor_smol::cbor_serialize(credential, &mut buffer).map_err(|_| StoreError::Io)?;
        let rp_id_hash = sha256(credential.rp_id.as_bytes());
        let slot = match self.find_user(&rp_id_hash, &credential.user.id)? {
            Some((slot, _)) => slot,
            None => self.index.free_slot().ok_or(StoreError::Full)?,
        };
        let record_len = record.len();
        self.write(slot, Entry::of(credential), &buffer[..record_len])
    }

    /// Delete this RP's credential for this user.id, if stored.
    pub fn delete(&mut self, credential: &ResidentCredential) -> Result<()> {
        let rp_id_hash = sha256(credential.rp_id.as_bytes());
        if let Some((slot, _)) = self.find_user(&rp_id_hash, &credential.user.id)? {
            // The record's bytes go too: nothing of a deleted credential stays readable.
            self.write(slot, Entry::default(), &[0u8; RECORD_LEN])?;
        }
        Ok(())
    }

    /// Store a credential in a free slot, replacing none (an import: the caller has checked
    /// that its ID, and for a discoverable one its user, is not stored yet).
    pub fn save_new(&mut self, credential: &ResidentCredential) -> Result<()> {
        let mut buffer = [0u8; RECORD_LEN];
        let record =
            cbor_smol::cbor_serialize(credential, &mut buffer).map_err(|_| StoreError::Io)?;
        let record_len = record.len();
        let slot = self.index.free_slot().ok_or(StoreError::Full)?;
        self.write(slot, Entry::of(credential), &buffer[..record_len])
    }

    /// Write a changed record back where `reference` found it (a new signature counter): one
    /// atomic commit, like every slot write, which leaves the store's generation as it is (a
    /// sign-in changes no credential a platform lists, so encCredStoreState stays). `false` if
    /// it was deleted or replaced since.
    pub fn rewrite(
        &mut self,
        reference: &ResidentRef,
        credential: &ResidentCredential,
    ) -> Result<bool> {
        let slot = usize::from(reference.slot);
        match self.index.entries.get(slot) {
            Some(entry) if entry.created == reference.created => {}
            _ => return Ok(false),
        }
        let mut buffer = [0u8; RECORD_LEN];
        let record =
            cbor_smol::cbor_serialize(credential, &mut buffer).map_err(|_| StoreError::Io)?;
        let record_len = record.len();
        let mut entry = Entry::of(credential);
        entry.created = reference.created;
        let generation = self.index.generation;
        self.write_at(slot, entry, &buffer[..record_len], generation)?;
        Ok(true)
    }

    /// Delete the credential with this ID, whatever its RP; `false` if none is stored.
    pub fn delete_id(&mut self, id: &[u8]) -> Result<bool> {
        match self.find_id(None, id)? {
            Some((slot, _)) => {
                self.write(slot, Entry::default(), &[0u8; RECORD_LEN])?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The stored credential in the lowest slot above `after` (the first if `None`),
    /// discoverable or not: a walk over everything stored, for test automation's listing.
    pub fn next_any(
        &self,
        after: Option<ResidentRef>,
    ) -> Result<Option<(ResidentRef, ResidentCredential)>> {
        let start = after.map_or(0, |r| usize::from(r.slot) + 1);
        let entries = self.index.entries[..self.index.end].iter().enumerate();
        for (slot, entry) in entries.skip(start).filter(|(_, e)| !e.is_free()) {
            if let Some(record) = self.read(slot)? {
                return Ok(Some((Index::reference(slot, entry), record)));
            }
        }
        Ok(None)
    }

    pub fn load(&self, reference: &ResidentRef) -> Result<Option<ResidentCredential>> {
        let slot = usize::from(reference.slot);
        // Deleted or replaced since the reference was handed out: gone.
        match self.index.entries.get(slot) {
            Some(entry) if entry.created == reference.created => self.read(slot),
            _ => Ok(None),
        }
    }

    pub fn find(&self, id: &[u8]) -> Result<Option<ResidentCredential>> {
        Ok(self.find_id(None, id)?.map(|(_, record)| record))
    }

    pub fn reference_to(&self, rp_id_hash: &[u8; 32], id: &[u8]) -> Result<Option<ResidentRef>> {
        Ok(self
            .find_id(Some(rp_id_hash), id)?
            .map(|(slot, _)| Index::reference(slot, &self.index.entries[slot])))
    }

    /// The newest credential of the RP older than `after`, skipping hash-prefix namesakes.
    pub fn next(
        &self,
        rp_id_hash: &[u8; 32],
        visibility: Visibility,
        mut after: Option<ResidentRef>,
    ) -> Result<Option<(ResidentRef, ResidentCredential)>> {
        while let Some(reference) = self.index.next(rp_id_hash, visibility, after.as_ref()) {
            match self.read(usize::from(reference.slot))? {
                Some(record) if sha256(record.rp_id.as_bytes()) == *rp_id_hash => {
                    return Ok(Some((reference, record)))
                }
                _ => after = Some(reference),
            }
        }
        Ok(None)
    }

    pub fn count(&self, rp_id_hash: &[u8; 32], visibility: Visibility) -> usize {
        self.index.count(rp_id_hash, visibility)
    }

    /// The store's generation (see [`GENERATION_OFFSET`]).
    pub fn generation(&self) -> u32 {
        self.index.generation
    }

    /// The next RP in key order after `after` (the first if `None`).
    pub fn next_rp(&self, after: Option<[u8; 8]>) -> Result<Option<StoredRp>> {
        let mut after = after;
        while let Some((key, slot)) = self.index.next_rp(after) {
            if let Some(record) = self.read(slot)? {
                return Ok(Some(StoredRp {
                    rp_id_hash: sha256(record.rp_id.as_bytes()),
                    rp_id: record.rp_id,
                    key,
                }));
            }
            after = Some(key);
        }
        Ok(None)
    }

    pub fn rp_count(&self) -> usize {
        self.index.rp_count()
    }
}

/// Slot file `file`'s header entries (free past its end) and the generation it carries, or
/// `None` if there is no such file.
fn read_header<S: littlefs2::driver::Storage>(
    fs: &Filesystem<'_, S>,
    file: usize,
    entries: &mut [Entry; SLOTS_PER_FILE],
) -> Result<Option<u32>> {
    let mut header = [0u8; HEADER_LEN];
    let mut generation = [0u8; GENERATION_LEN];
    let read = fs.open_file_and_then(&file_path(file), |f| {
        let n = f.read(&mut header)?;
        if f.len()? >= FILE_LEN {
            f.seek(SeekFrom::Start(GENERATION_OFFSET as u32))?;
            f.read(&mut generation)?;
        }
        Ok(n)
    });
    let n = match read {
        Ok(n) => n,
        Err(e) if e == FsError::NO_SUCH_ENTRY => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    for (entry, bytes) in entries.iter_mut().zip(header[..n].chunks(ENTRY_LEN)) {
        *entry = Entry::from_bytes(bytes);
    }
    Ok(Some(u32::from_le_bytes(generation)))
}

fn exists<S: littlefs2::driver::Storage>(
    fs: &Filesystem<'_, S>,
    at: &littlefs2::path::Path,
) -> Result<bool> {
    match fs.metadata(at) {
        Ok(_) => Ok(true),
        Err(e) if e == FsError::NO_SUCH_ENTRY => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Read from the start until `buf` is full or the file ends (what is not read stays as it is).
fn read_all<S: littlefs2::driver::Storage>(
    file: &littlefs2::fs::File<'_, '_, S>,
    buf: &mut [u8],
) -> littlefs2::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let n = file.read(&mut buf[at..])?;
        if n == 0 {
            break;
        }
        at += n;
    }
    Ok(())
}

/// littlefs's `write_all` for the file handle of a closure.
fn write_all<S: littlefs2::driver::Storage>(
    file: &littlefs2::fs::File<'_, '_, S>,
    mut bytes: &[u8],
) -> littlefs2::io::Result<()> {
    while !bytes.is_empty() {
        let n = file.write(bytes)?;
        if n == 0 {
            return Err(FsError::NO_SPACE);
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

fn record_offset(slot: usize) -> usize {
    HEADER_LEN + (slot % SLOTS_PER_FILE) * RECORD_LEN
}

/// The directory of slot file `file`.
fn dir_path(file: usize) -> PathBuf {
    let mut s = heapless::String::<16>::new();
    let _ = core::fmt::write(&mut s, format_args!("/cr/{}", file / FILES_PER_DIR));
    path(&s)
}

fn file_path(file: usize) -> PathBuf {
    let mut s = heapless::String::<24>::new();
    let _ = core::fmt::write(
        &mut s,
        format_args!("/cr/{}/{}", file / FILES_PER_DIR, file % FILES_PER_DIR),
    );
    path(&s)
}

fn rp_key(rp_id_hash: &[u8; 32]) -> [u8; 8] {
    let mut key = [0u8; 8];
    key.copy_from_slice(&rp_id_hash[..8]);
    key
}

fn user_tag(rp_id_hash: &[u8; 32], user_id: &[u8]) -> u16 {
    let mut hasher = Sha256::new();
    hasher.update(rp_id_hash);
    hasher.update(user_id);
    let digest: [u8; 32] = hasher.finalize().into();
    u16::from_le_bytes([digest[0], digest[1]])
}

fn id_tag(id: &[u8]) -> u8 {
    sha256(id)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_zero_is_free() {
        let entry = Entry {
            rp: [1, 2, 3, 4, 5, 6, 7, 8],
            created: 0x0102_0304,
            user: 0xBEEF,
            id: 9,
            protect: 3,
        };
        assert_eq!(Entry::from_bytes(&entry.to_bytes()), entry);
        assert!(Entry::from_bytes(&[0u8; ENTRY_LEN]).is_free());
        // A header cut short (a file that ends before a slot) reads as free.
        assert!(Entry::from_bytes(&[1u8; 3]).is_free());
    }

    #[test]
    fn scans_end_at_the_highest_slot_in_use() {
        let mut index = Index::empty(10).unwrap();
        let entry = |created| Entry {
            rp: [7; 8],
            created,
            ..Entry::default()
        };
        index.set(0, entry(1));
        index.set(6, entry(2));
        assert_eq!((index.used(), index.end), (2, 7));
        assert_eq!(index.slots().count(), 2);
        index.set(6, Entry::default());
        assert_eq!((index.used(), index.end), (1, 1));
        assert_eq!(index.free_slot(), Some(1));
        index.set(0, Entry::default());
        assert_eq!((index.used(), index.end), (0, 0));
        assert_eq!(index.next_rp(None), None);
    }

    #[test]
    fn capacity_leaves_the_reserve_and_directory_metadata() {
        // The Pico's 1.5 MiB state: 384 blocks of 4 KiB.
        let files = capacity(384) / SLOTS_PER_FILE;
        assert!(files + 2 * files.div_ceil(FILES_PER_DIR) + RESERVED_BLOCKS <= 384);
        assert!(capacity(384) >= 1000);
        assert_eq!(capacity(RESERVED_BLOCKS), 0);
        assert_eq!(capacity(0), 0);
    }
}
