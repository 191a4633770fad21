//! Discoverable-credential capacity: the key tells the truth about how many more fit, and a full
//! key keeps working.

use authenticator::ctaphid::App;
use ciborium::Value;
use test_support::pin_client::PinClient;
use test_support::*;

fn remaining(key: &mut impl App) -> i64 {
    let info = ctap2(key, 0x04, None).1.unwrap();
    i64::try_from(get(&info, 0x14).unwrap().as_integer().unwrap()).unwrap()
}

/// makeCredential of a discoverable credential with maximal user fields.
fn make_max(key: &mut impl App, rp: &str, i: usize) -> (u8, Vec<u8>) {
    let (status, body) = ctap2(key, 0x01, Some(make_max_request(rp, i)));
    let id = body
        .map(|b| parse_auth_data(get(&b, 2).unwrap().as_bytes().unwrap()).credential_id)
        .unwrap_or_default();
    (status, id)
}

fn make_max_request(rp: &str, i: usize) -> Value {
    let mut user_id = format!("user-{i}-").into_bytes();
    user_id.resize(64, b'x');
    let name = format!("{i}{}", "n".repeat(64))
        .chars()
        .take(64)
        .collect::<String>();
    map(vec![
        (int(1), bytes(&[7u8; 32])),
        (int(2), map(vec![(text("id"), text(rp))])),
        (
            int(3),
            map(vec![
                (text("id"), bytes(&user_id)),
                (text("name"), text(&name)),
                (text("displayName"), text(&name)),
            ]),
        ),
        (
            int(4),
            Value::Array(vec![map(vec![
                (text("alg"), int(-7)),
                (text("type"), text("public-key")),
            ])]),
        ),
        (int(6), map(vec![(text("credBlob"), bytes(&[0xAB; 32]))])),
        (int(7), map(vec![(text("rk"), Value::Bool(true))])),
    ])
}

#[test]
fn fill_until_full_then_delete_and_create_again() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        let rp = "r".repeat(248) + ".example";
        let mut created = Vec::new();
        let mut previous = remaining(key);
        eprintln!("initially remaining {previous}");
        loop {
            let before = remaining(key);
            assert!(
                before <= previous,
                "the remainder never grows while creating"
            );
            previous = before;
            let (status, id) = make_max(key, &rp, created.len());
            if before == 0 {
                assert_eq!(status, 0x28, "no room reported: KEY_STORE_FULL");
                break;
            }
            assert_eq!(
                status,
                0,
                "room reported ({before}) but creation {} failed",
                created.len()
            );
            assert_eq!(
                remaining(key),
                before - 1,
                "each credential takes exactly one place"
            );
            created.push(id);
        }
        eprintln!("created {} maximal discoverable credentials", created.len());
        assert!(created.len() >= 10);
        // Everything still works when full.
        let (status, body) = ctap2(key, 0x02, Some(get_assertion_request(&rp, &[0; 32], &[])));
        assert_eq!(status, 0);
        assert_eq!(
            i64::try_from(get(&body.unwrap(), 5).unwrap().as_integer().unwrap()).unwrap(),
            created.len() as i64
        );
        let (status, _) = ctap2(
            key,
            0x01,
            Some(make_credential_request("x.example", b"u", &[-7], false)),
        );
        assert_eq!(status, 0, "non-discoverable credentials need no room");
        assert_eq!(ctap2(key, 0x04, None).0, 0);

        // Deleting frees room, reported at once, and it can be used again.
        let client = PinClient::new(key, 2, 1);
        assert_eq!(
            client.set_pin(key, "1357"),
            0,
            "a PIN can still be set on a full key"
        );
        let token = client.token(key, "1357", Some(0x04), None).unwrap();
        for id in &created[..5] {
            let params = map(vec![(
                int(2),
                map(vec![
                    (text("id"), bytes(id)),
                    (text("type"), text("public-key")),
                ]),
            )]);
            let mut message = vec![6u8];
            ciborium::into_writer(&params, &mut message).unwrap();
            let request = map(vec![
                (int(1), int(6)),
                (int(2), params),
                (int(3), int(2)),
                (int(4), bytes(&PinClient::mac(2, &token, &message))),
            ]);
            assert_eq!(ctap2(key, 0x0A, Some(request)).0, 0);
        }
        assert_eq!(remaining(key), 5);
        for i in 0..5 {
            let token = client.token(key, "1357", Some(0x01), None).unwrap();
            let mut request = make_max_request(&rp, 1000 + i);
            if let Value::Map(entries) = &mut request {
                entries.push((int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))));
                entries.push((int(9), int(2)));
            }
            assert_eq!(ctap2(key, 0x01, Some(request)).0, 0);
        }
        assert_eq!(remaining(key), 0);
    });
}
