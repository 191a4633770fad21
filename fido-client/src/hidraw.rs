//! HID reports through a Linux hidraw node (`/dev/hidrawN`): how a host talks to a Pico, or to a
//! virtual key attached with `usbip attach`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::ctaphid::Reports;

/// An open hidraw node of a FIDO device.
pub struct Hidraw {
    file: File,
}

impl Hidraw {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Self { file })
    }
}

impl Reports for Hidraw {
    fn write_report(&mut self, report: &[u8; 64]) -> io::Result<()> {
        // hidraw wants the report ID first; the FIDO interface has none, so 0.
        let mut out = [0u8; 65];
        out[1..].copy_from_slice(report);
        self.file.write_all(&out)
    }

    /// Blocks until a report arrives: a key always answers a request, with keepalives at least
    /// every 100 ms while it works, so the timeout is not enforced here.
    fn read_report(&mut self, _timeout: Duration) -> io::Result<[u8; 64]> {
        let mut report = [0u8; 64];
        let n = self.file.read(&mut report)?;
        if n != report.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {n}-byte report where 64 bytes were expected"),
            ));
        }
        Ok(report)
    }
}
