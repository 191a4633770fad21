//! authenticatorCredentialManagement against the core.

mod common;

use authenticator::ctaphid::App;
use ciborium::Value;
use common::pin_client::PinClient;
use common::*;
use sha2::{Digest, Sha256};

const CM: u8 = 0x04;
const PIN: &str = "4321";

fn cm(
    key: &mut impl App,
    command: u8,
    token: Option<&[u8]>,
    sub: u8,
    params: Option<Value>,
) -> (u8, Option<Value>) {
    let mut entries = vec![(int(1), int(sub.into()))];
    let mut message = vec![sub];
    if let Some(params) = params {
        ciborium::into_writer(&params, &mut message).unwrap();
        entries.push((int(2), params));
    }
    if let Some(token) = token {
        entries.push((int(3), int(2)));
        entries.push((int(4), bytes(&PinClient::mac(2, token, &message))));
    }
    ctap2(key, command, Some(map(entries)))
}

fn register(key: &mut impl App, token: &[u8], rp: &str, user: &str) -> Vec<u8> {
    let mut request = make_credential_request(rp, user.as_bytes(), &[-7], true);
    if let Value::Map(entries) = &mut request {
        entries.push((int(8), bytes(&PinClient::mac(2, token, &[7u8; 32]))));
        entries.push((int(9), int(2)));
    }
    let (status, body) = ctap2(key, 0x01, Some(request));
    assert_eq!(status, 0);
    parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap()).credential_id
}

fn as_int(value: &Value) -> i64 {
    i64::try_from(value.as_integer().unwrap()).unwrap()
}

#[test]
fn enumerate_update_and_delete() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        let client = PinClient::new(key, 2, 3);
        client.set_pin(key, PIN);
        let mut ids = Vec::new();
        for (rp, user) in [
            ("a.example", "alice"),
            ("a.example", "bob"),
            ("b.example", "carol"),
        ] {
            let token = client.token(key, PIN, Some(0x01), None).unwrap();
            ids.push(register(key, &token, rp, user));
        }
        let token = client.token(key, PIN, Some(CM), None).unwrap();

        let (status, body) = cm(key, 0x0A, Some(&token), 1, None);
        assert_eq!(status, 0);
        let metadata = body.unwrap();
        assert_eq!(as_int(get(&metadata, 1).unwrap()), 3);
        assert!(as_int(get(&metadata, 2).unwrap()) > 0);

        let (status, body) = cm(key, 0x0A, Some(&token), 2, None);
        assert_eq!(status, 0);
        let first = body.unwrap();
        assert_eq!(as_int(get(&first, 5).unwrap()), 2, "totalRPs");
        assert_eq!(
            get_text(get(&first, 3).unwrap(), "id"),
            Some(&text("a.example"))
        );
        let (status, body) = cm(key, 0x0A, None, 3, None);
        assert_eq!(status, 0);
        assert_eq!(
            get_text(get(&body.unwrap(), 3).unwrap(), "id"),
            Some(&text("b.example"))
        );
        assert_eq!(cm(key, 0x0A, None, 3, None).0, 0x30, "no more RPs");

        let rp_hash: [u8; 32] = Sha256::digest(b"a.example").into();
        let params = map(vec![(int(1), bytes(&rp_hash))]);
        let (status, body) = cm(key, 0x41, Some(&token), 4, Some(params.clone()));
        assert_eq!(status, 0, "the 0x41 preview command works too");
        let body = body.unwrap();
        assert_eq!(as_int(get(&body, 9).unwrap()), 2, "totalCredentials");
        assert!(get(&body, 8).is_some(), "public key");
        let (status, _) = cm(key, 0x41, None, 5, None);
        assert_eq!(status, 0);

        let descriptor = |id: &[u8]| {
            map(vec![
                (text("id"), bytes(id)),
                (text("type"), text("public-key")),
            ])
        };
        let user = map(vec![
            (text("id"), bytes(b"bob")),
            (text("name"), text("robert")),
        ]);
        let update = map(vec![(int(2), descriptor(&ids[1])), (int(3), user)]);
        assert_eq!(cm(key, 0x0A, Some(&token), 7, Some(update)).0, 0);
        let wrong_user = map(vec![
            (int(2), descriptor(&ids[1])),
            (int(3), map(vec![(text("id"), bytes(b"eve"))])),
        ]);
        assert_eq!(cm(key, 0x0A, Some(&token), 7, Some(wrong_user)).0, 0x02);

        let delete = map(vec![(int(2), descriptor(&ids[0]))]);
        assert_eq!(cm(key, 0x0A, Some(&token), 6, Some(delete.clone())).0, 0);
        assert_eq!(
            cm(key, 0x0A, Some(&token), 6, Some(delete)).0,
            0x2E,
            "already gone"
        );
        let (_, body) = cm(key, 0x0A, Some(&token), 1, None);
        assert_eq!(as_int(get(&body.unwrap(), 1).unwrap()), 2);
        let (status, _) = ctap2(
            key,
            0x02,
            Some(get_assertion_request("a.example", &[0; 32], &[&ids[0]])),
        );
        assert_eq!(status, 0x2E, "a deleted credential no longer signs");

        assert_eq!(
            cm(key, 0x0A, None, 1, None).0,
            0x36,
            "no token: PUAT_REQUIRED"
        );
        let bound = client.token(key, PIN, Some(CM), Some("a.example")).unwrap();
        assert_eq!(
            cm(key, 0x0A, Some(&bound), 1, None).0,
            0x33,
            "an RP-bound token cannot list all RPs"
        );
        let b_hash: [u8; 32] = Sha256::digest(b"b.example").into();
        assert_eq!(
            cm(
                key,
                0x0A,
                Some(&bound),
                4,
                Some(map(vec![(int(1), bytes(&b_hash))]))
            )
            .0,
            0x33,
            "nor another RP's credentials"
        );
        assert_eq!(cm(key, 0x0A, Some(&bound), 4, Some(params)).0, 0);
    });
}
