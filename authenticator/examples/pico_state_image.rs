//! Write a Pico state (the vault and the 1.5 MiB partition, the firmware's exact littlefs
//! geometry) holding N maximal discoverable credentials, made by this core's own makeCredential
//! on the host: the emulated Pico then boots from it (`rp2040-runner/emulator/bench-scale.mjs`)
//! instead of taking thousands of emulated requests to fill. The file is the flash from the
//! vault (0x7B000) to the end: vault (16 KiB), the RNG seed sector left erased, partition.
//!
//! `cargo run --release -p authenticator --example pico_state_image -- OUT COUNT [ONE_RP]`:
//! COUNT credentials with RP IDs of 256 bytes, user ids of 64, names of 64 and a 32-byte
//! credBlob; the first ONE_RP of them (default 0) on one RP, `rp-shared…`, the others one RP
//! each, `rp-<n>…`.

use authenticator::ctaphid::{App, Outcome, Transaction};
use authenticator::platform::{Indicator, Platform, PresenceAnswer, Touch};
use authenticator::{Authenticator, Config};
use ciborium::Value;
use littlefs2::fs::Allocation;
use rand_chacha::rand_core::SeedableRng;

/// The Pico's geometry and layout (rp2040-runner/src/flash.rs uses the same definitions).
use authenticator::pico_flash::{self, SECTOR_SIZE, STATE_BLOCKS, STATE_OFFSET, VAULT_OFFSET};

struct PicoImage(Vec<u8>, authenticator::store::vault::RamVault);

/// The vault, then the seed sector, then the partition.
const VAULT_TO_STATE: usize = STATE_OFFSET - VAULT_OFFSET;

impl authenticator::platform::Vault for PicoImage {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        self.1.read(offset, buf)
    }
    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        self.1.program(offset, data)
    }
    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        self.1.erase(offset)
    }
}

impl littlefs2::driver::Storage for PicoImage {
    const READ_SIZE: usize = pico_flash::READ_SIZE;
    const WRITE_SIZE: usize = pico_flash::PAGE_SIZE;
    const BLOCK_SIZE: usize = pico_flash::SECTOR_SIZE;
    const BLOCK_COUNT: usize = pico_flash::STATE_BLOCKS;
    const BLOCK_CYCLES: isize = pico_flash::BLOCK_CYCLES;
    type CACHE_SIZE = pico_flash::CacheSize;
    type LOOKAHEAD_SIZE = pico_flash::LookaheadSize;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        let src = self
            .0
            .get(off..off + buf.len())
            .ok_or(littlefs2::io::Error::IO)?;
        buf.copy_from_slice(src);
        Ok(buf.len())
    }

    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        self.0
            .get_mut(off..off + data.len())
            .ok_or(littlefs2::io::Error::IO)?
            .copy_from_slice(data);
        Ok(data.len())
    }

    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        self.0
            .get_mut(off..off + len)
            .ok_or(littlefs2::io::Error::IO)?
            .fill(0xff);
        Ok(len)
    }
}

/// The host's stand-in for the Pico: a seeded CSPRNG and a user who always touches.
struct Host(rand_chacha::ChaCha20Rng);

impl Platform for Host {
    type Rng = rand_chacha::ChaCha20Rng;
    type Storage = PicoImage;
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

fn padded(prefix: &str, len: usize, fill: char) -> String {
    let mut s = prefix.to_string();
    while s.len() < len {
        s.push(fill);
    }
    s
}

fn rp_id(n: usize, one_rp: usize) -> String {
    if n < one_rp {
        padded("rp-shared.", 248, 'r') + ".example"
    } else {
        padded(&format!("rp-{n}."), 248, 'r') + ".example"
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn make(rp: &str, user: usize) -> Vec<u8> {
    let name = padded(&format!("name-{user}-"), 64, 'n');
    let user_id = padded(&format!("user-{user}-"), 64, 'u');
    let body = Value::Map(vec![
        (Value::from(1), Value::Bytes(vec![7; 32])),
        (Value::from(2), Value::Map(vec![(text("id"), text(rp))])),
        (
            Value::from(3),
            Value::Map(vec![
                (text("id"), Value::Bytes(user_id.into_bytes())),
                (text("name"), text(&name)),
                (text("displayName"), text(&name)),
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
            Value::from(6),
            Value::Map(vec![(text("credBlob"), Value::Bytes(vec![0xAB; 32]))]),
        ),
        (
            Value::from(7),
            Value::Map(vec![(text("rk"), Value::Bool(true))]),
        ),
    ]);
    let mut request = vec![0x01];
    ciborium::into_writer(&body, &mut request).expect("CBOR");
    request
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pico_state_image OUT COUNT [ONE_RP]";
    let out = args.get(1).expect(usage);
    let count: usize = args.get(2).and_then(|n| n.parse().ok()).expect(usage);
    let one_rp: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut storage = PicoImage(vec![0xff; SECTOR_SIZE * STATE_BLOCKS], Default::default());
    {
        let mut alloc = Allocation::new();
        let fs = authenticator::store::mount(&mut alloc, &mut storage).expect("format");
        let platform = Host(rand_chacha::ChaCha20Rng::seed_from_u64(count as u64));
        let config = Config {
            aaguid: [0; 16],
            firmware_version: 0,
            // No PIN is set: the verifier's KDF is never used.
            pin_kdf: authenticator::store::PinKdf::Pbkdf2 { iterations: 1 },
        };
        let mut key = Authenticator::new(platform, fs, config);
        for i in 0..count {
            let mut response = Vec::new();
            let outcome = key.call(
                Transaction::Cbor,
                &make(&rp_id(i, one_rp), i),
                &mut response,
            );
            assert_eq!(outcome, Outcome::Done);
            assert_eq!(response.first(), Some(&0), "credential {i}: status");
        }
    }
    let mut image = storage.1.image().to_vec();
    image.resize(VAULT_TO_STATE, 0xff);
    image.extend_from_slice(&storage.0);
    std::fs::write(out, &image).expect("write the image");
    eprintln!("{out}: {count} maximal discoverable credentials ({one_rp} on one RP)");
}
