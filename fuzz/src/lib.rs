//! A fresh authenticator on a RAM littlefs2 image for each fuzz input, so every crash
//! reproduces from its input alone.

use authenticator::platform::{
    BuiltinUv, Indicator, Platform, PresenceAnswer, Touch, Verification,
    USER_VERIFY_FINGERPRINT_INTERNAL,
};
use authenticator::{Authenticator, Config};
use littlefs2::fs::Allocation;
use rand_chacha::rand_core::SeedableRng;

pub type RamStorage = authenticator::store::RamStorage<32>;

/// A platform whose clock the fuzz input drives and whose user always approves.
pub struct FuzzPlatform {
    rng: rand_chacha::ChaCha20Rng,
    pub now_ms: u64,
}

impl Platform for FuzzPlatform {
    type Rng = rand_chacha::ChaCha20Rng;
    type Storage = RamStorage;
    fn rng(&mut self) -> &mut Self::Rng {
        &mut self.rng
    }
    fn now_ms(&self) -> u64 {
        self.now_ms
    }
    fn start_presence(&mut self, _touch: Touch) {}
    fn poll_presence(&mut self) -> PresenceAnswer {
        PresenceAnswer::Granted
    }
    fn stop_presence(&mut self) {}
    fn indicate(&mut self, _: Indicator) {}
    /// So the fuzzer reaches enableLongTouchForReset and the long-touch reset too.
    fn has_long_touch(&self) -> bool {
        true
    }
    /// A fingerprint sensor, so the fuzzer reaches built-in UV too: a finger is enrolled while
    /// the clock's lowest bit is set (the structured inputs move the clock; the raw ones, at 0,
    /// meet the key as before), and it matches while the next bit is clear. Never pending, as
    /// presence is not.
    fn builtin_uv(&self) -> Option<BuiltinUv> {
        Some(BuiltinUv {
            modality: USER_VERIFY_FINGERPRINT_INTERNAL,
            enrolled: self.now_ms & 1 == 1,
        })
    }
    fn poll_uv(&mut self) -> Verification {
        if self.now_ms & 2 == 0 {
            Verification::Verified
        } else {
            Verification::Failed
        }
    }
}

/// Run `f` with a fresh key.
pub fn with_key<R>(f: impl FnOnce(&mut Authenticator<'_, FuzzPlatform>) -> R) -> R {
    let mut storage = RamStorage::default();
    let mut alloc = Allocation::new();
    let fs = authenticator::store::mount(&mut alloc, &mut storage).expect("a blank image formats");
    let platform = FuzzPlatform {
        rng: rand_chacha::ChaCha20Rng::seed_from_u64(1),
        now_ms: 0,
    };
    let mut key = Authenticator::new(
        platform,
        fs,
        Config {
            aaguid: [7; 16],
            firmware_version: 1,
            pin_kdf: authenticator::store::PinKdf::Pbkdf2 { iterations: 1 },
        },
    );
    f(&mut key)
}
