//! The BOOTSEL button as the user-presence button.
//!
//! BOOTSEL pulls the flash chip-select line (QSPI_SS) low. To read it, the chip-select output is
//! disabled for a moment and the pad read through SIO GPIO_HI_IN bit 1 (0 = pressed), as the
//! Pico SDK's `get_bootsel_button()` does. While the output is off the flash cannot be read, so
//! the code runs from RAM with interrupts off and touches only registers.

/// IO_QSPI GPIO_QSPI_SS_CTRL.
const QSPI_SS_CTRL: *mut u32 = 0x4001_800C as *mut u32;
/// SIO GPIO_HI_IN: bit 1 is QSPI_SS.
const SIO_GPIO_HI_IN: *const u32 = 0xD000_0008 as *const u32;
const OEOVER_SHIFT: u32 = 12;
const OEOVER_MASK: u32 = 0b11 << OEOVER_SHIFT;
/// OEOVER = 2: drive output enable low (the pad floats and BOOTSEL can pull it down).
const OEOVER_DISABLE: u32 = 2 << OEOVER_SHIFT;
const QSPI_SS_BIT: u32 = 1 << 1;

/// # Safety
/// Interrupts must be off; this must run from RAM (it does: `.data` is copied to RAM at reset).
#[inline(never)]
#[link_section = ".data.ram_func"]
unsafe fn read_in_ram() -> bool {
    // SAFETY: both addresses are the documented RP2040 registers; only volatile accesses and
    // inline `nop`s run while the flash is unreachable, and the register is restored after.
    unsafe {
        let saved = core::ptr::read_volatile(QSPI_SS_CTRL);
        core::ptr::write_volatile(QSPI_SS_CTRL, (saved & !OEOVER_MASK) | OEOVER_DISABLE);
        // Let the pull-up settle (~1000 cycles, as the SDK does).
        for _ in 0..1000 {
            core::arch::asm!("nop", options(nomem, nostack));
        }
        let pressed = core::ptr::read_volatile(SIO_GPIO_HI_IN) & QSPI_SS_BIT == 0;
        core::ptr::write_volatile(QSPI_SS_CTRL, saved);
        pressed
    }
}

/// Is BOOTSEL held down right now?
pub fn pressed() -> bool {
    // SAFETY: interrupts are off for the duration, as `read_in_ram` requires.
    cortex_m::interrupt::free(|_| unsafe { read_in_ram() })
}
