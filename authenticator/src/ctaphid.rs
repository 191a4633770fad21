//! CTAPHID: the framing of CTAP messages into 64-byte HID reports (CTAP 2.1 §11.2).
//!
//! A pure state machine: the runner feeds it OUT reports and the time, calls [`Ctaphid::poll`]
//! when [`Ctaphid::next_deadline`] passes, and sends the IN reports [`Ctaphid::pop_packet`]
//! yields. Requests are handed to an [`App`] (the authenticator); a request that has to wait
//! (for the user's touch, say) answers [`Outcome::Waiting`] and is called again on later polls
//! while this layer sends KEEPALIVEs.

use alloc::vec::Vec;

/// HID report size, both directions.
pub const PACKET_SIZE: usize = 64;
/// The largest message CTAPHID can carry: one INIT packet and 128 CONT packets.
pub const MAX_MESSAGE_SIZE: usize = (PACKET_SIZE - 7) + 128 * (PACKET_SIZE - 5);

/// A 64-byte HID report.
pub type Packet = [u8; PACKET_SIZE];

/// Which CTAPHID command carried the request to the [`App`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transaction {
    /// CTAPHID_MSG: a CTAP1/U2F APDU.
    Msg,
    /// CTAPHID_CBOR: a CTAP2 command byte followed by CBOR.
    Cbor,
}

/// KEEPALIVE status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum KeepaliveStatus {
    /// The authenticator is still working.
    Processing = 1,
    /// The authenticator waits for the user's presence.
    UpNeeded = 2,
}

/// What the [`App`] did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The response is complete.
    Done,
    /// Not finished: keep the channel alive with this status and call again later.
    Waiting(KeepaliveStatus),
}

/// The authenticator, as CTAPHID sees it.
pub trait App {
    /// Handle, or keep handling, one request. On [`Outcome::Done`], `response` holds the whole
    /// response payload (for CBOR: status byte, then CBOR; for MSG: data, then SW1 SW2). On
    /// [`Outcome::Waiting`], `response` is ignored and the same request is passed again on a
    /// later poll: an app must make no lasting change before its last wait.
    fn call(&mut self, transaction: Transaction, request: &[u8], response: &mut Vec<u8>)
        -> Outcome;

    /// The host sent CTAPHID_CANCEL for the waiting request: the next `call` must complete it
    /// (CTAP2_ERR_KEEPALIVE_CANCEL for CBOR).
    fn cancel(&mut self);

    /// The waiting request is abandoned without an answer (its channel was re-initialised).
    fn abort(&mut self);

    /// CTAPHID_WINK.
    fn wink(&mut self);
}

/// Version numbers reported in the INIT response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceVersion {
    pub major: u8,
    pub minor: u8,
    pub build: u8,
}
