//! littlefs2 block devices for the virtual key: a file in the state directory, or RAM.
//!
//! `state.lfs` holds the 16 MiB littlefs partition and, after it, the vault's two slots (see
//! `authenticator::platform::Vault`). One file rather than a `vault` file beside it: one file to
//! keep private, one fsync discipline, one fault counter (`USBIP_RUNNER_FAULT_AFTER_WRITES`
//! counts vault writes too), and copying or moving the key's state cannot separate the two. A
//! `state.lfs` written before the vault existed ends at 16 MiB: it is extended, the vault reads
//! as zeros, which is no valid record, and the key erases it and moves its secrets in.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use authenticator::platform::{Vault, VAULT_SLOT_SIZE};
use littlefs2::consts;
use littlefs2::driver::Storage;
use littlefs2::io::{Error, Result};

/// 4 KiB blocks, as on the Pico's flash.
pub const BLOCK_SIZE: usize = 4096;
/// 16 MiB: thousands of discoverable credentials.
pub const BLOCK_COUNT: usize = 4096;
const SIZE: u64 = (BLOCK_SIZE * BLOCK_COUNT) as u64;
/// The vault's two slots, after the partition.
const VAULT_OFFSET: u64 = SIZE;
const FILE_SIZE: u64 = SIZE + 2 * VAULT_SLOT_SIZE as u64;

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
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() < FILE_SIZE {
            // Sparse: a fresh image costs no disk until written.
            file.set_len(FILE_SIZE)?;
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

impl Vault for FileStorage {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, VAULT_OFFSET + offset as u64)
            .map_err(|_| Error::IO)
    }

    fn vault_program(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, VAULT_OFFSET + offset as u64)
            .map_err(|_| Error::IO)?;
        self.file.sync_data().map_err(|_| Error::IO)?;
        self.written();
        Ok(())
    }

    fn vault_erase(&mut self, offset: usize) -> Result<()> {
        self.file
            .write_all_at(&[0xff; VAULT_SLOT_SIZE], VAULT_OFFSET + offset as u64)
            .map_err(|_| Error::IO)?;
        self.file.sync_data().map_err(|_| Error::IO)?;
        self.written();
        Ok(())
    }
}

/// A throwaway image in memory (`--ephemeral`), of the same geometry.
pub type RamStorage = authenticator::store::RamStorage<BLOCK_COUNT>;
