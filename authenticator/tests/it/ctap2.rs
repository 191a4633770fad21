//! CTAP2 commands against the core, with a RAM filesystem and a scripted platform.

use authenticator::ctaphid::{App, KeepaliveStatus, Outcome, Transaction};
use authenticator::platform::PresenceAnswer;
use ciborium::Value;
use sha2::{Digest, Sha256};
use test_support::*;

const MAKE_CREDENTIAL: u8 = 0x01;
const GET_ASSERTION: u8 = 0x02;
const GET_INFO: u8 = 0x04;
const RESET: u8 = 0x07;
const GET_NEXT_ASSERTION: u8 = 0x08;

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// makeCredential; returns (credential id, COSE public key, counter), all checked.
fn register(
    key: &mut impl App,
    rp: &str,
    user: &[u8],
    algs: &[i64],
    rk: bool,
) -> (Vec<u8>, Value, u32) {
    let (status, body) = ctap2(
        key,
        MAKE_CREDENTIAL,
        Some(make_credential_request(rp, user, algs, rk)),
    );
    assert_eq!(status, 0, "makeCredential status");
    let body = body.unwrap();
    assert_eq!(get(&body, 1).unwrap().as_text(), Some("packed"));
    let raw = get(&body, 2).unwrap().as_bytes().unwrap();
    let auth_data = parse_auth_data(raw);
    assert_eq!(auth_data.rp_id_hash, sha256(rp.as_bytes()));
    assert_eq!(auth_data.flags & 0x41, 0x41, "UP and AT set");
    assert!(auth_data.credential_id.len() <= 128);
    let public_key = auth_data.public_key.clone().unwrap();
    let statement = get(&body, 3).unwrap();
    let sig = get_text(statement, "sig").unwrap().as_bytes().unwrap();
    assert!(
        get_text(statement, "x5c").is_none(),
        "self attestation has no certificate"
    );
    let mut signed = raw.to_vec();
    signed.extend_from_slice(&[7u8; 32]);
    verify(&public_key, &signed, sig);
    (auth_data.credential_id, public_key, auth_data.counter)
}

/// getAssertion with the given request; verifies the signature with `public_key`.
fn assert_with(
    key: &mut impl App,
    request: Value,
    cdh: &[u8; 32],
    public_key: &Value,
) -> (Value, AuthData) {
    let (status, body) = ctap2(key, GET_ASSERTION, Some(request));
    assert_eq!(status, 0, "getAssertion status");
    let body = body.unwrap();
    check_assertion(&body, cdh, public_key)
}

fn check_assertion(body: &Value, cdh: &[u8; 32], public_key: &Value) -> (Value, AuthData) {
    let raw = get(body, 2).unwrap().as_bytes().unwrap();
    let sig = get(body, 3).unwrap().as_bytes().unwrap();
    let mut signed = raw.clone();
    signed.extend_from_slice(cdh);
    verify(public_key, &signed, sig);
    (body.clone(), parse_auth_data(raw))
}

#[test]
fn get_info_reports_what_the_key_does() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        let (status, body) = ctap2(key, GET_INFO, None);
        assert_eq!(status, 0);
        let info = body.unwrap();
        let versions: Vec<_> = get(&info, 1)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_text().unwrap().to_string())
            .collect();
        assert_eq!(versions, ["U2F_V2", "FIDO_2_0", "FIDO_2_1", "FIDO_2_3"]);
        assert_eq!(get(&info, 3).unwrap().as_bytes().unwrap(), &AAGUID);
        let options = get(&info, 4).unwrap();
        assert_eq!(get_text(options, "rk"), Some(&Value::Bool(true)));
        assert_eq!(get_text(options, "up"), Some(&Value::Bool(true)));
        assert_eq!(get_text(options, "plat"), Some(&Value::Bool(false)));
        assert_eq!(get(&info, 5), Some(&int(7609)));
        assert_eq!(get(&info, 7), Some(&int(10)));
        assert_eq!(get(&info, 8), Some(&int(128)));
        let algs: Vec<i64> = get(&info, 0x0A)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|p| i64::try_from(get_text(p, "alg").unwrap().as_integer().unwrap()).unwrap())
            .collect();
        assert_eq!(algs, [-7, -8]);
        assert!(get(&info, 0x0E).is_some(), "firmwareVersion");
        let remaining = i64::try_from(get(&info, 0x14).unwrap().as_integer().unwrap()).unwrap();
        assert!(remaining > 0);
        // CTAP 2.2's additions that this key has.
        let texts = |key: i64| -> Vec<String> {
            get(&info, key)
                .unwrap_or_else(|| panic!("getInfo 0x{key:02x}"))
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_text().unwrap().to_string())
                .collect()
        };
        assert_eq!(texts(0x16), ["packed", "none"], "attestationFormats");
        assert_eq!(texts(0x1A), ["usb"], "transportsForReset");
        assert_eq!(get(&info, 0x1D).map(as_int), Some(63), "maxPINLength");
        let config: Vec<i64> = get(&info, 0x1F)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(as_int)
            .collect();
        assert_eq!(
            config,
            [2, 3, 4, 0xFF],
            "authenticatorConfigCommands: toggleAlwaysUv, setMinPINLength, enableLongTouchForReset, \
             vendorPrototype"
        );
        let vendor: Vec<i64> = get(&info, 0x15)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(as_int)
            .collect();
        assert_eq!(
            vendor,
            [0x4C4F_434B, 0x4F50_454E],
            "vendorPrototypeConfigCommands: the PIN lock on (\"LOCK\") and off (\"OPEN\")"
        );
        assert_eq!(
            get(&info, 0x18),
            Some(&Value::Bool(false)),
            "longTouchForReset: the body has a long touch, reset does not need it yet"
        );
        assert_eq!(
            get(&info, 0x1B),
            Some(&Value::Bool(false)),
            "pinComplexityPolicy: can be turned on, is off"
        );
        for absent in [0x17, 0x19, 0x1C, 0x1E] {
            assert!(
                get(&info, absent).is_none(),
                "0x{absent:02x} is not advertised"
            );
        }
    });
}

#[test]
fn algorithms_follow_the_clients_preference_and_unknown_ones_are_skipped() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        let (_, pk, _) = register(key, "example.com", b"u", &[-8, -7], false);
        assert_eq!(get(&pk, 3), Some(&int(-8)));
        let (_, pk, _) = register(key, "example.com", b"u", &[-257, -7, -8], false);
        assert_eq!(get(&pk, 3), Some(&int(-7)));
        let (status, _) = ctap2(
            key,
            MAKE_CREDENTIAL,
            Some(make_credential_request(
                "example.com",
                b"u",
                &[-257, -37],
                false,
            )),
        );
        assert_eq!(status, 0x26, "CTAP2_ERR_UNSUPPORTED_ALGORITHM");
    });
}

#[test]
fn non_discoverable_credentials_sign_only_for_their_rp() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 3, |key| {
        let (id, pk, c0) = register(key, "aws.amazon.com", b"root", &[-7], false);
        let cdh = [3u8; 32];
        let (body, ad) = assert_with(
            key,
            get_assertion_request("aws.amazon.com", &cdh, &[&id]),
            &cdh,
            &pk,
        );
        assert_eq!(ad.flags & 1, 1);
        assert!(ad.counter > c0);
        assert!(
            get(&body, 4).is_none(),
            "no user for a non-discoverable credential"
        );
        assert_eq!(
            get_text(get(&body, 1).unwrap(), "id")
                .unwrap()
                .as_bytes()
                .unwrap(),
            &id
        );
        let (status, _) = ctap2(
            key,
            GET_ASSERTION,
            Some(get_assertion_request("evil.example", &cdh, &[&id])),
        );
        assert_eq!(status, 0x2E, "CTAP2_ERR_NO_CREDENTIALS for another RP");
        let mut forged = id.clone();
        forged[40] ^= 0x55;
        let (status, _) = ctap2(
            key,
            GET_ASSERTION,
            Some(get_assertion_request("aws.amazon.com", &cdh, &[&forged])),
        );
        assert_eq!(status, 0x2E);
    });
}

#[test]
fn nine_users_of_one_rp_each_sign_with_their_own_credential() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 4, |key| {
        let users: Vec<Vec<u8>> = (0..9).map(|i| format!("user-{i}").into_bytes()).collect();
        let creds: Vec<_> = users
            .iter()
            .map(|u| register(key, "signin.aws.amazon.com", u, &[-7], false))
            .collect();
        for (i, (id, pk, _)) in creds.iter().enumerate() {
            let cdh = [i as u8; 32];
            let (body, _) = assert_with(
                key,
                get_assertion_request("signin.aws.amazon.com", &cdh, &[id]),
                &cdh,
                pk,
            );
            assert_eq!(
                get_text(get(&body, 1).unwrap(), "id")
                    .unwrap()
                    .as_bytes()
                    .unwrap(),
                id
            );
        }
    });
}

#[test]
fn exclude_list_refuses_a_second_registration_after_a_touch() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 5, |key| {
        let (id, _, _) = register(key, "example.com", b"alice", &[-7], false);
        let mut request = make_credential_request("example.com", b"alice", &[-7], false);
        if let Value::Map(entries) = &mut request {
            entries.push((
                int(5),
                Value::Array(vec![map(vec![
                    (text("id"), bytes(&id)),
                    (text("type"), text("public-key")),
                ])]),
            ));
        }
        let prompts = knobs.prompts.get();
        let (status, _) = ctap2(key, MAKE_CREDENTIAL, Some(request));
        assert_eq!(status, 0x19, "CTAP2_ERR_CREDENTIAL_EXCLUDED");
        assert_eq!(
            knobs.prompts.get(),
            prompts + 1,
            "the user was asked to touch"
        );
    });
}

#[test]
fn discoverable_credentials_are_listed_newest_first_and_replaced_per_user() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 6, |key| {
        let mut creds = Vec::new();
        for i in 0..9 {
            let user = format!("iam-{i}").into_bytes();
            let (id, pk, _) = register(key, "aws.amazon.com", &user, &[-7], true);
            creds.push((user, id, pk));
        }
        // Same RP and user.id: the new credential replaces the old one.
        let (id, pk, _) = register(key, "aws.amazon.com", b"iam-3", &[-8], true);
        creds[3] = (b"iam-3".to_vec(), id, pk);

        let cdh = [9u8; 32];
        let (status, body) = ctap2(
            key,
            GET_ASSERTION,
            Some(get_assertion_request("aws.amazon.com", &cdh, &[])),
        );
        assert_eq!(status, 0);
        let body = body.unwrap();
        assert_eq!(get(&body, 5), Some(&int(9)), "numberOfCredentials");
        let mut seen = Vec::new();
        let mut current = body;
        for step in 0..9 {
            if step > 0 {
                let (status, body) = ctap2(key, GET_NEXT_ASSERTION, None);
                assert_eq!(status, 0);
                current = body.unwrap();
            }
            let user = get(&current, 4).expect("user entity returned");
            let user_id = get_text(user, "id").unwrap().as_bytes().unwrap().clone();
            assert!(
                get_text(user, "name").is_none(),
                "no names without user verification"
            );
            let (_, id, pk) = creds
                .iter()
                .find(|(u, _, _)| *u == user_id)
                .expect("a known user");
            assert_eq!(
                get_text(get(&current, 1).unwrap(), "id")
                    .unwrap()
                    .as_bytes()
                    .unwrap(),
                id
            );
            check_assertion(&current, &cdh, pk);
            seen.push(user_id);
        }
        assert_eq!(seen[0], b"iam-3", "the newest credential comes first");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        let (status, _) = ctap2(key, GET_NEXT_ASSERTION, None);
        assert_eq!(status, 0x30, "series exhausted");
    });
}

#[test]
fn get_next_assertion_needs_a_preceding_get_assertion() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 7, |key| {
        let (status, _) = ctap2(key, GET_NEXT_ASSERTION, None);
        assert_eq!(status, 0x30);
        register(key, "a.example", b"1", &[-7], true);
        register(key, "a.example", b"2", &[-7], true);
        let (status, _) = ctap2(
            key,
            GET_ASSERTION,
            Some(get_assertion_request("a.example", &[1; 32], &[])),
        );
        assert_eq!(status, 0);
        ctap2(key, GET_INFO, None);
        let (status, _) = ctap2(key, GET_NEXT_ASSERTION, None);
        assert_eq!(status, 0x30, "another command ended the series");
    });
}

#[test]
fn silent_probe_needs_no_touch_and_clears_up() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 8, |key| {
        let (id, pk, _) = register(key, "example.com", b"u", &[-7], false);
        knobs.presence.set(PresenceAnswer::Denied);
        let prompts = knobs.prompts.get();
        let cdh = [4u8; 32];
        let mut request = get_assertion_request("example.com", &cdh, &[&id]);
        if let Value::Map(entries) = &mut request {
            entries.push((int(5), map(vec![(text("up"), Value::Bool(false))])));
        }
        let (_, ad) = assert_with(key, request, &cdh, &pk);
        assert_eq!(ad.flags & 1, 0, "UP flag clear");
        assert_eq!(knobs.prompts.get(), prompts, "no prompt");
    });
}

#[test]
fn presence_waits_then_times_out_or_is_cancelled_or_denied() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 9, |key| {
        knobs.presence.set(PresenceAnswer::Pending);
        let mut request = vec![MAKE_CREDENTIAL];
        ciborium::into_writer(
            &make_credential_request("example.com", b"u", &[-7], false),
            &mut request,
        )
        .unwrap();
        let mut response = Vec::new();
        assert_eq!(
            key.call(Transaction::Cbor, &request, &mut response),
            Outcome::Waiting(KeepaliveStatus::UpNeeded)
        );
        knobs.now_ms.set(29_000);
        assert_eq!(
            key.call(Transaction::Cbor, &request, &mut response),
            Outcome::Waiting(KeepaliveStatus::UpNeeded)
        );
        knobs.now_ms.set(30_001);
        assert_eq!(
            ctap2_raw(key, &request).0,
            0x2F,
            "CTAP2_ERR_USER_ACTION_TIMEOUT"
        );

        assert_eq!(
            key.call(Transaction::Cbor, &request, &mut response),
            Outcome::Waiting(KeepaliveStatus::UpNeeded)
        );
        key.cancel();
        assert_eq!(
            ctap2_raw(key, &request).0,
            0x2D,
            "CTAP2_ERR_KEEPALIVE_CANCEL"
        );

        knobs.presence.set(PresenceAnswer::Denied);
        assert_eq!(
            ctap2_raw(key, &request).0,
            0x27,
            "CTAP2_ERR_OPERATION_DENIED"
        );

        knobs.presence.set(PresenceAnswer::Pending);
        assert_eq!(
            key.call(Transaction::Cbor, &request, &mut response),
            Outcome::Waiting(KeepaliveStatus::UpNeeded)
        );
        knobs.presence.set(PresenceAnswer::Granted);
        assert_eq!(ctap2_raw(key, &request).0, 0);
    });
}

#[test]
fn the_counter_never_goes_back_across_restarts() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    let (id, pk, mut last) = with_key(&mut storage, &knobs, 10, |key| {
        register(key, "example.com", b"u", &[-7], false)
    });
    for boot in 0..5 {
        with_key(&mut storage, &knobs, 11 + boot, |key| {
            for _ in 0..3 {
                let cdh = [5u8; 32];
                let (_, ad) = assert_with(
                    key,
                    get_assertion_request("example.com", &cdh, &[&id]),
                    &cdh,
                    &pk,
                );
                assert!(ad.counter > last, "{} > {}", ad.counter, last);
                last = ad.counter;
            }
        });
    }
}

#[test]
fn reset_needs_a_touch_within_ten_seconds_and_forgets_credentials() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    let (id, _, _) = with_key(&mut storage, &knobs, 12, |key| {
        register(key, "example.com", b"u", &[-7], true)
    });
    with_key(&mut storage, &knobs, 13, |key| {
        knobs.now_ms.set(10_001);
        assert_eq!(ctap2(key, RESET, None).0, 0x30, "too late after power-up");
        knobs.now_ms.set(9_000);
        knobs.presence.set(PresenceAnswer::Denied);
        assert_eq!(ctap2(key, RESET, None).0, 0x27);
        knobs.presence.set(PresenceAnswer::Granted);
        assert_eq!(ctap2(key, RESET, None).0, 0);
        let (status, _) = ctap2(
            key,
            GET_ASSERTION,
            Some(get_assertion_request("example.com", &[1; 32], &[&id])),
        );
        assert_eq!(status, 0x2E);
        let (status, _) = ctap2(
            key,
            GET_ASSERTION,
            Some(get_assertion_request("example.com", &[1; 32], &[])),
        );
        assert_eq!(status, 0x2E);
    });
}

#[test]
fn malformed_requests_get_spec_errors_and_change_nothing() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 14, |key| {
        assert_eq!(
            ctap2_raw(key, &[MAKE_CREDENTIAL, 0xa2, 0x01]).0,
            0x12,
            "truncated CBOR"
        );
        assert!(
            matches!(
                ctap2_raw(key, &[MAKE_CREDENTIAL, 0xff, 0x00]).0,
                0x11 | 0x12
            ),
            "a break byte is not a map"
        );
        assert_eq!(
            ctap2_raw(key, &[MAKE_CREDENTIAL]).0 & 0xF0,
            0x10,
            "empty body is a CBOR error"
        );
        let missing = map(vec![(int(1), bytes(&[0; 32]))]);
        assert_eq!(
            ctap2(key, MAKE_CREDENTIAL, Some(missing)).0,
            0x14,
            "missing parameter"
        );
        let wrong_type = map(vec![
            (int(1), text("not bytes")),
            (int(2), map(vec![(text("id"), text("x"))])),
        ]);
        assert!(matches!(
            ctap2(key, MAKE_CREDENTIAL, Some(wrong_type)).0,
            0x11 | 0x12
        ));
        let long_rp = "x".repeat(300);
        assert!(matches!(
            ctap2(
                key,
                MAKE_CREDENTIAL,
                Some(make_credential_request(&long_rp, b"u", &[-7], false))
            )
            .0,
            0x11..=0x15
        ));
        for command in [0x40u8, 0x55, 0x09, 0x0E, 0xFF] {
            assert_eq!(
                ctap2_raw(key, &[command]).0,
                0x01,
                "unknown command {command:#x}"
            );
        }
        assert_eq!(ctap2_raw(key, &[]).0, 0x03);
        let short_hash = get_assertion_request("example.com", &[0; 32], &[]);
        let short_hash = match short_hash {
            Value::Map(mut e) => {
                e[1].1 = bytes(&[0; 5]);
                Value::Map(e)
            }
            _ => unreachable!(),
        };
        assert_eq!(ctap2(key, GET_ASSERTION, Some(short_hash)).0, 0x02);
        // The key still works.
        register(key, "example.com", b"u", &[-7], false);
    });
}
