//! Tests of the CTAPHID state machine through its public API, with a scripted fake app and a
//! host side written here from the spec (its own framing code, so a framing bug on either side
//! shows up as a failure rather than cancelling out).

use authenticator::ctaphid::{
    App, Ctaphid, DeviceVersion, KeepaliveStatus, Outcome, Packet, Transaction, MAX_MESSAGE_SIZE,
    PACKET_SIZE,
};

const BROADCAST: u32 = 0xFFFF_FFFF;

const PING: u8 = 0x81;
const MSG: u8 = 0x83;
const LOCK: u8 = 0x84;
const INIT: u8 = 0x86;
const WINK: u8 = 0x88;
const CBOR: u8 = 0x90;
const CANCEL: u8 = 0x91;
const KEEPALIVE: u8 = 0xBB;
const ERROR: u8 = 0xBF;

const ERR_INVALID_CMD: u8 = 0x01;
const ERR_INVALID_PAR: u8 = 0x02;
const ERR_INVALID_LEN: u8 = 0x03;
const ERR_INVALID_SEQ: u8 = 0x04;
const ERR_MSG_TIMEOUT: u8 = 0x05;
const ERR_CHANNEL_BUSY: u8 = 0x06;
const ERR_INVALID_CHANNEL: u8 = 0x0B;
const ERR_OTHER: u8 = 0x7F;

/// CTAP2_ERR_KEEPALIVE_CANCEL, what our fake app answers once cancelled.
const KEEPALIVE_CANCEL: u8 = 0x2D;

const VERSION: DeviceVersion = DeviceVersion {
    major: 1,
    minor: 2,
    build: 3,
};

/// The largest gap between KEEPALIVEs of a waiting request: half the spec's 100 ms (§11.2.9.1.7),
/// as Windows' webauthn.dll needs over USB/IP (see the reasons at the interval in ctaphid.rs).
const KEEPALIVE_GAP_MS: u64 = 50;

/// The largest number of IN packets the layer may hold: one maximal response and a few more.
const QUEUE_BOUND: usize = 129 + 8;

// ---------------------------------------------------------------------------------------------
// The fake app

/// Echoes every request, after answering `Waiting(status)` for `waits` calls. Once cancelled,
/// its next call answers CTAP2_ERR_KEEPALIVE_CANCEL.
#[derive(Default)]
struct FakeApp {
    waits: usize,
    status: Option<KeepaliveStatus>,
    cancelled: bool,
    /// Respond with this many bytes instead of an echo.
    response_len: Option<usize>,
    calls: Vec<(Transaction, Vec<u8>)>,
    cancels: usize,
    aborts: usize,
    winks: usize,
}

impl FakeApp {
    fn waiting(waits: usize) -> Self {
        Self {
            waits,
            status: Some(KeepaliveStatus::UpNeeded),
            ..Self::default()
        }
    }
}

impl App for FakeApp {
    fn call(
        &mut self,
        transaction: Transaction,
        request: &[u8],
        response: &mut Vec<u8>,
    ) -> Outcome {
        self.calls.push((transaction, request.to_vec()));
        if self.cancelled {
            self.cancelled = false;
            self.waits = 0;
            response.push(KEEPALIVE_CANCEL);
            return Outcome::Done;
        }
        if self.waits > 0 {
            self.waits -= 1;
            return Outcome::Waiting(self.status.unwrap_or(KeepaliveStatus::Processing));
        }
        match self.response_len {
            Some(n) => response.resize(n, 0x5A),
            None => response.extend_from_slice(request),
        }
        Outcome::Done
    }

    fn cancel(&mut self) {
        self.cancels += 1;
        self.cancelled = true;
    }

    fn abort(&mut self) {
        self.aborts += 1;
        self.waits = 0;
    }

    fn wink(&mut self) {
        self.winks += 1;
    }

    fn speaks_cbor(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// The host side

fn init_packet(cid: u32, cmd: u8, declared_len: usize, data: &[u8]) -> Packet {
    let mut p = [0u8; PACKET_SIZE];
    p[..4].copy_from_slice(&cid.to_be_bytes());
    p[4] = cmd;
    p[5..7].copy_from_slice(&(declared_len as u16).to_be_bytes());
    p[7..7 + data.len()].copy_from_slice(data);
    p
}

fn cont_packet(cid: u32, seq: u8, data: &[u8]) -> Packet {
    let mut p = [0u8; PACKET_SIZE];
    p[..4].copy_from_slice(&cid.to_be_bytes());
    p[4] = seq;
    p[5..5 + data.len()].copy_from_slice(data);
    p
}

/// A request as the host frames it: 57 bytes in the INIT packet, 59 in each CONT packet.
fn frame(cid: u32, cmd: u8, payload: &[u8]) -> Vec<Packet> {
    let first = payload.len().min(57);
    let mut packets = vec![init_packet(cid, cmd, payload.len(), &payload[..first])];
    for (seq, chunk) in payload[first..].chunks(59).enumerate() {
        packets.push(cont_packet(cid, seq as u8, chunk));
    }
    packets
}

#[derive(Debug, PartialEq, Eq)]
struct Message {
    cid: u32,
    cmd: u8,
    data: Vec<u8>,
}

fn msg(cid: u32, cmd: u8, data: &[u8]) -> Message {
    Message {
        cid,
        cmd,
        data: data.to_vec(),
    }
}

fn error(cid: u32, code: u8) -> Message {
    msg(cid, ERROR, &[code])
}

/// Reassemble IN packets as a strict host would, asserting correct framing: a message starts
/// with an INIT packet, CONT packets follow on the same channel with seq 0, 1, ..., and every
/// byte past the payload is zero.
fn reassemble(packets: &[Packet]) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut i = 0;
    while i < packets.len() {
        let p = &packets[i];
        let cid = u32::from_be_bytes(p[..4].try_into().unwrap());
        assert!(p[4] & 0x80 != 0, "message starts with a CONT packet: {p:?}");
        let len = usize::from(u16::from_be_bytes([p[5], p[6]]));
        assert!(len <= MAX_MESSAGE_SIZE);
        let first = len.min(57);
        let mut data = p[7..7 + first].to_vec();
        assert!(
            p[7 + first..].iter().all(|&b| b == 0),
            "INIT packet not zero padded"
        );
        i += 1;
        let mut seq = 0u8;
        while data.len() < len {
            let c = packets.get(i).expect("message cut short");
            assert_eq!(
                u32::from_be_bytes(c[..4].try_into().unwrap()),
                cid,
                "CONT on another channel"
            );
            assert_eq!(c[4], seq, "CONT out of sequence");
            let take = (len - data.len()).min(59);
            data.extend_from_slice(&c[5..5 + take]);
            assert!(
                c[5 + take..].iter().all(|&b| b == 0),
                "CONT packet not zero padded"
            );
            seq += 1;
            i += 1;
        }
        messages.push(Message {
            cid,
            cmd: p[4],
            data,
        });
    }
    messages
}

/// The device under test, its app, and a simulated clock.
struct Harness {
    hid: Ctaphid,
    app: FakeApp,
    now: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with_app(FakeApp::default())
    }

    fn with_app(app: FakeApp) -> Self {
        Self {
            hid: Ctaphid::new(VERSION),
            app,
            now: 1_000,
        }
    }

    fn send_packet(&mut self, packet: &Packet) {
        self.hid.handle_packet(packet, self.now, &mut self.app);
    }

    fn send(&mut self, cid: u32, cmd: u8, payload: &[u8]) {
        for p in frame(cid, cmd, payload) {
            self.send_packet(&p);
        }
    }

    fn drain_packets(&mut self) -> Vec<Packet> {
        std::iter::from_fn(|| self.hid.pop_packet()).collect()
    }

    fn responses(&mut self) -> Vec<Message> {
        let packets = self.drain_packets();
        reassemble(&packets)
    }

    /// Send one request and return everything the device answered right away.
    fn transact(&mut self, cid: u32, cmd: u8, payload: &[u8]) -> Vec<Message> {
        self.send(cid, cmd, payload);
        self.responses()
    }

    /// Allocate a channel with INIT on the broadcast CID.
    fn open_channel(&mut self) -> u32 {
        let nonce = [7u8; 8];
        let answer = self.transact(BROADCAST, INIT, &nonce);
        assert_eq!(answer.len(), 1);
        assert_eq!(answer[0].cmd, INIT);
        u32::from_be_bytes(answer[0].data[8..12].try_into().unwrap())
    }

    /// Let `ms` of simulated time pass in 1 ms steps, polling whenever the deadline is due,
    /// as a runner would. Returns each message sent with the time it was queued.
    fn run_for(&mut self, ms: u64) -> Vec<(u64, Message)> {
        let mut out = Vec::new();
        for _ in 0..ms {
            self.now += 1;
            if self.hid.next_deadline().is_some_and(|d| d <= self.now) {
                self.hid.poll(self.now, &mut self.app);
            }
            for m in self.responses() {
                out.push((self.now, m));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// INIT and channels

#[test]
fn init_allocates_fresh_channels() {
    let mut h = Harness::new();
    let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
    let answer = h.transact(BROADCAST, INIT, &nonce);
    assert_eq!(answer.len(), 1);
    let m = &answer[0];
    assert_eq!((m.cid, m.cmd, m.data.len()), (BROADCAST, INIT, 17));
    assert_eq!(&m.data[..8], &nonce);
    let cid = u32::from_be_bytes(m.data[8..12].try_into().unwrap());
    assert_eq!(
        &m.data[12..],
        &[2, 1, 2, 3, 0x01 | 0x04],
        "protocol 2, version, WINK|CBOR"
    );
    assert!(cid != 0 && cid != BROADCAST);

    let others: Vec<u32> = (0..20).map(|_| h.open_channel()).collect();
    let mut all = others.clone();
    all.push(cid);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 21, "channel IDs are never handed out twice");
    assert!(all.iter().all(|&c| c != 0 && c != BROADCAST));
}

#[test]
fn init_with_wrong_length_is_invalid_len() {
    let mut h = Harness::new();
    assert_eq!(
        h.transact(BROADCAST, INIT, &[0; 7]),
        vec![error(BROADCAST, ERR_INVALID_LEN)]
    );
    assert_eq!(
        h.transact(BROADCAST, INIT, &[0; 9]),
        vec![error(BROADCAST, ERR_INVALID_LEN)]
    );
    let cid = h.open_channel();
    assert_eq!(
        h.transact(cid, INIT, &[]),
        vec![error(cid, ERR_INVALID_LEN)]
    );
}

#[test]
fn init_on_allocated_channel_keeps_its_id() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    let answer = h.transact(cid, INIT, &[9; 8]);
    assert_eq!(answer.len(), 1);
    assert_eq!((answer[0].cid, answer[0].cmd), (cid, INIT));
    assert_eq!(&answer[0].data[..8], &[9; 8]);
    assert_eq!(&answer[0].data[8..12], &cid.to_be_bytes());
}

#[test]
fn broadcast_cid_zero_and_unknown_channels_are_invalid() {
    let mut h = Harness::new();
    assert_eq!(
        h.transact(BROADCAST, PING, b"hi"),
        vec![error(BROADCAST, ERR_INVALID_CHANNEL)]
    );
    assert_eq!(
        h.transact(BROADCAST, CBOR, &[4]),
        vec![error(BROADCAST, ERR_INVALID_CHANNEL)]
    );
    assert_eq!(
        h.transact(0, PING, b"hi"),
        vec![error(0, ERR_INVALID_CHANNEL)]
    );
    assert_eq!(
        h.transact(0, INIT, &[0; 8]),
        vec![error(0, ERR_INVALID_CHANNEL)]
    );
    let cid = h.open_channel();
    let never = cid + 1000;
    assert_eq!(
        h.transact(never, PING, b"hi"),
        vec![error(never, ERR_INVALID_CHANNEL)]
    );
    assert_eq!(
        h.transact(never, INIT, &[0; 8]),
        vec![error(never, ERR_INVALID_CHANNEL)]
    );
    // CANCEL never gets a response, whatever its CID (§11.2.9.1.5).
    for cid in [0, BROADCAST, never] {
        assert!(h.transact(cid, CANCEL, &[]).is_empty());
    }
    assert!(h.app.calls.is_empty());
}

/// The reference suite's `test_check_busy` (SoloKeys fido2-tests): while a transaction is in
/// progress, a request from a CID that was never allocated gets ERR_CHANNEL_BUSY, not
/// ERR_INVALID_CHANNEL. §11.2.5.1: a request "from a different channel while the device is busy
/// with a transaction ... will immediately fail with a busy-error message sent to the
/// requesting channel"; nothing there depends on allocation, and solo1, usbd-ctaphid and
/// pico-fido answer so. Once idle, the same CID is ERR_INVALID_CHANNEL again; CID 0 and the
/// broadcast CID are never channels (§11.2.3), busy or not.
#[test]
fn a_never_allocated_cid_is_busy_while_a_transaction_is_in_progress() {
    let mut h = Harness::with_app(FakeApp::waiting(1000));
    let a = h.open_channel();
    let never = 0x1122_3344;
    // A's PING of 1024 bytes, of which only the first packet comes: A is receiving.
    h.send_packet(&init_packet(a, PING, 1024, &[0x44; 57]));
    assert_eq!(
        h.transact(never, PING, &[0; 4]),
        vec![error(never, ERR_CHANNEL_BUSY)]
    );
    assert_eq!(
        h.transact(0, PING, b"x"),
        vec![error(0, ERR_INVALID_CHANNEL)]
    );
    assert_eq!(
        h.transact(BROADCAST, PING, b"x"),
        vec![error(BROADCAST, ERR_INVALID_CHANNEL)]
    );
    // A's message was not disturbed: it times out as its own (the suite's last step).
    let log = h.run_for(600);
    assert_eq!(
        log.iter().map(|(_, m)| m).collect::<Vec<_>>(),
        vec![&error(a, ERR_MSG_TIMEOUT)]
    );

    // The same while a request is processed (waiting for a touch).
    h.send(a, CBOR, &[1]);
    assert_eq!(h.responses(), vec![msg(a, KEEPALIVE, &[2])]);
    assert_eq!(
        h.transact(never, CBOR, &[4]),
        vec![error(never, ERR_CHANNEL_BUSY)]
    );
    assert!(h.transact(never, CANCEL, &[]).is_empty(), "not its request");
    assert_eq!(h.app.cancels, 0);
    assert_eq!(
        h.transact(a, CANCEL, &[]),
        vec![msg(a, CBOR, &[KEEPALIVE_CANCEL])]
    );

    // Idle again: a CID nobody was given is not a channel.
    assert_eq!(
        h.transact(never, PING, b"x"),
        vec![error(never, ERR_INVALID_CHANNEL)]
    );
    assert_eq!(
        h.app.calls.len(),
        2,
        "only A's CBOR request reached the app"
    );
}

/// The reference suite's `test_ping_abort_from_different_cid` and `test_check_busy_interleaved`
/// send INIT on CIDs they made up and expect an answer, as from solo1, usbd-ctaphid and
/// pico-fido, which track no allocations. We answer INIT only on the broadcast CID and on
/// allocated CIDs, which is all §11.2.9.1.3 defines: the device allocates "a unique 32-bit
/// channel identifier", and taking a host's own pick would let the allocator later hand the
/// same ID to another application (OpenSK refuses too). With an allocated CID the suite's
/// scenario works: INIT on another channel is answered while A receives, and A is undisturbed.
#[test]
fn init_on_a_made_up_cid_is_refused_but_an_allocated_one_resyncs_while_another_is_busy() {
    let mut h = Harness::new();
    let a = h.open_channel();
    let b = h.open_channel();
    let payload: Vec<u8> = (0..200).map(|i| i as u8).collect();
    let packets = frame(a, PING, &payload);
    h.send_packet(&packets[0]);
    h.send_packet(&packets[1]);
    let made_up = 0x1122_3344;
    assert_eq!(
        h.transact(made_up, INIT, &[0x11; 8]),
        vec![error(made_up, ERR_INVALID_CHANNEL)]
    );
    let answer = h.transact(b, INIT, &[0x22; 8]);
    assert_eq!(answer.len(), 1);
    assert_eq!((answer[0].cid, answer[0].cmd), (b, INIT));
    assert_eq!(&answer[0].data[..8], &[0x22; 8]);
    assert_eq!(&answer[0].data[8..12], &b.to_be_bytes());
    for p in &packets[2..] {
        h.send_packet(p);
    }
    assert_eq!(h.responses(), vec![msg(a, PING, &payload)]);
    // A made-up CID is still no channel afterwards.
    assert_eq!(
        h.transact(made_up, PING, b"x"),
        vec![error(made_up, ERR_INVALID_CHANNEL)]
    );
}

// ---------------------------------------------------------------------------------------------
// PING, MSG, CBOR, WINK, unknown commands

#[test]
fn ping_echoes_small_and_maximal_messages() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    assert_eq!(
        h.transact(cid, PING, b"hello"),
        vec![msg(cid, PING, b"hello")]
    );
    assert_eq!(h.transact(cid, PING, &[]), vec![msg(cid, PING, &[])]);

    let big: Vec<u8> = (0..MAX_MESSAGE_SIZE)
        .map(|i| (i * 7 + i / 256) as u8)
        .collect();
    h.send(cid, PING, &big);
    let packets = h.drain_packets();
    assert_eq!(
        packets.len(),
        129,
        "57 + 128 * 59 bytes: one INIT and 128 CONT packets"
    );
    assert_eq!(packets[128][4], 127);
    assert_eq!(reassemble(&packets), vec![msg(cid, PING, &big)]);
    assert!(!h.hid.is_busy());
}

#[test]
fn message_one_byte_too_long_is_invalid_len() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    let too_big = vec![0xAB; MAX_MESSAGE_SIZE + 1];
    let packets = frame(cid, CBOR, &too_big);
    h.send_packet(&packets[0]);
    assert_eq!(h.responses(), vec![error(cid, ERR_INVALID_LEN)]);
    // The rest of the message is spurious continuation: ignored, nothing buffered. (Its last
    // byte would need CONT seq 128, which on the wire reads as an INIT packet: the reason for
    // the limit. That packet is left out.)
    assert_eq!(packets.len(), 130);
    for p in &packets[1..129] {
        h.send_packet(p);
    }
    assert!(h.responses().is_empty());
    assert!(!h.hid.is_busy());
    assert_eq!(h.hid.next_deadline(), None);
    assert!(h.app.calls.is_empty());
}

#[test]
fn msg_and_cbor_go_to_the_app() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    let apdu = [0x00, 0x03, 0x00, 0x00, 0x00];
    assert_eq!(h.transact(cid, MSG, &apdu), vec![msg(cid, MSG, &apdu)]);
    let cbor: Vec<u8> = (0..1000).map(|i| i as u8).collect();
    assert_eq!(h.transact(cid, CBOR, &cbor), vec![msg(cid, CBOR, &cbor)]);
    assert_eq!(
        h.app.calls,
        vec![(Transaction::Msg, apdu.to_vec()), (Transaction::Cbor, cbor)]
    );
}

#[test]
fn maximal_app_response_is_fragmented_and_oversized_one_is_err_other() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    h.app.response_len = Some(MAX_MESSAGE_SIZE);
    let answer = h.transact(cid, CBOR, &[4]);
    assert_eq!(answer, vec![msg(cid, CBOR, &[0x5A; MAX_MESSAGE_SIZE])]);
    h.app.response_len = Some(MAX_MESSAGE_SIZE + 1);
    assert_eq!(h.transact(cid, CBOR, &[4]), vec![error(cid, ERR_OTHER)]);
}

#[test]
fn empty_cbor_is_invalid_len() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    assert_eq!(
        h.transact(cid, CBOR, &[]),
        vec![error(cid, ERR_INVALID_LEN)]
    );
    assert!(h.app.calls.is_empty());
}

#[test]
fn wink_calls_the_app_and_answers_empty() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    assert_eq!(h.transact(cid, WINK, &[]), vec![msg(cid, WINK, &[])]);
    assert_eq!(h.app.winks, 1);
}

#[test]
fn unknown_commands_are_invalid_cmd() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    for cmd in [0x80, 0x85, 0x87, 0xC1, KEEPALIVE, ERROR, 0xFF] {
        assert_eq!(
            h.transact(cid, cmd, &[1, 2, 3]),
            vec![error(cid, ERR_INVALID_CMD)],
            "cmd {cmd:#x}"
        );
    }
    // Refused on its first packet, so the rest of a long one is never buffered.
    assert_eq!(
        h.transact(cid, 0xC0, &[0; 500]),
        vec![error(cid, ERR_INVALID_CMD)]
    );
    assert!(!h.hid.is_busy());
}

// ---------------------------------------------------------------------------------------------
// Reassembly errors and timeouts

#[test]
fn wrong_sequence_number_abandons_the_message() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    let packets = frame(cid, PING, &[0x11; 200]); // INIT + 3 CONT
    h.send_packet(&packets[0]);
    h.send_packet(&packets[2]); // seq 1 where 0 was expected
    assert_eq!(h.responses(), vec![error(cid, ERR_INVALID_SEQ)]);
    // The rest of the broken message is now spurious.
    h.send_packet(&packets[1]);
    h.send_packet(&packets[3]);
    assert!(h.responses().is_empty());
    assert!(!h.hid.is_busy());
    // The channel still works.
    assert_eq!(
        h.transact(cid, PING, &[0x22; 200]),
        vec![msg(cid, PING, &[0x22; 200])]
    );
    // A repeated packet (seq 0 again where 1 is expected) is wrong too.
    h.send_packet(&packets[0]);
    h.send_packet(&packets[1]);
    h.send_packet(&packets[1]);
    assert_eq!(h.responses(), vec![error(cid, ERR_INVALID_SEQ)]);
    assert!(!h.hid.is_busy());
}

#[test]
fn new_request_on_same_channel_during_reassembly_is_invalid_seq() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    let packets = frame(cid, PING, &[0x11; 200]);
    h.send_packet(&packets[0]);
    assert_eq!(
        h.transact(cid, PING, b"x"),
        vec![error(cid, ERR_INVALID_SEQ)]
    );
    assert!(!h.hid.is_busy());
}

#[test]
fn spurious_continuation_packets_are_ignored() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    for seq in [0, 1, 127] {
        h.send_packet(&cont_packet(cid, seq, b"junk"));
    }
    h.send_packet(&cont_packet(0, 0, b"junk"));
    h.send_packet(&cont_packet(BROADCAST, 0, b"junk"));
    assert!(h.responses().is_empty());
    assert!(!h.hid.is_busy());
}

#[test]
fn stalled_message_times_out() {
    let mut h = Harness::new();
    let cid = h.open_channel();
    let packets = frame(cid, CBOR, &[0x33; 300]);
    let start = h.now;
    h.send_packet(&packets[0]);
    assert_eq!(h.hid.next_deadline(), Some(start + 500));
    // Each packet restarts the clock.
    assert!(h.run_for(300).is_empty());
    h.send_packet(&packets[1]);
    assert_eq!(h.hid.next_deadline(), Some(start + 800));
    assert!(h.run_for(499).is_empty());
    let timed_out = h.run_for(1);
    assert_eq!(timed_out, vec![(start + 800, error(cid, ERR_MSG_TIMEOUT))]);
    assert_eq!(h.hid.next_deadline(), None);
    assert!(!h.hid.is_busy());
    // Late packets of the abandoned message are ignored.
    h.send_packet(&packets[2]);
    assert!(h.responses().is_empty());
    assert!(h.app.calls.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Busy channels, re-INIT, LOCK

#[test]
fn other_channel_is_busy_during_reassembly() {
    let mut h = Harness::new();
    let a = h.open_channel();
    let b = h.open_channel();
    let payload: Vec<u8> = (0..300).map(|i| i as u8).collect();
    let packets = frame(a, PING, &payload);
    h.send_packet(&packets[0]);
    h.send_packet(&packets[1]);
    assert_eq!(
        h.transact(b, PING, b"me too"),
        vec![error(b, ERR_CHANNEL_BUSY)]
    );
    h.send_packet(&cont_packet(b, 2, &[0xEE; 59]));
    assert_eq!(h.responses(), vec![error(b, ERR_CHANNEL_BUSY)]);
    // A new host can still get a channel, and A's message is intact.
    let c = h.open_channel();
    assert!(c != a && c != b);
    for p in &packets[2..] {
        h.send_packet(p);
    }
    assert_eq!(h.responses(), vec![msg(a, PING, &payload)]);
}

#[test]
fn requests_are_busy_while_one_is_processed() {
    let mut h = Harness::with_app(FakeApp::waiting(1000));
    let a = h.open_channel();
    let b = h.open_channel();
    h.send(a, CBOR, &[1, 2]);
    assert_eq!(h.responses(), vec![msg(a, KEEPALIVE, &[2])]);
    assert!(h.hid.is_busy());
    assert_eq!(h.transact(b, PING, b"x"), vec![error(b, ERR_CHANNEL_BUSY)]);
    assert_eq!(h.transact(a, PING, b"x"), vec![error(a, ERR_CHANNEL_BUSY)]);
    assert_eq!(h.transact(a, CBOR, &[4]), vec![error(a, ERR_CHANNEL_BUSY)]);
    // Arbitration before channel checks (CTAP 2.1 §11.2.5, and SoloKeys' fido2-tests): any other
    // CID that tries to use the busy device is told it is busy, allocated or not. The
    // reserved CIDs stay invalid.
    let never = b + 1000;
    assert_eq!(
        h.transact(never, PING, b"x"),
        vec![error(never, ERR_CHANNEL_BUSY)]
    );
    assert_eq!(
        h.transact(0, PING, b"x"),
        vec![error(0, ERR_INVALID_CHANNEL)]
    );
    // INIT is always answered, and a broadcast INIT doesn't disturb channel A.
    let c = h.open_channel();
    assert!(c != a && c != b);
    // CANCEL from another channel is not A's: ignored, silently.
    assert!(h.transact(b, CANCEL, &[]).is_empty());
    assert_eq!(h.app.cancels, 0);
    assert!(h.hid.is_busy());
    assert_eq!(h.app.calls.len(), 1);
}

#[test]
fn reinit_of_a_waiting_channel_aborts_the_request() {
    let mut h = Harness::with_app(FakeApp::waiting(1000));
    let a = h.open_channel();
    h.send(a, CBOR, &[1]);
    h.run_for(200);
    assert!(h.hid.is_busy());
    let answer = h.transact(a, INIT, &[5; 8]);
    assert_eq!(answer.len(), 1);
    assert_eq!(&answer[0].data[8..12], &a.to_be_bytes());
    assert_eq!(h.app.aborts, 1);
    assert!(!h.hid.is_busy());
    assert_eq!(h.hid.next_deadline(), None);
    assert!(
        h.run_for(300).is_empty(),
        "no keepalives for an abandoned request"
    );
    assert_eq!(h.transact(a, PING, b"again"), vec![msg(a, PING, b"again")]);
}

#[test]
fn reinit_of_a_receiving_channel_drops_the_partial_message() {
    let mut h = Harness::new();
    let a = h.open_channel();
    let packets = frame(a, CBOR, &[9; 100]);
    h.send_packet(&packets[0]);
    assert_eq!(h.transact(a, INIT, &[5; 8]).len(), 1);
    assert_eq!(h.app.aborts, 0, "the app never saw that request");
    h.send_packet(&packets[1]);
    assert!(h.responses().is_empty());
    assert!(!h.hid.is_busy());
    assert!(h.app.calls.is_empty());
}

#[test]
fn lock_reserves_the_device_for_one_channel() {
    let mut h = Harness::new();
    let a = h.open_channel();
    let b = h.open_channel();
    assert_eq!(h.transact(a, LOCK, &[2]), vec![msg(a, LOCK, &[])]);
    assert_eq!(h.transact(b, PING, b"x"), vec![error(b, ERR_CHANNEL_BUSY)]);
    assert_eq!(h.transact(b, LOCK, &[1]), vec![error(b, ERR_CHANNEL_BUSY)]);
    assert_eq!(h.transact(a, PING, b"x"), vec![msg(a, PING, b"x")]);
    assert_eq!(h.hid.next_deadline(), None, "an idle lock needs no polling");
    h.now += 1999;
    assert_eq!(h.transact(b, PING, b"x"), vec![error(b, ERR_CHANNEL_BUSY)]);
    h.now += 1;
    assert_eq!(
        h.transact(b, PING, b"x"),
        vec![msg(b, PING, b"x")],
        "lock expired"
    );

    assert_eq!(h.transact(a, LOCK, &[10]), vec![msg(a, LOCK, &[])]);
    assert_eq!(h.transact(b, PING, b"x"), vec![error(b, ERR_CHANNEL_BUSY)]);
    assert_eq!(h.transact(a, LOCK, &[0]), vec![msg(a, LOCK, &[])]);
    assert_eq!(
        h.transact(b, PING, b"x"),
        vec![msg(b, PING, b"x")],
        "unlocked"
    );
}

#[test]
fn lock_parameters_are_checked() {
    let mut h = Harness::new();
    let a = h.open_channel();
    let b = h.open_channel();
    assert_eq!(h.transact(a, LOCK, &[11]), vec![error(a, ERR_INVALID_PAR)]);
    assert_eq!(h.transact(a, LOCK, &[]), vec![error(a, ERR_INVALID_LEN)]);
    assert_eq!(
        h.transact(a, LOCK, &[1, 1]),
        vec![error(a, ERR_INVALID_LEN)]
    );
    assert_eq!(
        h.transact(b, PING, b"x"),
        vec![msg(b, PING, b"x")],
        "no lock was taken"
    );
}

// ---------------------------------------------------------------------------------------------
// Waiting requests: KEEPALIVE and CANCEL

/// Times of the KEEPALIVEs in `log`, checking they are all on `cid` with `status`.
fn keepalive_times(log: &[(u64, Message)], cid: u32, status: u8) -> Vec<u64> {
    log.iter()
        .filter(|(_, m)| m.cmd == KEEPALIVE)
        .map(|(t, m)| {
            assert_eq!((m.cid, m.data.as_slice()), (cid, &[status][..]));
            *t
        })
        .collect()
}

#[test]
fn wake_has_the_app_asked_at_the_next_poll() {
    let mut h = Harness::with_app(FakeApp::waiting(1));
    let a = h.open_channel();
    h.send(a, CBOR, &[1, 0xA0]);
    assert_eq!(h.responses(), vec![msg(a, KEEPALIVE, &[2])]);
    assert!(
        h.hid.next_deadline().unwrap() > h.now,
        "next call not due yet"
    );
    h.hid.wake();
    assert_eq!(h.hid.next_deadline(), Some(0), "due at once");
    h.hid.poll(h.now, &mut h.app);
    assert_eq!(h.responses(), vec![msg(a, CBOR, &[1, 0xA0])]);
    assert_eq!(h.hid.next_deadline(), None);
    h.hid.wake(); // nothing waiting: no effect
    assert_eq!(h.hid.next_deadline(), None);
}

#[test]
fn keepalives_flow_every_50ms_while_the_app_waits() {
    let mut h = Harness::with_app(FakeApp::waiting(100));
    let a = h.open_channel();
    let start = h.now;
    h.send(a, CBOR, &[1, 0xA0]);
    let mut log: Vec<(u64, Message)> = h.responses().into_iter().map(|m| (start, m)).collect();
    assert_eq!(
        log,
        vec![(start, msg(a, KEEPALIVE, &[2]))],
        "a keepalive at once"
    );
    let deadline = h
        .hid
        .next_deadline()
        .expect("a waiting request needs polling");
    assert!(
        deadline <= start + 20,
        "the app is asked again within 20 ms"
    );

    log.extend(h.run_for(3000));
    let done: Vec<_> = log.iter().filter(|(_, m)| m.cmd == CBOR).collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1, msg(a, CBOR, &[1, 0xA0]));
    let end = done[0].0;

    let mut times = keepalive_times(&log, a, 2);
    times.push(end);
    assert!(times.len() > 10);
    for pair in times.windows(2) {
        // The spec asks for ≤ 100 ms; the key keeps to half of it (Windows' webauthn.dll).
        assert!(
            pair[1] - pair[0] <= 50,
            "keepalive gap {} ms",
            pair[1] - pair[0]
        );
    }
    // 100 waits plus the final call, all with the same request.
    assert_eq!(h.app.calls.len(), 101);
    assert!(h
        .app
        .calls
        .iter()
        .all(|c| *c == (Transaction::Cbor, vec![1, 0xA0])));
    assert!(!h.hid.is_busy());
    assert_eq!(h.hid.next_deadline(), None);
}

#[test]
fn keepalive_cadence_holds_with_sparse_polls() {
    // A runner that polls only exactly at next_deadline still keeps to the 50 ms.
    let mut h = Harness::with_app(FakeApp::waiting(40));
    let a = h.open_channel();
    h.send(a, CBOR, &[1]);
    let mut times = vec![h.now];
    assert_eq!(h.responses().len(), 1);
    while let Some(d) = h.hid.next_deadline() {
        assert!(d >= h.now);
        h.now = d;
        h.hid.poll(h.now, &mut h.app);
        for m in h.responses() {
            times.push(h.now);
            assert!(m.cmd == KEEPALIVE || m == msg(a, CBOR, &[1]));
        }
    }
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] <= 50, "gap {} ms", pair[1] - pair[0]);
    }
}

/// The real authenticator behind CTAPHID, waiting for a touch that comes after 3 s, on a
/// scripted clock stepped 1 ms at a time with a poll whenever `next_deadline` is due (as the
/// runners do): a KEEPALIVE(UPNEEDED) at once, then one every 50 ms, neither later (the bound)
/// nor much earlier (a flood would cost the host for nothing), then the response.
#[test]
fn keepalive_gaps_while_the_authenticator_waits_for_a_touch() {
    use authenticator::platform::PresenceAnswer;
    let mut storage = test_support::RamStorage::default();
    let knobs = test_support::Knobs::default();
    test_support::with_key(&mut storage, &knobs, 21, |key| {
        let mut hid = Ctaphid::new(VERSION);
        let mut now = 1_000;
        knobs.now_ms.set(now);
        let drain = |hid: &mut Ctaphid| {
            let packets: Vec<Packet> = std::iter::from_fn(|| hid.pop_packet()).collect();
            reassemble(&packets)
        };
        hid.handle_packet(&init_packet(BROADCAST, INIT, 8, &[3; 8]), now, key);
        let cid = u32::from_be_bytes(drain(&mut hid)[0].data[8..12].try_into().unwrap());

        knobs.presence.set(PresenceAnswer::Pending);
        let mut request = vec![0x01]; // authenticatorMakeCredential
        ciborium::into_writer(
            &test_support::make_credential_request("example.com", b"u", &[-7], false),
            &mut request,
        )
        .unwrap();
        for p in frame(cid, CBOR, &request) {
            hid.handle_packet(&p, now, key);
        }
        let start = now;
        let mut log: Vec<(u64, Message)> = drain(&mut hid).into_iter().map(|m| (now, m)).collect();
        assert_eq!(log, vec![(start, msg(cid, KEEPALIVE, &[2]))], "at once");
        while !log.iter().any(|(_, m)| m.cmd == CBOR) {
            now += 1;
            assert!(now < start + 10_000, "no answer");
            knobs.now_ms.set(now);
            if now == start + 3_000 {
                knobs.presence.set(PresenceAnswer::Granted);
            }
            if hid.next_deadline().is_some_and(|d| d <= now) {
                hid.poll(now, key);
            }
            log.extend(drain(&mut hid).into_iter().map(|m| (now, m)));
        }
        let (end, answer) = log.pop().unwrap();
        assert_eq!((answer.cmd, answer.data[0]), (CBOR, 0), "registered");
        assert!(
            end - start >= 3_000 && end - start <= 3_020,
            "answered {} ms in",
            end - start
        );
        let keepalives = keepalive_times(&log, cid, 2);
        let gaps: Vec<u64> = keepalives.windows(2).map(|w| w[1] - w[0]).collect();
        let (min, max) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
        println!(
            "keepalive gaps while waiting for a touch: {min}..={max} ms, {} keepalives",
            keepalives.len()
        );
        assert!(*max <= KEEPALIVE_GAP_MS, "a gap of {max} ms");
        let last = end - keepalives.last().unwrap();
        assert!(
            last <= KEEPALIVE_GAP_MS,
            "{last} ms from the last keepalive to the answer"
        );
        assert!(*min >= 40, "a flood: {gaps:?}");
        assert!(
            keepalives.len() >= 60,
            "{} keepalives in 3 s",
            keepalives.len()
        );
    });
}

#[test]
fn keepalive_status_change_is_sent_at_once() {
    let mut h = Harness::with_app(FakeApp::waiting(1000));
    h.app.status = Some(KeepaliveStatus::Processing);
    let a = h.open_channel();
    h.send(a, CBOR, &[1]);
    assert_eq!(h.responses(), vec![msg(a, KEEPALIVE, &[1])]);
    h.run_for(30);
    h.app.status = Some(KeepaliveStatus::UpNeeded);
    let log = h.run_for(25);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].1, msg(a, KEEPALIVE, &[2]));
}

#[test]
fn waiting_msg_is_kept_alive_too() {
    let mut h = Harness::with_app(FakeApp::waiting(10));
    let a = h.open_channel();
    h.send(a, MSG, &[0, 2, 3, 0, 0]);
    assert_eq!(h.responses(), vec![msg(a, KEEPALIVE, &[2])]);
    let log = h.run_for(1000);
    assert_eq!(log.last().unwrap().1, msg(a, MSG, &[0, 2, 3, 0, 0]));
}

#[test]
fn cancel_completes_the_waiting_request_at_once() {
    let mut h = Harness::with_app(FakeApp::waiting(1000));
    let a = h.open_channel();
    h.send(a, CBOR, &[1]);
    h.run_for(150);
    assert!(h.hid.is_busy());
    let answer = h.transact(a, CANCEL, &[]);
    assert_eq!(h.app.cancels, 1);
    assert_eq!(
        answer,
        vec![msg(a, CBOR, &[KEEPALIVE_CANCEL])],
        "only the request's own answer"
    );
    assert!(!h.hid.is_busy());
    assert_eq!(h.hid.next_deadline(), None);
}

#[test]
fn cancel_with_nothing_pending_is_ignored() {
    let mut h = Harness::new();
    let a = h.open_channel();
    assert!(h.transact(a, CANCEL, &[]).is_empty());
    assert_eq!(h.transact(a, PING, b"done"), vec![msg(a, PING, b"done")]);
    assert!(h.transact(a, CANCEL, &[]).is_empty());
    assert_eq!(h.app.cancels, 0);
}

#[test]
fn cancel_during_reassembly_drops_the_partial_message() {
    let mut h = Harness::new();
    let a = h.open_channel();
    let packets = frame(a, CBOR, &[1; 100]);
    h.send_packet(&packets[0]);
    assert!(h.transact(a, CANCEL, &[]).is_empty());
    assert!(!h.hid.is_busy());
    assert_eq!(h.transact(a, PING, b"ok"), vec![msg(a, PING, b"ok")]);
}

// ---------------------------------------------------------------------------------------------
// Robustness

#[test]
fn output_queue_is_bounded_and_never_cuts_a_message() {
    let mut h = Harness::new();
    let a = h.open_channel();
    let big = vec![0x42; MAX_MESSAGE_SIZE];
    for _ in 0..5 {
        h.send(a, PING, &big); // a host that never reads its answers
    }
    for _ in 0..50 {
        h.send(a, PING, b"small");
    }
    let packets = h.drain_packets();
    assert!(
        packets.len() <= QUEUE_BOUND,
        "{} packets queued",
        packets.len()
    );
    let messages = reassemble(&packets);
    assert_eq!(messages[0], msg(a, PING, &big));
    assert!(messages[1..].iter().all(|m| *m == msg(a, PING, b"small")));
}

/// xorshift64*: a small deterministic generator, enough to shake the state machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A packet that is often almost right: a plausible channel, a real command, a small length
/// or a sequence number near the expected one; and sometimes pure noise.
fn random_packet(rng: &mut Rng, cids: &[u32]) -> Packet {
    let mut p = [0u8; PACKET_SIZE];
    for b in p.iter_mut() {
        *b = rng.next() as u8;
    }
    if rng.below(8) == 0 {
        return p;
    }
    let cid = match rng.below(10) {
        0 => 0,
        1 => BROADCAST,
        2 => rng.next() as u32,
        _ if cids.is_empty() => BROADCAST,
        _ => rng.pick(cids),
    };
    p[..4].copy_from_slice(&cid.to_be_bytes());
    if rng.below(2) == 0 {
        let vendor = 0x80 | rng.next() as u8;
        p[4] = rng.pick(&[
            PING, MSG, LOCK, INIT, WINK, CBOR, CANCEL, KEEPALIVE, ERROR, vendor,
        ]);
        let len = match rng.below(4) {
            0 => 8,
            1 => rng.below(64),
            2 => rng.below(MAX_MESSAGE_SIZE as u64 + 10),
            _ => rng.next() & 0xFFFF,
        };
        p[5..7].copy_from_slice(&(len as u16).to_be_bytes());
        if p[4] == LOCK {
            // Mostly well-formed, so locks are really taken and refused.
            p[5..7].copy_from_slice(&1u16.to_be_bytes());
            p[7] = rng.below(13) as u8;
        }
    } else {
        p[4] = rng.below(130) as u8;
    }
    p
}

/// Check the framing of `packets` and record which kinds of message they carry.
fn note_kinds(seen: &mut std::collections::BTreeSet<(u8, Option<u8>)>, packets: &[Packet]) {
    for m in reassemble(packets) {
        let code = (m.cmd == ERROR).then(|| m.data[0]);
        seen.insert((m.cmd, code));
    }
}

#[test]
fn never_panics_on_arbitrary_packets() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut h = Harness::new();
    let mut cids: Vec<u32> = Vec::new();
    // What kinds of answer the fuzzer provoked: (command, first byte for errors).
    let mut seen = std::collections::BTreeSet::new();
    for step in 0..200_000u32 {
        match rng.below(20) {
            0 => h.now += rng.below(600),
            1 => h.app.waits = rng.below(30) as usize,
            2 if cids.len() < 8 => {
                note_kinds(&mut seen, &h.drain_packets());
                cids.push(h.open_channel());
            }
            _ => {}
        }
        let packet = random_packet(&mut rng, &cids);
        h.send_packet(&packet);
        if let Some(d) = h.hid.next_deadline() {
            if rng.below(2) == 0 || d <= h.now {
                h.now = h.now.max(d);
                h.hid.poll(h.now, &mut h.app);
            }
        }
        // Drain most of the time; let the queue fill up now and then.
        if rng.below(10) != 0 || step % 1000 == 0 {
            let packets = h.drain_packets();
            assert!(packets.len() <= QUEUE_BOUND);
            note_kinds(&mut seen, &packets);
        }
    }
    // Every answer kind was reached, so the packets exercised the whole machine.
    for cmd in [PING, MSG, LOCK, INIT, WINK, CBOR, KEEPALIVE] {
        assert!(seen.contains(&(cmd, None)), "no {cmd:#x} answer: {seen:?}");
    }
    for code in [
        ERR_INVALID_CMD,
        ERR_INVALID_PAR,
        ERR_INVALID_LEN,
        ERR_INVALID_SEQ,
        ERR_MSG_TIMEOUT,
        ERR_CHANNEL_BUSY,
        ERR_INVALID_CHANNEL,
    ] {
        assert!(
            seen.contains(&(ERROR, Some(code))),
            "no error {code:#x}: {seen:?}"
        );
    }
    // Extreme clock values must not overflow either.
    h.now = u64::MAX - 1;
    for _ in 0..1000 {
        let packet = random_packet(&mut rng, &cids);
        h.send_packet(&packet);
        h.hid.poll(h.now, &mut h.app);
        reassemble(&h.drain_packets());
    }
}
