//! A `usb_device::bus::UsbBus` whose wire is USB/IP: URBs from the network become SETUP and OUT
//! packets, and what the stack writes to IN endpoints becomes URB completions. So the USB class
//! code answering the Linux kernel is the very code the Pico runs over its hardware bus.
//!
//! The bus is a set of one-packet endpoint buffers shared (through `Arc<Mutex<_>>`) between the
//! `UsbBus` the stack drives and the [`BusHandle`] the USB/IP side uses.

use std::sync::{Arc, Mutex, MutexGuard};

use usb_device::bus::{PollResult, UsbBus};
use usb_device::endpoint::{EndpointAddress, EndpointType};
use usb_device::{Result, UsbDirection, UsbError};

const ENDPOINTS: usize = 16;

#[derive(Default)]
struct Endpoint {
    allocated: bool,
    max_packet_size: u16,
    /// OUT: a packet from the host not yet read by the stack. IN: a packet the stack wrote and
    /// the host has not taken yet.
    packet: Option<Vec<u8>>,
    /// IN: the host took the packet; the stack is told once at the next poll.
    completed: bool,
    stalled: bool,
}

#[derive(Default)]
struct State {
    out: [Endpoint; ENDPOINTS],
    r#in: [Endpoint; ENDPOINTS],
    setup: Option<[u8; 8]>,
    reset: bool,
}

impl State {
    fn endpoint(&mut self, address: EndpointAddress) -> &mut Endpoint {
        let index = address.index() % ENDPOINTS;
        match address.direction() {
            UsbDirection::Out => &mut self.out[index],
            UsbDirection::In => &mut self.r#in[index],
        }
    }

    fn has_events(&self) -> bool {
        self.reset
            || self.setup.is_some()
            || self.out.iter().any(|e| e.allocated && e.packet.is_some())
            || self.r#in.iter().any(|e| e.completed)
    }
}

/// The bus the `usb-device` stack owns.
pub struct UsbIpBus {
    state: Arc<Mutex<State>>,
}

/// The USB/IP side's view of the same bus.
#[derive(Clone)]
pub struct BusHandle {
    state: Arc<Mutex<State>>,
}

/// A bus and the handle to drive it with.
pub fn new_bus() -> (UsbIpBus, BusHandle) {
    let state = Arc::new(Mutex::new(State::default()));
    (
        UsbIpBus {
            state: state.clone(),
        },
        BusHandle { state },
    )
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere cannot leave the buffers half-written: keep going with what is there.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BusHandle {
    /// A client imported the device: drop stale packets and let the stack see a bus reset
    /// (vhci-hcd addresses the device itself, so no SET_ADDRESS will come).
    pub fn reset(&self) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        for endpoint in state.out.iter_mut().chain(state.r#in.iter_mut()) {
            endpoint.packet = None;
            endpoint.completed = false;
            endpoint.stalled = false;
        }
        state.setup = None;
        state.reset = true;
    }

    /// Deliver a SETUP packet on endpoint 0 (clearing any stall from the previous transfer).
    pub fn setup(&self, setup: [u8; 8]) {
        let mut state = lock(&self.state);
        state.setup = Some(setup);
        state.out[0].stalled = false;
        state.r#in[0].stalled = false;
        state.out[0].packet = None;
        state.r#in[0].packet = None;
        state.r#in[0].completed = false;
    }

    /// Deliver an OUT packet; `false` if the previous one has not been read yet.
    pub fn put_out(&self, endpoint: u8, data: &[u8]) -> bool {
        let mut state = lock(&self.state);
        let slot = &mut state.out[usize::from(endpoint) % ENDPOINTS];
        if slot.packet.is_some() {
            return false;
        }
        slot.packet = Some(data.to_vec());
        true
    }

    /// Has the stack read the OUT packet of this endpoint?
    pub fn out_consumed(&self, endpoint: u8) -> bool {
        lock(&self.state).out[usize::from(endpoint) % ENDPOINTS]
            .packet
            .is_none()
    }

    /// Take the packet the stack wrote to an IN endpoint, completing it.
    pub fn take_in(&self, endpoint: u8) -> Option<Vec<u8>> {
        let mut state = lock(&self.state);
        let slot = &mut state.r#in[usize::from(endpoint) % ENDPOINTS];
        let packet = slot.packet.take()?;
        slot.completed = true;
        Some(packet)
    }

    /// Did the stack stall endpoint 0 (reject the control request)?
    pub fn control_stalled(&self) -> bool {
        let state = lock(&self.state);
        state.r#in[0].stalled || state.out[0].stalled
    }

    /// Is there anything the stack has not been told about yet?
    pub fn has_events(&self) -> bool {
        lock(&self.state).has_events()
    }

    /// Is this an allocated endpoint of the given direction?
    pub fn is_endpoint(&self, endpoint: u8, direction: UsbDirection) -> bool {
        let state = lock(&self.state);
        let endpoints = match direction {
            UsbDirection::Out => &state.out,
            UsbDirection::In => &state.r#in,
        };
        endpoints
            .get(usize::from(endpoint))
            .is_some_and(|e| e.allocated)
    }
}

impl UsbBus for UsbIpBus {
    fn alloc_ep(
        &mut self,
        direction: UsbDirection,
        address: Option<EndpointAddress>,
        _ep_type: EndpointType,
        max_packet_size: u16,
        _interval: u8,
    ) -> Result<EndpointAddress> {
        let mut state = lock(&self.state);
        let endpoints = match direction {
            UsbDirection::Out => &mut state.out,
            UsbDirection::In => &mut state.r#in,
        };
        let index = match address {
            Some(address) if !endpoints[address.index()].allocated => address.index(),
            Some(_) => return Err(UsbError::InvalidEndpoint),
            // Endpoint 0 is the control endpoint, allocated by address; the others take the
            // lowest free number.
            None => (1..ENDPOINTS)
                .find(|&i| !endpoints[i].allocated)
                .ok_or(UsbError::EndpointOverflow)?,
        };
        endpoints[index].allocated = true;
        endpoints[index].max_packet_size = max_packet_size;
        Ok(EndpointAddress::from_parts(index, direction))
    }

    fn enable(&mut self) {}

    fn reset(&self) {}

    fn set_device_address(&self, _address: u8) {}

    fn write(&self, address: EndpointAddress, buf: &[u8]) -> Result<usize> {
        let mut state = lock(&self.state);
        let endpoint = state.endpoint(address);
        if !endpoint.allocated {
            return Err(UsbError::InvalidEndpoint);
        }
        if buf.len() > usize::from(endpoint.max_packet_size) {
            return Err(UsbError::BufferOverflow);
        }
        if endpoint.packet.is_some() {
            return Err(UsbError::WouldBlock);
        }
        endpoint.packet = Some(buf.to_vec());
        Ok(buf.len())
    }

    fn read(&self, address: EndpointAddress, buf: &mut [u8]) -> Result<usize> {
        let mut state = lock(&self.state);
        if address.index() == 0 {
            if let Some(setup) = state.setup.take() {
                let n = setup.len().min(buf.len());
                buf[..n].copy_from_slice(&setup[..n]);
                return Ok(n);
            }
        }
        let endpoint = state.endpoint(address);
        let packet = endpoint.packet.as_ref().ok_or(UsbError::WouldBlock)?;
        if packet.len() > buf.len() {
            return Err(UsbError::BufferOverflow);
        }
        let n = packet.len();
        buf[..n].copy_from_slice(packet);
        endpoint.packet = None;
        Ok(n)
    }

    fn set_stalled(&self, address: EndpointAddress, stalled: bool) {
        lock(&self.state).endpoint(address).stalled = stalled;
    }

    fn is_stalled(&self, address: EndpointAddress) -> bool {
        lock(&self.state).endpoint(address).stalled
    }

    fn suspend(&self) {}

    fn resume(&self) {}

    fn poll(&self) -> PollResult {
        let mut state = lock(&self.state);
        if state.reset {
            state.reset = false;
            return PollResult::Reset;
        }
        let mut ep_out = 0u16;
        let mut ep_in_complete = 0u16;
        let ep_setup = u16::from(state.setup.is_some());
        for i in 0..ENDPOINTS {
            if state.out[i].allocated && state.out[i].packet.is_some() {
                ep_out |= 1 << i;
            }
            if std::mem::take(&mut state.r#in[i].completed) {
                ep_in_complete |= 1 << i;
            }
        }
        if ep_out | ep_in_complete | ep_setup == 0 {
            PollResult::None
        } else {
            PollResult::Data {
                ep_out: ep_out | ep_setup,
                ep_in_complete,
                ep_setup,
            }
        }
    }
}
