//! What one PIN guess costs: the PIN verifier's KDF timed on this machine's CPU (one core), for
//! the Pico's PBKDF2 and the virtual key's Argon2id, and what that makes of an offline search
//! of a 6-digit and a 10-character PIN by someone holding a copy of the state. Prints figures;
//! asserts nothing.
//!
//! `cargo run --release -p authenticator --example pin_kdf --features argon2 [-- PBKDF2_ITERATIONS]`

use std::time::Instant;

use authenticator::store::PinKdf;

fn time(kdf: PinKdf) -> f64 {
    let (hash, salt) = ([7u8; 16], [9u8; 32]);
    let _ = kdf.derive(&hash, &salt).expect("the KDF runs");
    let runs = 5;
    let start = Instant::now();
    for i in 0..runs {
        let _ = kdf.derive(&[i as u8; 16], &salt).expect("the KDF runs");
    }
    start.elapsed().as_secs_f64() / runs as f64
}

fn report(name: &str, seconds: f64) {
    const YEAR: f64 = 365.25 * 86400.0;
    let six_digits = 1e6 * seconds;
    // 10 characters from the 62 letters and digits.
    let ten_chars = 62f64.powi(10) * seconds;
    println!(
        "{name}: {:.3} ms per guess; all 6-digit PINs: {:.1} h on one core; \
         all 10-character alphanumeric PINs: {:.2e} years on one core",
        seconds * 1e3,
        six_digits / 3600.0,
        ten_chars / YEAR
    );
}

fn main() {
    let pico_iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(4096);
    for iterations in [1000, pico_iterations] {
        report(
            &format!("PBKDF2-HMAC-SHA-256, {iterations} iterations"),
            time(PinKdf::Pbkdf2 { iterations }),
        );
    }
    for (memory_kib, passes) in [
        (19 * 1024, 2),
        (64 * 1024, 1),
        (64 * 1024, 2),
        (64 * 1024, 3),
    ] {
        report(
            &format!("Argon2id, {} MiB, {passes} passes", memory_kib / 1024),
            time(PinKdf::Argon2id { memory_kib, passes }),
        );
    }
}
