//! Erasing ahead (`authenticator::store::ahead`) on a NOR-faithful flash of the Pico's
//! geometry: programming a page whose bytes are not all erased, or a block whose last erase a
//! power cut tore (it reads blank, but its cells are weak), is a defect the flash reports. A
//! session of registrations, assertions and PIN entries runs with the erase-ahead steps between
//! requests (where the Pico runs them, between requests and during presence waits: the store is
//! not in use in either), with the power cut at every program and every erase (erase-ahead
//! erases included), clean and torn. After each cut the key powers up again (nothing trusted),
//! the invariants of `power_cut.rs` hold, and more registrations with erasing ahead program
//! only properly erased pages.

use std::cell::Cell;
use std::rc::Rc;

use authenticator::pico_flash::{self, PAGE_SIZE, SECTOR_SIZE, STATE_BLOCKS};
use authenticator::store::ahead::EraseAhead;
use ciborium::Value;
use test_support::pin_client::{retries, PinClient};
use test_support::*;

const PIN: &str = "4321";

/// The Pico's state partition as NOR flash: a program may only go to erased bytes of a block
/// whose erase completed; a torn erase leaves the block reading blank but weak.
struct NorFlash {
    bytes: Vec<u8>,
    weak: Vec<bool>,
    vault: authenticator::store::vault::RamVault,
    /// Operations left before the power is cut (None: never).
    budget: Rc<Cell<Option<usize>>>,
    ops: Rc<Cell<usize>>,
    tear: bool,
    /// Programs into unerased bytes or weak blocks: must stay empty.
    defects: Rc<std::cell::RefCell<Vec<String>>>,
}

impl NorFlash {
    fn new(budget: Option<usize>, tear: bool) -> Self {
        Self {
            bytes: vec![0xff; SECTOR_SIZE * STATE_BLOCKS],
            weak: vec![false; STATE_BLOCKS],
            vault: Default::default(),
            budget: Rc::new(Cell::new(budget)),
            ops: Rc::new(Cell::new(0)),
            tear,
            defects: Default::default(),
        }
    }

    /// Count an operation; Err once the power is gone, Ok(true) for the one the cut tears.
    fn spend(&mut self) -> littlefs2::io::Result<bool> {
        self.ops.set(self.ops.get() + 1);
        match self.budget.get() {
            Some(0) => Err(littlefs2::io::Error::IO),
            Some(1) => {
                self.budget.set(Some(0));
                if self.tear {
                    Ok(true)
                } else {
                    Err(littlefs2::io::Error::IO)
                }
            }
            Some(n) => {
                self.budget.set(Some(n - 1));
                Ok(false)
            }
            None => Ok(false),
        }
    }
}

impl littlefs2::driver::Storage for NorFlash {
    const READ_SIZE: usize = pico_flash::READ_SIZE;
    const WRITE_SIZE: usize = PAGE_SIZE;
    const BLOCK_SIZE: usize = SECTOR_SIZE;
    const BLOCK_COUNT: usize = STATE_BLOCKS;
    const BLOCK_CYCLES: isize = pico_flash::BLOCK_CYCLES;
    type CACHE_SIZE = pico_flash::CacheSize;
    type LOOKAHEAD_SIZE = pico_flash::LookaheadSize;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
        Ok(buf.len())
    }

    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        let torn = self.spend()?;
        let block = off / SECTOR_SIZE;
        if self.weak[block] {
            self.defects
                .borrow_mut()
                .push(format!("program into block {block}, whose erase was torn"));
        }
        if self.bytes[off..off + data.len()].iter().any(|&b| b != 0xff) {
            self.defects.borrow_mut().push(format!(
                "program at {off:#x} (block {block}) into unerased bytes"
            ));
        }
        let len = if torn { data.len() / 2 } else { data.len() };
        // NOR programming only clears bits.
        for (cell, new) in self.bytes[off..off + len].iter_mut().zip(data) {
            *cell &= new;
        }
        if torn {
            return Err(littlefs2::io::Error::IO);
        }
        Ok(data.len())
    }

    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        let torn = self.spend()?;
        self.bytes[off..off + len].fill(0xff);
        for weak in &mut self.weak[off / SECTOR_SIZE..(off + len) / SECTOR_SIZE] {
            // A torn erase: the cells read erased, but are not reliably so.
            *weak = torn;
        }
        if torn {
            return Err(littlefs2::io::Error::IO);
        }
        Ok(len)
    }
}

/// The vault is outside the partition; its writes cost power like the partition's.
impl authenticator::platform::Vault for NorFlash {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        self.vault.read(offset, buf)
    }
    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        if self.spend()? {
            return Err(littlefs2::io::Error::IO);
        }
        self.vault.program(offset, data)
    }
    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        if self.spend()? {
            self.vault
                .erase_part(offset, authenticator::platform::VAULT_SLOT_SIZE / 2)?;
            return Err(littlefs2::io::Error::IO);
        }
        self.vault.erase(offset)
    }
}

type Key<'a> = authenticator::Authenticator<'a, TestPlatform<EraseAhead<NorFlash>>>;

#[derive(Default)]
struct Acknowledged {
    max_counter: u32,
    /// (credential id, COSE key, user id) of acknowledged discoverable registrations.
    credentials: Vec<(Vec<u8>, Value, Vec<u8>)>,
    in_doubt: Vec<Vec<u8>>,
    retries_at_most: Option<i64>,
}

thread_local! {
    /// The clock of every key in this file: `idle` moves it on, so the index's idle work (which
    /// waits for a quiet key before writing its copy) runs and writes between requests too.
    static KNOBS: Knobs = Knobs::default();
}

fn knobs() -> Knobs {
    KNOBS.with(|k| k.clone())
}

/// The key idle long enough for all its idle work, as the Pico runs it: the index's steps
/// first (their writes end a plan), then the erase-ahead steps.
fn idle(key: &mut Key<'_>) {
    let clock = knobs().now_ms;
    clock.set(clock.get() + 3_000);
    loop {
        if key.index_step() == Some(0) {
            continue;
        }
        if !key.erase_ahead_step() {
            break;
        }
    }
}

fn register(key: &mut Key<'_>, ack: &mut Acknowledged, user: &[u8]) -> bool {
    register_as(key, ack, user, false)
}

/// A discoverable registration, with a pinUvAuthParam when `with_pin` (the PIN is set).
fn register_as(key: &mut Key<'_>, ack: &mut Acknowledged, user: &[u8], with_pin: bool) -> bool {
    let replaced = ack.credentials.iter().position(|c| c.2 == user);
    if let Some(i) = replaced {
        ack.in_doubt.push(ack.credentials[i].0.clone());
    }
    let mut request = make_credential_request("example.com", user, &[-7], true);
    if with_pin {
        let client = PinClient::new(key, 2, 3);
        let Ok(token) = client.token(key, PIN, Some(0x01), None) else {
            return false;
        };
        if let Value::Map(entries) = &mut request {
            entries.push((int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))));
            entries.push((int(9), int(2)));
        }
    }
    let (status, body) = ctap2(key, 0x01, Some(request));
    if status != 0 {
        eprintln!("makeCredential: {status:#x}");
        return false;
    }
    let auth_data = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
    ack.max_counter = ack.max_counter.max(auth_data.counter);
    ack.credentials.retain(|c| c.2 != user);
    ack.credentials.push((
        auth_data.credential_id,
        auth_data.public_key.unwrap(),
        user.to_vec(),
    ));
    true
}

/// Registrations (new users and replacements), assertions crossing a counter reservation,
/// a PIN and a wrong guess, with the erase-ahead steps run between requests.
fn session(key: &mut Key<'_>, ack: &mut Acknowledged) -> bool {
    idle(key);
    for i in 0..12u8 {
        // Users 0..8, then 0..4 again: new slots, then replaced credentials.
        if !register(key, ack, &[b'u', i % 8]) {
            return false;
        }
        idle(key);
    }
    let id = ack.credentials[0].0.clone();
    for i in 0..70u8 {
        let (status, body) = ctap2(
            key,
            0x02,
            Some(get_assertion_request("example.com", &[i; 32], &[&id])),
        );
        if status != 0 {
            return false;
        }
        let counter = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap()).counter;
        ack.max_counter = ack.max_counter.max(counter);
        if i % 20 == 0 {
            idle(key);
        }
    }
    let client = PinClient::new(key, 2, 3);
    if client.set_pin(key, PIN) != 0 {
        eprintln!("setPIN failed");
        return false;
    }
    ack.retries_at_most = Some(8);
    idle(key);
    let client = PinClient::new(key, 2, 3);
    match client.token(key, "0000", None, None) {
        Err(0x31) => ack.retries_at_most = Some(7),
        other => {
            eprintln!("wrong PIN: {other:?}");
            return false;
        }
    }
    idle(key);
    true
}

/// After a power-up: every acknowledged credential signs (signature checked), the counter
/// went up, spent retries stay spent; then more registrations with erasing ahead.
fn check(flash: NorFlash, ack: &Acknowledged, what: &str) -> NorFlash {
    flash.budget.set(None);
    let mut ahead = EraseAhead::new(flash, 1);
    with_key(&mut ahead, &knobs(), 7, |key| {
        for (id, public_key, user) in &ack.credentials {
            if ack.in_doubt.contains(id) {
                continue;
            }
            let cdh = [0xEE; 32];
            let (status, body) = ctap2(
                key,
                0x02,
                Some(get_assertion_request("example.com", &cdh, &[id])),
            );
            assert_eq!(status, 0, "{what}: the credential of {user:?} signs");
            let body = body.unwrap();
            let raw = get(&body, 2).unwrap().as_bytes().unwrap();
            verify(
                public_key,
                &[&raw[..], &cdh].concat(),
                get(&body, 3).unwrap().as_bytes().unwrap(),
            );
            let counter = parse_auth_data(raw).counter;
            assert!(counter > ack.max_counter, "{what}: counter {counter}");
        }
        if let Some(most) = ack.retries_at_most {
            let (left, _) = retries(key);
            assert!(left <= most, "{what}: retries {left} > {most}");
        }
        // The next power-up's registrations: blocks left weak by the cut must be erased by
        // littlefs before it programs them (nothing is trusted after a power-up).
        let mut more = Acknowledged::default();
        for i in 0..4u8 {
            let ok = register_as(key, &mut more, &[b'v', i], false)
                || register_as(key, &mut more, &[b'v', i], true);
            assert!(ok, "{what}: registers");
            idle(key);
        }
    });
    ahead.into_inner()
}

fn assert_no_defects(flash: &NorFlash, what: &str) {
    let defects = flash.defects.borrow();
    assert!(defects.is_empty(), "{what}: {defects:?}");
}

/// Run the session with the power cut after `cut` operations (None: never); the flash after.
fn cut_at(cut: Option<usize>, tear: bool) -> (NorFlash, Acknowledged, bool) {
    let mut ahead = EraseAhead::new(NorFlash::new(cut, tear), 1);
    let mut ack = Acknowledged::default();
    let formatted = {
        let mut alloc = littlefs2::fs::Allocation::new();
        authenticator::store::mount(&mut alloc, &mut ahead).is_ok()
    };
    let completed = formatted
        && ahead.inner().budget.get() != Some(0)
        && with_key(&mut ahead, &knobs(), 1, |key| session(key, &mut ack));
    (ahead.into_inner(), ack, completed)
}

fn sweep(tear: bool) {
    let (flash, ack, completed) = cut_at(None, tear);
    assert!(completed, "the uninterrupted session runs to its end");
    assert_no_defects(&flash, "uninterrupted");
    let total = flash.ops.get();
    let flash = check(flash, &ack, "uninterrupted");
    assert_no_defects(&flash, "uninterrupted, then powered up");
    for cut in 1..=total {
        let (flash, ack, _) = cut_at(Some(cut), tear);
        let what = format!("cut at operation {cut} (torn: {tear})");
        assert_no_defects(&flash, &what);
        let flash = check(flash, &ack, &what);
        assert_no_defects(&flash, &format!("{what}, then powered up"));
    }
    eprintln!("cuts tried: {total} (torn: {tear})");
}

#[test]
fn erasing_ahead_survives_every_cut_clean() {
    sweep(false);
}

#[test]
fn erasing_ahead_survives_every_cut_torn() {
    sweep(true);
}

/// The registration's copy of its slot file lands in the block erased ahead: littlefs's own
/// erase is skipped, and the block was programmed only erased.
#[test]
fn a_registration_after_idle_erases_nothing() {
    let mut ahead = EraseAhead::new(NorFlash::new(None, false), 1);
    with_key(&mut ahead, &knobs(), 3, |key| {
        let mut ack = Acknowledged::default();
        for i in 0..20u8 {
            register(key, &mut ack, &[b'w', i]);
            idle(key);
        }
        let before = key.erase_ahead_counts().unwrap();
        register(key, &mut ack, b"w0");
        let after = key.erase_ahead_counts().unwrap();
        assert_eq!(after.erased, before.erased, "no erase during the request");
        assert_eq!(
            after.skipped,
            before.skipped + 1,
            "the erased-ahead block was used"
        );
    });
    assert_no_defects(ahead.inner(), "registrations");
}
