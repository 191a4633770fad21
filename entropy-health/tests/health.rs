//! The health tests against sources whose nature is known: the cutoffs recomputed from the
//! claimed entropy, stuck and biased sources refused at the sample where SP 800-90B says, sound
//! (also modestly biased) sources accepted, and what the tests cannot see.

use entropy_health::{
    gather, AdaptiveProportion, Failure, HealthTests, RepetitionCount, ALPHA_LOG2, APT_CUTOFF,
    APT_WINDOW, H_MILLIBITS, RCT_CUTOFF, SEED_SAMPLES, SEED_SAMPLE_BYTES,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

fn h() -> f64 {
    f64::from(H_MILLIBITS) / 1000.0
}

/// P(X > k) for X ~ Binomial(n, p), for every k: `tails[k]`. The terms are computed in log
/// space (they underflow otherwise) and summed from the top.
fn upper_tails(n: u32, p: f64) -> Vec<f64> {
    let mut ln_choose = 0.0;
    let ln_pmf: Vec<f64> = (0..=n)
        .map(|j| {
            if j > 0 {
                ln_choose += f64::from(n - j + 1).ln() - f64::from(j).ln();
            }
            ln_choose + f64::from(j) * p.ln() + f64::from(n - j) * (1.0 - p).ln()
        })
        .collect();
    let mut tails = vec![0.0; n as usize + 1];
    for k in (0..n as usize).rev() {
        tails[k] = tails[k + 1] + ln_pmf[k + 1].exp();
    }
    tails
}

/// Excel's CRITBINOM(n, p, 1 − α): the least k with P(X ≤ k) ≥ 1 − α.
fn critbinom(n: u32, p: f64, alpha: f64) -> u32 {
    upper_tails(n, p)
        .iter()
        .position(|&tail| tail <= alpha)
        .unwrap() as u32
}

#[test]
fn cutoffs_follow_from_the_claimed_entropy_and_false_positive_rate() {
    let alpha = (-f64::from(ALPHA_LOG2)).exp2();
    // §4.4.1: C = 1 + ⌈−log2(α) / H⌉.
    let rct = 1 + (f64::from(ALPHA_LOG2) / h()).ceil() as u32;
    assert_eq!(RCT_CUTOFF, rct);
    assert_eq!(RCT_CUTOFF, 41);
    // §4.4.2: C = 1 + CRITBINOM(W, 2^−H, 1 − α), W = 1024 for a binary source.
    let p = (-h()).exp2();
    assert_eq!(APT_WINDOW, 1024);
    assert_eq!(APT_CUTOFF, 1 + critbinom(APT_WINDOW, p, alpha));
    // The form corrected for the window's first sample, which is always a match (B − 1 counts
    // the other W − 1 samples), gives the same cutoff at this H.
    assert_eq!(APT_CUTOFF, 2 + critbinom(APT_WINDOW - 1, p, alpha));
    // At the claimed H a sound source fails this APT in at most α of its windows.
    let tails = upper_tails(APT_WINDOW - 1, p);
    assert!(tails[APT_CUTOFF as usize - 2] <= alpha);
    assert!(tails[APT_CUTOFF as usize - 3] > alpha);
}

#[test]
fn the_seed_gets_enough_samples_for_its_claimed_entropy() {
    // Start-up test: at least 1,024 consecutive samples, whole APT windows.
    const { assert!(SEED_SAMPLES >= 1024) };
    assert_eq!(SEED_SAMPLES % APT_WINDOW, 0);
    assert_eq!(SEED_SAMPLE_BYTES * 8, SEED_SAMPLES as usize);
    // Claimed entropy in: 2,048 × 1/2 = 1,024 bits, twice SP 800-90C's 2 × 256.
    let claimed = f64::from(SEED_SAMPLES) * h();
    assert!(claimed >= 2.0 * 2.0 * 256.0, "{claimed}");
}

/// Feeds `bits` to `gather` until it stops; returns its result and how many samples it read.
fn gather_from(mut bits: impl FnMut() -> bool) -> (Result<Vec<u8>, Failure>, u32) {
    let mut reads = 0;
    let mut out = Vec::new();
    let result = gather(
        || {
            reads += 1;
            bits()
        },
        |byte| out.push(byte),
    );
    (result.map(|()| out), reads)
}

#[test]
fn a_stuck_source_fails_the_repetition_count_test_at_its_cutoff() {
    for value in [false, true] {
        let (result, reads) = gather_from(|| value);
        assert_eq!(result, Err(Failure::RepetitionCount), "stuck at {value}");
        assert_eq!(reads, RCT_CUTOFF, "stuck at {value}");
    }
}

#[test]
fn the_repetition_count_test_allows_one_short_of_its_cutoff() {
    let mut rct = RepetitionCount::default();
    for _ in 0..RCT_CUTOFF - 1 {
        rct.sample(true).unwrap();
    }
    // A different value starts a new run...
    rct.sample(false).unwrap();
    for _ in 0..RCT_CUTOFF - 2 {
        rct.sample(false).unwrap();
    }
    // ...which fails once it is as long as the cutoff.
    assert_eq!(rct.sample(false), Err(Failure::RepetitionCount));
}

/// One APT window: `matches` samples equal to the first (the first included), the rest the
/// other value, spread so that no run comes near the RCT cutoff.
fn window(first: bool, matches: u32) -> Vec<bool> {
    let others = APT_WINDOW - matches;
    let mut bits = vec![first];
    let (mut placed_matches, mut placed_others) = (1, 0);
    for i in 1..APT_WINDOW {
        // Bresenham-style: keep the proportion of "others" even through the window.
        let want_other = placed_others * (APT_WINDOW - 1) < others * i;
        if (want_other && placed_others < others) || placed_matches == matches {
            bits.push(!first);
            placed_others += 1;
        } else {
            bits.push(first);
            placed_matches += 1;
        }
    }
    assert_eq!(bits.iter().filter(|&&b| b == first).count() as u32, matches);
    bits
}

#[test]
fn the_adaptive_proportion_test_fails_at_its_cutoff_and_counts_each_window_afresh() {
    for first in [false, true] {
        // Windows one short of the cutoff pass, however many follow one another.
        let mut apt = AdaptiveProportion::default();
        for _ in 0..4 {
            for bit in window(first, APT_CUTOFF - 1) {
                apt.sample(bit).unwrap();
            }
        }
        // One at the cutoff fails, on its last matching sample.
        let bits = window(first, APT_CUTOFF);
        let last_match = bits.iter().rposition(|&b| b == first).unwrap();
        for (i, bit) in bits.into_iter().enumerate() {
            let result = apt.sample(bit);
            if i == last_match {
                assert_eq!(result, Err(Failure::AdaptiveProportion));
                break;
            }
            result.unwrap();
        }
    }
}

/// Independent samples, 1 with probability `p_one`.
fn biased(seed: u64, p_one: f64) -> impl FnMut() -> bool {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    move || (rng.next_u32() as f64) < p_one * 4_294_967_296.0
}

#[test]
fn a_biased_source_that_passes_the_repetition_count_test_fails_the_adaptive_proportion_test() {
    // 7 in 8 samples are 1, but never more than 20 in a row: far below the RCT cutoff, far
    // above the APT's (1 − 2^-0.5 ≈ 71 % is where H falls to 1/2; 87.5 % is H ≈ 0.19).
    let mut source = biased(1, 0.875);
    let mut run = 0;
    let mut capped = move || {
        let bit = run < 20 && source();
        run = if bit { run + 1 } else { 0 };
        bit
    };
    let bits: Vec<bool> = (0..SEED_SAMPLES).map(|_| capped()).collect();
    let mut rct = RepetitionCount::default();
    assert!(
        bits.iter().all(|&b| rct.sample(b).is_ok()),
        "RCT alone passes it"
    );
    let mut next = bits.iter().copied();
    let (result, _) = gather_from(|| next.next().unwrap());
    assert_eq!(result, Err(Failure::AdaptiveProportion));
}

#[test]
fn sound_sources_pass_also_with_a_modest_bias() {
    // A million samples each (~500 seeds' worth): a fair source, and one 60 % biased (H = 0.74,
    // above the claimed 0.5). At α = 2^-20 per decision a false alarm here is very unlikely,
    // and the seeds are fixed, so the test is repeatable.
    for (seed, p_one) in [(2, 0.5), (3, 0.6), (4, 0.4)] {
        let mut tests = HealthTests::default();
        let mut source = biased(seed, p_one);
        for i in 0..1_000_000 {
            assert_eq!(tests.sample(source()), Ok(()), "p = {p_one}, sample {i}");
        }
    }
}

#[test]
fn gather_hands_on_every_sample_packed_first_bit_highest() {
    let mut source = biased(5, 0.5);
    let bits: Vec<bool> = (0..SEED_SAMPLES).map(|_| source()).collect();
    let mut next = bits.iter().copied();
    let (result, reads) = gather_from(|| next.next().unwrap());
    let bytes = result.unwrap();
    assert_eq!(reads, SEED_SAMPLES);
    assert_eq!(bytes.len(), SEED_SAMPLE_BYTES);
    for (i, bit) in bits.iter().enumerate() {
        assert_eq!((bytes[i / 8] >> (7 - i % 8)) & 1 == 1, *bit, "sample {i}");
    }
}

#[test]
fn what_the_tests_cannot_see_correlation() {
    // A source locked to a period (0101…) has no entropy at all and passes both tests: the
    // health tests catch a source gone bad, they do not measure a good one. The seed's margin
    // (SEED_SAMPLES) and the other seed inputs are what stand against correlated samples.
    let mut bit = false;
    let (result, _) = gather_from(|| {
        bit = !bit;
        bit
    });
    assert!(result.is_ok());
}
