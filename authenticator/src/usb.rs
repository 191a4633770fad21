//! The FIDO HID class for `usb-device`: one interface (usage page 0xF1D0, usage 0x01) with a
//! 64-byte interrupt IN and a 64-byte interrupt OUT endpoint (CTAP 2.1 §11.2.8). Both runners use
//! this class, so the descriptors the Linux kernel sees over USB/IP are the ones the Pico
//! presents.

use usb_device::class_prelude::*;
use usb_device::Result;

use crate::ctaphid::{Packet, PACKET_SIZE};

/// The FIDO report descriptor: 64-byte input and output reports on usage page 0xF1D0.
pub const REPORT_DESCRIPTOR: [u8; 34] = [
    0x06, 0xD0, 0xF1, // Usage Page (FIDO Alliance)
    0x09, 0x01, // Usage (CTAPHID)
    0xA1, 0x01, // Collection (Application)
    0x09, 0x20, //   Usage (Input Report Data)
    0x15, 0x00, //   Logical Minimum (0)
    0x26, 0xFF, 0x00, //   Logical Maximum (255)
    0x75, 0x08, //   Report Size (8)
    0x95, 0x40, //   Report Count (64)
    0x81, 0x02, //   Input (Data, Variable, Absolute)
    0x09, 0x21, //   Usage (Output Report Data)
    0x15, 0x00, //   Logical Minimum (0)
    0x26, 0xFF, 0x00, //   Logical Maximum (255)
    0x75, 0x08, //   Report Size (8)
    0x95, 0x40, //   Report Count (64)
    0x91, 0x02, //   Output (Data, Variable, Absolute)
    0xC0, // End Collection
];

const USB_CLASS_HID: u8 = 0x03;
const DESCRIPTOR_HID: u8 = 0x21;
const DESCRIPTOR_REPORT: u8 = 0x22;
const REQUEST_GET_DESCRIPTOR: u8 = 0x06;
const HID_GET_IDLE: u8 = 0x02;
const HID_SET_IDLE: u8 = 0x0A;
const HID_SET_PROTOCOL: u8 = 0x0B;

/// Polling interval of the interrupt endpoints, in milliseconds (frames at full speed).
pub const POLL_INTERVAL_MS: u8 = 5;

/// The HID descriptor (HID 1.11 §6.2.1): HID 1.11, no country, one report descriptor. The same
/// 9 bytes go in the configuration descriptor and answer GET_DESCRIPTOR(HID) on their own.
const HID_DESCRIPTOR: [u8; 9] = [
    9,
    DESCRIPTOR_HID,
    0x11,
    0x01,
    0x00,
    0x01,
    DESCRIPTOR_REPORT,
    REPORT_DESCRIPTOR.len() as u8,
    0x00,
];

/// A FIDO HID interface.
pub struct FidoHid<'a, B: UsbBus> {
    interface: InterfaceNumber,
    ep_in: EndpointIn<'a, B>,
    ep_out: EndpointOut<'a, B>,
}

impl<'a, B: UsbBus> FidoHid<'a, B> {
    pub fn new(alloc: &'a UsbBusAllocator<B>) -> Self {
        Self {
            interface: alloc.interface(),
            ep_in: alloc.interrupt(PACKET_SIZE as u16, POLL_INTERVAL_MS),
            ep_out: alloc.interrupt(PACKET_SIZE as u16, POLL_INTERVAL_MS),
        }
    }

    /// A report the host sent, if one has arrived. Reports of another size are dropped: CTAPHID
    /// only speaks in whole 64-byte reports.
    pub fn read_report(&mut self) -> Option<Packet> {
        let mut packet = [0u8; PACKET_SIZE];
        match self.ep_out.read(&mut packet) {
            Ok(PACKET_SIZE) => Some(packet),
            _ => None,
        }
    }

    /// Queue a report for the host; `false` while the previous one has not been taken yet.
    pub fn write_report(&mut self, packet: &Packet) -> bool {
        self.ep_in.write(packet).is_ok()
    }
}

impl<B: UsbBus> UsbClass<B> for FidoHid<'_, B> {
    fn get_configuration_descriptors(&self, writer: &mut DescriptorWriter) -> Result<()> {
        writer.interface(self.interface, USB_CLASS_HID, 0x00, 0x00)?;
        // The writer adds bLength and bDescriptorType itself.
        writer.write(DESCRIPTOR_HID, &HID_DESCRIPTOR[2..])?;
        writer.endpoint(&self.ep_in)?;
        writer.endpoint(&self.ep_out)?;
        Ok(())
    }

    fn control_in(&mut self, xfer: ControlIn<B>) {
        let request = *xfer.request();
        if request.index != u8::from(self.interface) as u16
            || request.recipient != control::Recipient::Interface
        {
            return;
        }
        match (request.request_type, request.request) {
            (control::RequestType::Standard, REQUEST_GET_DESCRIPTOR) => {
                let _ = match (request.value >> 8) as u8 {
                    DESCRIPTOR_REPORT => xfer.accept_with_static(&REPORT_DESCRIPTOR),
                    // Truncated to wLength by the control pipe, as USB 2.0 §9.3.5 asks.
                    DESCRIPTOR_HID => xfer.accept_with_static(&HID_DESCRIPTOR),
                    _ => xfer.reject(),
                };
            }
            // No idle rate: reports go out only when there is something to say.
            (control::RequestType::Class, HID_GET_IDLE) => {
                let _ = xfer.accept_with(&[0]);
            }
            _ => {}
        }
    }

    fn control_out(&mut self, xfer: ControlOut<B>) {
        let request = *xfer.request();
        if request.index != u8::from(self.interface) as u16
            || request.recipient != control::Recipient::Interface
        {
            return;
        }
        if request.request_type == control::RequestType::Class
            && matches!(request.request, HID_SET_IDLE | HID_SET_PROTOCOL)
        {
            let _ = xfer.accept();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_descriptor_declares_fido_usage_and_64_byte_reports() {
        assert_eq!(REPORT_DESCRIPTOR.len(), 34);
        assert_eq!(&REPORT_DESCRIPTOR[..3], &[0x06, 0xD0, 0xF1]);
        assert_eq!(HID_DESCRIPTOR[..2], [9, 0x21], "bLength, bDescriptorType");
        assert_eq!(HID_DESCRIPTOR[7], 34);
        // Both report counts are 64.
        assert_eq!(REPORT_DESCRIPTOR.iter().filter(|&&b| b == 0x95).count(), 2);
        assert!(
            REPORT_DESCRIPTOR
                .windows(2)
                .filter(|w| w == &[0x95, 0x40])
                .count()
                == 2
        );
    }
}
