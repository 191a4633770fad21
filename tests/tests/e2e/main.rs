//! End-to-end tests, one module per behaviour, in one test binary (one link instead of one per
//! file): the key as real clients drive it, over USB/IP, the control socket and its state
//! files, every signature verified.
//!
//! Run one behaviour with `cargo test -p e2e-tests --test e2e hostile::`.

mod automation;
mod ci_features;
mod ctap2;
mod flash_copy;
mod hostile;
mod local_users;
mod pin_power_cut;
mod transport;
mod u2f_and_state;
