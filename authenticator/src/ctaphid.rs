//! CTAPHID: the framing of CTAP messages into 64-byte HID reports (CTAP 2.1 §11.2).
//!
//! A pure state machine: the runner feeds it OUT reports and the time, calls [`Ctaphid::poll`]
//! when [`Ctaphid::next_deadline`] passes, and sends the IN reports [`Ctaphid::pop_packet`]
//! yields. Requests are handed to an [`App`] (the authenticator); a request that has to wait
//! (for the user's touch, say) answers [`Outcome::Waiting`] and is called again on later polls
//! while this layer sends KEEPALIVEs.
//!
//! One transaction at a time: while a message is being received or a request processed, new
//! requests get ERR_CHANNEL_BUSY. Where the spec leaves room, this layer chooses:
//! - INIT is always answered (never busy, never locked out), so a host can always get a
//!   channel or resynchronise its own; a broadcast INIT disturbs nobody.
//! - CANCEL only acts on its own channel's waiting request (or partial message); any other
//!   CANCEL, on any CID, is ignored silently, as CANCEL never gets a response.
//! - A new request on a channel whose previous message is still incomplete is ERR_INVALID_SEQ
//!   and drops both.
//! - A waiting app is called again every 20 ms, not on every `poll`, so a runner may poll
//!   as often as it likes.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use zeroize::Zeroize;

use crate::fallible::{self, OutOfMemory};

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
    /// The vendor command PROVISION_ATTESTATION: install a batch attestation key and
    /// certificate, once (see [`crate::attestation`]).
    Provision,
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
    /// later poll: an app must make no lasting change before its last wait. An empty response
    /// on `Done` means the app had no memory even for a status: CTAPHID answers ERR_OTHER.
    fn call(&mut self, transaction: Transaction, request: &[u8], response: &mut Vec<u8>)
        -> Outcome;

    /// The host sent CTAPHID_CANCEL for the waiting request: the next `call` must complete it
    /// (CTAP2_ERR_KEEPALIVE_CANCEL for CBOR).
    fn cancel(&mut self);

    /// The waiting request is abandoned without an answer (its channel was re-initialised).
    fn abort(&mut self);

    /// CTAPHID_WINK.
    fn wink(&mut self);

    /// Whether the app speaks CTAP2: CTAPHID INIT then reports the CBOR capability, and
    /// CTAPHID_CBOR reaches the app (otherwise it is ERR_INVALID_CMD, as from a U2F key).
    /// Required, not defaulted: a wrapper around an app that forgot to pass it on would make a
    /// U2F-only key claim CBOR.
    fn speaks_cbor(&self) -> bool;
}

/// Version numbers reported in the INIT response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceVersion {
    pub major: u8,
    pub minor: u8,
    pub build: u8,
}

/// The broadcast channel: only INIT may use it, to obtain a channel of its own.
pub const BROADCAST_CID: u32 = 0xFFFF_FFFF;
/// Payload bytes in an initialisation packet (after CID, CMD and the 2-byte length).
const INIT_DATA: usize = PACKET_SIZE - 7;
/// Payload bytes in a continuation packet (after CID and SEQ).
const CONT_DATA: usize = PACKET_SIZE - 5;

/// CTAPHID command codes, with the initialisation-packet bit (0x80) set as on the wire.
pub mod command {
    pub const PING: u8 = 0x81;
    pub const MSG: u8 = 0x83;
    pub const LOCK: u8 = 0x84;
    pub const INIT: u8 = 0x86;
    pub const WINK: u8 = 0x88;
    pub const CBOR: u8 = 0x90;
    pub const CANCEL: u8 = 0x91;
    pub const KEEPALIVE: u8 = 0xBB;
    /// Vendor command (0x40..=0x7F range): install a batch attestation.
    pub const PROVISION_ATTESTATION: u8 = 0xF0;
    pub const ERROR: u8 = 0xBF;
}

/// CTAPHID_ERROR codes.
mod error {
    pub const INVALID_CMD: u8 = 0x01;
    pub const INVALID_PAR: u8 = 0x02;
    pub const INVALID_LEN: u8 = 0x03;
    pub const INVALID_SEQ: u8 = 0x04;
    pub const MSG_TIMEOUT: u8 = 0x05;
    pub const CHANNEL_BUSY: u8 = 0x06;
    pub const INVALID_CHANNEL: u8 = 0x0B;
    pub const OTHER: u8 = 0x7F;
}

/// The CTAPHID protocol version reported by INIT.
const PROTOCOL_VERSION: u8 = 2;
/// INIT capability flags: we wink, and speak CBOR unless the app does not
/// ([`App::speaks_cbor`]). NMSG stays clear because we do accept MSG.
const CAPABILITY_WINK: u8 = 0x01;
const CAPABILITY_CBOR: u8 = 0x04;

/// How long the host may pause between the packets of one message before we give up on it.
const REASSEMBLY_TIMEOUT_MS: u64 = 500;
/// The spec's bound is a KEEPALIVE at least every 100 ms (§11.2.9.1.7); Windows' webauthn.dll
/// gave up on a USB/IP key that sent one every 100 ms and worked at 50 ms, and a host that polls
/// the interrupt endpoint late (every 10-20 ms under load) must still see one well inside the
/// bound. 50 ms: twenty 64-byte reports a second while the user is asked to touch.
const KEEPALIVE_INTERVAL_MS: u64 = 50;
/// How often a waiting app is asked again, so a touch or finished work is noticed promptly.
const APP_POLL_INTERVAL_MS: u64 = 20;
/// LOCK may last at most this long (spec: 10 seconds).
const MAX_LOCK_SECONDS: u8 = 10;
/// Output queue bound: one response of the largest size (1 INIT + 128 CONT packets) plus room
/// for a few errors and keepalives. A message that does not fit is dropped whole, never cut,
/// so a host that does not read its answers cannot make us grow without bound.
const QUEUE_CAPACITY: usize = 1 + 128 + 8;
/// What the response buffer holds before the app is called: more than any status-only answer.
pub const MIN_RESPONSE_ROOM: usize = 64;

/// The CTAPHID layer of one HID interface. See the module documentation.
pub struct Ctaphid {
    version: DeviceVersion,
    channels: ChannelAllocator,
    /// The message being reassembled from packets, if any (only one at a time).
    rx: Option<Reassembly>,
    /// The request the app is working on and has answered `Waiting` for, if any.
    job: Option<Job>,
    lock: Option<Lock>,
    out: Outbox,
    /// Scratch buffer for the app's responses, kept to avoid reallocating per request.
    response: Vec<u8>,
}

impl Ctaphid {
    /// A fresh layer with no channels allocated; `version` is reported in INIT responses.
    pub fn new(version: DeviceVersion) -> Self {
        Self {
            version,
            channels: ChannelAllocator::new(),
            rx: None,
            job: None,
            lock: None,
            out: Outbox::default(),
            response: Vec::new(),
        }
    }

    /// Take one OUT report from the host. Any 64 bytes are acceptable: malformed input is
    /// answered with a CTAPHID error (or ignored where the spec says so), never a panic.
    pub fn handle_packet(&mut self, packet: &Packet, now_ms: u64, app: &mut impl App) {
        self.expire_lock(now_ms);
        let cid = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        if packet[4] & 0x80 != 0 {
            let len = usize::from(u16::from_be_bytes([packet[5], packet[6]]));
            let start = MessageStart {
                cid,
                cmd: packet[4],
                len,
                data: &packet[7..],
            };
            if start.cmd == command::INIT {
                self.handle_init(&start, app);
            } else {
                self.handle_request_start(&start, now_ms, app);
            }
        } else {
            self.handle_continuation(cid, packet[4], &packet[5..], now_ms, app);
        }
    }

    /// Do the work that is due by `now_ms`: time out a stalled message, and ask a waiting app
    /// again (sending KEEPALIVEs). Call it when [`Self::next_deadline`] has passed; calling it
    /// earlier or more often is harmless.
    pub fn poll(&mut self, now_ms: u64, app: &mut impl App) {
        self.expire_lock(now_ms);
        if let Some(rx) = self.rx.take_if(|rx| now_ms >= rx.deadline) {
            self.out.error(rx.cid, error::MSG_TIMEOUT);
        }
        if self.job.as_ref().is_some_and(|job| now_ms >= job.due()) {
            self.run_job(now_ms, app);
        }
    }

    /// The app has news for the waiting request (its answer is ready, or its status changed):
    /// ask it at the next [`Self::poll`] rather than up to 20 ms later. A runner whose app
    /// finishes in another context (an interrupt, a second core) calls this when it does.
    pub fn wake(&mut self) {
        if let Some(job) = self.job.as_mut() {
            job.next_call = 0;
        }
    }

    /// The time by which [`Self::poll`] must run next, or `None` if nothing will happen until
    /// the next packet arrives.
    pub fn next_deadline(&self) -> Option<u64> {
        let rx = self.rx.as_ref().map(|rx| rx.deadline);
        let job = self.job.as_ref().map(Job::due);
        rx.into_iter().chain(job).min()
    }

    /// The next IN report to send to the host, in order.
    pub fn pop_packet(&mut self) -> Option<Packet> {
        self.out.packets.pop_front()
    }

    /// Whether a message is being received or a request is being processed.
    pub fn is_busy(&self) -> bool {
        self.rx.is_some() || self.job.is_some()
    }

    /// CTAPHID_INIT: allocate a channel (on the broadcast CID) or resynchronise one. INIT is
    /// answered even while another channel is busy or holds the lock: a host must always be
    /// able to get a channel and to recover its own.
    ///
    /// An INIT on a CID this key never allocated is ERR_INVALID_CHANNEL, although SoloKeys'
    /// fido2-tests expect it answered: §11.2.9.1.3 defines INIT's CID as the broadcast CID
    /// (allocation) or an allocated one (synchronisation), and answering would hand the host a
    /// channel on which every later command is invalid. Hosts that lost their channel (the key
    /// was unplugged) get ERR_INVALID_CHANNEL and allocate again on the broadcast CID, as
    /// libfido2 and the browsers do. (solo1, usbd-ctaphid and pico-fido track no allocations
    /// and answer INIT on any CID; OpenSK refuses it, as this key does.)
    fn handle_init(&mut self, start: &MessageStart, app: &mut impl App) {
        let cid = start.cid;
        if cid != BROADCAST_CID && !self.channels.is_allocated(cid) {
            return self.out.error(cid, error::INVALID_CHANNEL);
        }
        if start.len != 8 {
            return self.out.error(cid, error::INVALID_LEN);
        }
        let new_cid = if cid == BROADCAST_CID {
            let in_use = self.cids_in_use();
            self.channels.allocate(&in_use)
        } else {
            self.resync(cid, app);
            cid
        };
        let mut payload = [0u8; 17];
        payload[..8].copy_from_slice(&start.data[..8]);
        payload[8..12].copy_from_slice(&new_cid.to_be_bytes());
        payload[12] = PROTOCOL_VERSION;
        payload[13] = self.version.major;
        payload[14] = self.version.minor;
        payload[15] = self.version.build;
        payload[16] = if app.speaks_cbor() {
            CAPABILITY_WINK | CAPABILITY_CBOR
        } else {
            CAPABILITY_WINK
        };
        self.out.message(cid, command::INIT, &payload);
    }

    /// Abandon whatever `cid` was doing, as INIT on an allocated channel requires.
    fn resync(&mut self, cid: u32, app: &mut impl App) {
        if self.rx.as_ref().is_some_and(|rx| rx.cid == cid) {
            self.rx = None;
        }
        if self.job.as_ref().is_some_and(|job| job.cid == cid) {
            self.job = None;
            app.abort();
        }
    }

    /// The first packet of any request other than INIT.
    fn handle_request_start(&mut self, start: &MessageStart, now_ms: u64, app: &mut impl App) {
        let cid = start.cid;
        if start.cmd == command::CANCEL {
            // Before any channel check: a CANCEL "received while no CTAPHID_CBOR request is
            // being processed, or on a non-active CID SHALL be ignored" (§11.2.9.1.5), so no
            // CANCEL gets an answer, whatever its CID.
            return self.cancel(cid, now_ms, app);
        }
        if !self.channels.is_allocated(cid) {
            // Arbitration comes first (CTAP 2.1 §11.2.5: another CID that tries to use the device
            // during a transaction gets ERR_CHANNEL_BUSY), as the reference test suite expects;
            // an idle device tells an unknown CID it is invalid. 0 and broadcast are never a
            // request's channel, busy or not.
            let ordinary = cid != 0 && cid != BROADCAST_CID;
            let code = if ordinary && self.is_busy() {
                error::CHANNEL_BUSY
            } else {
                error::INVALID_CHANNEL
            };
            return self.out.error(cid, code);
        }
        if self.rx.as_ref().is_some_and(|rx| rx.cid == cid) {
            // A new message before the previous one on this channel was complete: the host
            // lost track of its own sequence, so neither message can be trusted.
            self.rx = None;
            return self.out.error(cid, error::INVALID_SEQ);
        }
        if self.is_busy_for(cid) {
            return self.out.error(cid, error::CHANNEL_BUSY);
        }
        if let Err(code) = check_length(start.cmd, start.len) {
            return self.out.error(cid, code);
        }
        if start.len <= INIT_DATA {
            match fallible::copy(&start.data[..start.len]) {
                Ok(payload) => self.dispatch(cid, start.cmd, payload, now_ms, app),
                Err(OutOfMemory) => self.out.error(cid, error::OTHER),
            }
        } else {
            match Reassembly::new(start, now_ms) {
                Ok(rx) => self.rx = Some(rx),
                Err(OutOfMemory) => self.out.error(cid, error::OTHER),
            }
        }
    }

    /// A continuation packet: the next piece of the message being reassembled on `cid`.
    fn handle_continuation(
        &mut self,
        cid: u32,
        seq: u8,
        data: &[u8],
        now_ms: u64,
        app: &mut impl App,
    ) {
        let Some(rx) = self.rx.as_mut() else {
            return; // spurious continuation packets are ignored (spec)
        };
        if rx.cid != cid {
            // Answer a real channel that talks over another's message, but don't let it
            // disturb that message; garbage on unallocated channels is just dropped.
            if self.channels.is_allocated(cid) {
                self.out.error(cid, error::CHANNEL_BUSY);
            }
            return;
        }
        if seq != rx.next_seq {
            self.rx = None;
            return self.out.error(cid, error::INVALID_SEQ);
        }
        rx.append(data, now_ms);
        if let Some(mut rx) = self.rx.take_if(|rx| rx.is_complete()) {
            let payload = core::mem::take(&mut rx.data);
            self.dispatch(cid, rx.cmd, payload, now_ms, app);
        }
    }

    /// CTAPHID_CANCEL. It never gets a response of its own: a cancelled request is answered
    /// by the app (CTAP2_ERR_KEEPALIVE_CANCEL), and a CANCEL with nothing pending is ignored.
    fn cancel(&mut self, cid: u32, now_ms: u64, app: &mut impl App) {
        if self.job.as_ref().is_some_and(|job| job.cid == cid) {
            app.cancel();
            // Ask again now so the cancellation is answered without waiting for a poll.
            self.run_job(now_ms, app);
        } else if self.rx.as_ref().is_some_and(|rx| rx.cid == cid) {
            // The host gave up on a message it was still sending.
            self.rx = None;
        }
    }

    /// Whether a new request from `cid` must be refused with CHANNEL_BUSY. Only one
    /// transaction is handled at a time, and a lock reserves the device for its channel.
    fn is_busy_for(&self, cid: u32) -> bool {
        // An expired lock was already cleared by `expire_lock`.
        let locked_by_other = self.lock.as_ref().is_some_and(|lock| lock.cid != cid);
        locked_by_other || self.rx.is_some() || self.job.is_some()
    }

    /// Act on a complete request message (its length already checked).
    fn dispatch(&mut self, cid: u32, cmd: u8, payload: Vec<u8>, now_ms: u64, app: &mut impl App) {
        match cmd {
            command::PING => self.out.message(cid, command::PING, &payload),
            command::WINK => {
                app.wink();
                self.out.message(cid, command::WINK, &[]);
            }
            command::LOCK => self.set_lock(cid, payload.first().copied().unwrap_or(0), now_ms),
            command::MSG => self.start_job(cid, Transaction::Msg, payload, now_ms, app),
            command::CBOR if app.speaks_cbor() => {
                self.start_job(cid, Transaction::Cbor, payload, now_ms, app)
            }
            command::PROVISION_ATTESTATION => {
                self.start_job(cid, Transaction::Provision, payload, now_ms, app)
            }
            _ => self.out.error(cid, error::INVALID_CMD),
        }
    }

    /// CTAPHID_LOCK: reserve the device for `cid` for `seconds` (0 releases it). Only a
    /// channel that is not locked out gets here, so it either holds the lock or nobody does.
    fn set_lock(&mut self, cid: u32, seconds: u8, now_ms: u64) {
        if seconds > MAX_LOCK_SECONDS {
            return self.out.error(cid, error::INVALID_PAR);
        }
        self.lock = (seconds > 0).then(|| Lock {
            cid,
            until: now_ms.saturating_add(u64::from(seconds) * 1000),
        });
        self.out.message(cid, command::LOCK, &[]);
    }

    fn expire_lock(&mut self, now_ms: u64) {
        if self.lock.as_ref().is_some_and(|lock| now_ms >= lock.until) {
            self.lock = None;
        }
    }

    /// Hand a MSG or CBOR request to the app, keeping it as the current job if it must wait.
    fn start_job(
        &mut self,
        cid: u32,
        transaction: Transaction,
        request: Vec<u8>,
        now_ms: u64,
        app: &mut impl App,
    ) {
        self.job = Some(Job {
            cid,
            transaction,
            request,
            status: None,
            next_call: now_ms,
            next_keepalive: now_ms,
        });
        self.run_job(now_ms, app);
    }

    /// Call the app with the current job: queue its response if it is done, or schedule the
    /// next call and send a KEEPALIVE when one is due (at once, when its status changes,
    /// and every [`KEEPALIVE_INTERVAL_MS`] while it keeps waiting).
    fn run_job(&mut self, now_ms: u64, app: &mut impl App) {
        let Some(job) = self.job.as_mut() else { return };
        self.response.clear();
        // Room for any status-only answer, so an app can always report its own failure.
        if self.response.try_reserve(MIN_RESPONSE_ROOM).is_err() {
            let cid = job.cid;
            self.job = None;
            app.abort();
            return self.out.error(cid, error::OTHER);
        }
        match app.call(job.transaction, &job.request, &mut self.response) {
            Outcome::Done => {
                let cmd = job.command();
                let cid = job.cid;
                self.job = None;
                if self.response.is_empty() {
                    // Every answer has at least a status: an app with no memory left for one
                    // answers nothing.
                    return self.out.error(cid, error::OTHER);
                }
                self.out.message(cid, cmd, &self.response);
                // The response may carry key agreement or token material; don't leave it
                // lying in a buffer that lives as long as the device.
                self.response.as_mut_slice().zeroize();
                self.response.clear();
            }
            Outcome::Waiting(status) => {
                job.next_call = now_ms.saturating_add(APP_POLL_INTERVAL_MS);
                if job.status != Some(status) || now_ms >= job.next_keepalive {
                    job.status = Some(status);
                    job.next_keepalive = now_ms.saturating_add(KEEPALIVE_INTERVAL_MS);
                    let cid = job.cid;
                    self.out.message(cid, command::KEEPALIVE, &[status as u8]);
                }
            }
        }
    }

    /// Channels that a new allocation must not reuse.
    fn cids_in_use(&self) -> [Option<u32>; 3] {
        [
            self.rx.as_ref().map(|rx| rx.cid),
            self.job.as_ref().map(|job| job.cid),
            self.lock.as_ref().map(|lock| lock.cid),
        ]
    }
}

/// The header of an initialisation packet.
struct MessageStart<'a> {
    cid: u32,
    cmd: u8,
    /// The declared length of the whole message.
    len: usize,
    /// The payload bytes this packet carries (always [`INIT_DATA`] bytes; the tail may be
    /// padding).
    data: &'a [u8],
}

/// Check a request's declared length before buffering anything, so an unknown command or an
/// impossible length is refused on its first packet.
fn check_length(cmd: u8, len: usize) -> Result<(), u8> {
    let fits = len <= MAX_MESSAGE_SIZE;
    let ok = match cmd {
        command::PING | command::MSG | command::WINK | command::PROVISION_ATTESTATION => fits,
        // A CBOR request holds at least the CTAP2 command byte.
        command::CBOR => fits && len >= 1,
        command::LOCK => len == 1,
        _ => return Err(error::INVALID_CMD),
    };
    if ok {
        Ok(())
    } else {
        Err(error::INVALID_LEN)
    }
}

/// Hands out channel IDs from a counter. Every ID below the counter counts as allocated,
/// which needs no table and so no bound on how many hosts may ask.
struct ChannelAllocator {
    next: u32,
    /// Set once the counter has wrapped: from then on every ID is considered allocated.
    wrapped: bool,
}

impl ChannelAllocator {
    fn new() -> Self {
        Self {
            next: 1,
            wrapped: false,
        }
    }

    fn is_allocated(&self, cid: u32) -> bool {
        cid != 0 && cid != BROADCAST_CID && (self.wrapped || cid < self.next)
    }

    /// A new ID: never 0, never broadcast, never one of `in_use` (which only matters after
    /// the counter wrapped). Terminates because `in_use` holds at most three IDs.
    fn allocate(&mut self, in_use: &[Option<u32>]) -> u32 {
        loop {
            let cid = self.next;
            self.next = match cid.wrapping_add(1) {
                BROADCAST_CID => {
                    self.wrapped = true;
                    1
                }
                next => next,
            };
            if !in_use.contains(&Some(cid)) {
                return cid;
            }
        }
    }
}

/// A request message arriving in pieces.
struct Reassembly {
    cid: u32,
    cmd: u8,
    len: usize,
    data: Vec<u8>,
    next_seq: u8,
    /// When the message is abandoned with MSG_TIMEOUT if no further packet arrives.
    deadline: u64,
}

impl Reassembly {
    /// The whole message's room is taken at once, so `append` never allocates.
    fn new(start: &MessageStart, now_ms: u64) -> Result<Self, OutOfMemory> {
        let mut data = fallible::with_capacity(start.len)?;
        data.extend_from_slice(&start.data[..INIT_DATA.min(start.len)]);
        let deadline = now_ms.saturating_add(REASSEMBLY_TIMEOUT_MS);
        Ok(Self {
            cid: start.cid,
            cmd: start.cmd,
            len: start.len,
            data,
            next_seq: 0,
            deadline,
        })
    }

    fn append(&mut self, chunk: &[u8], now_ms: u64) {
        let take = (self.len - self.data.len()).min(chunk.len());
        self.data.extend_from_slice(&chunk[..take]);
        // A message that needs more than 128 CONT packets was refused by check_length, so
        // the sequence number cannot run past 127 here; wrapping keeps it panic-free anyway.
        self.next_seq = self.next_seq.wrapping_add(1);
        self.deadline = now_ms.saturating_add(REASSEMBLY_TIMEOUT_MS);
    }

    fn is_complete(&self) -> bool {
        self.data.len() == self.len
    }
}

impl Drop for Reassembly {
    /// Requests can carry PIN material (encrypted, but still): wipe what we buffered.
    fn drop(&mut self) {
        self.data.as_mut_slice().zeroize();
    }
}

/// A MSG or CBOR request the app has not finished yet.
struct Job {
    cid: u32,
    transaction: Transaction,
    request: Vec<u8>,
    /// The status of the last KEEPALIVE sent, if any.
    status: Option<KeepaliveStatus>,
    next_call: u64,
    next_keepalive: u64,
}

impl Job {
    fn command(&self) -> u8 {
        match self.transaction {
            Transaction::Msg => command::MSG,
            Transaction::Cbor => command::CBOR,
            Transaction::Provision => command::PROVISION_ATTESTATION,
        }
    }

    /// When this job next needs attention (an app call or a keepalive).
    fn due(&self) -> u64 {
        self.next_call.min(self.next_keepalive)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.request.as_mut_slice().zeroize();
    }
}

/// A channel's exclusive claim on the device (CTAPHID_LOCK).
struct Lock {
    cid: u32,
    until: u64,
}

/// The queue of IN reports, filled a whole message at a time.
#[derive(Default)]
struct Outbox {
    packets: VecDeque<Packet>,
}

impl Outbox {
    fn error(&mut self, cid: u32, code: u8) {
        self.message(cid, command::ERROR, &[code]);
    }

    /// Queue `data` as one INIT packet and as many CONT packets as needed, zero padded. A
    /// response too large for CTAPHID becomes ERR_OTHER; one that doesn't fit in the queue
    /// is dropped (see [`QUEUE_CAPACITY`]).
    fn message(&mut self, cid: u32, cmd: u8, data: &[u8]) {
        if data.len() > MAX_MESSAGE_SIZE {
            return self.error(cid, error::OTHER);
        }
        let (first, rest) = data.split_at(INIT_DATA.min(data.len()));
        let packet_count = 1 + rest.len().div_ceil(CONT_DATA);
        if self.packets.len() + packet_count > QUEUE_CAPACITY {
            return;
        }
        if self.packets.try_reserve(packet_count).is_err() {
            // The queue keeps the room it once had, so an error packet usually still fits.
            if cmd != command::ERROR {
                self.error(cid, error::OTHER);
            }
            return;
        }
        let mut packet = [0u8; PACKET_SIZE];
        packet[..4].copy_from_slice(&cid.to_be_bytes());
        packet[4] = cmd;
        // Fits: data.len() <= MAX_MESSAGE_SIZE < 65536.
        packet[5..7].copy_from_slice(&(data.len() as u16).to_be_bytes());
        packet[7..7 + first.len()].copy_from_slice(first);
        self.packets.push_back(packet);
        for (seq, chunk) in rest.chunks(CONT_DATA).enumerate() {
            let mut packet = [0u8; PACKET_SIZE];
            packet[..4].copy_from_slice(&cid.to_be_bytes());
            packet[4] = seq as u8; // at most 128 chunks: 0..=127
            packet[5..5 + chunk.len()].copy_from_slice(chunk);
            self.packets.push_back(packet);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The allocator's wrap-around, which the public API cannot reach in reasonable time.
    //! Everything else is tested through the public API in `tests/it/ctaphid.rs`.
    use super::*;

    #[test]
    fn allocator_wraps_past_broadcast_and_skips_channels_in_use() {
        let mut channels = ChannelAllocator {
            next: BROADCAST_CID - 2,
            wrapped: false,
        };
        assert!(!channels.is_allocated(BROADCAST_CID - 2));
        assert_eq!(channels.allocate(&[None, None, None]), BROADCAST_CID - 2);
        assert_eq!(channels.allocate(&[None, None, None]), BROADCAST_CID - 1);
        // Next would be broadcast, then 1 and 2, which are busy: 3 is the first free one.
        assert_eq!(channels.allocate(&[Some(1), Some(2), None]), 3);
        assert!(channels.wrapped);
        assert!(
            channels.is_allocated(12345),
            "after the wrap every ID counts as allocated"
        );
        assert!(!channels.is_allocated(0));
        assert!(!channels.is_allocated(BROADCAST_CID));
    }
}
