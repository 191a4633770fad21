//! Health tests for a binary noise source, as NIST SP 800-90B §4.4 defines them, and the start-up
//! test that gathers the raw samples a seed is conditioned from.
//!
//! The Pico's only noise source is the ring oscillator's RANDOMBIT: one bit per read, jittery but
//! of unknown quality (the RP2040 datasheet calls it unfit for security on its own). These tests
//! cannot prove it good; they catch it gone bad (stuck at 0 or 1, locked to the clock, heavily
//! biased) so that no key is ever made from it then:
//! - the repetition count test (§4.4.1) fails on a run of [`RCT_CUTOFF`] equal samples;
//! - the adaptive proportion test (§4.4.2) fails when, in a window of [`APT_WINDOW`] samples,
//!   [`APT_CUTOFF`] equal the window's first one.
//!
//! Both cutoffs follow from the claimed min-entropy per sample, H = 1/2 bit
//! ([`H_MILLIBITS`]), and a false-positive rate α = 2^-20 per test decision
//! ([`ALPHA_LOG2`]): RCT C = 1 + ⌈20 / H⌉ = 41; APT C = 1 + CRITBINOM(1024, 2^-H, 1 − α) = 793
//! (the host tests recompute both). H = 1/2 is a claim, not a measurement: a fair coin is 1 bit,
//! and H = 1/2 still accepts a source up to 70.7 % biased (1 − 2^-H), so a sound oscillator
//! with a modest bias is never refused, while the seed is sized for half a bit per sample
//! ([`SEED_SAMPLES`]). What the tests cannot see is correlation between samples (a periodic
//! pattern such as 0101… passes both); the margin in [`SEED_SAMPLES`] is there for that.
#![no_std]

/// The claimed min-entropy per sample, in thousandths of a bit: H = 0.5.
pub const H_MILLIBITS: u32 = 500;

/// The false-positive rate of each test, α = 2^-ALPHA_LOG2: a sound source is refused at about
/// one boot in a million.
pub const ALPHA_LOG2: u32 = 20;

/// Repetition count test cutoff: 1 + ⌈ALPHA_LOG2 / H⌉ = 1 + 40. A run this long of one value
/// fails.
pub const RCT_CUTOFF: u32 = 1 + (ALPHA_LOG2 * 1000).div_ceil(H_MILLIBITS);

/// Adaptive proportion test window for a binary source (SP 800-90B §4.4.2).
pub const APT_WINDOW: u32 = 1024;

/// Adaptive proportion test cutoff: 1 + CRITBINOM(1024, 2^-0.5, 1 − 2^-20). This many samples of
/// a window equal to its first fail. (Integer firmware cannot evaluate the binomial; the host
/// tests compute it.)
pub const APT_CUTOFF: u32 = 793;

/// Raw samples gathered for one seed, all of them under both tests: two whole APT windows,
/// so at least the 1,024 consecutive samples SP 800-90B §4.3 asks of a start-up test. At the
/// claimed H they carry 1,024 bits, twice the 512 that the stricter rule asks for a
/// full-entropy 256-bit output of a vetted conditioning function (SP 800-90C: twice the output
/// length; its later drafts ask 256 + 64 = 320), so the seed stays full-entropy as long as the
/// oscillator gives a quarter of a bit per sample.
pub const SEED_SAMPLES: u32 = 2 * APT_WINDOW;

/// Bytes the samples of one seed pack into, 8 to a byte.
pub const SEED_SAMPLE_BYTES: usize = (SEED_SAMPLES / 8) as usize;

// The start-up test covers whole windows and the required minimum, and the seed's margin holds.
const _: () = assert!(SEED_SAMPLES.is_multiple_of(APT_WINDOW) && SEED_SAMPLES >= 1024);
const _: () = assert!(SEED_SAMPLES * H_MILLIBITS / 1000 >= 2 * 2 * 256);

/// Which health test the source failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A run of [`RCT_CUTOFF`] equal samples: the source is stuck.
    RepetitionCount,
    /// [`APT_CUTOFF`] of a window's [`APT_WINDOW`] samples equal its first: the source lost
    /// most of its entropy (a heavy bias).
    AdaptiveProportion,
}

/// SP 800-90B §4.4.1: counts how often the latest value has repeated in a row.
#[derive(Clone, Debug, Default)]
pub struct RepetitionCount {
    /// The value of the current run and its length (none before the first sample).
    run: Option<(bool, u32)>,
}

impl RepetitionCount {
    pub fn sample(&mut self, bit: bool) -> Result<(), Failure> {
        let count = match self.run {
            Some((value, count)) if value == bit => count + 1,
            _ => 1,
        };
        self.run = Some((bit, count));
        if count >= RCT_CUTOFF {
            return Err(Failure::RepetitionCount);
        }
        Ok(())
    }
}

/// SP 800-90B §4.4.2: in consecutive, non-overlapping windows, counts the samples equal to the
/// window's first.
#[derive(Clone, Debug, Default)]
pub struct AdaptiveProportion {
    /// The window's first sample.
    reference: bool,
    /// Samples of the current window seen so far (0: the next sample opens a window).
    seen: u32,
    /// Samples of the current window equal to `reference`, the first one included.
    matches: u32,
}

impl AdaptiveProportion {
    pub fn sample(&mut self, bit: bool) -> Result<(), Failure> {
        if self.seen == 0 {
            self.reference = bit;
            self.matches = 1;
        } else if bit == self.reference {
            self.matches += 1;
            if self.matches >= APT_CUTOFF {
                return Err(Failure::AdaptiveProportion);
            }
        }
        self.seen = (self.seen + 1) % APT_WINDOW;
        Ok(())
    }
}

/// Both tests, run on every sample.
#[derive(Clone, Debug, Default)]
pub struct HealthTests {
    repetition: RepetitionCount,
    proportion: AdaptiveProportion,
}

impl HealthTests {
    pub fn sample(&mut self, bit: bool) -> Result<(), Failure> {
        self.repetition.sample(bit)?;
        self.proportion.sample(bit)
    }
}

/// The start-up test, gathering a seed's raw material: reads [`SEED_SAMPLES`] samples with
/// `read`, runs both tests on each, and hands them to `sink` packed 8 to a byte (the first
/// sample in the most significant bit), for the caller to condition (hash). Stops at the first
/// failure: the caller must then discard whatever `sink` received.
pub fn gather(mut read: impl FnMut() -> bool, mut sink: impl FnMut(u8)) -> Result<(), Failure> {
    let mut tests = HealthTests::default();
    for _ in 0..SEED_SAMPLE_BYTES {
        let mut byte = 0u8;
        for _ in 0..8 {
            let bit = read();
            tests.sample(bit)?;
            byte = (byte << 1) | u8::from(bit);
        }
        sink(byte);
    }
    Ok(())
}
