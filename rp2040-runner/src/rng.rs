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
//!
//! The seed sector is a log of 256-byte pages, one seed each: a boot programs the next blank
//! page, and erases the sector only when all sixteen are used. A boot then costs one page
//! program (0.7 ms typical) rather than a sector erase (45 ms typical, 400 ms at the datasheet's
//! maximum, with interrupts off) in fifteen boots of sixteen, and the sector wears sixteen times
//! slower. Each page carries a check over its seed, so one torn by a power cut is never read as
//! a seed; the newest good page is the seed.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use rp2040_hal::pac;
use rp2040_hal::timer::Timer;
use sha2::{Digest, Sha256};

pub use entropy_health::Failure;

use crate::flash;

/// A page of the log: this magic, the 32-byte seed, then the first 8 bytes of
/// SHA-256(magic ‖ seed); the rest stays erased.
const MAGIC: &[u8; 8] = b"PICOSLOG";
const PAGE_LEN: usize = 8 + 32 + 8;
const PAGES: usize = flash::SECTOR_SIZE / flash::PAGE_SIZE;
/// Earlier layouts, one seed in the sector's first page, still read once: version 2
/// ("PICOSEED": magic, seed) and version 1 ("PICOFIDO": magic, a random device ID that was the
/// USB serial number before the flash chip's unique ID, seed).
const MAGIC_V2: &[u8; 8] = b"PICOSEED";
const MAGIC_V1: &[u8; 8] = b"PICOFIDO";

fn page_check(seed: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(MAGIC)
        .chain_update(seed)
        .finalize();
    let mut check = [0u8; 8];
    check.copy_from_slice(&digest[..8]);
    check
}

fn read_page(page: usize) -> [u8; PAGE_LEN] {
    let mut raw = [0u8; PAGE_LEN];
    flash::read(flash::SEED_OFFSET + page * flash::PAGE_SIZE, &mut raw);
    raw
}

/// The seed in a page, if it holds a good one.
fn seed_of(raw: &[u8; PAGE_LEN]) -> Option<[u8; 32]> {
    let (magic, rest) = raw.split_at(8);
    let (seed, check) = rest.split_at(32);
    if magic != MAGIC || check != page_check(seed) {
        return None;
    }
    seed.try_into().ok()
}

/// The newest seed: the last good page of the log, or a seed of an earlier layout.
fn load() -> Option<[u8; 32]> {
    if let Some(seed) = (0..PAGES).rev().find_map(|page| seed_of(&read_page(page))) {
        return Some(seed);
    }
    let raw = read_page(0);
    let at = match &raw[..8] {
        m if m == MAGIC_V2 => 8,
        m if m == MAGIC_V1 => 16,
        _ => return None,
    };
    raw[at..at + 32].try_into().ok()
}

/// Append `seed` to the log: the first blank page after the last written one, or page 0 of a
/// freshly erased sector once the log is full (or holds an earlier layout).
fn store(seed: &[u8; 32]) {
    let blank = |page: usize| read_page(page).iter().all(|&b| b == 0xff);
    let written = (0..PAGES).rev().find(|&page| !blank(page));
    let next = match written {
        None => 0,
        Some(last) if last + 1 < PAGES && seed_of(&read_page(0)).is_some() => last + 1,
        Some(_) => {
            flash::erase(flash::SEED_OFFSET, flash::SECTOR_SIZE);
            0
        }
    };
    let mut page = [0xffu8; flash::PAGE_SIZE];
    page[..8].copy_from_slice(MAGIC);
    page[8..40].copy_from_slice(seed);
    page[40..PAGE_LEN].copy_from_slice(&page_check(seed));
    flash::program(flash::SEED_OFFSET + next * flash::PAGE_SIZE, &page);
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
