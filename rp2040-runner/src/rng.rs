//! Randomness. The RP2040 has no TRNG: at every boot a ChaCha20 CSPRNG is seeded with SHA-256
//! over ring-oscillator bits (ROSC RANDOMBIT, jittery but biased and weak on its own) and a
//! 32-byte seed kept in flash (and the flash chip's unique ID, so two keys flashed with the same
//! image differ too). The flash seed is then replaced with fresh output, so two boots never run
//! the same stream even if the oscillator bits were to repeat.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use rp2040_hal::pac;
use sha2::{Digest, Sha256};

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

/// 256 bytes of ring-oscillator bits, each byte from 8 samples taken some cycles apart.
fn hash_rosc_bits(rosc: &pac::ROSC, hasher: &mut Sha256) {
    for _ in 0..256 {
        let mut byte = 0u8;
        for _ in 0..8 {
            byte = (byte << 1) | rosc.randombit().read().randombit().bit() as u8;
            cortex_m::asm::delay(32);
        }
        hasher.update([byte]);
    }
}

/// Seed the CSPRNG for this boot and roll the flash seed forward.
pub fn boot(rosc: &pac::ROSC, timer_ticks: u64, unique_id: &[u8; 8]) -> ChaCha20Rng {
    let mut hasher = Sha256::new();
    hasher.update(b"rp2040-runner rng seed v1");
    if let Some(previous) = load() {
        hasher.update(previous);
    }
    hasher.update(unique_id);
    hash_rosc_bits(rosc, &mut hasher);
    hasher.update(timer_ticks.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(hasher.finalize().into());
    let mut next = [0u8; 32];
    rng.fill_bytes(&mut next);
    store(&next);
    rng
}
