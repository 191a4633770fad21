//! Erasing ahead: blocks littlefs will allocate next are erased while the key is idle, so that
//! a request (a passkey registration's copy-on-write of its slot file) only programs.
//!
//! [`EraseAhead`] wraps the flash. It remembers, in RAM only, the blocks it erased itself since
//! power-up and that nothing has programmed since ("trusted erased"); when littlefs asks to
//! erase one of those, the erase is skipped. Any program into a block ends its trust. Nothing
//! about trust survives a power-up: a block whose erase-ahead a power cut interrupted may read
//! blank with weakly erased cells, so it is free and untrusted and littlefs erases it again
//! before use. Only erases of blocks littlefs does not reference are ever done ahead.
//!
//! Which blocks come next: after a mount, littlefs's allocator hands out the blocks free at its
//! first scan in increasing order (circularly) from `seed % block_count`, the seed folding in
//! the CRCs of the metadata the mount read. [`Store::erase_ahead_step`](super::Store) unmounts
//! the filesystem, reads the free blocks and that start with a second, read-only mount
//! ([`lfs_ahead::scan`]), and mounts the filesystem again: the same bytes give the same start,
//! so the plan is exact until littlefs next writes. A wrong plan costs at most erases that
//! stay trusted (and are spent when littlefs reaches those blocks), never a block programmed
//! unerased.

use alloc::vec::Vec;
use littlefs2::driver::Storage;
use littlefs2::io::Result;

use crate::platform::Vault;

/// The most blocks kept erased ahead of littlefs's allocator.
pub const MAX_DEPTH: usize = 4;

/// The flash, with blocks erased ahead of need (see the module documentation).
pub struct EraseAhead<S> {
    inner: S,
    /// How many of the allocator's next blocks to keep erased (at most [`MAX_DEPTH`]).
    depth: usize,
    /// One bit per block: erased by us this power-up, not programmed since. Allocated at the
    /// first plan; empty (nothing trusted) if the heap had no room.
    trusted: Vec<u64>,
    /// The blocks littlefs's allocator takes next, in order, while `planned` holds.
    next: heapless::Vec<u32, MAX_DEPTH>,
    /// Whether `next` still describes littlefs: cleared by any write through this storage.
    planned: bool,
    counts: Counts,
}

/// What erasing ahead did since power-up (for benchmarks and wear figures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Blocks erased ahead of need.
    pub erased_ahead: u64,
    /// littlefs erases skipped because the block was trusted erased.
    pub skipped: u64,
    /// littlefs erases done (the block was not erased ahead).
    pub erased: u64,
    /// Plans made (each a remount and a read-only scan).
    pub plans: u64,
}

impl<S> EraseAhead<S> {
    /// Wrap `inner`, keeping the allocator's next `depth` blocks erased (clamped to
    /// [`MAX_DEPTH`]; 0 turns erasing ahead off).
    pub fn new(inner: S, depth: usize) -> Self {
        Self {
            inner,
            depth: depth.min(MAX_DEPTH),
            trusted: Vec::new(),
            next: heapless::Vec::new(),
            planned: false,
            counts: Counts::default(),
        }
    }

    /// The flash, given back (a power-up's end: what was trusted is forgotten).
    pub fn into_inner(self) -> S {
        self.inner
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    fn is_trusted(&self, block: usize) -> bool {
        self.trusted
            .get(block / 64)
            .is_some_and(|w| w & (1 << (block % 64)) != 0)
    }

    fn set_trusted(&mut self, block: usize, on: bool) {
        if let Some(w) = self.trusted.get_mut(block / 64) {
            if on {
                *w |= 1 << (block % 64);
            } else {
                *w &= !(1 << (block % 64));
            }
        }
    }

    /// Whether a step has work: a plan to make, or a planned block not yet erased.
    pub fn has_work(&self) -> bool {
        self.depth > 0 && (!self.planned || self.next.iter().any(|&b| !self.is_trusted(b as usize)))
    }
}

impl<S: Storage> EraseAhead<S> {
    /// Plan from the filesystem as it is on flash: the caller has unmounted littlefs and
    /// mounts it again right after, so littlefs's allocator starts where the scan says. A
    /// failed scan (no heap, a read error) plans nothing: littlefs then erases as it always
    /// did, and the next write brings a new try.
    pub(crate) fn plan(&mut self) {
        self.counts.plans += 1;
        self.next.clear();
        if self.scan_next().is_err() {
            self.next.clear();
        }
        self.planned = true;
    }

    fn scan_next(&mut self) -> Result<()> {
        if self.trusted.is_empty() {
            let words = S::BLOCK_COUNT.div_ceil(64);
            if self.trusted.try_reserve_exact(words).is_err() {
                return Err(littlefs2::io::Error::NO_MEMORY);
            }
            self.trusted.resize(words, 0);
        }
        let scan = lfs_ahead::scan(&mut self.inner)?;
        let count = S::BLOCK_COUNT;
        for block in (0..count).map(|i| (scan.start + i) % count) {
            if self.next.len() == self.depth {
                break;
            }
            if !scan.is_used(block) {
                // Cannot fail: `next` holds MAX_DEPTH and depth <= MAX_DEPTH.
                let _ = self.next.push(block as u32);
            }
        }
        Ok(())
    }

    /// Whether the plan must be made again before erasing.
    pub(crate) fn needs_plan(&self) -> bool {
        self.depth > 0 && !self.planned
    }

    /// Erase the first planned block not yet trusted; whether one was erased. Only ever a
    /// block the last scan found free, and only while the plan holds (nothing written since).
    pub(crate) fn erase_next(&mut self) -> Result<bool> {
        if !self.planned {
            return Ok(false);
        }
        let Some(block) = self
            .next
            .iter()
            .map(|&b| b as usize)
            .find(|&b| !self.is_trusted(b))
        else {
            return Ok(false);
        };
        self.inner.erase(block * S::BLOCK_SIZE, S::BLOCK_SIZE)?;
        self.set_trusted(block, true);
        self.counts.erased_ahead += 1;
        Ok(true)
    }

    /// littlefs or the vault changed the flash: the plan no longer describes the allocator.
    fn written(&mut self) {
        self.planned = false;
    }
}

impl<S: Storage> Storage for EraseAhead<S> {
    const READ_SIZE: usize = S::READ_SIZE;
    const WRITE_SIZE: usize = S::WRITE_SIZE;
    const BLOCK_SIZE: usize = S::BLOCK_SIZE;
    const BLOCK_COUNT: usize = S::BLOCK_COUNT;
    const BLOCK_CYCLES: isize = S::BLOCK_CYCLES;
    type CACHE_SIZE = S::CACHE_SIZE;
    type LOOKAHEAD_SIZE = S::LOOKAHEAD_SIZE;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> Result<usize> {
        self.inner.read(off, buf)
    }

    /// A program ends the trust of every block it touches: the block is no longer blank.
    fn write(&mut self, off: usize, data: &[u8]) -> Result<usize> {
        self.written();
        let end = off + data.len().max(1);
        for block in off / S::BLOCK_SIZE..end.div_ceil(S::BLOCK_SIZE) {
            self.set_trusted(block, false);
        }
        self.inner.write(off, data)
    }

    /// One trusted block is not erased again (littlefs's erase of a block allocated for a
    /// write); anything else is. A block stops being trusted once littlefs has asked for it,
    /// so a second erase of it (a compaction that found it bad) is a real one.
    fn erase(&mut self, off: usize, len: usize) -> Result<usize> {
        self.written();
        let first = off / S::BLOCK_SIZE;
        if len == S::BLOCK_SIZE && off.is_multiple_of(S::BLOCK_SIZE) && self.is_trusted(first) {
            self.set_trusted(first, false);
            self.counts.skipped += 1;
            return Ok(len);
        }
        for block in first..(off + len).div_ceil(S::BLOCK_SIZE) {
            self.set_trusted(block, false);
        }
        self.counts.erased += len.div_ceil(S::BLOCK_SIZE) as u64;
        self.inner.erase(off, len)
    }
}

/// The vault lies outside littlefs's blocks; writing it still ends the plan, because the
/// store remounts littlefs around vault writes.
impl<S: Vault> Vault for EraseAhead<S> {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.inner.vault_read(offset, buf)
    }

    fn vault_program(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        self.planned = false;
        self.inner.vault_program(offset, data)
    }

    fn vault_erase(&mut self, offset: usize) -> Result<()> {
        self.planned = false;
        self.inner.vault_erase(offset)
    }
}
