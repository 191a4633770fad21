//! The flash-copy attack (`e2e_tests::flash_copy`) as a program, for copies made outside Rust
//! (the emulated Pico's flash dump):
//!
//! `flash-copy-attack IMAGE pico|virtual RP_ID CREDENTIAL_ID_HEX MESSAGE_HEX [PIN ...]`
//!
//! Tries the PINs as a dictionary; prints one JSON line: the key-wrapping key if it came out
//! (hex: a test then looks for it elsewhere), the PIN if found, the guesses and their cost, and
//! a signature of MESSAGE as the credential (hex, DER) if it could forge one.

use e2e_tests::flash_copy::{attack, Layout};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: flash-copy-attack IMAGE pico|virtual RP_ID CREDENTIAL_ID_HEX MESSAGE_HEX [PIN ...]";
    assert!(args.len() >= 5, "{usage}");
    let image = std::fs::read(&args[0]).expect("the image reads");
    let layout = match args[1].as_str() {
        "pico" => Layout::Pico,
        "virtual" => Layout::VirtualKey,
        _ => panic!("{usage}"),
    };
    let dictionary: Vec<&str> = args[5..].iter().map(String::as_str).collect();
    let outcome = attack(&image, layout, &dictionary);
    let signature = outcome.forge(&args[2], &unhex(&args[3]), &[&unhex(&args[4])]);
    println!(
        "{{\"kwk\": {}, \"kwk_hex\": {}, \"pin\": {}, \"guesses\": {}, \"ms_per_guess\": {:.3}, \"how\": \"{}\", \"signature\": {}}}",
        outcome.kwk.is_some(),
        outcome.kwk.map_or("null".into(), |k| format!("\"{}\"", hex(&k))),
        outcome.pin.as_ref().map_or("null".into(), |p| format!("\"{p}\"")),
        outcome.guesses,
        outcome.per_guess().as_secs_f64() * 1e3,
        outcome.how,
        signature.map_or("null".into(), |s| format!("\"{}\"", hex(&s)))
    );
}
