//! Faults armed for the next signed response (feature `faults`, the virtual key's): each one
//! changes exactly what it says, the signature stays valid over the altered data (but for the
//! bad signature), it is spent by one response, and silent probes do not spend it.

use authenticator::ctaphid::{App, Transaction};
use authenticator::fault::Fault;
use ciborium::Value;
use p256::ecdsa::signature::Verifier;
use test_support::pin_client::PinClient;
use test_support::*;

const MC: u8 = 0x01;
const GA: u8 = 0x02;
const UP: u8 = 0x01;
const UV: u8 = 0x04;

/// Does `signature` (DER) verify over `message` with the COSE ES256 key?
fn verifies(cose: &Value, message: &[u8], signature: &[u8]) -> bool {
    let x = get(cose, -2).unwrap().as_bytes().unwrap();
    let y = get(cose, -3).unwrap().as_bytes().unwrap();
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&[&[4u8][..], x, y].concat()).unwrap();
    let signature = p256::ecdsa::Signature::from_der(signature).expect("well-formed DER");
    key.verify(message, &signature).is_ok()
}

/// Register an ES256 credential: (id, COSE public key, registration's authData).
fn register(key: &mut impl App) -> (Vec<u8>, Value, AuthData) {
    let (status, body) = ctap2(
        key,
        MC,
        Some(make_credential_request("example.com", b"u", &[-7], false)),
    );
    assert_eq!(status, 0);
    let body = body.unwrap();
    let auth_data = parse_auth_data(get(&body, 2).unwrap().as_bytes().unwrap());
    (
        auth_data.credential_id.clone(),
        auth_data.public_key.clone().unwrap(),
        auth_data,
    )
}

/// One getAssertion (with a token if given): (authData, whether its signature verifies).
fn assert_once(
    key: &mut impl App,
    id: &[u8],
    public_key: &Value,
    token: Option<&[u8]>,
    up: bool,
) -> (AuthData, bool) {
    let cdh = [8u8; 32];
    let mut request = get_assertion_request("example.com", &cdh, &[id]);
    if let Value::Map(entries) = &mut request {
        if let Some(token) = token {
            entries.push((int(6), bytes(&PinClient::mac(2, token, &cdh))));
            entries.push((int(7), int(2)));
        }
        if !up {
            entries.push((int(5), map(vec![(text("up"), Value::Bool(false))])));
        }
    }
    let (status, body) = ctap2(key, GA, Some(request));
    assert_eq!(status, 0);
    let body = body.unwrap();
    let raw = get(&body, 2).unwrap().as_bytes().unwrap();
    let signature = get(&body, 3).unwrap().as_bytes().unwrap();
    let ok = verifies(public_key, &[raw, &cdh[..]].concat(), signature);
    (parse_auth_data(raw), ok)
}

#[test]
fn each_fault_changes_one_assertion_as_it_says() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        let (id, public_key, _) = register(key);
        let (normal, ok) = assert_once(key, &id, &public_key, None, true);
        assert!(ok && normal.flags & UP == UP && normal.counter > 1);

        knobs.fault.set(Some(Fault::BadSignature));
        let (data, ok) = assert_once(key, &id, &public_key, None, true);
        assert!(!ok, "bad-signature: the signature does not verify");
        assert_eq!(data.flags & UP, UP, "and nothing else changed");

        knobs.fault.set(Some(Fault::ClearUp));
        let (data, ok) = assert_once(key, &id, &public_key, None, true);
        assert!(ok, "clear-up: signed over the altered data");
        assert_eq!(data.flags & UP, 0);

        knobs.fault.set(Some(Fault::CounterRewind));
        let (rewound, ok) = assert_once(key, &id, &public_key, None, true);
        assert!(ok);
        assert_eq!(rewound.counter, 1, "counter-rewind: back to 1");

        knobs.fault.set(Some(Fault::CounterZero));
        let (zero, ok) = assert_once(key, &id, &public_key, None, true);
        assert!(ok);
        assert_eq!(zero.counter, 0);

        // One-shot: the next one is normal again, and the key's own counter moved on.
        let (after, ok) = assert_once(key, &id, &public_key, None, true);
        assert!(ok && after.flags & UP == UP);
        assert!(
            after.counter > normal.counter + 4,
            "{} then {}",
            normal.counter,
            after.counter
        );
        assert_eq!(knobs.fault.get(), None);
    });
}

#[test]
fn clear_uv_waits_for_a_verified_response_and_silent_probes_leave_faults_armed() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        let (id, public_key, _) = register(key);
        knobs.fault.set(Some(Fault::ClearUv));
        // Unverified: clear-uv has no UV flag to clear, so it stays armed.
        let (data, _) = assert_once(key, &id, &public_key, None, true);
        assert_eq!(data.flags & UV, 0);
        assert_eq!(knobs.fault.get(), Some(Fault::ClearUv));

        let client = PinClient::new(key, 2, 3);
        assert_eq!(client.set_pin(key, "1357"), 0);
        // A silent up=false probe never reaches an RP: it does not take the fault.
        let token = client.token(key, "1357", Some(0x02), None).unwrap();
        let (probe, ok) = assert_once(key, &id, &public_key, Some(&token), false);
        assert!(ok && probe.flags & UV == UV);
        assert_eq!(knobs.fault.get(), Some(Fault::ClearUv));
        let (data, ok) = assert_once(key, &id, &public_key, Some(&token), true);
        assert!(ok, "clear-uv: signed over the altered data");
        assert_eq!(data.flags & (UP | UV), UP, "UV cleared, UP kept");
        assert_eq!(knobs.fault.get(), None);
    });
}

#[test]
fn a_registration_takes_a_fault_too_and_none_attestation_keeps_bad_signature_armed() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        knobs.fault.set(Some(Fault::ClearUp));
        let (status, body) = ctap2(
            key,
            MC,
            Some(make_credential_request("example.com", b"u", &[-7], false)),
        );
        assert_eq!(status, 0);
        let body = body.unwrap();
        let raw = get(&body, 2).unwrap().as_bytes().unwrap();
        let data = parse_auth_data(raw);
        assert_eq!(data.flags & UP, 0, "clear-up on a registration");
        // Packed self attestation: signed by the credential over the altered authData.
        let statement = get(&body, 3).unwrap();
        let signature = get_text(statement, "sig").unwrap().as_bytes().unwrap();
        assert!(verifies(
            data.public_key.as_ref().unwrap(),
            &[raw, &[7u8; 32][..]].concat(),
            signature
        ));

        // A platform that asks for no attestation gets no signature to spoil.
        knobs.fault.set(Some(Fault::BadSignature));
        let mut request = make_credential_request("example.com", b"v", &[-7], false);
        if let Value::Map(entries) = &mut request {
            entries.push((int(0x0B), Value::Array(vec![text("none")])));
        }
        let (status, body) = ctap2(key, MC, Some(request));
        assert_eq!(status, 0);
        assert_eq!(get(&body.unwrap(), 1), Some(&text("none")));
        assert_eq!(knobs.fault.get(), Some(Fault::BadSignature), "still armed");
    });
}

/// A U2F APDU through the core: (status word, data).
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
fn u2f_authentications_take_presence_and_counter_faults() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        let app = [0xAAu8; 32];
        let (sw, registration) = u2f(key, 0x01, 0, &[[1u8; 32], app].concat());
        assert_eq!(sw, 0x9000);
        let public_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&registration[1..66]).unwrap();
        let handle_len = usize::from(registration[66]);
        let handle = registration[67..67 + handle_len].to_vec();
        let authenticate = |key: &mut _, p1| {
            let challenge = [2u8; 32];
            let data = [&challenge[..], &app, &[handle_len as u8], &handle].concat();
            let (sw, out) = u2f(key, 0x02, p1, &data);
            assert_eq!(sw, 0x9000);
            let signed = [&app[..], &out[..5], &challenge].concat();
            let signature = p256::ecdsa::Signature::from_der(&out[5..]).unwrap();
            let counter = u32::from_be_bytes(out[1..5].try_into().unwrap());
            (
                out[0],
                counter,
                public_key.verify(&signed, &signature).is_ok(),
            )
        };
        knobs.fault.set(Some(Fault::ClearUp));
        // "Don't enforce presence" (0x08) signs, but no RP takes it for a sign-in: not spent.
        assert_eq!(authenticate(key, 0x08).0, 0);
        assert_eq!(knobs.fault.get(), Some(Fault::ClearUp));
        let (presence, _, ok) = authenticate(key, 0x03);
        assert_eq!(
            (presence, ok),
            (0, true),
            "presence byte cleared, signature valid"
        );
        knobs.fault.set(Some(Fault::CounterZero));
        assert_eq!(authenticate(key, 0x03), (1, 0, true));
        knobs.fault.set(Some(Fault::BadSignature));
        assert!(!authenticate(key, 0x03).2);
        assert!(authenticate(key, 0x03).2, "one-shot");
    });
}
