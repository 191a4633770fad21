//! The on-board flash: littlefs2 storage, the vault beside it and the RNG seed sector, written
//! through the boot ROM.
//!
//! The RP2040 executes from flash through XIP, so while the flash is being erased or
//! programmed no code may be fetched from it: the ROM routines are looked up first (from
//! flash), then a function placed in RAM runs the whole sequence with interrupts off and ends by
//! running boot2 from a RAM copy to restore fast XIP. Reads go through XIP at
//! `FLASH_BASE + offset`; the cache is flushed after every write.

use authenticator::pico_flash;
use authenticator::platform::{Vault, VAULT_SLOT_SIZE};
use littlefs2::driver::Storage;
use littlefs2::io::{Error, Result};
use rp2040_hal::rom_data;

/// Where the flash appears in the address space (XIP, cached).
const FLASH_BASE: usize = 0x1000_0000;
/// The layout (vault, seed sector, state partition) and littlefs geometry, defined once in the
/// core so the host tools that model a Pico's state use the same numbers.
pub use authenticator::pico_flash::{
    PAGE_SIZE, SECTOR_SIZE, SEED_OFFSET, STATE_BLOCKS, STATE_OFFSET, VAULT_OFFSET,
};
/// The W25Q sector-erase command, used by the ROM for 4 KiB erases.
const SECTOR_ERASE_CMD: u8 = 0x20;

/// The ROM routines one flash operation needs, looked up while XIP still works.
struct Rom {
    connect: unsafe extern "C" fn(),
    exit_xip: unsafe extern "C" fn(),
    erase: unsafe extern "C" fn(u32, usize, u32, u8),
    program: unsafe extern "C" fn(u32, *const u8, usize),
    flush: unsafe extern "C" fn(),
}

impl Rom {
    fn lookup() -> Self {
        Self {
            connect: rom_data::connect_internal_flash::ptr(),
            exit_xip: rom_data::flash_exit_xip::ptr(),
            erase: rom_data::flash_range_erase::ptr(),
            program: rom_data::flash_range_program::ptr(),
            flush: rom_data::flash_flush_cache::ptr(),
        }
    }
}

/// boot2, the second-stage bootloader at the start of flash, copied to RAM (`.data`). After a
/// flash operation it puts XIP back into the quad-SPI mode it set up at boot, as the Pico SDK's
/// `flash_enable_xip_via_boot2` does: the ROM's `flash_enter_cmd_xip` alone would leave XIP in
/// serial 03h mode at a sixth of the system clock, every cache miss many times slower.
#[repr(C, align(4))]
struct Boot2([u8; 256]);
#[link_section = ".data.boot2_copy"]
static BOOT2_COPY: Boot2 = Boot2(rp2040_boot2::BOOT_LOADER_W25Q080);

/// Re-enter fast XIP by running the RAM copy of boot2 (it returns to its caller when called
/// with a non-zero return address, as here).
///
/// # Safety
/// As for [`flash_op_in_ram`]: interrupts off, called from RAM, after `flash_flush_cache`.
#[inline(never)]
#[link_section = ".data.ram_func"]
unsafe fn enter_xip_via_boot2() {
    // SAFETY: BOOT2_COPY is boot2's position-independent Thumb code, word-aligned in RAM (the
    // Pico SDK runs the same bytes from its own RAM copy); bit 0 set selects Thumb state.
    unsafe {
        let boot2: unsafe extern "C" fn() =
            core::mem::transmute(core::ptr::addr_of!(BOOT2_COPY) as usize | 1);
        boot2();
    }
}

/// One erase (when `data` is null) or program, run from RAM.
///
/// # Safety
/// Interrupts must be off and nothing may run from flash until this returns; `offset`/`len`
/// must be aligned as the operation requires, lie outside the firmware image, and `data` (if
/// not null) must point to `len` readable bytes in RAM.
#[inline(never)]
#[link_section = ".data.ram_func"]
unsafe fn flash_op_in_ram(rom: &Rom, offset: u32, data: *const u8, len: usize) {
    // SAFETY: the ROM routines are called in the order the datasheet prescribes (§2.8.3.1.3);
    // the caller guarantees the preconditions above. Only calls through the ROM pointers and
    // to boot2's RAM copy happen here, so no instruction is fetched from flash while XIP is off.
    unsafe {
        (rom.connect)();
        (rom.exit_xip)();
        if data.is_null() {
            (rom.erase)(offset, len, SECTOR_SIZE as u32, SECTOR_ERASE_CMD);
        } else {
            (rom.program)(offset, data, len);
        }
        (rom.flush)();
        enter_xip_via_boot2();
    }
}

/// XIP_SSI SR: transmit FIFO not full, receive FIFO not empty.
const SSI_SR: *const u32 = 0x1800_0028 as *const u32;
const SSI_SR_TFNF: u32 = 1 << 1;
const SSI_SR_RFNE: u32 = 1 << 3;
/// XIP_SSI DR0: one byte in, one byte out per SPI frame (8-bit frames after `flash_exit_xip`).
const SSI_DR0: *mut u32 = 0x1800_0060 as *mut u32;
/// IO_QSPI GPIO_QSPI_SS_CTRL; OUTOVER (bits 8-9) = 2 drives chip select low, 3 high.
const QSPI_SS_CTRL: *mut u32 = 0x4001_800C as *mut u32;
const OUTOVER_MASK: u32 = 0b11 << 8;
const OUTOVER_LOW: u32 = 2 << 8;
const OUTOVER_HIGH: u32 = 3 << 8;
/// W25Q "Read Unique ID": the command, four dummy bytes, then the 64-bit ID.
const READ_UNIQUE_ID_CMD: u8 = 0x4B;
const UNIQUE_ID_DUMMY: usize = 4;
/// Bytes the SSI's 16-entry FIFOs may hold in flight (as the Pico SDK's `flash_do_cmd`).
const MAX_IN_FLIGHT: usize = 14;

/// One raw SPI command to the flash, run from RAM: `buf` goes out and is overwritten with
/// what comes back, byte for byte, with chip select held low throughout.
///
/// # Safety
/// Interrupts must be off and nothing may run from flash until this returns; `buf` must be
/// `len` writable bytes in RAM.
#[inline(never)]
#[link_section = ".data.ram_func"]
unsafe fn flash_cmd_in_ram(rom: &Rom, buf: *mut u8, len: usize) {
    // SAFETY: the sequence is the Pico SDK's `flash_do_cmd`: leave XIP through the ROM, drive
    // chip select by hand, move bytes through the SSI FIFOs (never more than they hold), release
    // chip select, and re-enter XIP through boot2. Only register accesses, reads and writes
    // inside `buf`, and calls through the ROM pointers and to boot2's RAM copy happen here, so
    // nothing is fetched from flash meanwhile.
    unsafe {
        (rom.connect)();
        (rom.exit_xip)();
        let saved = core::ptr::read_volatile(QSPI_SS_CTRL);
        core::ptr::write_volatile(QSPI_SS_CTRL, (saved & !OUTOVER_MASK) | OUTOVER_LOW);
        let (mut sent, mut received) = (0usize, 0usize);
        while received < len {
            let status = core::ptr::read_volatile(SSI_SR);
            if status & SSI_SR_TFNF != 0 && sent < len && sent - received < MAX_IN_FLIGHT {
                core::ptr::write_volatile(SSI_DR0, u32::from(*buf.add(sent)));
                sent += 1;
            }
            if status & SSI_SR_RFNE != 0 && received < sent {
                *buf.add(received) = core::ptr::read_volatile(SSI_DR0) as u8;
                received += 1;
            }
        }
        core::ptr::write_volatile(QSPI_SS_CTRL, (saved & !OUTOVER_MASK) | OUTOVER_HIGH);
        core::ptr::write_volatile(QSPI_SS_CTRL, saved);
        (rom.flush)();
        enter_xip_via_boot2();
    }
}

/// The flash chip's 64-bit factory-unique ID (the Pico's "unique board ID").
pub fn unique_id() -> [u8; 8] {
    let mut buf = [0u8; 1 + UNIQUE_ID_DUMMY + 8];
    buf[0] = READ_UNIQUE_ID_CMD;
    let rom = Rom::lookup();
    cortex_m::interrupt::free(|_| {
        // SAFETY: interrupts are off; `buf` is a local array, so in RAM.
        unsafe { flash_cmd_in_ram(&rom, buf.as_mut_ptr(), buf.len()) }
    });
    let mut id = [0u8; 8];
    id.copy_from_slice(&buf[1 + UNIQUE_ID_DUMMY..]);
    id
}

/// Erase whole sectors at `offset` (flash offset, not address).
pub fn erase(offset: usize, len: usize) {
    assert!(
        offset.is_multiple_of(SECTOR_SIZE)
            && len.is_multiple_of(SECTOR_SIZE)
            && offset >= VAULT_OFFSET
    );
    let rom = Rom::lookup();
    cortex_m::interrupt::free(|_| {
        // SAFETY: interrupts are off, the range is sector-aligned and above the firmware.
        unsafe { flash_op_in_ram(&rom, offset as u32, core::ptr::null(), len) }
    });
}

/// Whether the sector at `offset` reads erased (every byte 0xFF), read through XIP 64 bytes
/// at a time.
fn is_erased(offset: usize) -> bool {
    let mut words = [0u8; 64];
    (offset..offset + SECTOR_SIZE)
        .step_by(words.len())
        .all(|at| {
            read(at, &mut words);
            words.iter().all(|&b| b == 0xFF)
        })
}

/// Whether `data` lies in the flash address space (it cannot be programmed from there).
fn in_flash(data: &[u8]) -> bool {
    (FLASH_BASE..FLASH_BASE + 0x100_0000).contains(&(data.as_ptr() as usize))
}

/// Program whole pages at `offset` from `data` (which must be in RAM, not in flash).
pub fn program(offset: usize, data: &[u8]) {
    assert!(
        offset.is_multiple_of(PAGE_SIZE)
            && data.len().is_multiple_of(PAGE_SIZE)
            && offset >= VAULT_OFFSET
    );
    assert!(!in_flash(data));
    let rom = Rom::lookup();
    cortex_m::interrupt::free(|_| {
        // SAFETY: interrupts are off, the range is page-aligned and above the firmware, and
        // `data` is a RAM slice of `data.len()` bytes.
        unsafe { flash_op_in_ram(&rom, offset as u32, data.as_ptr(), data.len()) }
    });
}

/// Read through XIP.
pub fn read(offset: usize, buf: &mut [u8]) {
    assert!(offset + buf.len() <= 0x20_0000);
    // SAFETY: the whole 2 MiB flash is mapped read-only at FLASH_BASE; the range was checked.
    let src = unsafe { core::slice::from_raw_parts((FLASH_BASE + offset) as *const u8, buf.len()) };
    buf.copy_from_slice(src);
}

/// littlefs2 on the flash above the firmware: 4 KiB blocks (one erase sector each), programmed
/// in 256-byte pages.
pub struct FlashStorage;

impl Storage for FlashStorage {
    const READ_SIZE: usize = pico_flash::READ_SIZE;
    const WRITE_SIZE: usize = PAGE_SIZE;
    const BLOCK_SIZE: usize = SECTOR_SIZE;
    const BLOCK_COUNT: usize = STATE_BLOCKS;
    const BLOCK_CYCLES: isize = pico_flash::BLOCK_CYCLES;
    type CACHE_SIZE = pico_flash::CacheSize;
    type LOOKAHEAD_SIZE = pico_flash::LookaheadSize;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> Result<usize> {
        if off + buf.len() > STATE_BLOCKS * SECTOR_SIZE {
            return Err(Error::IO);
        }
        read(STATE_OFFSET + off, buf);
        Ok(buf.len())
    }

    fn write(&mut self, off: usize, data: &[u8]) -> Result<usize> {
        if !off.is_multiple_of(PAGE_SIZE) || !data.len().is_multiple_of(PAGE_SIZE) {
            return Err(Error::IO);
        }
        if off + data.len() > STATE_BLOCKS * SECTOR_SIZE || in_flash(data) {
            return Err(Error::IO);
        }
        program(STATE_OFFSET + off, data);
        Ok(data.len())
    }

    /// littlefs erases one block at a time; authenticatorReset's wipe erases the whole
    /// partition in one call. Each sector is its own ROM call, so interrupts (USB, keepalives)
    /// run between sectors rather than waiting out the whole partition. The wipe skips the
    /// sectors that already read erased (all 0xFF): they hold nothing to wipe, and littlefs
    /// erases a block again before it first programs it, so a sector whose erase a power cut
    /// interrupted is never programmed unerased. A key that used a few dozen blocks then resets
    /// in well under a second instead of 384 erases (17 s at the flash's typical 45 ms). A
    /// block littlefs asks to erase is always erased.
    fn erase(&mut self, off: usize, len: usize) -> Result<usize> {
        if !off.is_multiple_of(SECTOR_SIZE) || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(Error::IO);
        }
        if off + len > STATE_BLOCKS * SECTOR_SIZE {
            return Err(Error::IO);
        }
        let wipe = len > SECTOR_SIZE;
        for sector in (off..off + len).step_by(SECTOR_SIZE) {
            if !(wipe && is_erased(STATE_OFFSET + sector)) {
                erase(STATE_OFFSET + sector, SECTOR_SIZE);
            }
        }
        Ok(len)
    }
}

/// The vault: flash sectors like the state's, outside littlefs.
impl Vault for FlashStorage {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> Result<()> {
        if offset + buf.len() > 2 * VAULT_SLOT_SIZE {
            return Err(Error::IO);
        }
        read(VAULT_OFFSET + offset, buf);
        Ok(())
    }

    fn vault_program(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        if !offset.is_multiple_of(PAGE_SIZE) || !data.len().is_multiple_of(PAGE_SIZE) {
            return Err(Error::IO);
        }
        if offset + data.len() > 2 * VAULT_SLOT_SIZE || in_flash(data) {
            return Err(Error::IO);
        }
        program(VAULT_OFFSET + offset, data);
        Ok(())
    }

    fn vault_erase(&mut self, offset: usize) -> Result<()> {
        if !offset.is_multiple_of(VAULT_SLOT_SIZE) || offset + VAULT_SLOT_SIZE > 2 * VAULT_SLOT_SIZE
        {
            return Err(Error::IO);
        }
        for sector in (offset..offset + VAULT_SLOT_SIZE).step_by(SECTOR_SIZE) {
            erase(VAULT_OFFSET + sector, SECTOR_SIZE);
        }
        Ok(())
    }
}
