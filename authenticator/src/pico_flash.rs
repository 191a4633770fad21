//! The Pico's flash layout and the littlefs geometry of its state partition, defined once.
//!
//! The firmware (`rp2040-runner/src/flash.rs`) places its state here, and the host tools that
//! model a Pico's state (the `pico_state_image` and `store_wear` examples, the `store_scale`
//! tests) use the same numbers, so a figure measured on the host is the Pico's. The firmware
//! ends where the vault begins (`rp2040-runner/memory.x`); the emulator's tests write a state
//! image at [`VAULT_OFFSET`].
//!
//! ```text
//! 0x00000  firmware
//! 0x7B000  vault: two slots of VAULT_SLOT_SIZE (the device secrets, the PIN verifier)
//! 0x7F000  RNG seed sector
//! 0x80000  littlefs state partition, to the end of the 2 MiB flash
//! ```

use crate::platform::VAULT_SLOT_SIZE;

/// The flash chip's size (W25Q16: 2 MiB).
pub const FLASH_SIZE: usize = 0x20_0000;
/// Erase granularity: a littlefs block.
pub const SECTOR_SIZE: usize = 4096;
/// Program granularity: littlefs's write size.
pub const PAGE_SIZE: usize = 256;
/// The vault's two slots (four sectors), just below the seed sector.
pub const VAULT_OFFSET: usize = 0x7_B000;
/// The RNG seed sector, just below the state.
pub const SEED_OFFSET: usize = 0x7_F000;
/// The littlefs state: from 512 KiB to the end of the flash.
pub const STATE_OFFSET: usize = 0x8_0000;
/// The state partition's blocks (384).
pub const STATE_BLOCKS: usize = (FLASH_SIZE - STATE_OFFSET) / SECTOR_SIZE;

/// littlefs's read size on the Pico (reads go through XIP; 16 keeps its caches small).
pub const READ_SIZE: usize = 16;
/// littlefs's wear levelling: a metadata block moves after this many erases.
pub const BLOCK_CYCLES: isize = 500;
/// littlefs's cache size (one page).
pub type CacheSize = littlefs2::consts::U256;
/// littlefs's lookahead buffer, in multiples of 8 bytes (littlefs2's unit): 64 bytes, 512 blocks
/// at a time, so one scan of the allocator covers all 384.
pub type LookaheadSize = littlefs2::consts::U8;

const _: () = assert!(VAULT_OFFSET + 2 * VAULT_SLOT_SIZE <= SEED_OFFSET);
const _: () = assert!(SEED_OFFSET + SECTOR_SIZE <= STATE_OFFSET);
const _: () = assert!(VAULT_OFFSET.is_multiple_of(SECTOR_SIZE));
