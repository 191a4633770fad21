//! The authenticator: CTAP1 and CTAP2 behind the CTAPHID [`App`] interface.

use alloc::vec::Vec;
use littlefs2::fs::Filesystem;

use crate::ctaphid::{App, Outcome, Transaction};
use crate::platform::Platform;

/// Fixed facts about this authenticator model.
#[derive(Clone, Debug)]
pub struct Config {
    /// The AAGUID reported in getInfo and in attested credential data.
    pub aaguid: [u8; 16],
    /// firmwareVersion in getInfo.
    pub firmware_version: u32,
}

/// The authenticator core, generic over the body it runs in.
pub struct Authenticator<'a, P: Platform> {
    platform: P,
    #[allow(dead_code)]
    fs: Filesystem<'a, P::Storage>,
    #[allow(dead_code)]
    config: Config,
}

impl<'a, P: Platform> Authenticator<'a, P> {
    /// Build the authenticator on a mounted filesystem (see [`crate::store::mount`]).
    pub fn new(platform: P, fs: Filesystem<'a, P::Storage>, config: Config) -> Self {
        Self { platform, fs, config }
    }

    /// The platform, for runners that need to reach it (e.g. to answer a presence prompt).
    pub fn platform(&mut self) -> &mut P {
        &mut self.platform
    }
}

impl<P: Platform> App for Authenticator<'_, P> {
    fn call(&mut self, _transaction: Transaction, _request: &[u8], response: &mut Vec<u8>) -> Outcome {
        response.push(0x01); // CTAP1_ERR_INVALID_COMMAND until the commands land
        Outcome::Done
    }
    fn cancel(&mut self) {}
    fn abort(&mut self) {}
    fn wink(&mut self) {
        self.platform.indicate(crate::platform::Indicator::Wink);
    }
}
