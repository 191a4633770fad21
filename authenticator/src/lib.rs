//! A FIDO2 (CTAP 2.1) and U2F (CTAP1) authenticator core.
//!
//! `no_std` with `alloc`; no I/O. A runner implements [`platform::Platform`], mounts a littlefs2
//! filesystem ([`store::mount`]), builds an [`Authenticator`], and drives [`ctaphid::Ctaphid`]
//! with the HID reports of its USB bus ([`usb::FidoHid`]).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod attestation;
pub mod automation;
pub mod basepoint;
pub mod credential;
pub mod ctaphid;
pub mod fallible;
pub mod fault;
pub mod platform;
pub mod profile;
pub mod store;
pub mod usb;

mod authenticator;
mod ctap1;
mod ctap2;
pub mod pico_flash;
pub mod pin_protocol;
mod presence;
mod vendor;

pub use authenticator::{Authenticator, Config};
pub use presence::TIMEOUT_MS as PRESENCE_TIMEOUT_MS;
pub use profile::Profile;
