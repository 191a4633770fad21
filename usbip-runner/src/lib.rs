//! The authenticator as a virtual USB device: a USB/IP server (protocol 0x0111) presenting a
//! full-speed FIDO HID device, with state in a littlefs2 image on disk or in memory.
//!
//! ```no_run
//! use usbip_runner::{start, PresenceMode, ServerConfig, StateLocation};
//! let server = start(ServerConfig::new(
//!     "127.0.0.1:0".parse().unwrap(),
//!     PresenceMode::Auto,
//!     StateLocation::Ephemeral,
//! ))?;
//! println!("usbip attach -r {} -b {}", server.addr().ip(), server.bus_ids()[0]);
//! server.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`ServerConfig::validate`] says what is wrong with a configuration ([`ConfigError`]) before
//! anything starts; [`start`] refuses the same ones as [`std::io::ErrorKind::InvalidInput`].

pub mod attach;
pub mod attestation;
pub mod automation;
pub mod bus;
pub mod control;
pub mod device;
pub mod peer;
pub mod platform;
pub mod private;
pub mod protocol;
pub mod server;
pub mod simulation;
pub mod storage;
pub mod trace;
pub mod uhid;

pub use authenticator::Profile;
pub use platform::PresenceMode;
pub use server::{
    start, ConfigError, Server, ServerConfig, StateLocation, Transport, DEFAULT_MAX_CONNECTIONS,
};
pub use simulation::UvMode;
