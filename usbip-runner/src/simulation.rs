//! The simulated user beyond the touch, on the control socket: built-in user verification (a
//! finger on a sensor, `--uv builtin`), the presence mode switched at run time, and faults
//! armed for the next signed response. Each verb mirrors what a browser's virtual
//! authenticator offers (W3C WebAuthn Automation, Chrome DevTools' `WebAuthn` domain):
//!
//! ```text
//! > uv ok|fail|timeout [BUS]         the finger the key waits for matches, does not match, or
//!                                    never comes (or, if none waits, the next one: "ok armed")
//! > uv auto|deny|control [BUS]       how every later attempt is answered: W3C Set User Verified
//!                                    (isUserVerified true: auto; false: deny); control: by `uv ok|fail`
//! > uv enroll|unenroll [BUS]         a finger enrolled or not (getInfo's `uv` option)
//! > uv status                        "waiting 1-1": the keys waiting for a finger
//! > presence auto|deny|control [BUS] how touches are answered from now on
//!                                    (CDP setAutomaticPresenceSimulation: enabled is auto)
//! > fault KIND [BUS]                 the next signed response is faulty (CDP
//!                                    setResponseOverrideBits): bad-signature, clear-up, clear-uv,
//!                                    counter-rewind, counter-zero; `none` disarms
//! ```
//!
//! BUS may be left out when the runner serves one key (for `uv ok|fail|timeout`: or when one
//! key waits for a finger).

use authenticator::fault::Fault;
use authenticator::platform::Verification;

use crate::control::{Control, KeyState};
use crate::platform::PresenceMode;

/// How built-in user verification is answered (`--uv-mode`, `uv auto|deny|control`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UvMode {
    /// Every attempt matches at once (CI).
    Auto,
    /// Every attempt fails at once (a finger that never matches): each costs a uvRetry.
    Deny,
    /// Ask on the terminal: Enter is a matching finger, `n` and Enter one that does not match.
    Prompt,
    /// Wait for a script's `uv ok|fail|timeout` on the control socket.
    Control,
}

/// One key's simulated user, beyond the touch of [`crate::control`].
#[derive(Default)]
pub struct Simulation {
    /// The presence mode set at run time, over the command line's.
    presence_mode: Option<PresenceMode>,
    /// The UV mode set at run time, over the command line's.
    uv_mode: Option<UvMode>,
    /// Enrolment set at run time (`--uv builtin` starts enrolled).
    uv_enrolled: Option<bool>,
    /// A request waits for a finger.
    uv_waiting: bool,
    /// Answer for the attempt waiting now.
    uv_answer: Option<Verification>,
    /// Answer given while no attempt waited: for the next one.
    uv_armed: Option<Verification>,
    /// The fault for the next signed response.
    fault: Option<Fault>,
}

/// `fault`'s names, as the control socket spells them.
const FAULTS: [(&str, Fault); 5] = [
    ("bad-signature", Fault::BadSignature),
    ("clear-up", Fault::ClearUp),
    ("clear-uv", Fault::ClearUv),
    ("counter-rewind", Fault::CounterRewind),
    ("counter-zero", Fault::CounterZero),
];

/// The control socket's name of a fault.
pub fn fault_name(fault: Fault) -> &'static str {
    FAULTS
        .iter()
        .find(|(_, f)| *f == fault)
        .map_or("?", |(name, _)| name)
}

fn mode_word<T>(word: &str, auto: T, deny: T, control: T) -> Option<T> {
    match word {
        "auto" => Some(auto),
        "deny" => Some(deny),
        "control" => Some(control),
        _ => None,
    }
}

impl Control {
    /// Carry out a `uv`, `presence` or `fault` line (`words` after the verb); the reply line.
    pub fn simulation_command<'w>(
        &self,
        verb: &str,
        mut words: impl Iterator<Item = &'w str>,
    ) -> String {
        let what = words.next().unwrap_or("");
        let bus = words.next();
        match (verb, what) {
            ("uv", "status") => {
                let waiting = self.bus_ids_where(|key| key.sim.uv_waiting);
                format!("waiting {}", waiting.join(" "))
                    .trim_end()
                    .to_string()
            }
            ("uv", "ok" | "fail" | "timeout") => {
                let answer = match what {
                    "ok" => Verification::Verified,
                    "fail" => Verification::Failed,
                    _ => Verification::TimedOut,
                };
                self.on_key(bus, |key| key.sim.uv_waiting, |key| {
                    if key.sim.uv_waiting {
                        key.sim.uv_answer = Some(answer);
                        "ok waiting".to_string()
                    } else {
                        key.sim.uv_armed = Some(answer);
                        "ok armed".to_string()
                    }
                })
            }
            ("uv", "enroll" | "unenroll") => {
                let enrolled = what == "enroll";
                self.on_key(bus, |_| false, |key| {
                    key.sim.uv_enrolled = Some(enrolled);
                    format!("ok uv {what}ed")
                })
            }
            ("uv", mode) => match mode_word(mode, UvMode::Auto, UvMode::Deny, UvMode::Control) {
                Some(mode) => self.on_key(bus, |_| false, |key| {
                    key.sim.uv_mode = Some(mode);
                    format!("ok uv {what}")
                }),
                None => format!("error uv takes ok, fail, timeout, auto, deny, control, enroll, unenroll or status, not {what:?}"),
            },
            ("presence", mode) => {
                let mode = mode_word(
                    mode,
                    PresenceMode::Auto,
                    PresenceMode::Deny,
                    PresenceMode::Control,
                );
                match mode {
                    Some(mode) => self.on_key(bus, |_| false, |key| {
                        key.sim.presence_mode = Some(mode);
                        // An answer armed under the old mode would surprise the new one.
                        key.armed = None;
                        format!("ok presence {what}")
                    }),
                    None => format!("error presence takes auto, deny or control, not {what:?}"),
                }
            }
            ("fault", "none") => self.on_key(bus, |_| false, |key| {
                key.sim.fault = None;
                "ok disarmed".to_string()
            }),
            ("fault", name) => match FAULTS.iter().find(|(n, _)| *n == name) {
                Some(&(_, fault)) => self.on_key(bus, |_| false, |key| {
                    key.sim.fault = Some(fault);
                    "ok armed".to_string()
                }),
                None => format!(
                    "error fault takes bad-signature, clear-up, clear-uv, counter-rewind, counter-zero or none, not {name:?}"
                ),
            },
            _ => format!("error unknown command {verb:?}"),
        }
    }

    /// The presence mode set at run time, if any.
    pub fn presence_mode(&self, bus_id: &str) -> Option<PresenceMode> {
        self.with(bus_id, |key| key.sim.presence_mode).flatten()
    }

    /// The UV mode set at run time, if any.
    pub fn uv_mode(&self, bus_id: &str) -> Option<UvMode> {
        self.with(bus_id, |key| key.sim.uv_mode).flatten()
    }

    /// Enrolment set at run time, if any.
    pub fn uv_enrolled(&self, bus_id: &str) -> Option<bool> {
        self.with(bus_id, |key| key.sim.uv_enrolled).flatten()
    }

    /// A key starts waiting for a finger (in control mode).
    pub fn uv_start(&self, bus_id: &str) {
        self.with(bus_id, |key| {
            key.sim.uv_waiting = true;
            key.sim.uv_answer = key.sim.uv_armed.take();
        });
    }

    /// Has the finger come?
    pub fn uv_poll(&self, bus_id: &str) -> Verification {
        self.with(bus_id, |key| key.sim.uv_answer.take())
            .flatten()
            .unwrap_or(Verification::Pending)
    }

    /// The attempt is over.
    pub fn uv_stop(&self, bus_id: &str) {
        self.with(bus_id, |key| {
            key.sim.uv_waiting = false;
            key.sim.uv_answer = None;
        });
    }

    /// The armed fault, taken if `applies` says the response at hand can carry it.
    pub fn take_fault(&self, bus_id: &str, applies: &dyn Fn(Fault) -> bool) -> Option<Fault> {
        self.with(bus_id, |key| key.sim.fault.take_if(|fault| applies(*fault)))
            .flatten()
    }

    /// Run `f` on the key named `bus`, or, without a name, on the only key `waiting` picks (or
    /// the only key); the reply line.
    fn on_key(
        &self,
        bus: Option<&str>,
        waiting: impl Fn(&KeyState) -> bool,
        f: impl FnOnce(&mut KeyState) -> String,
    ) -> String {
        let bus = match bus {
            Some(bus) => bus.to_string(),
            None => match self.only_key(waiting) {
                Some(bus) => bus,
                None => return "error name a bus id: several keys".to_string(),
            },
        };
        self.with(&bus, f)
            .unwrap_or_else(|| format!("error unknown bus id {bus:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(keys: &[&str]) -> std::sync::Arc<Control> {
        Control::new(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_finger_given_before_the_key_asks_is_kept_for_the_next_attempt() {
        let control = hub(&["1-1"]);
        assert_eq!(control.command("uv fail"), "ok armed");
        assert_eq!(control.command("uv status"), "waiting");
        control.uv_start("1-1");
        assert_eq!(control.command("uv status"), "waiting 1-1");
        assert_eq!(control.uv_poll("1-1"), Verification::Failed);
        assert_eq!(control.uv_poll("1-1"), Verification::Pending, "spent");
        assert_eq!(control.command("uv ok"), "ok waiting");
        assert_eq!(control.uv_poll("1-1"), Verification::Verified);
        control.uv_stop("1-1");
        assert_eq!(control.command("uv status"), "waiting");
        // A touch wait is another thing: `status` never shows a finger, nor `uv status` a touch.
        control.start("1-1", authenticator::platform::Touch::Short);
        assert_eq!(control.command("uv status"), "waiting");
        assert_eq!(control.command("status"), "waiting 1-1");
    }

    #[test]
    fn several_keys_need_a_bus_id_unless_one_waits_for_a_finger() {
        let control = hub(&["1-1", "1-2"]);
        assert_eq!(
            control.command("uv ok"),
            "error name a bus id: several keys"
        );
        assert_eq!(
            control.command("fault clear-up"),
            "error name a bus id: several keys"
        );
        control.uv_start("1-2");
        assert_eq!(control.command("uv ok"), "ok waiting");
        assert_eq!(control.uv_poll("1-2"), Verification::Verified);
        assert_eq!(control.command("uv timeout 1-1"), "ok armed");
        assert_eq!(
            control.command("uv deny 1-3"),
            "error unknown bus id \"1-3\""
        );
    }

    #[test]
    fn modes_enrolment_and_faults_per_key() {
        let control = hub(&["1-1", "1-2"]);
        assert_eq!(
            control.presence_mode("1-1"),
            None,
            "the command line's until set"
        );
        assert_eq!(control.command("presence auto 1-1"), "ok presence auto");
        assert_eq!(control.presence_mode("1-1"), Some(PresenceMode::Auto));
        assert_eq!(control.presence_mode("1-2"), None);
        assert_eq!(control.command("uv deny 1-2"), "ok uv deny");
        assert_eq!(control.uv_mode("1-2"), Some(UvMode::Deny));
        assert_eq!(control.command("uv unenroll 1-2"), "ok uv unenrolled");
        assert_eq!(control.uv_enrolled("1-2"), Some(false));

        assert_eq!(control.command("fault clear-uv 1-1"), "ok armed");
        let no_uv_flag = |fault: Fault| fault != Fault::ClearUv;
        assert_eq!(
            control.take_fault("1-1", &no_uv_flag),
            None,
            "does not apply: kept"
        );
        assert_eq!(control.take_fault("1-1", &|_| true), Some(Fault::ClearUv));
        assert_eq!(control.take_fault("1-1", &|_| true), None, "one-shot");
        assert_eq!(control.command("fault counter-zero 1-1"), "ok armed");
        assert_eq!(control.command("fault none 1-1"), "ok disarmed");
        assert_eq!(control.take_fault("1-1", &|_| true), None);
        for (name, fault) in FAULTS {
            assert_eq!(fault_name(fault), name);
        }
    }
}
