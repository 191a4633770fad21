//! How USB stays responsive while the authenticator computes.
//!
//! Design: two contexts share one mailbox.
//! - The USB interrupt (and the timer alarm that wakes it at CTAPHID deadlines) owns the USB
//!   device and the `Ctaphid` state machine. Its `App` is [`Proxy`], which never computes: it
//!   posts a request to the mailbox and answers `Waiting`, so CTAPHID keeps sending KEEPALIVEs,
//!   answers INIT/PING/CANCEL and serves control requests at once.
//! - The main loop owns the real `Authenticator`. It takes posted requests, runs them (a P-256
//!   multiplication takes 70 to 290 ms), and leaves the response in the mailbox with a flag,
//!   then pends the USB interrupt, which sees the flag and has CTAPHID collect it at once
//!   (`Ctaphid::wake`) rather than at its next 20 ms look.
//!
//! The mailbox sits in a `critical_section::Mutex`, so each side sees it whole. The interrupt
//! handlers share one priority and never preempt each other; the main loop is preempted only
//! outside its short critical sections.

use alloc::vec::Vec;
use authenticator::ctaphid::{App, KeepaliveStatus, Outcome, Transaction};
use core::cell::RefCell;
use critical_section::Mutex;

/// A request handed to the main loop: its number, kind and bytes.
pub type Job = (u32, Transaction, Vec<u8>);

/// What passes between the USB interrupt and the main loop.
pub struct Mailbox {
    /// A request the main loop has not picked up yet.
    request: Option<Job>,
    /// The number of the live request (0: none). A result for any other number is stale.
    current: u32,
    /// The last number handed out.
    last: u32,
    /// What KEEPALIVEs report while the main loop works.
    status: KeepaliveStatus,
    /// A finished response for `current`, waiting for CTAPHID to collect it.
    response: Option<Vec<u8>>,
    /// CTAPHID_CANCEL arrived for this request number.
    cancel: u32,
    /// CTAPHID_WINK arrived.
    wink: bool,
    /// The main loop finished a call whose result CTAPHID should collect now (an answer, or a
    /// new keepalive status) rather than at its next 20 ms look.
    news: bool,
}

pub static MAILBOX: Mutex<RefCell<Mailbox>> = Mutex::new(RefCell::new(Mailbox {
    request: None,
    current: 0,
    last: 0,
    status: KeepaliveStatus::Processing,
    response: None,
    cancel: 0,
    wink: false,
    news: false,
}));

/// What the main loop learns from one look at the mailbox.
pub struct Events {
    /// A new request to run.
    pub new: Option<Job>,
    /// The live request's number (0: none); a job with another number was abandoned.
    pub live: u32,
    /// The host cancelled request number `cancel` (0: none).
    pub cancel: u32,
    pub wink: bool,
}

impl Mailbox {
    /// Take what the USB side has posted since the last look.
    pub fn take_events(&mut self) -> Events {
        Events {
            new: self.request.take(),
            live: self.current,
            cancel: core::mem::take(&mut self.cancel),
            wink: core::mem::take(&mut self.wink),
        }
    }

    /// Nothing posted for the main loop to look at.
    pub fn idle(&self) -> bool {
        self.request.is_none() && self.cancel == 0 && !self.wink
    }

    /// Whether the main loop left news for CTAPHID since the last look.
    pub fn take_news(&mut self) -> bool {
        core::mem::take(&mut self.news)
    }

    /// The main loop finished a call of request `id`. Returns whether the request is over
    /// (answered, or abandoned meanwhile).
    pub fn finish(&mut self, id: u32, outcome: Outcome, response: Vec<u8>) -> bool {
        if id != self.current {
            return true;
        }
        match outcome {
            Outcome::Done => {
                self.response = Some(response);
                self.news = true;
                true
            }
            Outcome::Waiting(status) => {
                self.news |= status != self.status;
                self.status = status;
                false
            }
        }
    }
}

/// The CTAPHID-side stand-in for the authenticator (runs in the USB interrupt).
pub struct Proxy;

impl App for Proxy {
    fn call(
        &mut self,
        transaction: Transaction,
        request: &[u8],
        response: &mut Vec<u8>,
    ) -> Outcome {
        critical_section::with(|cs| {
            let mut mailbox = MAILBOX.borrow_ref_mut(cs);
            if let Some(done) = mailbox.response.take() {
                mailbox.current = 0;
                *response = done;
                return Outcome::Done;
            }
            if mailbox.current == 0 {
                // A new request (CTAPHID runs one at a time): number it and hand it over.
                mailbox.last = mailbox.last.wrapping_add(1).max(1);
                let id = mailbox.last;
                mailbox.current = id;
                mailbox.status = KeepaliveStatus::Processing;
                let Ok(request) = authenticator::fallible::copy(request) else {
                    // No heap for the request: an empty answer, which CTAPHID turns into
                    // ERR_OTHER.
                    mailbox.current = 0;
                    return Outcome::Done;
                };
                mailbox.request = Some((id, transaction, request));
            }
            Outcome::Waiting(mailbox.status)
        })
    }

    fn cancel(&mut self) {
        critical_section::with(|cs| {
            let mut mailbox = MAILBOX.borrow_ref_mut(cs);
            mailbox.cancel = mailbox.current;
        });
    }

    fn abort(&mut self) {
        critical_section::with(|cs| {
            let mut mailbox = MAILBOX.borrow_ref_mut(cs);
            mailbox.current = 0;
            mailbox.request = None;
            mailbox.response = None;
        });
    }

    fn wink(&mut self) {
        critical_section::with(|cs| MAILBOX.borrow_ref_mut(cs).wink = true);
    }

    /// The Pico is always the full key (profiles are the virtual key's).
    fn speaks_cbor(&self) -> bool {
        true
    }
}
