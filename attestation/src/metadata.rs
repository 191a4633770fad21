//! A FIDO Metadata Statement (MDS3 schema, FIDO Metadata Statement v3.0) for this key, which a
//! relying party loads to trust the batch's attestations.

use base64ct::{Base64, Encoding};
use ciborium::Value;
use der::Encode;
use serde_json::{json, Map, Value as Json};
use x509_cert::Certificate;

use crate::certificate::aaguid_of;
use crate::{format_aaguid, Error};

/// authenticatorGetInfo's member names (CTAP 2.2 §6.4), by CBOR key.
const GET_INFO_NAMES: [&str; 31] = [
    "versions",
    "extensions",
    "aaguid",
    "options",
    "maxMsgSize",
    "pinUvAuthProtocols",
    "maxCredentialCountInList",
    "maxCredentialIdLength",
    "transports",
    "algorithms",
    "maxSerializedLargeBlobArray",
    "forcePINChange",
    "minPINLength",
    "firmwareVersion",
    "maxCredBlobLength",
    "maxRPIDsForSetMinPINLength",
    "preferredPlatformUvAttempts",
    "uvModality",
    "certifications",
    "remainingDiscoverableCredentials",
    "vendorPrototypeConfigCommands",
    "attestationFormats",
    "uvCountSinceLastPinEntry",
    "longTouchForReset",
    "encIdentifier",
    "transportsForReset",
    "pinComplexityPolicy",
    "pinComplexityPolicyURL",
    "maxPINLength",
    "encCredStoreState",
    "authenticatorConfigCommands",
];

/// The key's getInfo (CBOR) as the statement's `authenticatorGetInfo` object: members by name,
/// the AAGUID as 32 hex digits. remainingDiscoverableCredentials is left out: it is a live count,
/// not a property of the model.
pub fn get_info_json(info: &Value) -> Result<Json, Error> {
    let entries = info
        .as_map()
        .ok_or_else(|| Error::new("getInfo is not a map"))?;
    let mut out = Map::new();
    for (key, value) in entries {
        let index = key
            .as_integer()
            .and_then(|k| usize::try_from(i128::from(k)).ok())
            .filter(|k| (1..=GET_INFO_NAMES.len()).contains(k))
            .ok_or_else(|| Error::new(format!("unknown getInfo member {key:?}")))?;
        let name = GET_INFO_NAMES[index - 1];
        if name == "remainingDiscoverableCredentials" {
            continue;
        }
        let value = match (name, value) {
            ("aaguid", Value::Bytes(bytes)) => Json::String(hex(bytes)),
            _ => to_json(value)?,
        };
        out.insert(name.to_owned(), value);
    }
    Ok(Json::Object(out))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn to_json(value: &Value) -> Result<Json, Error> {
    Ok(match value {
        Value::Integer(i) => json!(i128::from(*i) as i64),
        Value::Text(text) => json!(text),
        Value::Bool(b) => json!(b),
        Value::Bytes(bytes) => json!(hex(bytes)),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(entries) => {
            let mut out = Map::new();
            for (key, value) in entries {
                let key = match key {
                    Value::Text(text) => text.clone(),
                    other => return Err(Error::new(format!("map key {other:?} in getInfo"))),
                };
                out.insert(key, to_json(value)?);
            }
            Json::Object(out)
        }
        other => return Err(Error::new(format!("{other:?} in getInfo"))),
    })
}

/// The metadata statement for keys attesting with `batch`, issued under `root`, whose
/// authenticatorGetInfo is `info`.
pub fn statement(batch: &Certificate, root: &Certificate, info: &Value) -> Result<Json, Error> {
    let aaguid = aaguid_of(batch).ok_or_else(|| Error::new("the batch has no AAGUID extension"))?;
    let get_info = get_info_json(info)?;
    if get_info.get("aaguid") != Some(&Json::String(hex(&aaguid))) {
        return Err(Error::new(
            "the key reports another AAGUID than the batch certificate: provision it first",
        ));
    }
    let firmware_version = get_info
        .get("firmwareVersion")
        .and_then(Json::as_u64)
        .unwrap_or(0);
    let root_der = root
        .to_der()
        .map_err(|e| Error::new(format!("encoding the root: {e}")))?;
    // authenticationAlgorithms: the FIDO names of the COSE algorithms getInfo lists.
    let authentication_algorithms = get_info["algorithms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|parameters| match parameters["alg"].as_i64() {
            Some(-7) => Ok("secp256r1_ecdsa_sha256_raw"),
            Some(-8) => Ok("ed25519_eddsa_sha512_raw"),
            other => Err(Error::new(format!(
                "no FIDO name for COSE algorithm {other:?}"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut upv = vec![
        json!({"major": 1, "minor": 1}),
        json!({"major": 1, "minor": 0}),
    ];
    let u2f = get_info["versions"]
        .as_array()
        .is_some_and(|versions| versions.iter().any(|v| v == "U2F_V2"));
    if u2f {
        // U2F 1.2, the version U2F_V2 names.
        upv.push(json!({"major": 1, "minor": 2}));
    }
    Ok(json!({
        "legalHeader": "Issued by the key's own vendor, not by the FIDO Alliance.",
        "aaguid": format_aaguid(&aaguid),
        "description": "Open FIDO Key (USB/IP virtual key and Raspberry Pi Pico)",
        "authenticatorVersion": firmware_version,
        "protocolFamily": "fido2",
        "schema": 3,
        "upv": upv,
        "authenticationAlgorithms": authentication_algorithms,
        "publicKeyAlgAndEncodings": ["cose"],
        "attestationTypes": ["basic_full"],
        "userVerificationDetails": [
            [{"userVerificationMethod": "presence_internal"}],
            [{"userVerificationMethod": "passcode_external",
              "caDesc": {"base": 10, "minLength": 4, "maxRetries": 8, "blockSlowdown": 0}}],
            [{"userVerificationMethod": "passcode_external"},
             {"userVerificationMethod": "presence_internal"}],
            [{"userVerificationMethod": "none"}]
        ],
        "keyProtection": ["software"],
        "matcherProtection": ["software"],
        "cryptoStrength": 128,
        "attachmentHint": ["external", "wired"],
        "tcDisplay": [],
        "attestationRootCertificates": [Base64::encode_string(&root_der)],
        "authenticatorGetInfo": get_info,
    }))
}
