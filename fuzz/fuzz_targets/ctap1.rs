//! U2F APDUs: every answer ends with a status word.
#![no_main]

use authenticator::ctaphid::{App, Transaction};
use authenticator_fuzz::with_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    with_key(|key| {
        for apdu in data.split(|&b| b == 0xFE).take(8) {
            let mut response = Vec::new();
            key.call(Transaction::Msg, apdu, &mut response);
            assert!(response.len() >= 2, "a status word");
        }
    });
});
