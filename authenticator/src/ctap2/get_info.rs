//! authenticatorGetInfo (§6.4).

use ctap_types::ctap2::get_info::{
    CtapOptions, Extension, Response, ResponseBuilder, Transport, Version,
};
use ctap_types::webauthn::{
    FilteredPublicKeyCredentialParameters, KnownPublicKeyCredentialParameters,
};
use heapless::Vec;

use crate::credential::{EDDSA, ES256, MAX_ID_LEN};
use crate::ctaphid::MAX_MESSAGE_SIZE;
use crate::platform::Platform;
use crate::store::MAX_MIN_PIN_LENGTH_RP_IDS;
use crate::Authenticator;

/// What getInfo advertises as maxCredentialCountInList: the allow list ctap-types parses.
pub const MAX_CREDENTIALS_IN_LIST: usize = ctap_types::sizes::MAX_CREDENTIAL_COUNT_IN_LIST;

pub(crate) fn get_info<P: Platform>(auth: &mut Authenticator<'_, P>) -> Response {
    let settings = auth.store.settings().unwrap_or_default();
    let pin_set = auth.store.pin_is_set();

    let mut versions = Vec::new();
    // Capacity 4 holds these three. alwaysUv turns U2F off: it cannot verify the user (§7.2.1).
    if !settings.always_uv {
        let _ = versions.push(Version::U2fV2);
    }
    let _ = versions.push(Version::Fido2_0);
    let _ = versions.push(Version::Fido2_1);

    let mut info = ResponseBuilder {
        versions,
        aaguid: heapless_bytes::Bytes::from(auth.config.aaguid),
    }
    .build();

    let mut extensions = Vec::new();
    let _ = extensions.push(Extension::CredProtect);
    let _ = extensions.push(Extension::HmacSecret);
    info.extensions = Some(extensions);

    let mut options = CtapOptions::default();
    options.rk = true;
    options.up = true;
    options.plat = Some(false);
    options.client_pin = Some(pin_set);
    options.pin_uv_auth_token = Some(true);
    options.make_cred_uv_not_rqd = Some(true);
    options.authnr_cfg = Some(true);
    options.always_uv = Some(settings.always_uv);
    options.set_min_pin_length = Some(true);
    options.cred_mgmt = Some(true);
    options.credential_mgmt_preview = Some(true);
    info.options = Some(options);

    let mut protocols = Vec::new();
    let _ = protocols.push(2);
    let _ = protocols.push(1);
    info.pin_protocols = Some(protocols);
    info.min_pin_length = Some(usize::from(settings.min_pin_length));
    info.force_pin_change = Some(settings.force_pin_change);
    info.max_rpids_for_set_min_pin_length = Some(MAX_MIN_PIN_LENGTH_RP_IDS);

    info.max_msg_size = Some(MAX_MESSAGE_SIZE);
    info.max_creds_in_list = Some(MAX_CREDENTIALS_IN_LIST);
    info.max_cred_id_length = Some(MAX_ID_LEN);

    let mut transports = Vec::new();
    let _ = transports.push(Transport::Usb);
    info.transports = Some(transports);

    let mut algorithms = Vec::new();
    let _ = algorithms.push(KnownPublicKeyCredentialParameters { alg: ES256 });
    let _ = algorithms.push(KnownPublicKeyCredentialParameters { alg: EDDSA });
    info.algorithms = Some(FilteredPublicKeyCredentialParameters(algorithms));

    info.firmware_version = Some(auth.config.firmware_version as usize);
    info.remaining_discoverable_credentials = Some(auth.store.remaining_resident_slots());
    info
}
