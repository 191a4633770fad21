//! CTAPHID: arbitrary 64-byte reports on several channels with time jumping between them,
//! into the real authenticator. Every report out has a CTAPHID command or continuation on a
//! channel, and the output stays bounded.
#![no_main]

use authenticator::ctaphid::{Ctaphid, DeviceVersion, PACKET_SIZE};
use authenticator_fuzz::with_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    with_key(|key| {
        let mut ctaphid = Ctaphid::new(DeviceVersion {
            major: 0,
            minor: 1,
            build: 0,
        });
        let mut now = 0u64;
        // Each chunk: one byte of time step, then a report.
        for chunk in data.chunks(PACKET_SIZE + 1) {
            now += u64::from(chunk[0]) * 7;
            let mut packet = [0u8; PACKET_SIZE];
            packet[..chunk.len() - 1].copy_from_slice(&chunk[1..]);
            ctaphid.handle_packet(&packet, now, key);
            if ctaphid.next_deadline().is_some_and(|d| d <= now) {
                ctaphid.poll(now, key);
            }
            let mut out = 0;
            while let Some(report) = ctaphid.pop_packet() {
                out += 1;
                assert!(out <= 200, "output stays bounded");
                assert!(report[4] & 0x80 != 0 || report[4] < 0x80, "INIT or CONT");
            }
        }
    });
});
