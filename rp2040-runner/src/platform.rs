//! The Pico's side of the authenticator's `Platform`: the CSPRNG, the 1 MHz timer, BOOTSEL as
//! the presence button (held for `LONG_TOUCH_MS`: a long touch), the LED (GPIO25) as the
//! indicator.

use authenticator::platform::{Indicator, Platform, PresenceAnswer, Touch, LONG_TOUCH_MS};
use embedded_hal::digital::OutputPin;
use rand_chacha::ChaCha20Rng;
use rp2040_hal::gpio::{bank0::Gpio25, FunctionSioOutput, Pin, PullDown};
use rp2040_hal::timer::Timer;

use crate::bootsel;
use authenticator::store::ahead::EraseAhead;

use crate::flash::FlashStorage;

pub type Led = Pin<Gpio25, FunctionSioOutput, PullDown>;

/// LED half-period while waiting for the button, and during a wink.
const BLINK_MS: u64 = 100;
/// How long a WINK flashes the LED.
const WINK_MS: u64 = 1000;

pub struct PicoPlatform {
    rng: ChaCha20Rng,
    timer: Timer,
    led: Led,
    /// Until when the LED flashes for a WINK.
    wink_until: u64,
    /// The touch the current wait needs.
    touch: Touch,
    /// Since when BOOTSEL has been held without a break, during a long-touch wait.
    held_since: Option<u64>,
}

impl PicoPlatform {
    pub fn new(rng: ChaCha20Rng, timer: Timer, led: Led) -> Self {
        Self {
            rng,
            timer,
            led,
            wink_until: 0,
            touch: Touch::Short,
            held_since: None,
        }
    }

    /// The LED pattern of a wait: on and off every 100 ms.
    pub fn blink(&mut self, now: u64) {
        let _ = self
            .led
            .set_state((now / BLINK_MS).is_multiple_of(2).into());
    }

    /// Called by the idle loop: keep a WINK flashing, then turn the LED off.
    pub fn tick_indicator(&mut self) {
        let now = self.now_ms();
        if now < self.wink_until {
            self.blink(now);
        } else if self.wink_until != 0 {
            self.wink_until = 0;
            let _ = self.led.set_low();
        }
    }

    /// Whether the indicator needs [`Self::tick_indicator`] calls.
    pub fn indicator_busy(&self) -> bool {
        self.wink_until != 0
    }
}

impl Platform for PicoPlatform {
    type Rng = ChaCha20Rng;
    type Storage = EraseAhead<FlashStorage>;

    fn rng(&mut self) -> &mut Self::Rng {
        &mut self.rng
    }

    fn now_ms(&self) -> u64 {
        self.timer.get_counter().ticks() / 1000
    }

    fn start_presence(&mut self, touch: Touch) {
        self.touch = touch;
        self.held_since = None;
        let _ = self.led.set_high();
    }

    fn poll_presence(&mut self) -> PresenceAnswer {
        let now = self.now_ms();
        match (self.touch, bootsel::pressed()) {
            (Touch::Short, true) => PresenceAnswer::Granted,
            // A long touch: held without a break. While held the LED stays on, so the user
            // sees the press is being counted.
            (Touch::Long, true) => {
                let since = *self.held_since.get_or_insert(now);
                if now - since >= LONG_TOUCH_MS {
                    return PresenceAnswer::Granted;
                }
                let _ = self.led.set_high();
                PresenceAnswer::Pending
            }
            // Not pressed: letting go starts a long touch's count again.
            (_, false) => {
                self.held_since = None;
                self.blink(now);
                PresenceAnswer::Pending
            }
        }
    }

    fn stop_presence(&mut self) {
        let _ = self.led.set_low();
    }

    fn has_long_touch(&self) -> bool {
        true
    }

    fn indicate(&mut self, indicator: Indicator) {
        match indicator {
            Indicator::Wink => self.wink_until = self.now_ms() + WINK_MS,
            Indicator::WaitingForPresence => {}
            Indicator::Idle => {
                let _ = self.led.set_low();
            }
        }
    }
}
