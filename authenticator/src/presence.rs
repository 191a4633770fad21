//! Waiting for the user without blocking the transport: a touch, or a finger on the built-in
//! user verification method.
//!
//! A command that needs the user asks [`UserWait::check`] (a touch) or [`UserWait::verify`]
//! (built-in UV) each time it runs. The first ask starts the platform's prompt; later asks poll
//! it. The wait belongs to one request (by digest) and one kind of ask: a different request
//! starts a new wait, so one touch never approves two things.

use crate::platform::{Indicator, Platform, PresenceAnswer as Answer, Touch, Verification};

/// How long the user has to touch the key.
pub const TIMEOUT_MS: u64 = 30_000;

/// Why a wait for the user has not ended in approval: it is still pending, or it was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotGranted {
    /// Still waiting: ask again later.
    Pending,
    /// The user (or the runner's policy) said no.
    Denied,
    /// The host cancelled the request.
    Cancelled,
    /// Nobody answered within [`TIMEOUT_MS`].
    TimedOut,
}

/// What a wait asks of the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Touch(Touch),
    /// A finger on the built-in user verification method.
    Verification,
}

struct Wait {
    request: [u8; 32],
    ask: Ask,
    started_ms: u64,
    cancelled: bool,
}

/// The state of the (at most one) wait for the user: a touch or a built-in verification.
#[derive(Default)]
pub struct UserWait {
    wait: Option<Wait>,
}

impl UserWait {
    /// Has the user approved `request` with a `touch`? Starts the wait on the first call for a
    /// request.
    pub fn check<P: Platform>(
        &mut self,
        platform: &mut P,
        request: &[u8; 32],
        touch: Touch,
    ) -> Result<(), NotGranted> {
        match self.ask(platform, request, Ask::Touch(touch))? {
            true => Ok(()),
            false => Err(NotGranted::Denied),
        }
    }

    /// Built-in user verification for `request`: `Ok(true)` when the user was verified,
    /// `Ok(false)` when the attempt failed (no match). Starts the attempt on the first call.
    pub fn verify<P: Platform>(
        &mut self,
        platform: &mut P,
        request: &[u8; 32],
    ) -> Result<bool, NotGranted> {
        self.ask(platform, request, Ask::Verification)
    }

    /// The wait for `ask` of `request`, started if need be: `Ok(yes)` once the user answered.
    fn ask<P: Platform>(
        &mut self,
        platform: &mut P,
        request: &[u8; 32],
        ask: Ask,
    ) -> Result<bool, NotGranted> {
        let now = platform.now_ms();
        if self
            .wait
            .as_ref()
            .is_some_and(|w| &w.request != request || w.ask != ask)
        {
            self.end(platform);
        }
        let wait = match &mut self.wait {
            Some(wait) => wait,
            None => {
                match ask {
                    Ask::Touch(touch) => platform.start_presence(touch),
                    Ask::Verification => platform.start_uv(),
                }
                platform.indicate(Indicator::WaitingForPresence);
                self.wait.insert(Wait {
                    request: *request,
                    ask,
                    started_ms: now,
                    cancelled: false,
                })
            }
        };
        let refusal = if wait.cancelled {
            NotGranted::Cancelled
        } else if now.saturating_sub(wait.started_ms) >= TIMEOUT_MS {
            NotGranted::TimedOut
        } else {
            let answer = match ask {
                Ask::Touch(_) => match platform.poll_presence() {
                    Answer::Pending => None,
                    Answer::Granted => Some(Ok(true)),
                    Answer::Denied => Some(Ok(false)),
                    Answer::TimedOut => Some(Err(NotGranted::TimedOut)),
                },
                Ask::Verification => match platform.poll_uv() {
                    Verification::Pending => None,
                    Verification::Verified => Some(Ok(true)),
                    Verification::Failed => Some(Ok(false)),
                    Verification::TimedOut => Some(Err(NotGranted::TimedOut)),
                },
            };
            match answer {
                None => return Err(NotGranted::Pending),
                Some(Ok(yes)) => {
                    self.end(platform);
                    return Ok(yes);
                }
                Some(Err(refusal)) => refusal,
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
        if let Some(wait) = self.wait.take() {
            match wait.ask {
                Ask::Touch(_) => platform.stop_presence(),
                Ask::Verification => platform.stop_uv(),
            }
            platform.indicate(Indicator::Idle);
        }
    }
}
