//! A FIDO2 (CTAP 2.1) and U2F (CTAP1) authenticator core.
//!
//! `no_std` with `alloc`; no I/O. A runner implements [`platform::Platform`], mounts a littlefs2
//! filesystem, and drives [`ctaphid::Ctaphid`] with the HID reports of its USB bus.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod ctaphid;
pub mod platform;
pub mod usb;
pub mod store;

mod authenticator;
pub use authenticator::{Authenticator, Config};
