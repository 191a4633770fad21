//! The virtual key's body: OS randomness, a monotonic clock, presence by policy or by prompt.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use authenticator::platform::{Indicator, Platform, Presence, Touch};
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
    /// Ask on the terminal: Enter approves, `n` and Enter refuses (a long touch: `hold` and
    /// Enter approves).
    Prompt,
    /// Wait for a script's answer on the control socket (see [`crate::control`]).
    Control,
}

/// A line typed at the terminal prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Typed {
    /// `n`: refuse.
    No,
    /// `hold`: a long touch.
    Hold,
    /// Anything else, Enter alone: a touch.
    Yes,
}

impl Typed {
    fn parse(line: &str) -> Self {
        match line.trim().to_ascii_lowercase().as_str() {
            "n" => Typed::No,
            "hold" => Typed::Hold,
            _ => Typed::Yes,
        }
    }
}

/// The terminal prompt shared by the keys of one runner and a stdin reader thread.
#[derive(Default)]
pub struct Prompt {
    /// `Some(None)`: asking, no answer yet; `Some(Some(line))`: answered.
    answer: Mutex<Option<Option<Typed>>>,
}

impl Prompt {
    /// Start the thread that reads answers from standard input.
    pub fn spawn_reader() -> Arc<Self> {
        let prompt = Arc::new(Prompt::default());
        let reader = prompt.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let typed = Typed::parse(&line);
                let mut answer = reader.answer.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(None) = *answer {
                    *answer = Some(Some(typed));
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
    /// The touch the current wait needs.
    touch: Touch,
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
            touch: Touch::Short,
            _storage: std::marker::PhantomData,
        })
    }
}

impl<S: authenticator::platform::StateStorage> Platform for RunnerPlatform<S> {
    type Rng = ChaCha20Rng;
    type Storage = S;

    fn rng(&mut self) -> &mut Self::Rng {
        &mut self.rng
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn start_presence(&mut self, touch: Touch) {
        self.touch = touch;
        let long = touch == Touch::Long;
        tracing::info!(key = %self.label, long, "user presence requested");
        if let (PresenceMode::Prompt, Some(prompt)) = (self.mode, &self.prompt) {
            *prompt.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(None);
            let ask = if long {
                "Long touch requested (reset): type hold and Enter to approve, n and Enter to deny"
            } else {
                "Touch requested: press Enter to approve, n and Enter to deny"
            };
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "[{}] {ask}", self.label);
        }
        if let (PresenceMode::Control, Some(control)) = (self.mode, &self.control) {
            control.start(&self.label, touch);
        }
    }

    fn poll_presence(&mut self) -> Presence {
        match self.mode {
            PresenceMode::Auto => Presence::Granted,
            PresenceMode::Deny => Presence::Denied,
            PresenceMode::Prompt => {
                let Some(prompt) = &self.prompt else {
                    return Presence::Pending;
                };
                let mut answer = prompt.answer.lock().unwrap_or_else(|p| p.into_inner());
                match answer.flatten() {
                    Some(Typed::No) => Presence::Denied,
                    Some(Typed::Yes) if self.touch == Touch::Long => {
                        // A short touch does not answer a long-touch wait: ask again.
                        *answer = Some(None);
                        let _ = writeln!(
                            std::io::stderr().lock(),
                            "[{}] This needs a long touch: type hold and Enter",
                            self.label
                        );
                        Presence::Pending
                    }
                    Some(_) => Presence::Granted,
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

    /// Every presence mode tells a long touch apart: `auto` gives one, `deny` refuses it, the
    /// prompt takes `hold`, the control socket `hold`.
    fn has_long_touch(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key answered at the terminal: what each typed line does to a short and a long wait.
    #[test]
    fn the_prompt_takes_hold_for_a_long_touch_and_ignores_a_short_one() {
        let prompt = Arc::new(Prompt::default());
        let mut key: RunnerPlatform<authenticator::store::RamStorage<4>> = RunnerPlatform::new(
            PresenceMode::Prompt,
            Some(prompt.clone()),
            None,
            "1-1".into(),
        )
        .unwrap();
        let type_line = |line: &str| {
            let mut answer = prompt.answer.lock().unwrap();
            assert_eq!(*answer, Some(None), "asking");
            *answer = Some(Some(Typed::parse(line)));
        };
        for (touch, line, expected) in [
            (Touch::Short, "", Presence::Granted),
            (Touch::Short, "HOLD", Presence::Granted),
            (Touch::Short, "n", Presence::Denied),
            (Touch::Long, "hold", Presence::Granted),
            (Touch::Long, " n ", Presence::Denied),
        ] {
            key.start_presence(touch);
            assert_eq!(key.poll_presence(), Presence::Pending);
            type_line(line);
            assert_eq!(key.poll_presence(), expected, "{touch:?} {line:?}");
            key.stop_presence();
        }
        // A long wait: Enter alone is a short touch, which answers nothing; the prompt asks
        // again, and `hold` then answers.
        key.start_presence(Touch::Long);
        type_line("");
        assert_eq!(key.poll_presence(), Presence::Pending);
        type_line("hold");
        assert_eq!(key.poll_presence(), Presence::Granted);
        key.stop_presence();
        assert_eq!(*prompt.answer.lock().unwrap(), None, "not asking");
    }
}
