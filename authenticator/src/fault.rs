//! Faults a test arms for the key's next signed response, so that a relying party's checks can
//! be seen to work: a signature that does not verify, the UP or UV flag cleared, the signature
//! counter rewound (a cloned key) or stuck at 0.
//!
//! The hook exists only with the `faults` feature, which the virtual key enables and the Pico's
//! firmware does not: a key in anyone's hands cannot be made to misbehave. It lives in the core
//! because only the core holds the private keys: a cleared flag or a changed counter must still
//! carry a valid signature over the altered data (as Chrome's DevTools `setResponseOverrideBits`
//! does), which no post-processing outside could make.
//!
//! A fault is taken, and so disarmed, by the first response it can change: makeCredential (its
//! attestation signature only when it has one), getAssertion and getNextAssertion with the
//! user's touch (a silent `up=false` probe never reaches a relying party), and U2F register and
//! authenticate with presence enforced.

use ctap_types::ctap2::AuthenticatorDataFlags;

use crate::platform::Platform;

/// A fault for the next response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The signature is made over other data: well formed, and wrong.
    BadSignature,
    /// The UP flag is cleared (signature valid over the altered data).
    ClearUp,
    /// The UV flag is cleared (signature valid over the altered data).
    ClearUv,
    /// The signature counter goes back to 1: at or below anything the key has signed since its
    /// first signature, as a clone made back then would report.
    CounterRewind,
    /// The signature counter is 0, as from a key that keeps none.
    CounterZero,
}

/// What a signed response carries, so that a fault is spent only on a response it changes.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "faults"), allow(dead_code))]
pub(crate) struct Carries {
    /// authenticatorData's UP flag (U2F's user presence byte).
    pub up: bool,
    /// authenticatorData's UV flag.
    pub uv: bool,
    pub counter: bool,
    pub signature: bool,
}

impl Fault {
    #[cfg_attr(not(feature = "faults"), allow(dead_code))]
    fn applies(self, carries: Carries) -> bool {
        match self {
            Fault::BadSignature => carries.signature,
            Fault::ClearUp => carries.up,
            Fault::ClearUv => carries.uv,
            Fault::CounterRewind | Fault::CounterZero => carries.counter,
        }
    }
}

/// The fault applied to one response, if any.
#[derive(Clone, Copy, Default)]
pub(crate) struct Applied(Option<Fault>);

/// The armed fault, taken (disarmed) if it applies to a response that `carries` these.
pub(crate) fn take<P: Platform>(platform: &mut P, carries: Carries) -> Applied {
    #[cfg(feature = "faults")]
    {
        Applied(platform.take_fault(&|fault: Fault| fault.applies(carries)))
    }
    #[cfg(not(feature = "faults"))]
    {
        let _ = (platform, carries);
        Applied(None)
    }
}

impl Applied {
    /// authenticatorData's flags, with UP or UV cleared by the fault.
    pub fn flags(self, mut flags: AuthenticatorDataFlags) -> AuthenticatorDataFlags {
        match self.0 {
            Some(Fault::ClearUp) => flags.remove(AuthenticatorDataFlags::USER_PRESENCE),
            Some(Fault::ClearUv) => flags.remove(AuthenticatorDataFlags::USER_VERIFIED),
            _ => {}
        }
        flags
    }

    /// U2F's user presence byte.
    pub fn u2f_presence(self, present: bool) -> bool {
        present && self.0 != Some(Fault::ClearUp)
    }

    /// The signature counter the response reports (the key's own still moves on).
    pub fn counter(self, counter: u32) -> u32 {
        match self.0 {
            Some(Fault::CounterRewind) => 1,
            Some(Fault::CounterZero) => 0,
            _ => counter,
        }
    }

    /// One more piece for the signed message: nothing, or, for a bad signature, bytes the
    /// verifier does not have.
    pub fn garble(self) -> &'static [u8] {
        match self.0 {
            Some(Fault::BadSignature) => b"a fault armed by a test",
            _ => b"",
        }
    }
}
