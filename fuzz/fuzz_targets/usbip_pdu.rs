//! The USB/IP server's PDU parser, fed an arbitrary byte stream: commands or errors, never a
//! panic, and never an allocation beyond the transfer limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use usbip_runner::protocol::{read_command, read_op_request, Command, MAX_TRANSFER};

fuzz_target!(|data: &[u8]| {
    let mut ops = data;
    while read_op_request(&mut ops).is_ok() {}
    let mut stream = data;
    while let Ok(command) = read_command(&mut stream) {
        if let Command::Submit(submit) = command {
            assert!(submit.data.len() <= MAX_TRANSFER as usize);
            assert!(submit.endpoint < 16);
        }
    }
});
