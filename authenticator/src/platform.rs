//! The seam between the authenticator core and the body it runs in.
//!
//! A runner (the Pico firmware, the USB/IP server, a test) implements [`Platform`] once. The core
//! never touches a clock, a file, a socket or a pin except through it. Storage is the exception
//! that proves the rule: the runner mounts a littlefs2 filesystem on its block device
//! ([`Platform::Storage`]) and hands the mounted filesystem to the core. The same device also
//! reaches a small raw region outside littlefs, the [`Vault`], where the device secrets live.

/// The platform's answer to "has the user confirmed presence?" ([`Platform::poll_presence`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceAnswer {
    /// No answer yet: ask again later (the core keeps the transport alive meanwhile).
    Pending,
    /// The user touched the key (or the runner approves automatically).
    Granted,
    /// The user, or the runner's policy, refused.
    Denied,
    /// The platform gave up waiting before the core's own 30 s (a script's "time out now").
    TimedOut,
}

/// The touch a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// An ordinary touch: a press of the button (or the runner's approval).
    Short,
    /// A long touch (CTAP 2.2 longTouchForReset): the button held down without a break for
    /// [`LONG_TOUCH_MS`]. A shorter press answers nothing; the wait goes on. Asked only of a
    /// body whose [`Platform::has_long_touch`] is true.
    Long,
}

/// How long the button must be held for a [`Touch::Long`]. The spec leaves the length to the
/// key; five seconds is long enough that nobody holds it by accident while signing in.
pub const LONG_TOUCH_MS: u64 = 5_000;

/// A built-in user verification method (CTAP 2.1 §6.5.3), as the body reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltinUv {
    /// getInfo's uvModality: a FIDO Registry user verification method, such as
    /// [`USER_VERIFY_FINGERPRINT_INTERNAL`].
    pub modality: u32,
    /// Whether the user has enrolled (a finger, say): getInfo's `uv` option is this value, and
    /// only an enrolled method verifies anyone.
    pub enrolled: bool,
}

/// FIDO Registry of Predefined Values §3.1: a fingerprint sensor on the authenticator.
pub const USER_VERIFY_FINGERPRINT_INTERNAL: u32 = 0x02;

/// Answer to "has the built-in method verified the user?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// No answer yet (no finger on the sensor): ask again later.
    Pending,
    /// The user was verified (the finger matched). Placing it was also a touch.
    Verified,
    /// The attempt failed (a finger that did not match): it costs one of the uvRetries.
    Failed,
    /// The platform gave up waiting before the core's own 30 s.
    TimedOut,
}

/// What the key's indicator (LED, terminal line) should show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indicator {
    /// Nothing is happening.
    Idle,
    /// A request waits for the user's touch.
    WaitingForPresence,
    /// CTAPHID WINK: make the key identifiable.
    Wink,
}

/// Everything the core needs from the body it runs in.
pub trait Platform {
    /// A cryptographically secure RNG.
    type Rng: rand_core::CryptoRng;
    /// The block device under the littlefs2 filesystem the core stores its state in, and the
    /// vault beside it.
    type Storage: StateStorage;

    /// The CSPRNG.
    fn rng(&mut self) -> &mut Self::Rng;

    /// Milliseconds on a monotonic clock whose origin is this power-up (or process start).
    fn now_ms(&self) -> u64;

    /// A request needs the user's presence: start asking (light the LED, print a prompt) for
    /// the kind of `touch` it needs. Called once per wait, before the first
    /// [`Platform::poll_presence`].
    fn start_presence(&mut self, touch: Touch);

    /// Non-blocking: has the user answered the request started by [`Platform::start_presence`]?
    fn poll_presence(&mut self) -> PresenceAnswer;

    /// The wait is over (answered, cancelled or timed out): stop asking.
    fn stop_presence(&mut self);

    /// Show something on the key's indicator.
    fn indicate(&mut self, indicator: Indicator);

    /// Whether this body can tell a long touch ([`Touch::Long`]) from a short one. Only then
    /// does the key offer longTouchForReset.
    fn has_long_touch(&self) -> bool {
        false
    }

    /// The body's built-in user verification method, if it has one (a fingerprint sensor, or
    /// the virtual key's `--uv builtin`). Only then does the key offer built-in UV.
    fn builtin_uv(&self) -> Option<BuiltinUv> {
        None
    }

    /// A request needs the user verified by the built-in method: start asking (the sensor
    /// waits for a finger). Called once per attempt, before the first [`Platform::poll_uv`].
    fn start_uv(&mut self) {}

    /// Non-blocking: the outcome of the attempt started by [`Platform::start_uv`].
    fn poll_uv(&mut self) -> Verification {
        Verification::Failed
    }

    /// The attempt is over (answered, cancelled or timed out): stop asking.
    fn stop_uv(&mut self) {}

    /// Power-up found part of the stored state unusable: a step of preparing the store failed
    /// (a littlefs error code, or an unreadable record). Log it if the body can; the key goes
    /// on and answers a CTAP error where that state is needed. The failure names a step and a
    /// cause, never stored bytes.
    fn store_failed(&mut self, failure: crate::store::PrepareFailure) {
        let _ = failure;
    }

    /// Test bodies only (feature `faults`): the fault a test armed for the key's next signed
    /// response, if `applies` says it can be applied to this one; taking it disarms it (see
    /// [`crate::fault`]).
    #[cfg(feature = "faults")]
    fn take_fault(
        &mut self,
        applies: &dyn Fn(crate::fault::Fault) -> bool,
    ) -> Option<crate::fault::Fault> {
        let _ = applies;
        None
    }
}

/// A body's state device: the littlefs2 block device and the vault beside it.
pub trait StateStorage: littlefs2::driver::Storage + Vault {}

impl<T: littlefs2::driver::Storage + Vault> StateStorage for T {}

/// Size of each of the vault's two slots.
pub const VAULT_SLOT_SIZE: usize = 8192;
/// The vault is programmed in whole units of this size, at offsets that are multiples of it
/// (a flash page on the Pico).
pub const VAULT_PROGRAM_SIZE: usize = 256;

/// The vault: two raw slots of [`VAULT_SLOT_SIZE`] bytes beside the littlefs partition, where
/// the device secrets and the PIN verifier live (see `store::vault`).
///
/// Secrets must not live in littlefs: it frees blocks without erasing them and keeps earlier
/// commits of small files in its metadata logs, so an old key or PIN verifier would survive
/// in the image after it was replaced. A vault slot is erased as soon as a newer record is
/// written to the other one, so what is replaced is really gone.
///
/// Offsets are from the start of the vault (slot 0 at 0, slot 1 at [`VAULT_SLOT_SIZE`]).
/// Like flash: erase sets bytes to 0xFF, and programming may only clear bits of erased bytes.
pub trait Vault {
    /// Read `buf.len()` bytes at `offset`.
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()>;
    /// Program `data` (a multiple of [`VAULT_PROGRAM_SIZE`], at a multiple of it) into erased
    /// bytes. It is durable when this returns.
    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()>;
    /// Erase one whole slot (`offset` is 0 or [`VAULT_SLOT_SIZE`]). Durable when this returns.
    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()>;
}
