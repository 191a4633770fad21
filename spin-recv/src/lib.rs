//! The spin before the sleep, for a thread that waits on a channel whose next message usually
//! comes within microseconds: the virtual key's thread waiting for a host's next URB, and the
//! USB/IP client waiting for its reader thread's next reply. A USB host resubmits its interrupt
//! IN URB tens of microseconds after the last one completed; putting the waiting thread to
//! sleep and waking it costs about as much again, on each of a message's 64-byte packets. So
//! the waiter looks for [`SPIN_BEFORE_SLEEP`] first, yielding its core between looks, and only
//! then blocks in the channel's own receive.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// How long a waiter looks for the next message before it sleeps.
pub const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(200);

/// The next message if one arrives within [`SPIN_BEFORE_SLEEP`], without sleeping; `None`
/// otherwise (and when every sender is gone: the caller's blocking receive says so).
pub fn try_recv_spinning<T>(receiver: &Receiver<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < SPIN_BEFORE_SLEEP {
        if let Ok(message) = receiver.try_recv() {
            return Some(message);
        }
        std::thread::yield_now();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_message_waiting_is_taken() {
        let (sender, receiver) = channel();
        sender.send(7).unwrap();
        assert_eq!(try_recv_spinning(&receiver), Some(7));
    }

    #[test]
    fn nothing_sent_gives_up_after_the_spin() {
        let (_sender, receiver) = channel::<u8>();
        let start = Instant::now();
        assert_eq!(try_recv_spinning(&receiver), None);
        assert!(start.elapsed() >= SPIN_BEFORE_SLEEP);
    }

    #[test]
    fn a_closed_channel_gives_none() {
        let (sender, receiver) = channel::<u8>();
        drop(sender);
        assert_eq!(try_recv_spinning(&receiver), None);
    }
}
