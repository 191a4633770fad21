//! clientPIN (both protocols), pinUvAuthToken use, and authenticatorConfig, against the core.

use authenticator::ctaphid::App;
use ciborium::Value;
use test_support::pin_client::{retries, PinClient};
use test_support::*;

const PIN: &str = "1234";
const MC: u8 = 0x01;
const GA: u8 = 0x02;
const ACFG: u8 = 0x20;

/// makeCredential with a pinUvAuthParam made from `token` (None: no param).
fn make_credential(
    key: &mut impl App,
    protocol: u8,
    token: Option<&[u8]>,
    rp: &str,
    rk: bool,
) -> (u8, Option<Value>) {
    let mut request = make_credential_request(rp, b"user", &[-7], rk);
    if let (Some(token), Value::Map(entries)) = (token, &mut request) {
        entries.push((int(8), bytes(&PinClient::mac(protocol, token, &[7u8; 32]))));
        entries.push((int(9), int(protocol.into())));
    }
    ctap2(key, MC, Some(request))
}

fn get_assertion(
    key: &mut impl App,
    protocol: u8,
    token: Option<&[u8]>,
    rp: &str,
    allow: &[&[u8]],
) -> (u8, Option<Value>) {
    let cdh = [1u8; 32];
    let mut request = get_assertion_request(rp, &cdh, allow);
    if let (Some(token), Value::Map(entries)) = (token, &mut request) {
        entries.push((int(6), bytes(&PinClient::mac(protocol, token, &cdh))));
        entries.push((int(7), int(protocol.into())));
    }
    ctap2(key, GA, Some(request))
}

fn flags(body: &Value, key: i64) -> u8 {
    get(body, key).unwrap().as_bytes().unwrap()[32]
}

fn info_option(key: &mut impl App, name: &str) -> Option<Value> {
    let info = ctap2(key, 0x04, None).1.unwrap();
    get_text(get(&info, 4).unwrap(), name).cloned()
}

#[test]
fn set_pin_then_tokens_verify_the_user_in_both_protocols() {
    for protocol in [1u8, 2] {
        let mut storage = RamStorage::default();
        with_key(&mut storage, &Knobs::default(), 1, |key| {
            assert_eq!(info_option(key, "clientPin"), Some(Value::Bool(false)));
            assert_eq!(
                retries(key).0,
                8,
                "getPINRetries without a PIN, and without a touch"
            );
            let client = PinClient::new(key, protocol, 3);
            assert_eq!(client.set_pin(key, PIN), 0);
            assert_eq!(info_option(key, "clientPin"), Some(Value::Bool(true)));
            assert_eq!(
                client.set_pin(key, "5678"),
                0x30,
                "setPIN twice is CTAP2_ERR_NOT_ALLOWED"
            );

            let token = client.token(key, PIN, None, None).expect("getPinToken");
            assert_eq!(token.len(), 32);
            let (status, body) = make_credential(key, protocol, Some(&token), "example.com", true);
            assert_eq!(status, 0);
            assert_eq!(flags(&body.unwrap(), 2) & 0x05, 0x05, "UP and UV");

            let token = client
                .token(key, PIN, Some(GA), Some("example.com"))
                .expect("token with permissions");
            let (status, body) = get_assertion(key, protocol, Some(&token), "example.com", &[]);
            assert_eq!(status, 0);
            let body = body.unwrap();
            assert_eq!(flags(&body, 2) & 0x05, 0x05);
            let user = get(&body, 4).unwrap();
            assert_eq!(
                get_text(user, "name"),
                Some(&text("user")),
                "names after user verification"
            );
            let (status, _) = get_assertion(key, protocol, Some(&token), "example.com", &[]);
            assert_eq!(status, 0x33, "the token's ga permission was spent");
        });
    }
}

#[test]
fn pin_rules_and_the_platform_probe() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 2, |key| {
        let client = PinClient::new(key, 2, 4);
        assert_eq!(
            client.set_pin(key, "123"),
            0x37,
            "3 code points is too short"
        );
        assert_eq!(
            client.set_pin(key, &"9".repeat(64)),
            0x37,
            "64 bytes is too long"
        );
        let mut bad = client.encrypt(&[b'1'; 64]);
        bad[20] ^= 1;
        let status = ctap2(
            key,
            0x06,
            Some(map(vec![
                (int(1), int(2)),
                (int(2), int(3)),
                (int(4), bytes(&[0; 32])),
                (int(5), bytes(&bad)),
            ])),
        )
        .0;
        assert_eq!(status, 0x14, "missing keyAgreement");
        assert_eq!(
            client.set_pin(key, "ünï"),
            0x37,
            "3 code points even if more bytes"
        );
        assert_eq!(client.set_pin(key, "ünïc"), 0, "4 code points");
        // The empty pinUvAuthParam probe: a touch, then PIN_INVALID because a PIN is set.
        let prompts = knobs.prompts.get();
        let mut request = make_credential_request("example.com", b"u", &[-7], false);
        if let Value::Map(entries) = &mut request {
            entries.push((int(8), bytes(&[])));
            entries.push((int(9), int(2)));
        }
        assert_eq!(
            ctap2(key, MC, Some(request)).0,
            0x31,
            "CTAP2_ERR_PIN_INVALID"
        );
        assert_eq!(knobs.prompts.get(), prompts + 1);
    });
}

#[test]
fn three_wrong_pins_need_a_power_cycle_and_eight_block_the_key() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 3, |key| {
        let client = PinClient::new(key, 1, 5);
        assert_eq!(client.set_pin(key, PIN), 0);
    });
    let mut left = 8;
    for boot in 0..3u64 {
        with_key(&mut storage, &knobs, 10 + boot, |key| {
            for attempt in 1..=3 {
                if left == 0 {
                    break;
                }
                let client = PinClient::new(key, 2, 6);
                let status = client.token(key, "0000", None, None).unwrap_err();
                left -= 1;
                let expected = if left == 0 {
                    0x32
                } else if attempt == 3 {
                    0x34
                } else {
                    0x31
                };
                assert_eq!(status, expected, "boot {boot} attempt {attempt}");
                assert_eq!(retries(key).0, left);
            }
            if left > 0 {
                assert_eq!(retries(key).1, Some(true), "powerCycleState");
                let client = PinClient::new(key, 2, 6);
                assert_eq!(
                    client.token(key, PIN, None, None).unwrap_err(),
                    0x34,
                    "even the right PIN waits for a power cycle"
                );
                assert_eq!(retries(key).0, left, "a blocked check costs no retry");
            }
        });
    }
    assert_eq!(left, 0);
    with_key(&mut storage, &knobs, 20, |key| {
        let client = PinClient::new(key, 2, 6);
        assert_eq!(
            client.token(key, PIN, None, None).unwrap_err(),
            0x32,
            "CTAP2_ERR_PIN_BLOCKED until reset"
        );
        assert_eq!(ctap2(key, 0x07, None).0, 0, "reset");
        assert_eq!(retries(key).0, 8);
        assert_eq!(info_option(key, "clientPin"), Some(Value::Bool(false)));
    });
}

#[test]
fn a_right_pin_restores_the_retries() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 4, |key| {
        let client = PinClient::new(key, 2, 7);
        client.set_pin(key, PIN);
        let client = PinClient::new(key, 2, 7);
        assert_eq!(client.token(key, "9999", None, None).unwrap_err(), 0x31);
        assert_eq!(retries(key).0, 7);
        let client = PinClient::new(key, 2, 7);
        client.token(key, PIN, None, None).expect("right PIN");
        assert_eq!(retries(key).0, 8);
    });
}

#[test]
fn change_pin_discards_the_token() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 5, |key| {
        let client = PinClient::new(key, 1, 8);
        client.set_pin(key, PIN);
        let token = client.token(key, PIN, None, None).unwrap();
        assert_eq!(
            client.change_pin(key, "0000", "5678"),
            0x31,
            "wrong current PIN"
        );
        let client = PinClient::new(key, 1, 8);
        assert_eq!(client.change_pin(key, PIN, "5678"), 0);
        assert_eq!(
            make_credential(key, 1, Some(&token), "example.com", false).0,
            0x33,
            "old token is gone"
        );
        assert_eq!(
            client.token(key, PIN, None, None).unwrap_err(),
            0x31,
            "old PIN is wrong now"
        );
        // A failed check replaces the key agreement key: agree again.
        let client = PinClient::new(key, 1, 8);
        client
            .token(key, "5678", None, None)
            .expect("new PIN works");
    });
}

#[test]
fn tokens_are_checked_for_permission_rp_and_protocol() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 6, |key| {
        let client = PinClient::new(key, 2, 9);
        client.set_pin(key, PIN);
        let token = client.token(key, PIN, Some(GA), Some("a.example")).unwrap();
        assert_eq!(
            make_credential(key, 2, Some(&token), "a.example", false).0,
            0x33,
            "no mc permission"
        );
        assert_eq!(
            get_assertion(key, 2, Some(&token), "b.example", &[]).0,
            0x33,
            "bound to another RP"
        );
        assert_eq!(
            get_assertion(key, 1, Some(&token), "a.example", &[]).0,
            0x33,
            "issued under protocol 2"
        );
        let mut wrong = token.clone();
        wrong[0] ^= 1;
        assert_eq!(
            get_assertion(key, 2, Some(&wrong), "a.example", &[]).0,
            0x33
        );
        assert_eq!(
            client.token(key, PIN, Some(0), None).unwrap_err(),
            0x02,
            "no permissions"
        );
        assert_eq!(
            client.token(key, PIN, Some(0x08), None).unwrap_err(),
            0x40,
            "be is not supported"
        );
        let token = client.token(key, PIN, Some(MC), None).unwrap();
        assert_eq!(
            make_credential(key, 2, Some(&token), "a.example", false).0,
            0
        );
    });
}

#[test]
fn with_a_pin_discoverable_credentials_need_it_and_others_do_not() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 7, |key| {
        let client = PinClient::new(key, 2, 10);
        client.set_pin(key, PIN);
        assert_eq!(
            make_credential(key, 2, None, "example.com", true).0,
            0x36,
            "CTAP2_ERR_PUAT_REQUIRED"
        );
        let (status, body) = make_credential(key, 2, None, "example.com", false);
        assert_eq!(status, 0, "makeCredUvNotRqd");
        assert_eq!(flags(&body.unwrap(), 2) & 0x04, 0, "no UV flag");
        assert_eq!(
            info_option(key, "makeCredUvNotRqd"),
            Some(Value::Bool(true))
        );
    });
}

/// authenticatorConfig with a pinUvAuthParam from `token`.
fn config(key: &mut impl App, token: Option<&[u8]>, sub_command: u8, params: Option<Value>) -> u8 {
    let mut entries = vec![(int(1), int(sub_command.into()))];
    let mut message = vec![0xff; 32];
    message.extend_from_slice(&[0x0d, sub_command]);
    if let Some(params) = params {
        ciborium::into_writer(&params, &mut message).unwrap();
        entries.push((int(2), params));
    }
    if let Some(token) = token {
        entries.push((int(3), int(2)));
        entries.push((int(4), bytes(&PinClient::mac(2, token, &message))));
    }
    ctap2(key, 0x0D, Some(map(entries))).0
}

#[test]
fn always_uv_needs_the_pin_and_turns_u2f_off() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 8, |key| {
        assert_eq!(
            config(key, None, 0x02, None),
            0,
            "no PIN: config needs no token"
        );
        assert_eq!(info_option(key, "alwaysUv"), Some(Value::Bool(true)));
        let info = ctap2(key, 0x04, None).1.unwrap();
        assert!(!get(&info, 1)
            .unwrap()
            .as_array()
            .unwrap()
            .contains(&text("U2F_V2")));
        let mut response = Vec::new();
        key.call(
            authenticator::ctaphid::Transaction::Msg,
            &[0, 3, 0, 0],
            &mut response,
        );
        assert_eq!(response, [0x69, 0x86], "U2F is off");
        assert_eq!(
            make_credential(key, 2, None, "example.com", false).0,
            0x35,
            "PIN_NOT_SET"
        );

        let client = PinClient::new(key, 2, 11);
        client.set_pin(key, PIN);
        assert_eq!(make_credential(key, 2, None, "example.com", false).0, 0x36);
        assert_eq!(
            config(key, None, 0x02, None),
            0x36,
            "a PIN-protected key wants a token"
        );
        let token = client.token(key, PIN, Some(MC), None).unwrap();
        assert_eq!(
            config(key, Some(&token), 0x02, None),
            0x33,
            "no acfg permission"
        );
        let token = client.token(key, PIN, Some(ACFG), None).unwrap();
        assert_eq!(config(key, Some(&token), 0x02, None), 0);
        assert_eq!(info_option(key, "alwaysUv"), Some(Value::Bool(false)));
        // §6.11 step 2: an unsupported subcommand is CTAP1_ERR_INVALID_PARAMETER, answered
        // before any PIN/UV auth is looked at.
        assert_eq!(
            config(key, Some(&token), 0x7E, None),
            0x02,
            "unknown subcommand"
        );
        assert_eq!(config(key, None, 0x7E, None), 0x02, "before PUAT_REQUIRED");
    });
}

#[test]
fn a_raised_minimum_forces_a_pin_change() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 9, |key| {
        let client = PinClient::new(key, 2, 12);
        client.set_pin(key, PIN);
        let token = client.token(key, PIN, Some(ACFG), None).unwrap();
        let params = map(vec![
            (int(1), int(6)),
            (int(2), Value::Array(vec![text("example.com")])),
        ]);
        assert_eq!(config(key, Some(&token), 0x03, Some(params)), 0);
        let info = ctap2(key, 0x04, None).1.unwrap();
        assert_eq!(get(&info, 0x0D), Some(&int(6)), "minPINLength");
        assert_eq!(get(&info, 0x0C), Some(&Value::Bool(true)), "forcePINChange");
        assert_eq!(
            client.token(key, PIN, None, None).unwrap_err(),
            0x37,
            "PIN_POLICY_VIOLATION until changed"
        );
        let params = map(vec![(int(1), int(5))]);
        assert_eq!(
            config(key, Some(&token), 0x03, Some(params)),
            0x37,
            "the minimum never goes down"
        );
        let client = PinClient::new(key, 2, 12);
        assert_eq!(client.change_pin(key, PIN, "12345"), 0x37, "5 < 6");
        let client = PinClient::new(key, 2, 12);
        assert_eq!(client.change_pin(key, PIN, "123456"), 0);
        client
            .token(key, "123456", None, None)
            .expect("token after the change");
    });
}

#[test]
fn the_pin_complexity_policy_is_turned_on_reported_and_enforced() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 14, |key| {
        let pin_complexity = |key: &mut _| get(&ctap2(key, 0x04, None).1.unwrap(), 0x1B).cloned();
        assert_eq!(pin_complexity(key), Some(Value::Bool(false)));
        let client = PinClient::new(key, 2, 21);
        assert_eq!(client.set_pin(key, PIN), 0, "no policy yet: {PIN} will do");
        let token = client.token(key, PIN, Some(ACFG), None).unwrap();
        let off = map(vec![(int(4), Value::Bool(false))]);
        assert_eq!(config(key, Some(&token), 0x03, Some(off)), 0);
        assert_eq!(
            pin_complexity(key),
            Some(Value::Bool(false)),
            "false: no change"
        );
        let on = map(vec![
            (int(2), Value::Array(vec![text("example.com")])),
            (int(4), Value::Bool(true)),
        ]);
        assert_eq!(config(key, Some(&token), 0x03, Some(on)), 0);
        let info = ctap2(key, 0x04, None).1.unwrap();
        assert_eq!(
            get(&info, 0x1B),
            Some(&Value::Bool(true)),
            "pinComplexityPolicy"
        );
        assert_eq!(
            get(&info, 0x0C),
            Some(&Value::Bool(true)),
            "forcePINChange: the old PIN's complexity is unknown (only its hash is kept)"
        );
        for weak in [
            "123456",
            "111111",
            "13579",
            "password",
            "abcdefgh1"[..7].as_ref(),
        ] {
            let client = PinClient::new(key, 2, 21);
            assert_eq!(client.change_pin(key, PIN, weak), 0x37, "{weak}");
        }
        let client = PinClient::new(key, 2, 21);
        assert_eq!(client.change_pin(key, PIN, "271828"), 0);
        // The extension tells the RPs that may see minPINLength, and only them.
        for (rp, expected) in [
            ("example.com", Some(Value::Bool(true))),
            ("other.com", None),
        ] {
            // A token is bound to the first RP it is used for: one each.
            let token = client.token(key, "271828", Some(MC), None).unwrap();
            let mut request = make_credential_request(rp, b"u", &[-7], false);
            let Value::Map(entries) = &mut request else {
                unreachable!()
            };
            entries.push((
                int(6),
                map(vec![(text("pinComplexityPolicy"), Value::Bool(true))]),
            ));
            entries.push((int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))));
            entries.push((int(9), int(2)));
            let (status, body) = ctap2(key, 0x01, Some(request));
            assert_eq!(status, 0, "{rp}");
            let auth_data = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
            let extensions = auth_data.extensions.as_ref();
            assert_eq!(
                extensions
                    .and_then(|e| get_text(e, "pinComplexityPolicy"))
                    .cloned(),
                expected,
                "{rp}"
            );
        }

        // Reset turns it off.
        let (status, _) = ctap2(key, 0x07, None);
        assert_eq!(status, 0);
        assert_eq!(pin_complexity(key), Some(Value::Bool(false)), "after reset");
    });
}

#[test]
fn a_silent_preflight_does_not_spend_the_token() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 10, |key| {
        let client = PinClient::new(key, 2, 13);
        client.set_pin(key, PIN);
        let mc_token = client.token(key, PIN, Some(MC), None).unwrap();
        let (_, body) = make_credential(key, 2, Some(&mc_token), "example.com", false);
        let id = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap()).credential_id;
        let token = client
            .token(key, PIN, Some(GA), Some("example.com"))
            .unwrap();
        // Platforms probe the allow list with up=false and the token first.
        let mut probe = get_assertion_request("example.com", &[0; 32], &[&id]);
        if let Value::Map(entries) = &mut probe {
            entries.push((int(5), map(vec![(text("up"), Value::Bool(false))])));
            entries.push((int(6), bytes(&PinClient::mac(2, &token, &[0; 32]))));
            entries.push((int(7), int(2)));
        }
        assert_eq!(ctap2(key, GA, Some(probe)).0, 0);
        let (status, body) = get_assertion(key, 2, Some(&token), "example.com", &[&id]);
        assert_eq!(status, 0, "the real request still has the token");
        assert_eq!(flags(&body.unwrap(), 2) & 0x05, 0x05);
        assert_eq!(
            get_assertion(key, 2, Some(&token), "example.com", &[&id]).0,
            0x33,
            "now it is spent"
        );
    });
}

#[test]
fn get_pin_retries_and_key_agreement_never_wait_for_a_touch() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    // Nobody touches: any request for presence would wait, and `ctap2` insists on an answer.
    knobs
        .presence
        .set(authenticator::platform::PresenceAnswer::Pending);
    with_key(&mut storage, &knobs, 11, |key| {
        assert_eq!(retries(key).0, 8, "no PIN set");
        let client = PinClient::new(key, 1, 3);
        assert_eq!(client.set_pin(key, PIN), 0);
        assert_eq!(retries(key).0, 8, "PIN set");
        assert_eq!(knobs.prompts.get(), 0, "never asked for a touch");
    });
}

#[test]
fn uv_option_pin_probe_and_legacy_token_parameters() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 12, |key| {
        // No built-in user verification: options.uv=true is an invalid option.
        let mut request = make_credential_request("example.com", b"u", &[-7], false);
        if let Value::Map(entries) = &mut request {
            entries.push((int(7), map(vec![(text("uv"), Value::Bool(true))])));
        }
        assert_eq!(
            ctap2(key, MC, Some(request)).0,
            0x2C,
            "CTAP2_ERR_INVALID_OPTION"
        );
        // The touch-to-select probe on a key without a PIN.
        let mut probe = make_credential_request("example.com", b"u", &[-7], false);
        if let Value::Map(entries) = &mut probe {
            entries.push((int(8), bytes(&[])));
            entries.push((int(9), int(1)));
        }
        assert_eq!(ctap2(key, MC, Some(probe)).0, 0x35, "CTAP2_ERR_PIN_NOT_SET");
        // pinUvAuthParam without its protocol, and with an unknown one.
        let mut request = make_credential_request("example.com", b"u", &[-7], false);
        if let Value::Map(entries) = &mut request {
            entries.push((int(8), bytes(&[1; 16])));
        }
        assert_eq!(
            ctap2(key, MC, Some(request.clone())).0,
            0x14,
            "MISSING_PARAMETER"
        );
        if let Value::Map(entries) = &mut request {
            entries.push((int(9), int(3)));
        }
        assert_eq!(ctap2(key, MC, Some(request)).0, 0x02, "INVALID_PARAMETER");
        // getPinToken (0x05) takes neither permissions nor an RP ID.
        let client = PinClient::new(key, 2, 4);
        client.set_pin(key, PIN);
        let client = PinClient::new(key, 2, 4);
        let legacy = map(vec![
            (int(1), int(2)),
            (int(2), int(5)),
            (int(3), client.platform_key()),
            (int(6), bytes(&client.pin_hash_enc(PIN))),
            (int(9), int(1)),
        ]);
        assert_eq!(ctap2(key, 0x06, Some(legacy)).0, 0x02);
        let info = ctap2(key, 0x04, None).1.unwrap();
        let options = get(&info, 4).unwrap();
        assert_eq!(
            get_text(options, "pinUvAuthToken"),
            Some(&Value::Bool(true))
        );
        assert_eq!(get_text(options, "authnrCfg"), Some(&Value::Bool(true)));
        assert_eq!(
            get(&info, 6),
            Some(&Value::Array(vec![int(2), int(1)])),
            "pinUvAuthProtocols"
        );
    });
}

#[test]
fn config_force_change_pin() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 13, |key| {
        let params = map(vec![(int(3), Value::Bool(true))]);
        assert_eq!(
            config(key, None, 0x03, Some(params.clone())),
            0x35,
            "forceChangePin needs a PIN"
        );
        let client = PinClient::new(key, 2, 6);
        client.set_pin(key, PIN);
        let token = client.token(key, PIN, Some(ACFG), None).unwrap();
        assert_eq!(config(key, Some(&token), 0x03, Some(params)), 0);
        let info = ctap2(key, 0x04, None).1.unwrap();
        assert_eq!(get(&info, 0x0C), Some(&Value::Bool(true)), "forcePINChange");
    });
}

/// A key without an enterprise attestation provisioned (CTAP 2.1 §7.1): getInfo has no `ep`
/// option and does not list enableEnterpriseAttestation among its config commands, the
/// subcommand is unsupported (CTAP1_ERR_INVALID_PARAMETER, §6.11) even with an acfg token, and
/// makeCredential's enterpriseAttestation, whatever its value, gets CTAP1_ERR_INVALID_PARAMETER.
#[test]
fn enterprise_attestation_on_a_key_without_one() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 13, |key| {
        assert_eq!(info_option(key, "ep"), None, "no ep option");
        let info = ctap2(key, 0x04, None).1.unwrap();
        assert_eq!(
            get(&info, 0x1F),
            Some(&Value::Array(vec![int(2), int(3), int(4), int(0xFF)])),
            "authenticatorConfigCommands without 0x01"
        );
        assert_eq!(config(key, None, 0x01, None), 0x02, "no PIN, no token");
        let client = PinClient::new(key, 2, 6);
        client.set_pin(key, PIN);
        let token = client.token(key, PIN, Some(ACFG), None).unwrap();
        assert_eq!(config(key, Some(&token), 0x01, None), 0x02, "with acfg");
        assert_eq!(info_option(key, "ep"), None, "still no ep option");
        for value in [1, 2, 0, 3] {
            let token = client
                .token(key, PIN, Some(0x01), Some("ep.example"))
                .unwrap();
            let mut request = make_credential_request("ep.example", b"user", &[-7], false);
            if let Value::Map(entries) = &mut request {
                entries.push((int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))));
                entries.push((int(9), int(2)));
                entries.push((int(0x0A), int(value)));
            }
            assert_eq!(ctap2(key, MC, Some(request)).0, 0x02, "value {value}");
        }
    });
}

/// The order of makeCredential's and getAssertion's checks (§6.1.2, §6.2.2): the protocol is
/// checked first, but the pinUvAuthParam's MAC only after the algorithms, the options and
/// enterpriseAttestation (makeCredential step 11, getAssertion step 5), so a request with a
/// bad token and another fault gets the other fault's error, and a bad token alone gets
/// CTAP2_ERR_PIN_AUTH_INVALID. No PIN retry is spent on any of them.
#[test]
fn a_bad_token_is_reported_after_the_checks_the_spec_puts_first() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 21, |key| {
        let client = PinClient::new(key, 2, 9);
        client.set_pin(key, PIN);
        let forged = PinClient::mac(2, &[7; 32], &[1; 32]);
        // pinUvAuthParam and pinUvAuthProtocol are keys 8 and 9 in makeCredential, 6 and 7 in
        // getAssertion.
        let with_token = |mut request: Value, extra: Vec<(Value, Value)>| {
            let param_key = if get(&request, 3).and_then(Value::as_map).is_some() {
                8 // makeCredential: key 3 is the user entity
            } else {
                6
            };
            if let Value::Map(entries) = &mut request {
                entries.push((int(param_key), bytes(&forged)));
                entries.push((int(param_key + 1), int(2)));
                entries.extend(extra);
            }
            request
        };
        let mc = |rp: &str, algs: &[i64]| make_credential_request(rp, b"user", algs, false);
        let cases = [
            (mc("a.example", &[-7]), vec![], 0x33, "a bad token alone"),
            (
                mc("a.example", &[-257]),
                vec![],
                0x26,
                "unsupported algorithm first",
            ),
            (
                mc("a.example", &[-7]),
                vec![(int(7), map(vec![(text("up"), Value::Bool(false))]))],
                0x2C,
                "up=false first",
            ),
            (
                mc("a.example", &[-7]),
                vec![(int(0x0A), int(1))],
                0x02,
                "enterpriseAttestation on a key without it first",
            ),
        ];
        for (request, extra, status, why) in cases {
            assert_eq!(
                ctap2(key, MC, Some(with_token(request, extra))).0,
                status,
                "makeCredential: {why}"
            );
        }
        let ga = get_assertion_request("a.example", &[1; 32], &[]);
        assert_eq!(ctap2(key, GA, Some(with_token(ga.clone(), vec![]))).0, 0x33);
        let rk = vec![(int(5), map(vec![(text("rk"), Value::Bool(true))]))];
        assert_eq!(
            ctap2(key, GA, Some(with_token(ga, rk))).0,
            0x2B,
            "getAssertion: the rk option first"
        );
        assert_eq!(retries(key).0, 8, "no PIN retry spent");
    });
}
