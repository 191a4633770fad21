//! littlefs2 block devices for the virtual key: a file in the state directory, or RAM.

use std::fs::File;
use std::os::unix::fs::FileExt;

use littlefs2::consts;
use littlefs2::driver::Storage;
use littlefs2::io::{Error, Result};

/// 4 KiB blocks, as on the Pico's flash.
pub const BLOCK_SIZE: usize = 4096;
/// 16 MiB: thousands of discoverable credentials.
pub const BLOCK_COUNT: usize = 4096;
const SIZE: u64 = (BLOCK_SIZE * BLOCK_COUNT) as u64;

/// The state image, `state.lfs`. Every program and erase reaches the disk (fdatasync) before it
/// returns, so littlefs's power-loss guarantees hold for the process and for the machine.
pub struct FileStorage {
    file: File,
    /// A testing aid: with `USBIP_RUNNER_FAULT_AFTER_WRITES=N` the process dies right after its
    /// Nth program or erase, as if the power were cut there.
    fault_after: Option<u64>,
    writes: u64,
}

impl FileStorage {
    /// The image in `file` (opened by [`crate::private::PrivateDir::open_file`]), grown to
    /// its full size if new.
    pub fn new(file: File) -> std::io::Result<Self> {
        if file.metadata()?.len() < SIZE {
            // Sparse: a fresh image costs no disk until written.
            file.set_len(SIZE)?;
        }
        let fault_after = std::env::var("USBIP_RUNNER_FAULT_AFTER_WRITES")
            .ok()
            .and_then(|n| n.parse().ok());
        Ok(Self {
            file,
            fault_after,
            writes: 0,
        })
    }

    fn written(&mut self) {
        self.writes += 1;
        if self.fault_after == Some(self.writes) {
            tracing::warn!(
                writes = self.writes,
                "USBIP_RUNNER_FAULT_AFTER_WRITES reached: cutting power"
            );
            std::process::abort();
        }
    }
}

impl Storage for FileStorage {
    const READ_SIZE: usize = 16;
    const WRITE_SIZE: usize = 16;
    const BLOCK_SIZE: usize = BLOCK_SIZE;
    const BLOCK_COUNT: usize = BLOCK_COUNT;
    const BLOCK_CYCLES: isize = 500;
    type CACHE_SIZE = consts::U256;
    type LOOKAHEAD_SIZE = consts::U64;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> Result<usize> {
        self.file
            .read_exact_at(buf, off as u64)
            .map_err(|_| Error::IO)?;
        Ok(buf.len())
    }

    fn write(&mut self, off: usize, data: &[u8]) -> Result<usize> {
        self.file
            .write_all_at(data, off as u64)
            .map_err(|_| Error::IO)?;
        self.file.sync_data().map_err(|_| Error::IO)?;
        self.written();
        Ok(data.len())
    }

    fn erase(&mut self, off: usize, len: usize) -> Result<usize> {
        self.file
            .write_all_at(&vec![0xff; len], off as u64)
            .map_err(|_| Error::IO)?;
        self.file.sync_data().map_err(|_| Error::IO)?;
        self.written();
        Ok(len)
    }
}

/// A throwaway image in memory (`--ephemeral`), of the same geometry.
pub type RamStorage = authenticator::store::RamStorage<BLOCK_COUNT>;
