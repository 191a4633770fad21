//! A boot that refuses: the ring oscillator failed its health tests (see rng.rs), so this boot
//! has no random generator, and the authenticator (which makes the key-wrapping key at first
//! boot, and a PIN protocol key and token at every boot) is never built. The store is not even
//! mounted; nothing in flash is touched.
//!
//! USB still comes up, under a product name that says what happened, with CTAPHID working (INIT,
//! PING and the like need no randomness), and every CTAP request is answered at once with the
//! protocol's own "other" error, so the platform reports a failing key rather than waiting for
//! one that never appears (libfido2: FIDO_ERR_OTHER; the product name is in `lsusb`, `dmesg`
//! and `fido2-token -L`). The LED repeats [`PATTERN`], unlike any other state of the key. The
//! next power-up tests the oscillator again.

use alloc::vec::Vec;

use authenticator::ctaphid::{Outcome, Transaction};
use embedded_hal::digital::OutputPin;
use hal::fugit::MicrosDurationU32;
use hal::pac;
use hal::timer::{Alarm, Alarm1, Timer};
use rp2040_hal as hal;

use crate::bridge::MAILBOX;
use crate::platform::Led;
use crate::rng::Failure;

/// The USB product name of a refusing key, per failed test.
pub fn product(failure: Failure) -> &'static str {
    match failure {
        Failure::RepetitionCount => "Open FIDO Key (Pico): RNG failed (repetition count test)",
        Failure::AdaptiveProportion => {
            "Open FIDO Key (Pico): RNG failed (adaptive proportion test)"
        }
    }
}

/// The LED while refusing, repeated: three short flashes, then dark (2.4 s in all). Waiting for
/// a touch is an even 100 ms blink, a WINK the same for 1 s, counting a long touch steady on.
/// Steps of (LED on, milliseconds).
const PATTERN: [(bool, u64); 6] = [
    (true, 200),
    (false, 200),
    (true, 200),
    (false, 200),
    (true, 200),
    (false, 1400),
];

/// The LED's state `t` ms into the pattern, and how long until it next changes.
fn led_at(t: u64) -> (bool, u64) {
    let period: u64 = PATTERN.iter().map(|&(_, ms)| ms).sum();
    let mut t = t % period;
    for (on, ms) in PATTERN {
        if t < ms {
            return (on, ms - t);
        }
        t -= ms;
    }
    // Not reached: t % period falls inside the pattern.
    (false, 1)
}

/// The error a request gets: CTAP1_ERR_OTHER for CTAP2 and for the vendor command (a status
/// byte), SW 0x6F00 ("no precise diagnosis", ISO 7816-4) for U2F, not 0x6985, which a U2F
/// host takes for "touch the key" and retries. Empty if even that cannot be allocated, which
/// CTAPHID answers with ERR_OTHER.
fn error_answer(transaction: Transaction) -> Vec<u8> {
    const CTAP1_ERR_OTHER: u8 = 0x7F;
    const SW_NO_PRECISE_DIAGNOSIS: [u8; 2] = [0x6F, 0x00];
    let answer: &[u8] = match transaction {
        Transaction::Cbor | Transaction::Provision => &[CTAP1_ERR_OTHER],
        Transaction::Msg => &SW_NO_PRECISE_DIAGNOSIS,
    };
    authenticator::fallible::copy(answer).unwrap_or_default()
}

/// The refusing key's main loop (USB is up, served from its interrupt as usual): answer every
/// request with an error, show the pattern, sleep in between.
pub fn run(mut led: Led, timer: Timer, mut alarm: Alarm1) -> ! {
    let start = timer.get_counter().ticks() / 1000;
    loop {
        let events = critical_section::with(|cs| MAILBOX.borrow_ref_mut(cs).take_events());
        if let Some((id, transaction, _)) = events.new {
            let answer = error_answer(transaction);
            critical_section::with(|cs| {
                MAILBOX.borrow_ref_mut(cs).finish(id, Outcome::Done, answer)
            });
            pac::NVIC::pend(pac::Interrupt::USBCTRL_IRQ);
        }
        let now = timer.get_counter().ticks() / 1000;
        let (on, left) = led_at(now - start);
        let _ = led.set_state(on.into());
        let _ = alarm.schedule(MicrosDurationU32::millis(left as u32));
        // As the main loop: sleep until an interrupt, without missing one that fires between
        // the check and wfi.
        cortex_m::interrupt::disable();
        let idle = critical_section::with(|cs| MAILBOX.borrow_ref(cs).idle());
        if idle {
            cortex_m::asm::wfi();
        }
        // SAFETY: re-enables the interrupts disabled just above; nothing relies on them off.
        unsafe { cortex_m::interrupt::enable() };
    }
}
