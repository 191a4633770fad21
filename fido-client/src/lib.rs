//! The host side of the wire: how a Rust program talks to the key, the way an operating system
//! and a browser or libfido2 do.
//!
//! - [`usbip`]: a userspace USB/IP client as strict as the Linux kernel's `vhci-hcd` (device
//!   list, import, enumeration, control and interrupt URBs; a completion longer than its URB is
//!   an error), for a virtual key on `HOST:PORT` with no kernel module;
//! - [`hidraw`]: 64-byte reports on a `/dev/hidrawN` node, for a key the kernel attached (the
//!   virtual key through `usbip attach`, or a Pico);
//! - [`ctaphid`]: CTAPHID framing over either ([`ctaphid::Reports`]): channels, INIT,
//!   fragmentation, keepalives, CBOR and MSG transactions;
//! - [`ctap`]: CTAP2 request builders and response parsing, with signature verification;
//! - [`pin`]: a PIN/UV auth protocol 1 and 2 client (key agreement, PIN set and change,
//!   pinUvAuthToken with permissions, hmac-secret salts).
//!
//! The `attestation` tool provisions keys with it, and the end-to-end tests drive the key
//! with it.

pub mod ctap;
pub mod ctaphid;
pub mod hidraw;
pub mod pin;
pub mod usbip;

impl<D: ctaphid::Reports> ctap::Transport for ctaphid::Channel<D> {
    fn ctap2_raw(&mut self, request: &[u8]) -> (u8, Vec<u8>) {
        self.cbor(request).expect("a CTAPHID answer")
    }
}

/// An authenticator core in this process (feature `in-process`, for its tests): a CBOR
/// transaction through its [`authenticator::ctaphid::App`], the way CTAPHID hands one over.
#[cfg(feature = "in-process")]
impl<P: authenticator::platform::Platform> ctap::Transport for authenticator::Authenticator<'_, P> {
    fn ctap2_raw(&mut self, request: &[u8]) -> (u8, Vec<u8>) {
        use authenticator::ctaphid::{App, Outcome, Transaction};
        let mut response = Vec::new();
        assert_eq!(
            self.call(Transaction::Cbor, request, &mut response),
            Outcome::Done
        );
        (response[0], response[1..].to_vec())
    }
}
