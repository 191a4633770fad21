//! P-256 multiplication by the generator (k·G: key generation, ECDSA's nonce point) with a
//! table of multiples of G that the runner fills when it chooses, then installs.
//!
//! p256 has such a table (its `precomputed-tables` feature), but primeorder computes it at
//! first use inside a critical section: on the Pico, 61 M cycles with interrupts off, so the
//! firmware had to fill it before USB came up. This table holds the same multiples, made at
//! build time instead (`multiples`, from `examples/basepoint_table.rs`, checked by a test)
//! and decoded into RAM one window at a time ([`BasepointTable::fill_next`], each point checked
//! to be on the curve): the firmware fills it after USB is up, with interrupts on, and
//! [`install`]s it. Until then (and on runners that never install one) multiplication falls
//! back to p256's generic ladder.
//!
//! The multiplication is primeorder's fixed-base comb (`BasepointTable::mul`: signed radix-16
//! digits from [`Radix16Decomposition`], a constant-time pick of ±j·2^(8i)·G per digit), with
//! the multiples kept affine, so each step is a mixed addition. ECDSA signing needs the nonce
//! point from here too, which `ecdsa::hazmat::sign_prehashed` cannot be given:
//! `sign_prehashed_rfc6979` follows it step for step with the nonce point taken from here.
//! The tests hold both to p256's results, bit for bit.

use once_cell::race::OnceRef;
use p256::elliptic_curve::ops::{Invert, Reduce};
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::sec1::FromSec1Point;
use p256::elliptic_curve::subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use p256::elliptic_curve::{Curve, Group, PrimeField};
use p256::{AffinePoint, NistP256, NonZeroScalar, ProjectivePoint, Scalar, U256};
use primeorder::{Radix16Decomposition, Radix16Digits};

mod multiples;

/// One window per byte of the scalar, and one for its top digit.
pub const WINDOWS: usize = 33;
/// Multiples per window: 1..8 times its base (a digit's sign is applied by negation).
const MULTIPLES: usize = 8;

/// `WINDOWS` rows of `[1..8]·2^(8i)·G`; the odd and even radix-16 digits share them (the odd
/// ones' sum is multiplied by 16 at the end), as in primeorder's `BasepointTable`. 18 KB.
pub struct BasepointTable {
    windows: [[AffinePoint; MULTIPLES]; WINDOWS],
    /// How many windows are filled.
    filled: usize,
}

impl Default for BasepointTable {
    fn default() -> Self {
        Self::new()
    }
}

impl BasepointTable {
    /// An empty table (cheap: nothing is decoded yet).
    pub fn new() -> Self {
        Self {
            windows: [[AffinePoint::IDENTITY; MULTIPLES]; WINDOWS],
            filled: 0,
        }
    }

    /// Decode the next window's eight points; false once all are filled (or if one were not a
    /// point of the curve, which the tests rule out: the table then never fills, and is never
    /// installed).
    pub fn fill_next(&mut self) -> bool {
        let Some(window) = self.windows.get_mut(self.filled) else {
            return false;
        };
        for (point, bytes) in window.iter_mut().zip(&multiples::MULTIPLES[self.filled]) {
            let (Some(x), Some(y)) = (bytes.first_chunk::<32>(), bytes.last_chunk::<32>()) else {
                return false;
            };
            let encoded = p256::Sec1Point::from_affine_coordinates(x.into(), y.into(), false);
            match AffinePoint::from_sec1_point(&encoded).into_option() {
                Some(decoded) => *point = decoded,
                None => return false,
            }
        }
        self.filled += 1;
        true
    }

    /// Whether every window is filled.
    pub fn is_full(&self) -> bool {
        self.filled == WINDOWS
    }

    /// k·G in constant time (only a full table is ever installed).
    fn mul(&self, k: &Scalar) -> ProjectivePoint {
        let digits = Radix16Decomposition::<Radix16Digits<NistP256>>::new(k);
        let top = WINDOWS - 1;
        let mut even = ProjectivePoint::from(select(&self.windows[top], digits[2 * top]));
        let mut odd = ProjectivePoint::IDENTITY;
        for i in (0..top).rev() {
            odd += select(&self.windows[i], digits[2 * i + 1]);
            even += select(&self.windows[i], digits[2 * i]);
        }
        for _ in 0..4 {
            odd = odd.double();
        }
        even + odd
    }
}

/// `digit` (-8 to 8) times the window's base, in constant time: every multiple is looked at.
fn select(window: &[AffinePoint; MULTIPLES], digit: i8) -> AffinePoint {
    let sign = digit >> 7; // 0, or -1 for a negative digit
    let magnitude = ((digit + sign) ^ sign) as u8;
    let mut point = AffinePoint::IDENTITY;
    for (j, multiple) in (1u8..).zip(window) {
        point.conditional_assign(multiple, magnitude.ct_eq(&j));
    }
    let negated = -point;
    point.conditional_assign(&negated, Choice::from((sign & 1) as u8));
    point
}

/// The table in use, once a runner installed a full one.
static INSTALLED: OnceRef<'static, BasepointTable> = OnceRef::new();

/// Use `table` for every multiplication by the generator from now on. A table that is not full
/// is refused (returned as the error), as is a second one.
pub fn install(table: &'static BasepointTable) -> Result<(), &'static BasepointTable> {
    if !table.is_full() {
        return Err(table);
    }
    INSTALLED.set(table).map_err(|()| table)
}

/// k·G: from the installed table, or p256's own multiplication without one.
pub(crate) fn mul_by_generator(k: &Scalar) -> ProjectivePoint {
    match INSTALLED.get() {
        Some(table) => table.mul(k),
        None => ProjectivePoint::mul_by_generator(k),
    }
}

/// ECDSA P-256 over a SHA-256 digest `z`, with an RFC 6979 nonce and no added data: what
/// `ecdsa::hazmat::sign_prehashed_rfc6979::<NistP256, Sha256>(d, z, &[])` returns, with the
/// nonce point k·G from [`mul_by_generator`].
#[allow(non_snake_case)]
pub(crate) fn sign_prehashed_rfc6979(d: &NonZeroScalar, z: &[u8; 32]) -> p256::ecdsa::Signature {
    let order = NistP256::ORDER;
    let mut nonces = rfc6979::KGenerator::<sha2::Sha256, U256>::new(&d.to_repr(), z, &[], &order);
    // z as a scalar: 256 bits, the size of the order, so no truncation.
    let z = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(z));
    loop {
        // The nonce's bytes are as secret as the key: wiped when dropped.
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        nonces.fill_next_k(&mut *k);
        let Some(k) = NonZeroScalar::from_repr((*k).into()).into_option() else {
            continue;
        };
        let k_inv = k.invert();
        let R = mul_by_generator(&k).to_affine();
        let r = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&R.x()));
        let s = *k_inv * (z + (r * d.as_ref()));
        // from_scalars refuses r = 0 or s = 0: then the next nonce, as ecdsa does.
        if let Ok(signature) = p256::ecdsa::Signature::from_scalars(r, s) {
            return signature;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use p256::elliptic_curve::{Field, Generate};
    use rand_chacha::rand_core::SeedableRng;
    use sha2::Digest;

    fn full_table() -> &'static BasepointTable {
        let mut table = Box::new(BasepointTable::new());
        let mut steps = 0usize;
        while table.fill_next() {
            steps += 1;
        }
        assert_eq!(steps, WINDOWS);
        assert!(!table.fill_next());
        Box::leak(table)
    }

    #[test]
    fn the_table_multiplies_as_p256_does() {
        let table = full_table();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let mut scalars = alloc::vec![Scalar::ONE, -Scalar::ONE, Scalar::from(16u64)];
        scalars.extend((0..200).map(|_| Scalar::random(&mut rng)));
        for k in scalars {
            assert_eq!(table.mul(&k), ProjectivePoint::GENERATOR * k);
        }
        assert_eq!(table.mul(&Scalar::ZERO), ProjectivePoint::IDENTITY);
    }

    #[test]
    fn the_generated_multiples_are_the_generators() {
        use p256::elliptic_curve::sec1::ToSec1Point;
        let mut base = ProjectivePoint::GENERATOR;
        for window in &multiples::MULTIPLES {
            let mut multiple = base;
            for bytes in window {
                let point = multiple.to_affine().to_sec1_point(false);
                assert_eq!(&point.as_bytes()[1..], &bytes[..]);
                multiple += base;
            }
            for _ in 0..8 {
                base = base.double();
            }
        }
    }

    #[test]
    fn only_a_full_table_is_installed() {
        let mut table = Box::new(BasepointTable::new());
        table.fill_next();
        assert!(install(Box::leak(table)).is_err());
    }

    #[test]
    fn signatures_are_p256s_with_and_without_the_table() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let check = |rng: &mut rand_chacha::ChaCha20Rng| {
            for i in 0..50u32 {
                let d = NonZeroScalar::generate_from_rng(rng);
                let z: [u8; 32] = sha2::Sha256::digest(i.to_be_bytes()).into();
                let (expected, _) =
                    ecdsa::hazmat::sign_prehashed_rfc6979::<NistP256, sha2::Sha256>(&d, &z, &[]);
                assert_eq!(sign_prehashed_rfc6979(&d, &z), expected);
            }
        };
        check(&mut rng);
        // Installing may race another test's install in this process: either is full.
        let _ = install(full_table());
        assert!(INSTALLED.get().is_some());
        check(&mut rng);
        // A digest above the order still reduces as ecdsa reduces it.
        let d = NonZeroScalar::generate_from_rng(&mut rng);
        let z = [0xff; 32];
        let (expected, _) =
            ecdsa::hazmat::sign_prehashed_rfc6979::<NistP256, sha2::Sha256>(&d, &z, &[]);
        assert_eq!(sign_prehashed_rfc6979(&d, &z), expected);
    }
}
