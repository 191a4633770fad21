//! Which blocks of a littlefs2 filesystem are in use, and where littlefs's block allocator
//! starts after a mount: what a storage layer needs to erase free blocks before littlefs asks.
//!
//! littlefs2 keeps its `lfs_t` private, so [`scan`] mounts the same storage a second time,
//! through littlefs2's own C bindings (`littlefs2::ll`), with callbacks that read and never
//! write, walks every block the filesystem references (`lfs_fs_traverse`, orphans included, as
//! littlefs's allocator does) into a bitmap, and unmounts. The caller must hold the storage
//! exclusively and no other littlefs instance may be mounted on it meanwhile (the caller
//! unmounts its own first): littlefs supports one writer, and its caches would not see
//! another's writes.
//!
//! After `lfs_mount`, littlefs's allocator hands out the blocks that are free at its first
//! scan in increasing order (circularly) from `lookahead.start = seed % block_count`, where the
//! seed folds in the CRCs of the metadata the mount read: the same bytes give the same start,
//! so a mount of the real filesystem on the same content starts where [`Scan::start`] says.

#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use core::ffi::{c_int, c_void};
use generic_array::typenum::Unsigned;
use littlefs2::driver::Storage;
use littlefs2::io::{Error, Result};
use littlefs2::ll;

/// The in-use blocks of a filesystem and its allocator's starting block.
pub struct Scan {
    /// One bit per block, set when the filesystem references the block.
    pub in_use: Vec<u64>,
    /// Where littlefs's allocator starts looking for a free block after a mount of this content.
    pub start: usize,
}

impl Scan {
    /// Whether `block` is referenced by the filesystem.
    pub fn is_used(&self, block: usize) -> bool {
        self.in_use
            .get(block / 64)
            .is_none_or(|word| word & (1 << (block % 64)) != 0)
    }
}

/// Mount `storage` read-only, list the blocks in use and the allocator's start, unmount.
/// Buffers are allocated fallibly: a full heap is `Error::NO_MEMORY`, never a panic.
pub fn scan<S: Storage>(storage: &mut S) -> Result<Scan> {
    let cache_size = S::CACHE_SIZE::USIZE;
    let lookahead_size = 8 * S::LOOKAHEAD_SIZE::USIZE;
    let mut read_buffer = zeroed_vec::<u8>(cache_size)?;
    let mut prog_buffer = zeroed_vec::<u8>(cache_size)?;
    let mut lookahead_buffer = zeroed_vec::<u64>(lookahead_size.div_ceil(8))?;
    let mut in_use = zeroed_vec::<u64>(S::BLOCK_COUNT.div_ceil(64))?;

    let config = ll::lfs_config {
        context: storage as *mut S as *mut c_void,
        read: Some(read::<S>),
        prog: Some(refuse_prog),
        erase: Some(refuse_erase),
        sync: Some(sync),
        read_size: S::READ_SIZE as u32,
        prog_size: S::WRITE_SIZE as u32,
        block_size: S::BLOCK_SIZE as u32,
        block_count: S::BLOCK_COUNT as u32,
        block_cycles: S::BLOCK_CYCLES as i32,
        cache_size: cache_size as u32,
        lookahead_size: lookahead_size as u32,
        compact_thresh: 0,
        read_buffer: read_buffer.as_mut_ptr() as *mut c_void,
        prog_buffer: prog_buffer.as_mut_ptr() as *mut c_void,
        lookahead_buffer: lookahead_buffer.as_mut_ptr() as *mut c_void,
        // As littlefs2's own configuration (`Allocation::with_config`): the limits a mount
        // checks against the superblock.
        name_max: littlefs2::consts::FILENAME_MAX_PLUS_ONE - 1,
        file_max: littlefs2::consts::FILEBYTES_MAX,
        attr_max: littlefs2::consts::ATTRBYTES_MAX,
        metadata_max: 0,
        inline_max: 0,
        disk_version: littlefs2::DISK_VERSION.into(),
    };
    // SAFETY: lfs_t is a plain C struct for which all-zero bytes is a valid (unmounted) value;
    // lfs_mount initialises it.
    let mut lfs: ll::lfs_t = unsafe { core::mem::zeroed() };
    // SAFETY: `config` and the buffers it points to live until the end of this function, past
    // the unmount; the buffers have the sizes the config states; `context` is `storage`,
    // borrowed exclusively for this call, and only `read::<S>` dereferences it.
    let code = unsafe { ll::lfs_mount(&mut lfs, &config) };
    if code < 0 {
        return Err(error(code));
    }
    let start = lfs.lookahead.start as usize;
    // SAFETY: `lfs` is mounted; `mark` receives `in_use` as its data pointer, a live Vec of
    // BLOCK_COUNT bits that nothing else touches until the traverse returns.
    let code = unsafe {
        ll::lfs_fs_traverse(
            &mut lfs,
            Some(mark),
            &mut in_use as *mut Vec<u64> as *mut c_void,
        )
    };
    // SAFETY: `lfs` is mounted (whatever the traverse returned); unmounting frees nothing we
    // gave it (all buffers are ours).
    unsafe { ll::lfs_unmount(&mut lfs) };
    if code < 0 {
        return Err(error(code));
    }
    Ok(Scan { in_use, start })
}

fn zeroed_vec<T: Default + Clone>(len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::NO_MEMORY)?;
    v.resize(len, T::default());
    Ok(v)
}

fn error(code: c_int) -> Error {
    Error::new(code).unwrap_or(Error::IO)
}

extern "C" fn read<S: Storage>(
    c: *const ll::lfs_config,
    block: ll::lfs_block_t,
    off: ll::lfs_off_t,
    buffer: *mut c_void,
    size: ll::lfs_size_t,
) -> c_int {
    // SAFETY: littlefs passes back the config given to lfs_mount, whose context is the
    // `&mut S` that `scan` holds for the whole mount; `buffer` is `size` writable bytes.
    let (storage, buf) = unsafe {
        (
            &mut *((*c).context as *mut S),
            core::slice::from_raw_parts_mut(buffer as *mut u8, size as usize),
        )
    };
    let at = block as usize * S::BLOCK_SIZE + off as usize;
    match storage.read(at, buf) {
        Ok(_) => 0,
        Err(e) => e.code(),
    }
}

/// This mount only reads: a write would be a bug in littlefs's read-only paths, refused.
extern "C" fn refuse_prog(
    _: *const ll::lfs_config,
    _: ll::lfs_block_t,
    _: ll::lfs_off_t,
    _: *const c_void,
    _: ll::lfs_size_t,
) -> c_int {
    ll::lfs_error_LFS_ERR_IO
}

extern "C" fn refuse_erase(_: *const ll::lfs_config, _: ll::lfs_block_t) -> c_int {
    ll::lfs_error_LFS_ERR_IO
}

extern "C" fn sync(_: *const ll::lfs_config) -> c_int {
    0
}

extern "C" fn mark(data: *mut c_void, block: ll::lfs_block_t) -> c_int {
    // SAFETY: `scan` passes its `in_use` Vec as the traverse's data pointer.
    let in_use = unsafe { &mut *(data as *mut Vec<u64>) };
    if let Some(word) = in_use.get_mut(block as usize / 64) {
        *word |= 1 << (block % 64);
    }
    0
}
