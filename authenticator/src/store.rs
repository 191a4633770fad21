//! The authenticator's state on a littlefs2 filesystem.

use littlefs2::fs::{Allocation, Filesystem};

/// Mount the filesystem on `storage`, formatting it first if it holds none (first power-up).
pub fn mount<'a, S: littlefs2::driver::Storage>(
    alloc: &'a mut Allocation<S>,
    storage: &'a mut S,
) -> littlefs2::io::Result<Filesystem<'a, S>> {
    Filesystem::mount_or_else(alloc, storage, |_err, storage, _alloc| Filesystem::format(storage))
}
