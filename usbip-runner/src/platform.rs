//! The virtual key's body: OS randomness, a monotonic clock, presence by policy or by prompt.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use authenticator::platform::{Indicator, Platform, Presence};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::control::Control;

/// How a touch request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PresenceMode {
    /// Approve at once (CI).
    Auto,
    /// Refuse at once.
    Deny,
    /// Ask on the terminal: Enter approves, `n` and Enter refuses.
    Prompt,
    /// Wait for a script's answer on the control socket (see [`crate::control`]).
    Control,
}

/// The terminal prompt shared by the keys of one runner and a stdin reader thread.
#[derive(Default)]
pub struct Prompt {
    /// `Some(None)`: asking, no answer yet; `Some(Some(yes))`: answered.
    answer: Mutex<Option<Option<bool>>>,
}

impl Prompt {
    /// Start the thread that reads answers from standard input.
    pub fn spawn_reader() -> Arc<Self> {
        let prompt = Arc::new(Prompt::default());
        let reader = prompt.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let yes = !line.trim().eq_ignore_ascii_case("n");
                let mut answer = reader.answer.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(None) = *answer {
                    *answer = Some(Some(yes));
                }
            }
        });
        prompt
    }
}

pub struct RunnerPlatform<S> {
    rng: ChaCha20Rng,
    start: Instant,
    mode: PresenceMode,
    prompt: Option<Arc<Prompt>>,
    control: Option<Arc<Control>>,
    /// The key's bus id.
    label: String,
    _storage: std::marker::PhantomData<S>,
}

impl<S> RunnerPlatform<S> {
    pub fn new(
        mode: PresenceMode,
        prompt: Option<Arc<Prompt>>,
        control: Option<Arc<Control>>,
        label: String,
    ) -> std::io::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            rng: ChaCha20Rng::from_seed(seed),
            start: Instant::now(),
            mode,
            prompt,
            control,
            label,
            _storage: std::marker::PhantomData,
        })
    }
}

impl<S: littlefs2::driver::Storage> Platform for RunnerPlatform<S> {
    type Rng = ChaCha20Rng;
    type Storage = S;

    fn rng(&mut self) -> &mut Self::Rng {
        &mut self.rng
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn start_presence(&mut self) {
        tracing::info!(key = %self.label, "user presence requested");
        if let (PresenceMode::Prompt, Some(prompt)) = (self.mode, &self.prompt) {
            *prompt.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(None);
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "[{}] Touch requested: press Enter to approve, n and Enter to deny",
                self.label
            );
        }
        if let (PresenceMode::Control, Some(control)) = (self.mode, &self.control) {
            control.start(&self.label);
        }
    }

    fn poll_presence(&mut self) -> Presence {
        match self.mode {
            PresenceMode::Auto => Presence::Granted,
            PresenceMode::Deny => Presence::Denied,
            PresenceMode::Prompt => {
                let answer = self
                    .prompt
                    .as_ref()
                    .and_then(|p| *p.answer.lock().unwrap_or_else(|p| p.into_inner()));
                match answer.flatten() {
                    Some(true) => Presence::Granted,
                    Some(false) => Presence::Denied,
                    None => Presence::Pending,
                }
            }
            PresenceMode::Control => self
                .control
                .as_ref()
                .map_or(Presence::Pending, |c| c.poll(&self.label)),
        }
    }

    fn stop_presence(&mut self) {
        if let Some(control) = &self.control {
            control.stop(&self.label);
        }
        if let Some(prompt) = &self.prompt {
            *prompt.answer.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    fn indicate(&mut self, indicator: Indicator) {
        if indicator == Indicator::Wink {
            tracing::info!(key = %self.label, "wink");
        }
    }
}
