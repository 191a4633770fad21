//! Flash wear of the store on the Pico's geometry: erases and programs per 1,000 discoverable
//! registrations and per 100,000 assertions, and how evenly littlefs spreads the erases over
//! the 384 blocks (block_cycles 500). Prints figures.
//!
//! Then the same registrations with erasing ahead (`authenticator::store::ahead`): the key idle
//! between requests long enough for every step, powered off and on every so many
//! registrations (trust is lost at each power-up), at several depths: erases during the
//! requests, erases done ahead, and the most-erased block.
//!
//! `cargo run --release -p authenticator --example store_wear`

use authenticator::ctaphid::{App, Outcome, Transaction};
use authenticator::platform::{Indicator, Platform, PresenceAnswer, Touch};
use authenticator::store::ahead::{Counts, EraseAhead};
use authenticator::{Authenticator, Config};
use ciborium::Value;
use littlefs2::fs::Allocation;
use rand_chacha::rand_core::SeedableRng;

/// The Pico's geometry (rp2040-runner/src/flash.rs uses the same definitions).
use authenticator::pico_flash::{self, SECTOR_SIZE as BLOCK_SIZE, STATE_BLOCKS as BLOCK_COUNT};

/// The Pico's state partition in RAM, counting what is done to each block.
struct CountingFlash {
    vault: authenticator::store::vault::RamVault,
    bytes: Vec<u8>,
    erases: Vec<u32>,
    programs: u64,
}

/// The vault is not counted here: no command of this example writes it after the first boot.
impl authenticator::platform::Vault for CountingFlash {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        self.vault.read(offset, buf)
    }
    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        self.vault.program(offset, data)
    }
    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        self.vault.erase(offset)
    }
}

impl littlefs2::driver::Storage for CountingFlash {
    const READ_SIZE: usize = pico_flash::READ_SIZE;
    const WRITE_SIZE: usize = pico_flash::PAGE_SIZE;
    const BLOCK_SIZE: usize = pico_flash::SECTOR_SIZE;
    const BLOCK_COUNT: usize = pico_flash::STATE_BLOCKS;
    const BLOCK_CYCLES: isize = pico_flash::BLOCK_CYCLES;
    type CACHE_SIZE = pico_flash::CacheSize;
    type LOOKAHEAD_SIZE = pico_flash::LookaheadSize;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
        Ok(buf.len())
    }

    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        self.programs += 1;
        self.bytes[off..off + data.len()].copy_from_slice(data);
        Ok(data.len())
    }

    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        for block in off / BLOCK_SIZE..(off + len).div_ceil(BLOCK_SIZE) {
            self.erases[block] += 1;
        }
        self.bytes[off..off + len].fill(0xff);
        Ok(len)
    }
}

struct Host<S>(rand_chacha::ChaCha20Rng, std::marker::PhantomData<S>);

impl<S: littlefs2::driver::Storage + authenticator::platform::Vault> Platform for Host<S> {
    type Rng = rand_chacha::ChaCha20Rng;
    type Storage = S;
    fn rng(&mut self) -> &mut Self::Rng {
        &mut self.0
    }
    fn now_ms(&self) -> u64 {
        0
    }
    fn start_presence(&mut self, _touch: Touch) {}
    fn poll_presence(&mut self) -> PresenceAnswer {
        PresenceAnswer::Granted
    }
    fn stop_presence(&mut self) {}
    fn indicate(&mut self, _: Indicator) {}
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn call(key: &mut impl App, command: u8, body: &Value) -> Vec<u8> {
    let mut request = vec![command];
    ciborium::into_writer(body, &mut request).expect("CBOR");
    let mut response = Vec::new();
    assert_eq!(
        key.call(Transaction::Cbor, &request, &mut response),
        Outcome::Done
    );
    assert_eq!(response.first(), Some(&0), "status");
    response
}

fn make(rp: &str, user: usize) -> Value {
    Value::Map(vec![
        (Value::from(1), Value::Bytes(vec![7; 32])),
        (Value::from(2), Value::Map(vec![(text("id"), text(rp))])),
        (
            Value::from(3),
            Value::Map(vec![
                (
                    text("id"),
                    Value::Bytes(format!("user-{user}").into_bytes()),
                ),
                (text("name"), text(&format!("user {user}"))),
            ]),
        ),
        (
            Value::from(4),
            Value::Array(vec![Value::Map(vec![
                (text("alg"), Value::from(-7)),
                (text("type"), text("public-key")),
            ])]),
        ),
        (
            Value::from(7),
            Value::Map(vec![(text("rk"), Value::Bool(true))]),
        ),
    ])
}

fn blank_flash() -> CountingFlash {
    CountingFlash {
        bytes: vec![0xff; BLOCK_SIZE * BLOCK_COUNT],
        erases: vec![0; BLOCK_COUNT],
        programs: 0,
        vault: Default::default(),
    }
}

fn config() -> Config {
    Config {
        aaguid: [0; 16],
        firmware_version: 0,
        pin_kdf: authenticator::store::PinKdf::Pbkdf2 { iterations: 1 },
    }
}

/// 1,000 registrations with `depth` blocks erased ahead, idle steps run to the end between
/// requests, the power cycled every `power_cycle` registrations. The flash and the summed
/// counts of erasing ahead.
fn erase_ahead(depth: usize, power_cycle: usize) -> (CountingFlash, Counts) {
    let mut flash = blank_flash();
    let mut total = Counts::default();
    let mut made = 0;
    while made < 1000 {
        let mut ahead = EraseAhead::new(flash, depth);
        let mut alloc = Allocation::new();
        let fs = authenticator::store::mount(&mut alloc, &mut ahead).expect("mount");
        let platform = Host(
            rand_chacha::ChaCha20Rng::seed_from_u64(made as u64),
            std::marker::PhantomData,
        );
        let mut key = Authenticator::new(platform, fs, config());
        while key.erase_ahead_step() {}
        for _ in 0..power_cycle.min(1000 - made) {
            call(
                &mut key,
                0x01,
                &make(&format!("rp{}.example", made % 50), made),
            );
            made += 1;
            while key.erase_ahead_step() {}
        }
        let counts = key.erase_ahead_counts().expect("mounted");
        drop(key);
        total.erased_ahead += counts.erased_ahead;
        total.erased += counts.erased;
        total.skipped += counts.skipped;
        total.plans += counts.plans;
        flash = ahead.into_inner();
    }
    (flash, total)
}

fn main() {
    let mut flash = blank_flash();
    let mut alloc = Allocation::new();
    let fs = authenticator::store::mount(&mut alloc, &mut flash).expect("format");
    let platform = Host(
        rand_chacha::ChaCha20Rng::seed_from_u64(1),
        std::marker::PhantomData,
    );
    let mut key = Authenticator::new(
        platform,
        fs,
        Config {
            aaguid: [0; 16],
            firmware_version: 0,
            pin_kdf: authenticator::store::PinKdf::Pbkdf2 { iterations: 1 },
        },
    );
    // The filesystem borrows the storage while a key runs: each phase runs on its own key
    // and is read from the totals after it.
    for i in 0..1000 {
        call(&mut key, 0x01, &make(&format!("rp{}.example", i % 50), i));
    }
    drop(key);
    let registrations = (
        flash.erases.iter().map(|&e| u64::from(e)).sum::<u64>(),
        flash.programs,
    );
    let after_registrations = flash.erases.clone();

    let mut alloc = Allocation::new();
    let fs = authenticator::store::mount(&mut alloc, &mut flash).expect("mount");
    let platform = Host(
        rand_chacha::ChaCha20Rng::seed_from_u64(2),
        std::marker::PhantomData,
    );
    let mut key = Authenticator::new(
        platform,
        fs,
        Config {
            aaguid: [0; 16],
            firmware_version: 0,
            pin_kdf: authenticator::store::PinKdf::Pbkdf2 { iterations: 1 },
        },
    );
    let assertion = Value::Map(vec![
        (Value::from(1), text("rp0.example")),
        (Value::from(2), Value::Bytes(vec![1; 32])),
    ]);
    for _ in 0..100_000 {
        call(&mut key, 0x02, &assertion);
    }
    drop(key);
    let total = (
        flash.erases.iter().map(|&e| u64::from(e)).sum::<u64>(),
        flash.programs,
    );
    let assertions: Vec<u32> = flash
        .erases
        .iter()
        .zip(&after_registrations)
        .map(|(a, b)| a - b)
        .collect();
    println!(
        "1,000 discoverable registrations (50 RPs): {} erases, {} page programs (format and first use included)",
        registrations.0, registrations.1
    );
    println!(
        "100,000 assertions (signature counter reserved 64 at a time): {} erases, {} page programs",
        total.0 - registrations.0,
        total.1 - registrations.1
    );
    let spread = |erases: &[u32]| {
        let touched = erases.iter().filter(|&&e| e > 0).count();
        let max = erases.iter().max().copied().unwrap_or(0);
        format!("{touched} of {BLOCK_COUNT} blocks erased, at most {max} times each")
    };
    println!("  registrations: {}", spread(&after_registrations));
    println!("  assertions: {}", spread(&assertions));
    println!(
        "at 100,000 erase cycles per block (W25Q16), the assertions' most-erased block lasts {:.0} million assertions",
        100_000.0 * 100_000.0 / f64::from(assertions.iter().max().copied().unwrap_or(1).max(1)) / 1e6
    );

    println!("1,000 discoverable registrations with erasing ahead (idle between requests):");
    for depth in [1, 2, 3] {
        for power_cycle in [1000, 10, 1] {
            let (flash, counts) = erase_ahead(depth, power_cycle);
            let all: u64 = flash.erases.iter().map(|&e| u64::from(e)).sum();
            let max = flash.erases.iter().max().copied().unwrap_or(0);
            println!(
                "  depth {depth}, power cycled every {power_cycle:>4}: {} erases during requests, {} ahead ({} of them used), {all} in all, at most {max} on a block, {} plans",
                counts.erased, counts.erased_ahead, counts.skipped, counts.plans
            );
        }
    }
}
