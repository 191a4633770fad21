//! The USB/IP server and USB device as the kernel sees them: device list, import, enumeration,
//! CTAPHID over interrupt transfers, unlinks, re-imports and hostile input.

use std::io::Write;
use std::time::Duration;

use e2e_tests::ctaphid::{self, Channel};
use e2e_tests::usbip::{self, Device};
use e2e_tests::Key;
use usbip_runner::PresenceMode;

#[test]
fn device_list_describes_a_full_speed_hid_device() {
    let key = Key::start(PresenceMode::Auto);
    let devices = usbip::list(key.addr()).unwrap();
    assert_eq!(devices.len(), 1);
    let device = &devices[0];
    assert_eq!(device.bus_id, "1-1");
    assert_eq!(device.speed, 2, "full speed");
    assert_ne!(device.configuration_value, 0);
    assert_eq!(device.interfaces, vec![(3, 0, 0)]);
}

#[test]
fn enumeration_matches_the_fido_hid_profile() {
    let key = Key::start(PresenceMode::Auto);
    let device = key.attach();
    let d = &device.descriptors;
    assert_eq!(d.device[0..2], [18, 1]);
    assert_eq!(d.report.len(), 34, "the FIDO report descriptor");
    assert_eq!(d.report[..3], [0x06, 0xD0, 0xF1], "usage page 0xF1D0");
    assert_eq!(d.report[3..5], [0x09, 0x01], "usage 0x01");
    assert!(!d.product.is_empty() && !d.manufacturer.is_empty() && !d.serial.is_empty());
    assert_ne!(device.ep_in, 0);
    assert_ne!(device.ep_out, 0);
}

#[test]
fn control_replies_never_exceed_what_was_asked() {
    let key = Key::start(PresenceMode::Auto);
    let mut device = key.attach();
    for length in [1u16, 8, 9, 17, 18, 64, 255] {
        let data = device.get_descriptor(1, 0, None, length).unwrap();
        assert_eq!(
            data.len(),
            usize::from(length.min(18)),
            "device descriptor, wLength {length}"
        );
    }
    for length in [7u16, 9, 34, 40, 255, 1024, 0xFFFF] {
        let data = device.get_descriptor(0x22, 0, Some(0), length).unwrap();
        assert_eq!(
            data,
            device.descriptors.report[..usize::from(length.min(34))],
            "report descriptor, wLength {length}"
        );
    }
    let total = device.descriptors.configuration.len() as u16;
    let data = device.get_descriptor(2, 0, None, 255).unwrap();
    assert_eq!(data.len(), usize::from(total));
    // The HID class descriptor on its own is the 9 bytes of its copy in the configuration
    // descriptor (HID 1.11 §7.1.1), truncated only by wLength.
    let configuration = device.descriptors.configuration.clone();
    let start = (0..configuration.len())
        .find(|&i| configuration.get(i + 1) == Some(&0x21) && configuration[i] == 9)
        .expect("a HID descriptor in the configuration");
    let in_configuration = &configuration[start..start + 9];
    for length in [2u16, 7, 9, 64, 0xFFFF] {
        let data = device.get_descriptor(0x21, 0, Some(0), length).unwrap();
        assert_eq!(
            data,
            in_configuration[..usize::from(length.min(9))],
            "HID descriptor, wLength {length}"
        );
    }
    // An unknown request is stalled, and the next one works.
    let stalled = device
        .control([0xC0, 0x55, 0, 0, 0, 0, 64, 0], &[])
        .unwrap();
    assert_eq!(stalled.status, -32, "-EPIPE");
    assert_eq!(device.get_descriptor(1, 0, None, 18).unwrap().len(), 18);
}

#[test]
fn ctaphid_init_and_ping_over_interrupt_transfers() {
    let key = Key::start(PresenceMode::Auto);
    let mut channel = key.channel();
    assert_ne!(channel.cid, 0);
    assert_ne!(channel.cid, ctaphid::BROADCAST);
    assert_eq!(channel.init_response[12], 2, "CTAPHID protocol version 2");
    assert_eq!(channel.init_response[16] & 0x05, 0x05, "WINK and CBOR");
    for size in [0usize, 1, 57, 58, 1000, 7609] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let (command, echoed) = channel.transact(ctaphid::PING, &payload).unwrap();
        assert_eq!(command, ctaphid::PING);
        assert_eq!(echoed, payload, "PING of {size} bytes");
    }
    let (command, payload) = channel.transact(ctaphid::WINK, &[]).unwrap();
    assert_eq!((command, payload.len()), (ctaphid::WINK, 0));
}

#[test]
fn unlink_detach_and_reattach() {
    let key = Key::start(PresenceMode::Auto);
    {
        let mut device = key.attach();
        // A pending IN URB unlinked, as usbhid does when hidraw closes.
        let seqnum = device.submit(device.ep_in, 1, [0; 8], &[], 64).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            device.unlink(seqnum).unwrap(),
            -104,
            "-ECONNRESET for a URB still pending"
        );
        assert_eq!(
            device.unlink(9999).unwrap(),
            0,
            "an unknown URB: nothing to unlink"
        );
        // A second import while attached is refused.
        assert!(Device::import_raw(key.addr(), "1-1").is_err());
        assert!(
            Device::import_raw(key.addr(), "9-9").is_err(),
            "unknown bus id"
        );
    }
    // The first client is gone: list, then attach again, and it works.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(usbip::list(key.addr()).unwrap().len(), 1);
    let mut channel = Channel::open(retry_import(&key)).unwrap();
    assert_eq!(
        channel.transact(ctaphid::PING, b"again").unwrap().1,
        b"again"
    );
}

fn retry_import(key: &Key) -> Device {
    Device::import_when_free(key.addr(), "1-1", Duration::from_secs(1))
        .expect("the key becomes importable again")
}

#[test]
fn malformed_pdus_drop_only_their_connection() {
    let key = Key::start(PresenceMode::Auto);
    let garbage: [&[u8]; 5] = [
        &[0x01, 0x11, 0x80],                   // truncated header
        &[0x02, 0x00, 0x80, 0x05, 0, 0, 0, 0], // wrong version
        &[0x01, 0x11, 0x12, 0x34, 0, 0, 0, 0], // unknown operation
        &[0xff; 64],                           // noise
        &[],                                   // connect and close
    ];
    for bytes in garbage {
        let mut stream = std::net::TcpStream::connect(key.addr()).unwrap();
        let _ = stream.write_all(bytes);
    }
    // After import: a 4 GiB transfer length and an unknown command.
    for header in [huge_submit(), unknown_command()] {
        let mut device = Device::import_raw(key.addr(), "1-1").unwrap();
        device.stream().write_all(&header).unwrap();
        drop(device);
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut channel = Channel::open(retry_import(&key)).unwrap();
    assert_eq!(
        channel.transact(ctaphid::PING, b"alive").unwrap().1,
        b"alive"
    );
}

fn huge_submit() -> Vec<u8> {
    let mut pdu = Vec::new();
    for value in [1u32, 1, 0, 0, 1, 0, u32::MAX, 0, 0, 0] {
        pdu.extend_from_slice(&value.to_be_bytes());
    }
    pdu.extend_from_slice(&[0; 8]);
    pdu
}

fn unknown_command() -> Vec<u8> {
    let mut pdu = vec![0u8; 48];
    pdu[3] = 7;
    pdu
}

#[test]
fn urbs_for_missing_endpoints_fail_without_harm() {
    let key = Key::start(PresenceMode::Auto);
    let mut device = key.attach();
    let seqnum = device.submit(7, 1, [0; 8], &[], 64).unwrap();
    assert_eq!(
        device.wait(seqnum, Duration::from_secs(5)).unwrap().status,
        -32
    );
    let mut channel = Channel::open(device).unwrap();
    assert_eq!(channel.transact(ctaphid::PING, b"ok").unwrap().1, b"ok");
}
