//! Waiting for the user's touch without blocking the transport.
//!
//! A command that needs presence asks [`Presence::check`] each time it runs. The first ask starts
//! the platform's prompt; later asks poll it. The wait belongs to one request (by digest): a
//! different request starts a new wait, so one touch never approves two things.

use crate::platform::{Indicator, Platform, Presence as Answer, Touch};

/// How long the user has to touch the key.
pub const TIMEOUT_MS: u64 = 30_000;

/// Why a presence check did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Still waiting: ask again later.
    Pending,
    /// The user (or the runner's policy) said no.
    Denied,
    /// The host cancelled the request.
    Cancelled,
    /// Nobody answered within [`TIMEOUT_MS`].
    TimedOut,
}

struct Wait {
    request: [u8; 32],
    started_ms: u64,
    cancelled: bool,
}

/// The state of the (at most one) presence wait.
#[derive(Default)]
pub struct Presence {
    wait: Option<Wait>,
}

impl Presence {
    /// Has the user approved `request` with a `touch`? Starts the wait on the first call for a
    /// request.
    pub fn check<P: Platform>(
        &mut self,
        platform: &mut P,
        request: &[u8; 32],
        touch: Touch,
    ) -> Result<(), Refusal> {
        let now = platform.now_ms();
        if self.wait.as_ref().is_some_and(|w| &w.request != request) {
            self.end(platform);
        }
        let wait = match &mut self.wait {
            Some(wait) => wait,
            None => {
                platform.start_presence(touch);
                platform.indicate(Indicator::WaitingForPresence);
                self.wait.insert(Wait {
                    request: *request,
                    started_ms: now,
                    cancelled: false,
                })
            }
        };
        let refusal = if wait.cancelled {
            Refusal::Cancelled
        } else if now.saturating_sub(wait.started_ms) >= TIMEOUT_MS {
            Refusal::TimedOut
        } else {
            match platform.poll_presence() {
                Answer::Pending => return Err(Refusal::Pending),
                Answer::Granted => {
                    self.end(platform);
                    return Ok(());
                }
                Answer::Denied => Refusal::Denied,
                Answer::TimedOut => Refusal::TimedOut,
            }
        };
        self.end(platform);
        Err(refusal)
    }

    /// When the wait for `request` began, if one is under way.
    pub fn started_ms(&self, request: &[u8; 32]) -> Option<u64> {
        self.wait
            .as_ref()
            .filter(|w| &w.request == request)
            .map(|w| w.started_ms)
    }

    /// CTAPHID CANCEL: the waiting request ends with a cancellation at its next check.
    pub fn cancel(&mut self) {
        if let Some(wait) = &mut self.wait {
            wait.cancelled = true;
        }
    }

    /// Stop waiting (the request was abandoned or answered).
    pub fn end<P: Platform>(&mut self, platform: &mut P) {
        if self.wait.take().is_some() {
            platform.stop_presence();
            platform.indicate(Indicator::Idle);
        }
    }
}
