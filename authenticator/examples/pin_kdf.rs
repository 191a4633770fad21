//! What one PIN guess costs: the PIN verifier's KDF timed on this machine's CPU (one core), for
//! the Pico's PBKDF2 and the virtual key's Argon2id, and what that makes of an offline search
//! of a 6-digit and a 10-character PIN by someone holding a copy of the state. Prints figures;
//! asserts nothing. Wall-clock time: on a shared machine, run it under `/usr/bin/time` too and
//! divide the user time by the evaluations it prints.
//!
//! `cargo run --release -p authenticator --example pin_kdf --features argon2` (every KDF), or
//! `... -- pbkdf2 ITERATIONS` / `... -- argon2id MEMORY_KIB PASSES` (one).

use std::time::Instant;

use authenticator::store::PinKdf;

const RUNS: u32 = 10;

fn time(kdf: PinKdf) -> f64 {
    let salt = [9u8; 32];
    let start = Instant::now();
    for i in 0..RUNS {
        let _ = kdf.derive(&[i as u8; 16], &salt).expect("the KDF runs");
    }
    start.elapsed().as_secs_f64() / f64::from(RUNS)
}

fn report(kdf: PinKdf) {
    const YEAR: f64 = 365.25 * 86400.0;
    let seconds = time(kdf);
    let six_digits = 1e6 * seconds;
    // 10 characters drawn from the 62 letters and digits.
    let ten_chars = 62f64.powi(10) * seconds;
    println!(
        "{kdf:?}: {RUNS} evaluations, {:.3} ms per guess; every 6-digit PIN: {:.1} h on one \
         core; every 10-character alphanumeric PIN: {:.2e} years on one core",
        seconds * 1e3,
        six_digits / 3600.0,
        ten_chars / YEAR
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize| args.get(i).and_then(|a| a.parse().ok()).expect("a number");
    match args.first().map(String::as_str) {
        Some("pbkdf2") => report(PinKdf::Pbkdf2 { iterations: n(1) }),
        Some("argon2id") => report(PinKdf::Argon2id {
            memory_kib: n(1),
            passes: n(2),
        }),
        _ => {
            report(PinKdf::Pbkdf2 { iterations: 3800 });
            for (memory_kib, passes) in [(19 * 1024, 2), (64 * 1024, 1), (64 * 1024, 2)] {
                report(PinKdf::Argon2id { memory_kib, passes });
            }
        }
    }
}
