//! Randomness. The RP2040 has no TRNG: at every boot a ChaCha20 CSPRNG is seeded with SHA-256
//! over ring-oscillator bits (ROSC RANDOMBIT, jittery but biased and weak on its own) and a
//! 32-byte seed kept in flash. The flash seed is then replaced with fresh output, so two boots
//! never run the same stream even if the oscillator bits were to repeat.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use rp2040_hal::pac;
use sha2::{Digest, Sha256};

use crate::flash;

const MAGIC: &[u8; 8] = b"PICOFIDO";

/// The seed sector: magic, a device ID made once (the USB serial number), the seed.
struct SeedSector {
    device_id: [u8; 8],
    seed: [u8; 32],
}

fn load() -> Option<SeedSector> {
    let mut raw = [0u8; 48];
    flash::read(flash::SEED_OFFSET, &mut raw);
    if &raw[..8] != MAGIC {
        return None;
    }
    let mut sector = SeedSector {
        device_id: [0; 8],
        seed: [0; 32],
    };
    sector.device_id.copy_from_slice(&raw[8..16]);
    sector.seed.copy_from_slice(&raw[16..48]);
    Some(sector)
}

fn store(sector: &SeedSector) {
    let mut page = [0xffu8; flash::PAGE_SIZE];
    page[..8].copy_from_slice(MAGIC);
    page[8..16].copy_from_slice(&sector.device_id);
    page[16..48].copy_from_slice(&sector.seed);
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

/// Seed the CSPRNG for this boot and roll the flash seed forward. Returns the RNG and the
/// device ID.
pub fn boot(rosc: &pac::ROSC, timer_ticks: u64) -> (ChaCha20Rng, [u8; 8]) {
    let previous = load();
    let mut hasher = Sha256::new();
    hasher.update(b"rp2040-runner rng seed v1");
    if let Some(previous) = &previous {
        hasher.update(previous.seed);
    }
    hash_rosc_bits(rosc, &mut hasher);
    hasher.update(timer_ticks.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(hasher.finalize().into());
    let device_id = match &previous {
        Some(previous) => previous.device_id,
        None => {
            let mut id = [0u8; 8];
            rng.fill_bytes(&mut id);
            id
        }
    };
    let mut next = SeedSector {
        device_id,
        seed: [0; 32],
    };
    rng.fill_bytes(&mut next.seed);
    store(&next);
    (rng, device_id)
}
