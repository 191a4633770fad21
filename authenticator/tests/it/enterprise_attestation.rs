//! Enterprise attestation (CTAP 2.1 §7.1) in the core, on a provisioned key: the vendor
//! command's RP ID list, getInfo's `ep`, enableEnterpriseAttestation with and without a PIN,
//! makeCredential's enterpriseAttestation (listed and unlisted RP, platform-managed, bad
//! values), epAtt, the certificate chain and the packed signature, a power cycle, and reset.
//! (A key without one: `pin.rs`, `enterprise_attestation_on_a_key_without_one`.)

use attestation::certificate::{self, Issued, Subject};
use authenticator::ctaphid::{App, Outcome, Transaction};
use ciborium::Value;
use der::{Decode, Encode};
use p256::ecdsa::signature::Verifier;
use test_support::pin_client::PinClient;
use test_support::*;

const MC: u8 = 0x01;
const CONFIG: u8 = 0x0D;
const LISTED: &str = "corp.example";
const PIN: &str = "1234";

struct Vendor {
    ca: Issued,
    batch: Issued,
    enterprise: Issued,
}

fn vendor() -> Vendor {
    let subject = |cn: &str| Subject {
        country: "SE".into(),
        organization: "Core Test Vendor".into(),
        common_name: cn.into(),
    };
    let ca = certificate::root_ca(&subject("Root"), 30).unwrap();
    let aaguid = [0xEA; 16];
    let batch = certificate::batch(&ca, &subject("Batch"), aaguid, 20).unwrap();
    let enterprise = certificate::enterprise(&ca, &subject("EA"), "SN-7", aaguid, 20).unwrap();
    Vendor {
        ca,
        batch,
        enterprise,
    }
}

/// The vendor command PROVISION_ATTESTATION; its status byte.
fn provision(key: &mut impl App, issued: &Issued, rp_ids: Option<&[&str]>) -> u8 {
    let mut entries = vec![
        (int(1), bytes(&issued.key.to_bytes())),
        (int(2), bytes(&issued.certificate.to_der().unwrap())),
    ];
    if let Some(rp_ids) = rp_ids {
        entries.push((
            int(3),
            Value::Array(rp_ids.iter().map(|id| text(id)).collect()),
        ));
    }
    let mut request = Vec::new();
    ciborium::into_writer(&map(entries), &mut request).unwrap();
    let mut response = Vec::new();
    assert_eq!(
        key.call(Transaction::Provision, &request, &mut response),
        Outcome::Done
    );
    assert_eq!(response.len(), 1);
    response[0]
}

fn ep_option(key: &mut impl App) -> Option<Value> {
    let info = ctap2(key, 0x04, None).1.unwrap();
    get_text(get(&info, 4).unwrap(), "ep").cloned()
}

fn enable(key: &mut impl App, token: Option<&[u8]>) -> u8 {
    let mut entries = vec![(int(1), int(1))];
    if let Some(token) = token {
        let message = [&[0xFF; 32][..], &[CONFIG, 0x01]].concat();
        entries.push((int(3), int(2)));
        entries.push((int(4), bytes(&PinClient::mac(2, token, &message))));
    }
    ctap2(key, CONFIG, Some(map(entries))).0
}

/// makeCredential; Ok((x5c[0], epAtt)) after checking the packed signature with the key of
/// the certificate the key returned and that certificate's signature by the root.
fn register(
    key: &mut (impl App + Transport),
    rp: &str,
    ep: Option<i64>,
    pin: Option<(&PinClient, &str)>,
    root: &Issued,
) -> Result<(Vec<u8>, Option<Value>), u8> {
    let mut request = make_credential_request(rp, b"user", &[-7], false);
    if let Value::Map(entries) = &mut request {
        if let Some((client, pin)) = pin {
            let token = client.token(key, pin, Some(0x01), Some(rp)).unwrap();
            entries.push((int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))));
            entries.push((int(9), int(2)));
        }
        if let Some(ep) = ep {
            entries.push((int(0x0A), int(ep)));
        }
    }
    let (status, body) = ctap2(key, MC, Some(request));
    if status != 0 {
        return Err(status);
    }
    let body = body.unwrap();
    let auth_data = get(&body, 2).unwrap().as_bytes().unwrap();
    let statement = get(&body, 3).unwrap();
    let x5c = get_text(statement, "x5c").unwrap().as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    let der = x5c[0].as_bytes().unwrap().clone();
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let tbs = cert.tbs_certificate().to_der().unwrap();
    let cert_sig = p256::ecdsa::DerSignature::from_bytes(cert.signature().raw_bytes()).unwrap();
    root.key
        .verifying_key()
        .verify(&tbs, &cert_sig)
        .expect("the root signed the certificate");
    let public = p256::ecdsa::VerifyingKey::from_sec1_bytes(
        cert.tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    let sig = get_text(statement, "sig").unwrap().as_bytes().unwrap();
    let signed = [&auth_data[..], &[7u8; 32]].concat();
    public
        .verify(&signed, &p256::ecdsa::Signature::from_der(sig).unwrap())
        .expect("the packed signature verifies with the certificate's key");
    Ok((der, get(&body, 4).cloned()))
}

#[test]
fn vendor_facilitated_platform_managed_power_cycle_and_reset() {
    let v = vendor();
    let enterprise = v.enterprise.certificate.to_der().unwrap();
    let batch = v.batch.certificate.to_der().unwrap();
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        assert_eq!(
            provision(key, &v.enterprise, Some(&[LISTED])),
            0x30,
            "no batch yet"
        );
        assert_eq!(provision(key, &v.batch, None), 0);
        assert_eq!(ep_option(key), None);
        assert_eq!(
            provision(key, &v.enterprise, Some(&[LISTED, "b.example"])),
            0
        );
        assert_eq!(provision(key, &v.enterprise, Some(&[LISTED])), 0x30, "once");
        assert_eq!(ep_option(key), Some(Value::Bool(false)));
        for ep in [1, 2] {
            assert_eq!(
                register(key, LISTED, Some(ep), None, &v.ca),
                Err(0x02),
                "disabled"
            );
        }
        let client = PinClient::new(key, 2, 3);
        client.set_pin(key, PIN);
        assert_eq!(enable(key, None), 0x36, "PIN required");
        let token = client.token(key, PIN, Some(0x20), None).unwrap();
        assert_eq!(enable(key, Some(&token)), 0);
        assert_eq!(ep_option(key), Some(Value::Bool(true)));
    });

    // A power cycle: the record and the switch are on storage.
    with_key(&mut storage, &knobs, 2, |key| {
        assert_eq!(ep_option(key), Some(Value::Bool(true)));
        let client = PinClient::new(key, 2, 4);
        let pin = Some((&client, PIN));
        let ok = |der: &[u8], ep: Option<bool>| Ok((der.to_vec(), ep.map(Value::Bool)));
        assert_eq!(
            register(key, LISTED, Some(1), pin, &v.ca),
            ok(&enterprise, Some(true))
        );
        assert_eq!(
            register(key, "b.example", Some(1), pin, &v.ca),
            ok(&enterprise, Some(true))
        );
        for unlisted in [
            "c.example",
            "corp.example.",
            "CORP.example",
            "x.corp.example",
        ] {
            assert_eq!(
                register(key, unlisted, Some(1), pin, &v.ca),
                ok(&batch, None)
            );
        }
        assert_eq!(
            register(key, "c.example", Some(2), pin, &v.ca),
            ok(&enterprise, Some(true))
        );
        assert_eq!(register(key, LISTED, None, pin, &v.ca), ok(&batch, None));
        for bad in [0, 3, 0xFFFF] {
            assert_eq!(
                register(key, LISTED, Some(bad), pin, &v.ca),
                Err(0x2C),
                "{bad}"
            );
        }
        // Reset disables it and keeps the record.
        assert_eq!(ctap2(key, 0x07, None).0, 0);
        assert_eq!(ep_option(key), Some(Value::Bool(false)));
        assert_eq!(register(key, LISTED, Some(1), None, &v.ca), Err(0x02));
        assert_eq!(enable(key, None), 0);
        assert_eq!(
            register(key, LISTED, Some(1), None, &v.ca),
            ok(&enterprise, Some(true))
        );
    });
}

#[test]
fn bad_enterprise_provisioning_is_refused_and_changes_nothing() {
    let v = vendor();
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 5, |key| {
        assert_eq!(provision(key, &v.batch, None), 0);
        let long = "a".repeat(257);
        let nine = [LISTED; 9];
        assert_eq!(provision(key, &v.enterprise, Some(&[long.as_str()])), 0x02);
        assert_eq!(provision(key, &v.enterprise, Some(&[""])), 0x02);
        assert_eq!(provision(key, &v.enterprise, Some(&nine)), 0x12);
        let mut wrong = Issued {
            key: v.batch.key.clone(),
            certificate: v.enterprise.certificate.clone(),
        };
        assert_eq!(provision(key, &wrong, Some(&[LISTED])), 0x02, "another key");
        wrong = certificate::enterprise(
            &v.ca,
            &Subject {
                country: "SE".into(),
                organization: "x".into(),
                common_name: "x".into(),
            },
            "SN-8",
            [9; 16],
            1,
        )
        .unwrap();
        assert_eq!(
            provision(key, &wrong, Some(&[LISTED])),
            0x02,
            "another AAGUID"
        );
        assert_eq!(ep_option(key), None, "nothing installed");
        let max = "m".repeat(256);
        assert_eq!(provision(key, &v.enterprise, Some(&[max.as_str(); 8])), 0);
        assert_eq!(ep_option(key), Some(Value::Bool(false)));
    });
}
