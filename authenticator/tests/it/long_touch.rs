//! longTouchForReset (CTAP 2.2): getInfo's 0x18 and authenticatorConfigCommands on a body with
//! a long touch, enableLongTouchForReset (0x04) behind an acfg token once a PIN is set, the
//! switch kept across a power cycle, authenticatorReset asking for the long touch then (and
//! only then), and reset returning the key to its factory setting. A body without a long touch
//! offers none of it.

use authenticator::ctaphid::App;
use authenticator::platform::{PresenceAnswer, Touch};
use ciborium::Value;
use test_support::pin_client::PinClient;
use test_support::*;

const GET_INFO: u8 = 0x04;
const RESET: u8 = 0x07;
const CONFIG: u8 = 0x0D;
const ENABLE_LONG_TOUCH_FOR_RESET: u8 = 0x04;
const PIN: &str = "1234";

/// getInfo's longTouchForReset (0x18) and authenticatorConfigCommands (0x1F).
fn info(key: &mut impl App) -> (Option<Value>, Vec<i64>) {
    let info = ctap2(key, GET_INFO, None).1.unwrap();
    let commands = get(&info, 0x1F)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(as_int)
        .collect();
    (get(&info, 0x18).cloned(), commands)
}

/// enableLongTouchForReset, with a pinUvAuthParam made with `token` if given; its status.
fn enable(key: &mut impl App, token: Option<&[u8]>) -> u8 {
    let mut entries = vec![(int(1), int(ENABLE_LONG_TOUCH_FOR_RESET.into()))];
    if let Some(token) = token {
        let message = [&[0xFF; 32][..], &[CONFIG, ENABLE_LONG_TOUCH_FOR_RESET]].concat();
        entries.push((int(3), int(2)));
        entries.push((int(4), bytes(&PinClient::mac(2, token, &message))));
    }
    ctap2(key, CONFIG, Some(map(entries))).0
}

#[test]
fn enabled_long_touch_is_kept_and_asked_by_reset_until_reset() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        let (long, commands) = info(key);
        assert_eq!(long, Some(Value::Bool(false)), "offered, off");
        assert!(commands.contains(&4), "{commands:?}");
        let client = PinClient::new(key, 2, 3);
        assert_eq!(client.set_pin(key, PIN), 0);
        assert_eq!(enable(key, None), 0x36, "a PIN-protected key needs a token");
        let make_credential_token = client.token(key, PIN, Some(0x01), Some("a.example"));
        assert_eq!(
            enable(key, Some(&make_credential_token.unwrap())),
            0x33,
            "a token without acfg"
        );
        assert_eq!(
            info(key).0,
            Some(Value::Bool(false)),
            "refusals change nothing"
        );
        let token = client.token(key, PIN, Some(0x20), None).unwrap();
        assert_eq!(enable(key, Some(&token)), 0);
        assert_eq!(info(key).0, Some(Value::Bool(true)));
        assert_eq!(
            enable(key, Some(&token)),
            0,
            "enabling again changes nothing"
        );
    });

    // A power cycle: the switch is on storage. Ordinary requests still ask a short touch;
    // only reset asks the long one.
    with_key(&mut storage, &knobs, 2, |key| {
        assert_eq!(info(key).0, Some(Value::Bool(true)));
        let request = make_credential_request("a.example", b"u", &[-7], false);
        assert_eq!(ctap2(key, 0x01, Some(request)).0, 0);
        assert_eq!(knobs.touch.get(), Some(Touch::Short));
        knobs.presence.set(PresenceAnswer::Denied);
        assert_eq!(ctap2(key, RESET, None).0, 0x27);
        assert_eq!(knobs.touch.get(), Some(Touch::Long));
        assert_eq!(
            info(key).0,
            Some(Value::Bool(true)),
            "a refused reset changes nothing"
        );
        knobs.presence.set(PresenceAnswer::TimedOut);
        assert_eq!(ctap2(key, RESET, None).0, 0x2F);
        knobs.presence.set(PresenceAnswer::Granted);
        assert_eq!(ctap2(key, RESET, None).0, 0);
        assert_eq!(knobs.touch.get(), Some(Touch::Long));
        // Factory settings: off again, no PIN, so no token needed to turn it back on.
        assert_eq!(info(key).0, Some(Value::Bool(false)));
        assert_eq!(ctap2(key, RESET, None).0, 0);
        assert_eq!(knobs.touch.get(), Some(Touch::Short));
        assert_eq!(enable(key, None), 0);
        assert_eq!(info(key).0, Some(Value::Bool(true)));
    });
}

#[test]
fn a_body_without_a_long_touch_does_not_offer_it() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    knobs.long_touch.set(false);
    with_key(&mut storage, &knobs, 3, |key| {
        let (long, commands) = info(key);
        assert_eq!(long, None);
        assert_eq!(commands, vec![2, 3, 0xFF]);
        assert_eq!(enable(key, None), 0x02, "an unsupported subcommand (§6.11)");
        assert_eq!(ctap2(key, RESET, None).0, 0);
        assert_eq!(knobs.touch.get(), Some(Touch::Short));
    });
}

/// Rewrite the key's settings file (`/dev/cfg`) with `edit` applied to its CBOR map.
fn edit_settings_file(storage: &mut RamStorage, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut alloc = littlefs2::fs::Allocation::new();
    let fs = littlefs2::fs::Filesystem::mount(&mut alloc, storage).unwrap();
    let path = littlefs2::path!("/dev/cfg");
    let mut bytes = fs.read::<1024>(path).unwrap().to_vec();
    edit(&mut bytes);
    fs.write(path, &bytes).unwrap();
}

/// Settings written by the layout before longTouchForReset (no "l" entry) still open: the
/// other settings are kept, the switch reads as off, and it can be turned on.
#[test]
fn settings_of_the_previous_layout_read_as_off() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 4, |key| {
        let params = map(vec![(int(1), int(6))]);
        let request = map(vec![(int(1), int(3)), (int(2), params)]);
        assert_eq!(ctap2(key, CONFIG, Some(request)).0, 0, "setMinPINLength 6");
        assert_eq!(enable(key, None), 0);
    });
    edit_settings_file(&mut storage, |bytes| {
        let Value::Map(mut entries) = ciborium::from_reader::<Value, _>(&bytes[..]).unwrap() else {
            panic!("the settings are a map");
        };
        let before = entries.len();
        entries.retain(|(k, _)| k.as_text() != Some("l"));
        assert_eq!(entries.len(), before - 1, "the new layout writes \"l\"");
        bytes.clear();
        ciborium::into_writer(&Value::Map(entries), &mut *bytes).unwrap();
    });
    with_key(&mut storage, &knobs, 5, |key| {
        let info = ctap2(key, GET_INFO, None).1.unwrap();
        assert_eq!(get(&info, 0x0D).map(as_int), Some(6), "minPINLength kept");
        assert_eq!(get(&info, 0x18), Some(&Value::Bool(false)));
        assert_eq!(ctap2(key, RESET, None).0, 0);
        assert_eq!(knobs.touch.get(), Some(Touch::Short));
    });
}

/// A settings file that cannot be read does not stop a reset (the way out of a damaged key),
/// but the reset then asks for the long touch the owner may have enabled.
#[test]
fn unreadable_settings_make_reset_ask_the_long_touch() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 6, |key| {
        assert_eq!(enable(key, None), 0);
    });
    edit_settings_file(&mut storage, |bytes| *bytes = vec![0xFF; 7]);
    with_key(&mut storage, &knobs, 7, |key| {
        assert_eq!(ctap2(key, RESET, None).0, 0);
        assert_eq!(knobs.touch.get(), Some(Touch::Long));
        assert_eq!(
            info(key).0,
            Some(Value::Bool(false)),
            "reset: factory settings"
        );
    });
}
