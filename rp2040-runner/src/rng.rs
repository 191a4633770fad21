//! Randomness. The RP2040 has no TRNG: at every boot a ChaCha20 CSPRNG is seeded with SHA-256
//! over ring-oscillator bits (ROSC RANDOMBIT, jittery but of unknown quality), a 32-byte seed
//! kept in flash, the flash chip's unique ID (so two keys flashed with the same image differ)
//! and the timer. The flash seed is then replaced with fresh output, so two boots never run the
//! same stream even if the oscillator bits were to repeat.
//!
//! The oscillator bits must first pass NIST SP 800-90B's health tests (`entropy_health`: the
//! repetition count and adaptive proportion tests on every one of the seed's
//! `SEED_SAMPLES` = 2,048 samples, its start-up test). A boot whose oscillator fails them gets
//! no generator at all, even when a seed from an earlier boot is in flash: that seed is readable
//! by anyone who held the board (BOOTSEL, SWD), so a broken oscillator plus a copied seed would
//! make every key made from then on predictable. The seed sector is then neither read nor
//! rewritten; the next boot tests afresh (docs/entropy.md).

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use rp2040_hal::pac;
use rp2040_hal::timer::Timer;
use sha2::{Digest, Sha256};

pub use entropy_health::Failure;

use crate::flash;

/// Version 2 of the sector. Version 1 ("PICOFIDO") also kept a random device ID, the USB serial
/// number before the flash chip's unique ID took its place; its seed is still read.
const MAGIC: &[u8; 8] = b"PICOSEED";
const MAGIC_V1: &[u8; 8] = b"PICOFIDO";

/// The seed sector: magic, then the 32-byte seed.
fn load() -> Option<[u8; 32]> {
    let mut raw = [0u8; 48];
    flash::read(flash::SEED_OFFSET, &mut raw);
    let at = match &raw[..8] {
        m if m == MAGIC => 8,
        m if m == MAGIC_V1 => 16,
        _ => return None,
    };
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&raw[at..at + 32]);
    Some(seed)
}

fn store(seed: &[u8; 32]) {
    let mut page = [0xffu8; flash::PAGE_SIZE];
    page[..8].copy_from_slice(MAGIC);
    page[8..40].copy_from_slice(seed);
    flash::erase(flash::SEED_OFFSET, flash::SECTOR_SIZE);
    flash::program(flash::SEED_OFFSET, &page);
}

/// The least time between two RANDOMBIT reads, as the Pico SDK's pico_rand keeps
/// (`PICO_RAND_MIN_ROSC_BIT_SAMPLE_TIME_US`). RANDOMBIT reads the oscillator's output (the ring
/// runs at 29 to 192 MHz, its clock divided by 16 at 1.8 to 12 MHz; the datasheet does not say
/// which one the bit sees). Between two reads the phase moves on by an amount fixed by the
/// frequency but for the jitter accumulated meanwhile, which grows only with the square root of
/// the time waited: reads ~100 cycles apart, as before, differ by little more than a
/// deterministic step. Waiting in time, not cycles, keeps the spacing at any CPU clock. How much
/// entropy a sample then holds only the chip can tell (docs/entropy.md).
const SAMPLE_INTERVAL_US: u32 = 10;

/// One RANDOMBIT sample, taken at least [`SAMPLE_INTERVAL_US`] after the previous one (`last`,
/// the 1 MHz timer's low word then; more than 10 ticks apart is at least 10 µs).
fn sample(rosc: &pac::ROSC, timer: &Timer, last: &mut u32) -> bool {
    while timer.get_counter_low().wrapping_sub(*last) <= SAMPLE_INTERVAL_US {}
    *last = timer.get_counter_low();
    rosc.randombit().read().randombit().bit()
}

/// Seed the CSPRNG for this boot and roll the flash seed forward, if the oscillator passes its
/// health tests; otherwise which test it failed, the seed sector neither read nor rewritten.
pub fn boot(rosc: &pac::ROSC, timer: &Timer, unique_id: &[u8; 8]) -> Result<ChaCha20Rng, Failure> {
    let mut hasher = Sha256::new();
    hasher.update(b"rp2040-runner rng seed v1");
    let mut last = timer.get_counter_low();
    entropy_health::gather(
        || sample(rosc, timer, &mut last),
        |byte| hasher.update([byte]),
    )?;
    if let Some(previous) = load() {
        hasher.update(previous);
    }
    hasher.update(unique_id);
    hasher.update(timer.get_counter().ticks().to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(hasher.finalize().into());
    let mut next = [0u8; 32];
    rng.fill_bytes(&mut next);
    store(&next);
    Ok(rng)
}
