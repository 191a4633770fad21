//! The FIDO HID class for `usb-device`: one interface (usage page 0xF1D0, usage 0x01) with a
//! 64-byte interrupt IN and a 64-byte interrupt OUT endpoint. Both runners use this class, so
//! the descriptors the Linux kernel sees over USB/IP are the ones the Pico presents.
//!
//! (Implementation pending: see the usbip-runner work.)
