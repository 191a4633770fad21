//! The clocks: the system clock at 200 MHz, the frequency the RP2040 is certified for since
//! Pico SDK 2.1.1 with its core supply at 1.15 V or more; USB on its own 48 MHz PLL.
//!
//! The order matters and follows the SDK's `runtime_init_clocks` for `SYS_CLK_MHZ=200`: the
//! system clock first runs from the 12 MHz crystal, the core voltage is raised from its reset
//! value of 1.10 V to 1.15 V and given 1 ms to settle, and only then does the system PLL start
//! and take over. The flash keeps within its rating at this clock (see `rp2040-runner/README.md`):
//! boot2 reads it at clk_sys / 2 = 100 MHz (W25Q16JV: 133 MHz for Fast Read Quad I/O), the boot
//! ROM's erase and program routines at clk_sys / 6 = 33 MHz (50 MHz for every command).

use rp2040_hal as hal;

use hal::clocks::{Clock, ClockSource, ClocksManager};
use hal::fugit::{HertzU32, RateExtU32};
use hal::pac;
use hal::pac::vreg_and_chip_reset::vreg::VSEL_A;
use hal::pll::{common_configs::PLL_USB_48MHZ, setup_pll_blocking, PLLConfig};
use hal::xosc::setup_xosc_blocking;
use hal::Watchdog;

/// The Pico's crystal.
const XOSC_HZ: u32 = 12_000_000;
/// 12 MHz × 100 = 1,200 MHz VCO, / 6 / 1 = 200 MHz (the SDK's settings for 200 MHz).
const PLL_SYS_200MHZ: PLLConfig = PLLConfig {
    vco_freq: HertzU32::MHz(1200),
    refdiv: 1,
    post_div1: 6,
    post_div2: 1,
};
/// The core voltage 200 MHz needs at least (the SDK's `SYS_CLK_VREG_VOLTAGE_MIN`).
const CORE_VOLTAGE: VSEL_A = VSEL_A::VOLTAGE1_15;
/// How long the regulator gets to settle, in cycles of the 12 MHz crystal that clocks the core
/// meanwhile: 1 ms (the SDK's `SYS_CLK_VREG_VOLTAGE_AUTO_ADJUST_DELAY_US`).
const VREG_SETTLE_CYCLES: u32 = XOSC_HZ / 1000;

/// Start the crystal, raise the core voltage, then run the system clock at 200 MHz from its
/// PLL and USB at 48 MHz from the other. A Pico that cannot is broken hardware: stop.
pub fn init(
    xosc: pac::XOSC,
    clocks: pac::CLOCKS,
    pll_sys: pac::PLL_SYS,
    pll_usb: pac::PLL_USB,
    vreg: &mut pac::VREG_AND_CHIP_RESET,
    resets: &mut pac::RESETS,
    watchdog: &mut Watchdog,
) -> ClocksManager {
    let xosc = setup_xosc_blocking(xosc, XOSC_HZ.Hz())
        .ok()
        .expect("crystal oscillator");
    // The timer counts microseconds from the crystal.
    watchdog.enable_tick_generation((XOSC_HZ / 1_000_000) as u8);
    let mut clocks = ClocksManager::new(clocks);
    // clk_sys on clk_ref (its source after reset), and clk_ref on the crystal, so that the
    // settling delay below counts cycles of a known clock.
    while clocks.system_clock.reset_source_await().is_err() {}
    clocks
        .reference_clock
        .configure_clock(&xosc, xosc.get_freq())
        .ok()
        .expect("clk_ref from the crystal");
    if hal::vreg::get_voltage(vreg).is_none_or(|v| (v as u8) < (CORE_VOLTAGE as u8)) {
        hal::vreg::set_voltage(vreg, CORE_VOLTAGE);
        cortex_m::asm::delay(VREG_SETTLE_CYCLES);
    }
    let pll_sys = setup_pll_blocking(
        pll_sys,
        xosc.operating_frequency(),
        PLL_SYS_200MHZ,
        &mut clocks,
        resets,
    )
    .ok()
    .expect("system PLL");
    let pll_usb = setup_pll_blocking(
        pll_usb,
        xosc.operating_frequency(),
        PLL_USB_48MHZ,
        &mut clocks,
        resets,
    )
    .ok()
    .expect("USB PLL");
    clocks
        .init_default(&xosc, &pll_sys, &pll_usb)
        .ok()
        .expect("clock tree");
    clocks
}
