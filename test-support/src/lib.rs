//! A test body for the core: RAM storage, a scripted clock, presence and built-in UV, and the
//! CBOR helpers and PIN client the end-to-end tests use too (from `fido-client`), so the core's
//! tests speak to the key as clients do.
//!
//! A dev-dependency of `authenticator` only (a cycle cargo allows for integration tests: they
//! link the one `authenticator` library this crate links too).

use std::cell::Cell;
use std::rc::Rc;

use authenticator::ctaphid::{App, Outcome, Transaction};
use authenticator::platform::{
    BuiltinUv, Indicator, Platform, PresenceAnswer, Touch, Verification,
};
use authenticator::{Authenticator, Config};
use ciborium::Value;

pub use fido_client::ctap::*;
/// The platform's side of PIN/UV auth protocols 1 and 2.
pub use fido_client::pin as pin_client;
use littlefs2::fs::Allocation;
use rand_chacha::rand_core::SeedableRng;

pub const BLOCKS: usize = 64;

/// A littlefs2 block device of `N` blocks in RAM.
pub type RamStorageOf<const N: usize> = authenticator::store::RamStorage<N>;

/// The usual test device: 64 blocks of 4 KiB.
pub type RamStorage = RamStorageOf<BLOCKS>;

/// Shared knobs of the test platform.
#[derive(Clone)]
pub struct Knobs {
    pub now_ms: Rc<Cell<u64>>,
    pub presence: Rc<Cell<PresenceAnswer>>,
    pub prompts: Rc<Cell<u32>>,
    /// The touch the last prompt asked for.
    pub touch: Rc<Cell<Option<Touch>>>,
    /// Whether the body has a long touch (longTouchForReset).
    pub long_touch: Rc<Cell<bool>>,
    /// The body's built-in user verification method, if any.
    pub builtin_uv: Rc<Cell<Option<BuiltinUv>>>,
    /// How each built-in UV attempt ends.
    pub uv: Rc<Cell<Verification>>,
    /// Built-in UV attempts started.
    pub uv_prompts: Rc<Cell<u32>>,
    /// The fault armed for the next signed response (feature `faults`).
    pub fault: Rc<Cell<Option<authenticator::fault::Fault>>>,
    /// What the key reported through `Platform::store_failed` at power-up.
    pub store_failures: Rc<std::cell::RefCell<Vec<authenticator::store::PrepareFailure>>>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            now_ms: Rc::new(Cell::new(0)),
            presence: Rc::new(Cell::new(PresenceAnswer::Granted)),
            prompts: Rc::new(Cell::new(0)),
            touch: Rc::new(Cell::new(None)),
            long_touch: Rc::new(Cell::new(true)),
            builtin_uv: Rc::new(Cell::new(None)),
            uv: Rc::new(Cell::new(Verification::Verified)),
            uv_prompts: Rc::new(Cell::new(0)),
            fault: Rc::new(Cell::new(None)),
            store_failures: Rc::default(),
        }
    }
}

pub struct TestPlatform<S = RamStorage> {
    rng: rand_chacha::ChaCha20Rng,
    knobs: Knobs,
    storage: std::marker::PhantomData<S>,
}

impl<S: littlefs2::driver::Storage + authenticator::platform::Vault> Platform for TestPlatform<S> {
    type Rng = rand_chacha::ChaCha20Rng;
    type Storage = S;
    fn rng(&mut self) -> &mut Self::Rng {
        &mut self.rng
    }
    fn now_ms(&self) -> u64 {
        self.knobs.now_ms.get()
    }
    fn start_presence(&mut self, touch: Touch) {
        self.knobs.prompts.set(self.knobs.prompts.get() + 1);
        self.knobs.touch.set(Some(touch));
    }
    fn poll_presence(&mut self) -> PresenceAnswer {
        self.knobs.presence.get()
    }
    fn stop_presence(&mut self) {}
    fn indicate(&mut self, _indicator: Indicator) {}
    fn has_long_touch(&self) -> bool {
        self.knobs.long_touch.get()
    }
    fn builtin_uv(&self) -> Option<BuiltinUv> {
        self.knobs.builtin_uv.get()
    }
    fn start_uv(&mut self) {
        self.knobs.uv_prompts.set(self.knobs.uv_prompts.get() + 1);
    }
    fn poll_uv(&mut self) -> Verification {
        self.knobs.uv.get()
    }
    fn stop_uv(&mut self) {}
    fn store_failed(&mut self, failure: authenticator::store::PrepareFailure) {
        self.knobs.store_failures.borrow_mut().push(failure);
    }
    fn take_fault(
        &mut self,
        applies: &dyn Fn(authenticator::fault::Fault) -> bool,
    ) -> Option<authenticator::fault::Fault> {
        let fault = self.knobs.fault.get().filter(|f| applies(*f));
        if fault.is_some() {
            self.knobs.fault.set(None);
        }
        fault
    }
}

pub const AAGUID: [u8; 16] = *b"test-aaguid-0001";

/// The PIN verifier's KDF in tests: PBKDF2 at a cost that takes no time. The real bodies'
/// costs are run by `pin_lock.rs` (and every end-to-end test over the virtual key).
pub const TEST_KDF: authenticator::store::PinKdf =
    authenticator::store::PinKdf::Pbkdf2 { iterations: 2 };

/// The test model's configuration.
pub fn config() -> Config {
    Config {
        aaguid: AAGUID,
        firmware_version: 1,
        pin_kdf: TEST_KDF,
    }
}

/// Run `f` with an authenticator on `storage` (mounted, formatted if blank).
pub fn with_key<S: littlefs2::driver::Storage + authenticator::platform::Vault, R>(
    storage: &mut S,
    knobs: &Knobs,
    seed: u64,
    f: impl FnOnce(&mut Authenticator<'_, TestPlatform<S>>) -> R,
) -> R {
    with_key_config(storage, knobs, seed, config(), f)
}

/// [`with_key`] with another configuration (e.g. a body's real PIN KDF).
pub fn with_key_config<S: littlefs2::driver::Storage + authenticator::platform::Vault, R>(
    storage: &mut S,
    knobs: &Knobs,
    seed: u64,
    config: Config,
    f: impl FnOnce(&mut Authenticator<'_, TestPlatform<S>>) -> R,
) -> R {
    let mut alloc = Allocation::new();
    let fs = authenticator::store::mount(&mut alloc, storage).expect("mount");
    let platform = TestPlatform {
        rng: rand_chacha::ChaCha20Rng::seed_from_u64(seed),
        knobs: knobs.clone(),
        storage: std::marker::PhantomData,
    };
    let mut key = Authenticator::new(platform, fs, config);
    f(&mut key)
}

/// Send a CTAP2 command; returns (status, decoded body).
pub fn ctap2(key: &mut impl App, command: u8, body: Option<Value>) -> (u8, Option<Value>) {
    let mut request = vec![command];
    if let Some(body) = body {
        ciborium::into_writer(&body, &mut request).unwrap();
    }
    ctap2_raw(key, &request)
}

pub fn ctap2_raw(key: &mut impl App, request: &[u8]) -> (u8, Option<Value>) {
    let mut response = Vec::new();
    assert_eq!(
        key.call(Transaction::Cbor, request, &mut response),
        Outcome::Done
    );
    decode(&response)
}

pub fn decode(response: &[u8]) -> (u8, Option<Value>) {
    let status = response[0];
    let body = if response.len() > 1 {
        Some(ciborium::from_reader(&response[1..]).expect("valid CBOR"))
    } else {
        None
    };
    (status, body)
}
