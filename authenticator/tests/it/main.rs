//! The core's integration tests, one module per behaviour, in one test binary: cargo links one
//! executable for all of them instead of one per file (the Rust book's and cargo's advice for
//! many integration tests). Each drives the core as a client does, through `test-support`.
//!
//! Run one behaviour with `cargo test -p authenticator --test it pin_lock::`, one test by its
//! full name (`pin_lock::a_locked_key_refuses_...`).

mod automation;
mod builtin_uv;
mod capacity;
mod credential_management;
mod ctap1;
mod ctap2;
mod ctaphid;
mod enterprise_attestation;
mod erase_ahead;
mod extensions;
/// The virtual key's fault knobs (feature `faults`, which test-support turns on).
mod faults;
mod long_touch;
mod pin;
mod pin_lock;
mod power_cut;
mod power_cut_reset;
mod profiles;
mod store_scale;
