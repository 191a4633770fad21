//! A fresh authenticator on a RAM littlefs2 image for each fuzz input, so every crash
//! reproduces from its input alone.

use authenticator::platform::{Indicator, Platform, Presence};
use authenticator::{Authenticator, Config};
use littlefs2::consts;
use littlefs2::fs::Allocation;
use rand_chacha::rand_core::SeedableRng;

const BLOCK: usize = 4096;
const BLOCKS: usize = 32;

pub struct RamStorage(Vec<u8>);

impl littlefs2::driver::Storage for RamStorage {
    const READ_SIZE: usize = 16;
    const WRITE_SIZE: usize = 16;
    const BLOCK_SIZE: usize = BLOCK;
    const BLOCK_COUNT: usize = BLOCKS;
    const BLOCK_CYCLES: isize = 100;
    type CACHE_SIZE = consts::U256;
    type LOOKAHEAD_SIZE = consts::U2;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        buf.copy_from_slice(&self.0[off..off + buf.len()]);
        Ok(buf.len())
    }
    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        self.0[off..off + data.len()].copy_from_slice(data);
        Ok(data.len())
    }
    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        self.0[off..off + len].fill(0xff);
        Ok(len)
    }
}

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
    fn start_presence(&mut self) {}
    fn poll_presence(&mut self) -> Presence {
        Presence::Granted
    }
    fn stop_presence(&mut self) {}
    fn indicate(&mut self, _: Indicator) {}
}

/// Run `f` with a fresh key.
pub fn with_key<R>(f: impl FnOnce(&mut Authenticator<'_, FuzzPlatform>) -> R) -> R {
    let mut storage = RamStorage(vec![0xff; BLOCK * BLOCKS]);
    let mut alloc = Allocation::new();
    let fs = authenticator::store::mount(&mut alloc, &mut storage).expect("a blank image formats");
    let platform = FuzzPlatform { rng: rand_chacha::ChaCha20Rng::seed_from_u64(1), now_ms: 0 };
    let mut key = Authenticator::new(platform, fs, Config { aaguid: [7; 16], firmware_version: 1 });
    f(&mut key)
}
