//! Allocation that can fail.
//!
//! In `no_std` an ordinary allocation that fails ends in a panic, and on the Pico a panic stops
//! the key until it is unplugged. Every allocation a request makes goes through here instead,
//! so a full heap becomes the protocol's own error: CTAP1_ERR_OTHER for CTAP2, SW 0x6A84 ("not
//! enough memory") for U2F, ERR_OTHER for CTAPHID. Nothing is changed on the way: the request
//! fails as a whole and the key goes on. `authenticator/tests/allocation_failure.rs` fails
//! each allocation of each kind of request in turn to prove it.

use alloc::vec::Vec;

/// The heap could not give what a request needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// An empty vector with room for `capacity` elements: pushes up to that never allocate.
pub fn with_capacity<T>(capacity: usize) -> Result<Vec<T>, OutOfMemory> {
    let mut vec = Vec::new();
    vec.try_reserve_exact(capacity).map_err(|_| OutOfMemory)?;
    Ok(vec)
}

/// A copy of `bytes`.
pub fn copy(bytes: &[u8]) -> Result<Vec<u8>, OutOfMemory> {
    concat(&[bytes])
}

/// `len` zero bytes.
pub fn zeroed(len: usize) -> Result<Vec<u8>, OutOfMemory> {
    let mut vec = with_capacity(len)?;
    vec.resize(len, 0);
    Ok(vec)
}

/// The pieces one after another (`[..].concat()`, fallibly).
pub fn concat(pieces: &[&[u8]]) -> Result<Vec<u8>, OutOfMemory> {
    let mut vec = with_capacity(pieces.iter().map(|p| p.len()).sum())?;
    for piece in pieces {
        vec.extend_from_slice(piece);
    }
    Ok(vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_larger_than_any_heap_fails_cleanly() {
        assert_eq!(with_capacity::<u8>(usize::MAX).err(), Some(OutOfMemory));
        assert_eq!(copy(&[1, 2]).unwrap(), [1, 2]);
        assert_eq!(concat(&[&[1], &[], &[2, 3]]).unwrap(), [1, 2, 3]);
        assert_eq!(zeroed(3).unwrap(), [0, 0, 0]);
    }
}
