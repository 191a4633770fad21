//! Personas (profiles) against the core: each a coherent getInfo and the behaviour the spec
//! asks of such a key: u2f-only (CTAPHID without CBOR), ctap20-no-pin (CTAP 2.0, no clientPIN),
//! no-rk (no discoverable credentials) and always-uv (alwaysUv for good).

use authenticator::ctaphid::{App, Ctaphid, DeviceVersion, Transaction};
use authenticator::platform::{BuiltinUv, USER_VERIFY_FINGERPRINT_INTERNAL};
use authenticator::Profile;
use ciborium::Value;
use test_support::pin_client::PinClient;
use test_support::*;

const MC: u8 = 0x01;
const GA: u8 = 0x02;
const GET_INFO: u8 = 0x04;
const CLIENT_PIN: u8 = 0x06;
const GET_NEXT_ASSERTION: u8 = 0x08;

const INVALID_COMMAND: u8 = 0x01;
const UNSUPPORTED_OPTION: u8 = 0x2B;
const NO_CREDENTIALS: u8 = 0x2E;
const OPERATION_DENIED: u8 = 0x27;
const PIN_AUTH_INVALID: u8 = 0x33;
const PIN_NOT_SET: u8 = 0x35;
const PUAT_REQUIRED: u8 = 0x36;
const UNAUTHORIZED_PERMISSION: u8 = 0x40;
const PIN: &str = "2468";

fn info(key: &mut impl App) -> Value {
    let (status, body) = ctap2(key, GET_INFO, None);
    assert_eq!(status, 0);
    body.unwrap()
}

fn members(info: &Value) -> Vec<i64> {
    info.as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| as_int(k))
        .collect()
}

fn option(info: &Value, name: &str) -> Option<bool> {
    get_text(get(info, 4).unwrap(), name).map(|v| v.as_bool().unwrap())
}

fn texts(value: Option<&Value>) -> Vec<String> {
    value
        .map(|v| v.as_array().unwrap().iter())
        .into_iter()
        .flatten()
        .map(|t| t.as_text().unwrap().to_string())
        .collect()
}

fn flags(body: &Value, key: i64) -> u8 {
    get(body, key).unwrap().as_bytes().unwrap()[32]
}

/// `request` with extra members.
fn with(mut request: Value, extra: Vec<(Value, Value)>) -> Value {
    if let Value::Map(entries) = &mut request {
        entries.extend(extra);
    }
    request
}

/// A U2F APDU through the core; returns the status word and the data before it.
fn u2f(key: &mut impl App, ins: u8, p1: u8, data: &[u8]) -> (u16, Vec<u8>) {
    let mut apdu = vec![0, ins, p1, 0, 0];
    apdu.extend_from_slice(&(data.len() as u16).to_be_bytes());
    apdu.extend_from_slice(data);
    let mut response = Vec::new();
    key.call(Transaction::Msg, &apdu, &mut response);
    let sw = u16::from_be_bytes([response[response.len() - 2], response[response.len() - 1]]);
    response.truncate(response.len() - 2);
    (sw, response)
}

#[test]
fn u2f_only_has_no_cbor_capability_and_refuses_ctaphid_cbor() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        key.set_profile(Profile::U2fOnly);
        let version = DeviceVersion {
            major: 0,
            minor: 1,
            build: 0,
        };
        let mut ctaphid = Ctaphid::new(version);
        let mut init = [0u8; 64];
        init[..4].copy_from_slice(&[0xFF; 4]);
        init[4] = 0x86;
        init[6] = 8;
        init[7..15].copy_from_slice(b"noncenon");
        ctaphid.handle_packet(&init, 0, key);
        let answer = ctaphid.pop_packet().expect("INIT answer");
        assert_eq!(answer[4], 0x86);
        let capabilities = answer[7 + 16];
        assert_eq!(capabilities & 0x04, 0, "CAPABILITY_CBOR clear");
        assert_eq!(
            capabilities & 0x08,
            0,
            "CAPABILITY_NMSG clear: MSG is there"
        );
        assert_eq!(capabilities & 0x01, 0x01, "WINK");
        let cid: [u8; 4] = answer[15..19].try_into().unwrap();

        let mut cbor = [0u8; 64];
        cbor[..4].copy_from_slice(&cid);
        cbor[4] = 0x90;
        cbor[6] = 1;
        cbor[7] = GET_INFO;
        ctaphid.handle_packet(&cbor, 1, key);
        let answer = ctaphid.pop_packet().expect("an answer");
        assert_eq!(
            (answer[4], answer[7]),
            (0xBF, 0x01),
            "CTAPHID_ERROR ERR_INVALID_CMD"
        );

        // U2F itself works (and CTAP2 does not, even if it were reached).
        let (sw, version) = u2f(key, 0x03, 0, &[]);
        assert_eq!((sw, version.as_slice()), (0x9000, &b"U2F_V2"[..]));
        let (sw, _) = u2f(key, 0x01, 0, &[7u8; 64]);
        assert_eq!(sw, 0x9000, "U2F register");
        assert_eq!(ctap2(key, GET_INFO, None).0, INVALID_COMMAND);
    });
}

#[test]
fn ctap20_no_pin_speaks_ctap_2_0_only() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        key.set_profile(Profile::Ctap20NoPin);
        let info = info(key);
        assert_eq!(
            members(&info),
            vec![1, 3, 4, 5],
            "CTAP 2.0's members, no PIN"
        );
        assert_eq!(texts(get(&info, 1)), ["U2F_V2", "FIDO_2_0"]);
        let options: Vec<&str> = get(&info, 4)
            .unwrap()
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_text().unwrap())
            .collect();
        assert_eq!(
            options,
            ["rk", "up", "plat"],
            "no clientPin: no PIN support"
        );

        for command in [CLIENT_PIN, 0x0A, 0x0B, 0x0C, 0x0D, 0x41] {
            assert_eq!(
                ctap2(key, command, Some(map(vec![(int(1), int(1))]))).0,
                INVALID_COMMAND,
                "command {command:#04x}"
            );
        }

        // Extensions are ignored: no extension output, no ED flag.
        let extensions = map(vec![
            (text("credProtect"), int(3)),
            (text("hmac-secret"), Value::Bool(true)),
            (text("credBlob"), bytes(b"blob")),
        ]);
        let request = with(
            make_credential_request("example.com", b"alice", &[-7], true),
            vec![(int(6), extensions)],
        );
        let (status, body) = ctap2(key, MC, Some(request));
        assert_eq!(status, 0);
        assert_eq!(flags(&body.unwrap(), 2) & 0x80, 0, "no extension data");
        let request = make_credential_request("example.com", b"bob", &[-7], true);
        assert_eq!(ctap2(key, MC, Some(request)).0, 0);

        // A pinAuth: no PIN protocol to check it with (CTAP 2.0 §5.1 step 4); an empty one is
        // the platform's touch probe, answered after the touch with PIN_NOT_SET.
        let request = with(
            make_credential_request("example.com", b"carol", &[-7], false),
            vec![(int(8), bytes(&[1u8; 16])), (int(9), int(1))],
        );
        assert_eq!(ctap2(key, MC, Some(request)).0, PIN_AUTH_INVALID);
        let touches = knobs.prompts.get();
        let request = with(
            make_credential_request("example.com", b"carol", &[-7], false),
            vec![(int(8), bytes(&[])), (int(9), int(1))],
        );
        assert_eq!(ctap2(key, MC, Some(request)).0, PIN_NOT_SET);
        assert_eq!(knobs.prompts.get(), touches + 1, "after a touch");

        // Discoverable credentials and getNextAssertion are CTAP 2.0's.
        let (status, body) = ctap2(
            key,
            GA,
            Some(get_assertion_request("example.com", &[1u8; 32], &[])),
        );
        assert_eq!(status, 0);
        assert_eq!(get(&body.unwrap(), 5), Some(&int(2)), "numberOfCredentials");
        assert_eq!(ctap2(key, GET_NEXT_ASSERTION, None).0, 0);
    });
}

#[test]
fn ctap20_with_a_fingerprint_sensor_verifies_through_the_uv_option() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    knobs.builtin_uv.set(Some(BuiltinUv {
        modality: USER_VERIFY_FINGERPRINT_INTERNAL,
        enrolled: true,
    }));
    with_key(&mut storage, &knobs, 1, |key| {
        key.set_profile(Profile::Ctap20NoPin);
        let info = info(key);
        assert_eq!(option(&info, "uv"), Some(true));
        assert_eq!(
            option(&info, "pinUvAuthToken"),
            None,
            "no tokens in CTAP 2.0"
        );
        let options = map(vec![
            (text("rk"), Value::Bool(true)),
            (text("uv"), Value::Bool(true)),
        ]);
        let request = with(
            make_credential_request("example.com", b"u", &[-7], false),
            vec![(int(7), options)],
        );
        let (status, body) = ctap2(key, MC, Some(request));
        assert_eq!(status, 0);
        assert_eq!(flags(&body.unwrap(), 2) & 0x05, 0x05, "UP and UV");
        assert_eq!(knobs.uv_prompts.get(), 1);
    });
}

#[test]
fn no_rk_has_no_discoverable_credentials_and_nothing_that_serves_them() {
    let mut storage = RamStorage::default();
    // One discoverable credential from before (another profile): a no-rk key does not find it.
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        let request = make_credential_request("example.com", b"old", &[-7], true);
        assert_eq!(ctap2(key, MC, Some(request)).0, 0);
    });
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        key.set_profile(Profile::NoRk);
        let info = info(key);
        assert_eq!(option(&info, "rk"), Some(false));
        for gone in [
            "credMgmt",
            "credentialMgmtPreview",
            "largeBlobs",
            "perCredMgmtRO",
        ] {
            assert_eq!(option(&info, gone), None, "{gone}");
        }
        assert_eq!(option(&info, "clientPin"), Some(false), "the PIN stays");
        for member in [0x0B, 0x14] {
            assert_eq!(get(&info, member), None, "0x{member:02X}");
        }
        assert!(!texts(get(&info, 2)).contains(&"largeBlobKey".to_string()));
        assert!(texts(get(&info, 2)).contains(&"credProtect".to_string()));

        let request = make_credential_request("example.com", b"u", &[-7], true);
        assert_eq!(ctap2(key, MC, Some(request)).0, UNSUPPORTED_OPTION);
        let request = make_credential_request("example.com", b"u", &[-7], false);
        let (status, body) = ctap2(key, MC, Some(request));
        assert_eq!(status, 0);
        let id = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap()).credential_id;
        let cdh = [5u8; 32];
        assert_eq!(
            ctap2(
                key,
                GA,
                Some(get_assertion_request("example.com", &cdh, &[]))
            )
            .0,
            NO_CREDENTIALS,
            "no allow list: nothing discoverable"
        );
        assert_eq!(
            ctap2(
                key,
                GA,
                Some(get_assertion_request("example.com", &cdh, &[&id]))
            )
            .0,
            0
        );
        for command in [0x0A, 0x41, 0x0C] {
            assert_eq!(
                ctap2(key, command, Some(map(vec![(int(1), int(1))]))).0,
                INVALID_COMMAND,
                "command {command:#04x}"
            );
        }
        let client = PinClient::new(key, 2, 3);
        assert_eq!(client.set_pin(key, PIN), 0);
        for permission in [0x04, 0x10, 0x40] {
            assert_eq!(
                client.token(key, PIN, Some(permission), None),
                Err(UNAUTHORIZED_PERMISSION),
                "permission {permission:#04x}"
            );
        }
        assert!(client.token(key, PIN, Some(0x03), None).is_ok());
    });
}

#[test]
fn always_uv_is_on_for_good_and_turns_u2f_off() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        key.set_profile(Profile::AlwaysUv);
        let info = info(key);
        assert_eq!(option(&info, "alwaysUv"), Some(true));
        assert_eq!(option(&info, "makeCredUvNotRqd"), Some(false));
        assert_eq!(texts(get(&info, 1)), ["FIDO_2_0", "FIDO_2_1", "FIDO_2_3"]);
        assert_eq!(u2f(key, 0x03, 0, &[]).0, 0x6986, "U2F: command not allowed");

        let request = make_credential_request("example.com", b"u", &[-7], false);
        assert_eq!(ctap2(key, MC, Some(request.clone())).0, PIN_NOT_SET);
        let client = PinClient::new(key, 2, 3);
        assert_eq!(client.set_pin(key, PIN), 0);
        assert_eq!(ctap2(key, MC, Some(request)).0, PUAT_REQUIRED);

        // toggleAlwaysUv cannot turn it off (§7.2), even with an acfg token.
        let toggle = |token: &[u8]| {
            let mut message = vec![0xFF; 32];
            message.extend_from_slice(&[0x0D, 0x02]);
            map(vec![
                (int(1), int(2)),
                (int(3), int(2)),
                (int(4), bytes(&PinClient::mac(2, token, &message))),
            ])
        };
        let token = client.token(key, PIN, Some(0x20), None).unwrap();
        assert_eq!(ctap2(key, 0x0D, Some(toggle(&token))).0, OPERATION_DENIED);
        assert_eq!(option(&self::info(key), "alwaysUv"), Some(true));
    });
    // Nor does a reset: the profile holds it.
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        key.set_profile(Profile::AlwaysUv);
        assert_eq!(ctap2(key, 0x07, None).0, 0, "authenticatorReset");
        assert_eq!(option(&info(key), "alwaysUv"), Some(true));
    });
}

#[test]
fn the_full_profile_keeps_every_member_the_readme_lists() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        let info = info(key);
        assert_eq!(option(&info, "rk"), Some(true));
        assert_eq!(option(&info, "makeCredUvNotRqd"), Some(true));
        assert_eq!(option(&info, "uv"), None);
        assert_eq!(texts(get(&info, 2)).len(), 8);
        for member in [0x0B, 0x14] {
            assert!(get(&info, member).is_some(), "0x{member:02X}");
        }
    });
}
