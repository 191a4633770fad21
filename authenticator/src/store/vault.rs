//! The vault's two slots: one record at a time, replaced without a moment where neither the old
//! nor the new one is readable, and the old one erased once the new one is in place.
//!
//! A slot holds, from its start:
//!
//! ```text
//! magic "OFKVAULT" | format (1 byte) | 3 zero bytes | sequence (u32 LE) | length (u32 LE)
//! | body (length bytes) | SHA-256 of everything before it | 0xFF up to the next program unit
//! ```
//!
//! A write programs the next record (sequence + 1) into the erased slot, then erases the other.
//! At power-up the valid record with the higher sequence number wins, and the other slot is
//! erased unless it is blank: a power cut during a program leaves an invalid slot (the digest
//! fails) beside the old record, and one during the erase leaves half an old record, which is
//! erased then too. So after every write and every power-up exactly one slot holds a record, and
//! an old secret stays in the vault only until the write that replaced it returns.
//!
//! No power cut leaves both slots begun and neither whole: only the first write ever made leaves
//! no whole record behind if cut, and then the other slot is blank. Two slots that both begin
//! with the magic but hold no whole record are damage (tampering with the flash, bit rot),
//! which [`recover`] reports as [`StoreError::VaultUnreadable`] and leaves as it is. Slots
//! without the magic hold no record of ours (erased, zeros of a new state file, what another
//! firmware left on a Pico): the key starts over, unless littlefs says a vault was there (see
//! `Store::open_vault`).

use alloc::vec::Vec;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Result, StoreError};
use crate::fallible;
use crate::platform::{Vault, VAULT_PROGRAM_SIZE, VAULT_SLOT_SIZE};

const MAGIC: [u8; 8] = *b"OFKVAULT";
const FORMAT: u8 = 1;
const HEADER_LEN: usize = 8 + 1 + 3 + 4 + 4;
const DIGEST_LEN: usize = 32;
/// The longest body a slot holds.
pub const MAX_BODY: usize = VAULT_SLOT_SIZE - HEADER_LEN - DIGEST_LEN;

/// Where the current record is: its slot and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    slot: usize,
    sequence: u32,
}

/// A slot's bytes (wiped when dropped: they hold secrets).
type SlotBytes = Zeroizing<Vec<u8>>;

fn read_slot<S: Vault>(storage: &mut S, slot: usize) -> Result<SlotBytes> {
    let mut bytes = Zeroizing::new(fallible::zeroed(VAULT_SLOT_SIZE)?);
    storage.vault_read(slot * VAULT_SLOT_SIZE, &mut bytes)?;
    Ok(bytes)
}

/// Erased flash: never programmed since.
fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0xff)
}

/// The record in a slot, if it holds a whole valid one: (sequence, body range).
fn parse(bytes: &[u8]) -> Option<(u32, core::ops::Range<usize>)> {
    let (header, rest) = bytes.split_first_chunk::<HEADER_LEN>()?;
    if header[..8] != MAGIC || header[8] != FORMAT {
        return None;
    }
    let sequence = u32::from_le_bytes(header[12..16].try_into().ok()?);
    let len = u32::from_le_bytes(header[16..20].try_into().ok()?) as usize;
    if len > MAX_BODY {
        return None;
    }
    let digest = rest.get(len..len + DIGEST_LEN)?;
    let expected = Sha256::digest(&bytes[..HEADER_LEN + len]);
    // Not a secret comparison: the digest only tells a whole record from a torn one.
    (digest == expected.as_slice()).then_some((sequence, HEADER_LEN..HEADER_LEN + len))
}

/// At power-up: the newest valid record's position and body, after erasing the other slot if
/// it is not blank. `None`: the vault holds no record (a new key, a state from before the
/// vault, or the first write cut short). Both slots begun and neither whole:
/// [`StoreError::VaultUnreadable`], and nothing is erased.
pub fn recover<S: Vault>(storage: &mut S) -> Result<Option<(Position, SlotBytes)>> {
    let mut best: Option<(Position, SlotBytes)> = None;
    let mut begun = 0;
    for slot in 0..2 {
        let bytes = read_slot(storage, slot)?;
        if bytes.starts_with(&MAGIC) {
            begun += 1;
        }
        let Some((sequence, _)) = parse(&bytes) else {
            continue;
        };
        if best.as_ref().is_none_or(|(p, _)| sequence > p.sequence) {
            best = Some((Position { slot, sequence }, bytes));
        }
    }
    if best.is_none() && begun == 2 {
        return Err(StoreError::VaultUnreadable);
    }
    // Every slot but the winner must be blank, so that the next write finds one erased and no
    // older record (or half of one) lingers.
    for slot in 0..2 {
        if best.as_ref().is_some_and(|(p, _)| p.slot == slot) {
            continue;
        }
        if !is_blank(&read_slot(storage, slot)?) {
            storage.vault_erase(slot * VAULT_SLOT_SIZE)?;
        }
    }
    let Some((position, mut bytes)) = best else {
        return Ok(None);
    };
    let (_, body) = parse(&bytes).ok_or(StoreError::Io)?;
    bytes.copy_within(body.clone(), 0);
    bytes.truncate(body.len());
    Ok(Some((position, bytes)))
}

/// Write `body` as the record after `current` (the first record if `None`), then erase the slot
/// `current` was in. Returns the new record's position.
pub fn write<S: Vault>(
    storage: &mut S,
    current: Option<Position>,
    body: &[u8],
) -> Result<Position> {
    if body.len() > MAX_BODY {
        return Err(StoreError::Full);
    }
    let next = match current {
        Some(p) => Position {
            slot: 1 - p.slot,
            sequence: p.sequence.checked_add(1).ok_or(StoreError::Full)?,
        },
        None => Position {
            slot: 0,
            sequence: 1,
        },
    };
    let len = HEADER_LEN + body.len() + DIGEST_LEN;
    let padded = len.div_ceil(VAULT_PROGRAM_SIZE) * VAULT_PROGRAM_SIZE;
    let mut record = Zeroizing::new(fallible::with_capacity(padded)?);
    record.extend_from_slice(&MAGIC);
    record.extend_from_slice(&[FORMAT, 0, 0, 0]);
    record.extend_from_slice(&next.sequence.to_le_bytes());
    record.extend_from_slice(&(body.len() as u32).to_le_bytes());
    record.extend_from_slice(body);
    let digest = Sha256::digest(&record[..]);
    record.extend_from_slice(&digest);
    record.resize(padded, 0xff);
    // The slot should be blank (every write and power-up leaves it so); make sure, as a
    // program over anything else would corrupt the new record.
    if !is_blank(&read_slot(storage, next.slot)?) {
        storage.vault_erase(next.slot * VAULT_SLOT_SIZE)?;
    }
    storage.vault_program(next.slot * VAULT_SLOT_SIZE, &record)?;
    if let Some(old) = current {
        storage.vault_erase(old.slot * VAULT_SLOT_SIZE)?;
    }
    Ok(next)
}

/// A vault in RAM (two slots, erased), for [`super::RamStorage`]: tests, fuzzers and the
/// virtual key's `--ephemeral` state.
pub struct RamVault {
    bytes: Vec<u8>,
}

impl Default for RamVault {
    fn default() -> Self {
        Self {
            bytes: alloc::vec![0xff; 2 * VAULT_SLOT_SIZE],
        }
    }
}

impl RamVault {
    /// Both slots, e.g. to look for a secret in them.
    pub fn image(&self) -> &[u8] {
        &self.bytes
    }

    /// A vault holding `image` (both slots; a vault that image is too short for reads as
    /// erased where it ends).
    pub fn from_image(image: &[u8]) -> Self {
        let mut vault = Self::default();
        let n = image.len().min(vault.bytes.len());
        vault.bytes[..n].copy_from_slice(&image[..n]);
        vault
    }

    pub fn read(&self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        let src = self
            .bytes
            .get(offset..offset + buf.len())
            .ok_or(littlefs2::io::Error::IO)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    /// Programming clears bits, as on flash (it never sets one).
    pub fn program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        if !offset.is_multiple_of(VAULT_PROGRAM_SIZE)
            || !data.len().is_multiple_of(VAULT_PROGRAM_SIZE)
        {
            return Err(littlefs2::io::Error::IO);
        }
        let dst = self
            .bytes
            .get_mut(offset..offset + data.len())
            .ok_or(littlefs2::io::Error::IO)?;
        for (d, s) in dst.iter_mut().zip(data) {
            *d &= s;
        }
        Ok(())
    }

    pub fn erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        self.erase_part(offset, VAULT_SLOT_SIZE)
    }

    /// Erase only the first `len` bytes of a slot (a power cut in the middle of an erase).
    pub fn erase_part(&mut self, offset: usize, len: usize) -> littlefs2::io::Result<()> {
        if !offset.is_multiple_of(VAULT_SLOT_SIZE) || len > VAULT_SLOT_SIZE {
            return Err(littlefs2::io::Error::IO);
        }
        self.bytes
            .get_mut(offset..offset + len)
            .ok_or(littlefs2::io::Error::IO)?
            .fill(0xff);
        Ok(())
    }
}

impl Vault for RamVault {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        self.read(offset, buf)
    }
    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        self.program(offset, data)
    }
    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        self.erase(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_whole_record_wins_and_the_other_slot_is_erased() {
        let mut vault = RamVault::default();
        assert!(recover(&mut vault).unwrap().is_none());
        let first = write(&mut vault, None, b"one").unwrap();
        let second = write(&mut vault, Some(first), b"two").unwrap();
        // The first slot was erased by the second write.
        assert!(vault.image()[..VAULT_SLOT_SIZE].iter().all(|&b| b == 0xff));
        let (position, body) = recover(&mut vault).unwrap().unwrap();
        assert_eq!((position, &body[..]), (second, &b"two"[..]));

        // A torn program of the third record: the second still wins, the torn slot is erased.
        let mut torn = vault.bytes.clone();
        let third = write(&mut vault, Some(second), b"three").unwrap();
        torn[third.slot * VAULT_SLOT_SIZE..][..40]
            .copy_from_slice(&vault.image()[third.slot * VAULT_SLOT_SIZE..][..40]);
        let mut torn = RamVault { bytes: torn };
        let (position, body) = recover(&mut torn).unwrap().unwrap();
        assert_eq!((position, &body[..]), (second, &b"two"[..]));
        assert!(
            torn.image()[third.slot * VAULT_SLOT_SIZE..][..VAULT_SLOT_SIZE]
                .iter()
                .all(|&b| b == 0xff)
        );

        // Both whole (the erase of the old one never began): the newer wins, the older goes.
        let mut both = vault.bytes.clone();
        both[second.slot * VAULT_SLOT_SIZE..][..VAULT_SLOT_SIZE]
            .copy_from_slice(&torn.image()[second.slot * VAULT_SLOT_SIZE..][..VAULT_SLOT_SIZE]);
        let mut both = RamVault { bytes: both };
        let (position, body) = recover(&mut both).unwrap().unwrap();
        assert_eq!((position, &body[..]), (third, &b"three"[..]));
        assert!(
            both.image()[second.slot * VAULT_SLOT_SIZE..][..VAULT_SLOT_SIZE]
                .iter()
                .all(|&b| b == 0xff)
        );
    }

    /// Only the first write, cut, leaves no whole record: one slot begun, the other blank.
    /// Both slots begun and neither whole is damage: refused, and left as found.
    #[test]
    fn two_begun_slots_without_a_whole_record_are_refused_and_kept() {
        let mut first = RamVault::default();
        let position = write(&mut first, None, b"one").unwrap();
        first.bytes[position.slot * VAULT_SLOT_SIZE + 30] ^= 1;
        assert!(recover(&mut first).unwrap().is_none(), "a torn first write");

        let mut vault = RamVault::default();
        let position = write(&mut vault, None, b"one").unwrap();
        let position = write(&mut vault, Some(position), b"two").unwrap();
        let record = position.slot * VAULT_SLOT_SIZE;
        let other = (1 - position.slot) * VAULT_SLOT_SIZE;
        vault
            .bytes
            .copy_within(record..record + VAULT_SLOT_SIZE, other);
        vault.bytes[record + 30] ^= 1;
        vault.bytes[other + 31] ^= 1;
        let damaged = vault.bytes.clone();
        assert_eq!(recover(&mut vault).err(), Some(StoreError::VaultUnreadable));
        assert_eq!(vault.bytes, damaged, "nothing erased");

        // Slots without the magic hold no record of ours (zeros, another firmware's code).
        let mut foreign = RamVault::from_image(&[0; 2 * VAULT_SLOT_SIZE]);
        assert!(recover(&mut foreign).unwrap().is_none());
        assert!(foreign.image().iter().all(|&b| b == 0xff));
    }
}
