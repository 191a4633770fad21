//! The virtual key's body: OS randomness, a monotonic clock, presence by policy or by prompt.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use authenticator::fault::Fault;
use authenticator::platform::{
    BuiltinUv, Indicator, Platform, PresenceAnswer, Touch, Verification,
    USER_VERIFY_FINGERPRINT_INTERNAL,
};
use authenticator::store::{PrepareFailure, StoreError};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::control::Control;
use crate::simulation::{fault_name, UvMode};

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
    /// Wait for a script's answer on the control socket (`approve`, `hold`, `deny`, `timeout`:
    /// see `usbip-runner control --help`).
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
    /// Built-in user verification (`--uv builtin`): how attempts are answered.
    uv: Option<UvMode>,
    /// The key's state file (`None`: `--ephemeral`), named when it will not open.
    state_file: Option<std::path::PathBuf>,
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
            uv: None,
            state_file: None,
            _storage: std::marker::PhantomData,
        })
    }

    /// Name the key's state file in what it logs.
    pub fn with_state_file(mut self, path: std::path::PathBuf) -> Self {
        self.state_file = Some(path);
        self
    }

    /// Give the key built-in user verification (a simulated fingerprint sensor, enrolled),
    /// its attempts answered as `mode` says.
    pub fn with_builtin_uv(mut self, mode: UvMode) -> Self {
        self.uv = Some(mode);
        self
    }

    /// How touches are answered now: as set on the control socket, else the command line.
    fn presence_mode(&self) -> PresenceMode {
        self.control
            .as_ref()
            .and_then(|c| c.presence_mode(&self.label))
            .unwrap_or(self.mode)
    }

    /// How built-in UV attempts are answered now, on a key that has it.
    fn uv_mode(&self) -> Option<UvMode> {
        let start = self.uv?;
        let set = self.control.as_ref().and_then(|c| c.uv_mode(&self.label));
        Some(set.unwrap_or(start))
    }

    /// The line typed at the terminal prompt, if any (and then the prompt asks again).
    fn typed(&self) -> Option<Typed> {
        let prompt = self.prompt.as_ref()?;
        let answer = prompt.answer.lock().unwrap_or_else(|p| p.into_inner());
        answer.flatten()
    }

    /// Ask at the terminal (a prompt shared by the keys of one runner).
    fn ask(&self, question: &str) {
        if let Some(prompt) = &self.prompt {
            *prompt.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(None);
            let _ = writeln!(std::io::stderr().lock(), "[{}] {question}", self.label);
        }
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
        match self.presence_mode() {
            PresenceMode::Prompt => self.ask(if long {
                "Long touch requested (reset): type hold and Enter to approve, n and Enter to deny"
            } else {
                "Touch requested: press Enter to approve, n and Enter to deny"
            }),
            PresenceMode::Control => {
                if let Some(control) = &self.control {
                    control.start(&self.label, touch);
                }
            }
            PresenceMode::Auto | PresenceMode::Deny => {}
        }
    }

    fn poll_presence(&mut self) -> PresenceAnswer {
        match self.presence_mode() {
            PresenceMode::Auto => PresenceAnswer::Granted,
            PresenceMode::Deny => PresenceAnswer::Denied,
            PresenceMode::Prompt => match self.typed() {
                Some(Typed::No) => PresenceAnswer::Denied,
                Some(Typed::Yes) if self.touch == Touch::Long => {
                    // A short touch does not answer a long-touch wait: ask again.
                    self.ask("This needs a long touch: type hold and Enter");
                    PresenceAnswer::Pending
                }
                Some(_) => PresenceAnswer::Granted,
                None => PresenceAnswer::Pending,
            },
            PresenceMode::Control => self
                .control
                .as_ref()
                .map_or(PresenceAnswer::Pending, |c| c.poll(&self.label)),
        }
    }

    fn stop_presence(&mut self) {
        if let Some(control) = &self.control {
            control.stop(&self.label);
        }
        self.stop_asking();
    }

    fn indicate(&mut self, indicator: Indicator) {
        if indicator == Indicator::Wink {
            tracing::info!(key = %self.label, "wink");
        }
    }

    fn store_failed(&mut self, failure: PrepareFailure) {
        if failure.error == StoreError::VaultUnreadable {
            let state = self
                .state_file
                .as_ref()
                .map_or_else(|| "(in memory)".into(), |p| p.display().to_string());
            tracing::error!(
                key = %self.label,
                %state,
                "the key's vault (its secrets and PIN) is unreadable, though it was written: \
                 the state file was damaged or tampered with. The key refuses every request \
                 (CTAP2 0xF0, U2F 0x6F00) but getInfo, selection and reset. To start over \
                 with a blank key, losing its credentials: authenticatorReset within 10 s of \
                 starting the runner (e.g. `fido2-token -R`), or stop the runner and delete \
                 {state}"
            );
            return;
        }
        tracing::error!(
            key = %self.label,
            step = ?failure.step,
            error = ?failure.error,
            "part of the stored state did not open at power-up; requests that need it will fail"
        );
    }

    /// Every presence mode tells a long touch apart: `auto` gives one, `deny` refuses it, the
    /// prompt takes `hold`, the control socket `hold`.
    fn has_long_touch(&self) -> bool {
        true
    }

    /// A fingerprint sensor, with `--uv builtin`: enrolled unless `uv unenroll` said otherwise.
    fn builtin_uv(&self) -> Option<BuiltinUv> {
        self.uv?;
        let enrolled = self
            .control
            .as_ref()
            .and_then(|c| c.uv_enrolled(&self.label));
        Some(BuiltinUv {
            modality: USER_VERIFY_FINGERPRINT_INTERNAL,
            enrolled: enrolled.unwrap_or(true),
        })
    }

    fn start_uv(&mut self) {
        tracing::info!(key = %self.label, "user verification requested (fingerprint)");
        match self.uv_mode() {
            Some(UvMode::Prompt) => self.ask(
                "Fingerprint requested: press Enter for a matching finger, n and Enter for one that does not match",
            ),
            Some(UvMode::Control) => {
                if let Some(control) = &self.control {
                    control.uv_start(&self.label);
                }
            }
            _ => {}
        }
    }

    fn poll_uv(&mut self) -> Verification {
        let verification = match self.uv_mode() {
            None | Some(UvMode::Deny) => Verification::Failed,
            Some(UvMode::Auto) => Verification::Verified,
            Some(UvMode::Prompt) => match self.typed() {
                Some(Typed::No) => Verification::Failed,
                Some(_) => Verification::Verified,
                None => Verification::Pending,
            },
            Some(UvMode::Control) => self
                .control
                .as_ref()
                .map_or(Verification::Pending, |c| c.uv_poll(&self.label)),
        };
        if verification != Verification::Pending {
            tracing::info!(key = %self.label, ?verification, "user verification answered");
        }
        verification
    }

    fn stop_uv(&mut self) {
        if let Some(control) = &self.control {
            control.uv_stop(&self.label);
        }
        self.stop_asking();
    }

    fn take_fault(&mut self, applies: &dyn Fn(Fault) -> bool) -> Option<Fault> {
        let fault = self.control.as_ref()?.take_fault(&self.label, applies)?;
        tracing::info!(key = %self.label, fault = fault_name(fault), "armed fault applied to this response");
        Some(fault)
    }
}

impl<S> RunnerPlatform<S> {
    /// The terminal prompt no longer asks.
    fn stop_asking(&self) {
        if let Some(prompt) = &self.prompt {
            *prompt.answer.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
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
            (Touch::Short, "", PresenceAnswer::Granted),
            (Touch::Short, "HOLD", PresenceAnswer::Granted),
            (Touch::Short, "n", PresenceAnswer::Denied),
            (Touch::Long, "hold", PresenceAnswer::Granted),
            (Touch::Long, " n ", PresenceAnswer::Denied),
        ] {
            key.start_presence(touch);
            assert_eq!(key.poll_presence(), PresenceAnswer::Pending);
            type_line(line);
            assert_eq!(key.poll_presence(), expected, "{touch:?} {line:?}");
            key.stop_presence();
        }
        // A long wait: Enter alone is a short touch, which answers nothing; the prompt asks
        // again, and `hold` then answers.
        key.start_presence(Touch::Long);
        type_line("");
        assert_eq!(key.poll_presence(), PresenceAnswer::Pending);
        type_line("hold");
        assert_eq!(key.poll_presence(), PresenceAnswer::Granted);
        key.stop_presence();
        assert_eq!(*prompt.answer.lock().unwrap(), None, "not asking");
    }
}
