//! The PIN complexity policy (CTAP 2.2 pinComplexityPolicy): what a new PIN must be once the
//! key's owner turns the policy on with authenticatorConfig's setMinPINLength. The spec leaves
//! the policy to the authenticator (and its metadata statement); this key's, stated in the
//! docs/protocol.md:
//! - a PIN of digits only has at least 6, is not one digit repeated (`111111`), and is not a
//!   run of consecutive digits up or down (`123456`, `987654`);
//! - any other PIN has at least 8 characters, from at least two of the classes letters,
//!   digits and the rest, and is not one character repeated.
//!
//! minPINLength still applies on top.

/// Whether `pin` (UTF-8, already checked) meets the policy.
pub(crate) fn complex_enough(pin: &[u8]) -> bool {
    let Ok(pin) = core::str::from_utf8(pin) else {
        return false;
    };
    let count = pin.chars().count();
    if pin.chars().all(|c| c.is_ascii_digit()) {
        count >= 6 && !repeated(pin) && !run(pin.as_bytes())
    } else {
        let classes = [
            pin.chars().any(char::is_alphabetic),
            pin.chars().any(|c| c.is_ascii_digit()),
            pin.chars()
                .any(|c| !c.is_alphabetic() && !c.is_ascii_digit()),
        ];
        count >= 8 && classes.iter().filter(|&&c| c).count() >= 2 && !repeated(pin)
    }
}

/// One character, over and over.
fn repeated(pin: &str) -> bool {
    let mut chars = pin.chars();
    let first = chars.next();
    chars.all(|c| Some(c) == first)
}

/// Each digit one more than the last, or each one less.
fn run(digits: &[u8]) -> bool {
    let steps = |step: i16| {
        digits
            .windows(2)
            .all(|w| i16::from(w[1]) - i16::from(w[0]) == step)
    };
    steps(1) || steps(-1)
}

#[cfg(test)]
mod tests {
    use super::complex_enough;

    #[test]
    fn numeric_pins() {
        for good in [
            "135792",
            "1234567890", /* not a run: 9 to 0 */
            "123457",
            "8675309",
        ] {
            assert!(complex_enough(good.as_bytes()), "{good}");
        }
        for bad in [
            "12345",
            "13579",
            "111111",
            "123456",
            "987654",
            "0123456789",
            "000000",
        ] {
            assert!(!complex_enough(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn other_pins() {
        for good in [
            "correct horse",
            "pässwörd1",
            "abcdefg1",
            "Hunter-22",
            "ab!cd!ef",
        ] {
            assert!(complex_enough(good.as_bytes()), "{good}");
        }
        for bad in [
            "password",
            "abcdefgh",
            "abc1234",
            "aaaaaaaa",
            "!!!!!!!!",
            "pässwörd",
        ] {
            assert!(!complex_enough(bad.as_bytes()), "{bad}");
        }
    }
}
