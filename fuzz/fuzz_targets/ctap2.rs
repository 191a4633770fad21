//! CTAP2 requests: any bytes after a command byte. The answer is a status byte, and a success
//! carries valid CBOR. A prefix of requests builds state (credentials, a PIN) for later ones:
//! the input is split on 0xFF 0xFE markers into several requests.
#![no_main]

use authenticator::ctaphid::{App, Outcome, Transaction};
use authenticator_fuzz::with_key;
use libfuzzer_sys::fuzz_target;

const COMMANDS: [u8; 11] = [0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x41];

fuzz_target!(|data: &[u8]| {
    with_key(|key| {
        for request in data.split(|&b| b == 0xFE).take(8) {
            let Some((&selector, body)) = request.split_first() else { continue };
            let mut message = vec![COMMANDS[usize::from(selector) % COMMANDS.len()]];
            message.extend_from_slice(body);
            let mut response = Vec::new();
            // Presence is granted at once: a request never waits here.
            assert_eq!(key.call(Transaction::Cbor, &message, &mut response), Outcome::Done);
            assert!(!response.is_empty(), "a status byte");
            if response[0] == 0 && response.len() > 1 {
                let parsed: Result<ciborium::Value, _> = ciborium::from_reader(&response[1..]);
                assert!(parsed.is_ok(), "success bodies are CBOR");
            }
        }
    });
});
