//! Admission control: a budget of bytes being loaded at once and a cap on concurrent loads,
//! shared by every client and every method (loadFile, load, loadAsync).
//!
//! Policy: a load that does not fit is refused at once with BUSY (it is never queued), so a
//! caller never blocks a binder thread waiting for another caller, and the answer says exactly
//! why. A load holds its share from the moment it is admitted until its buffer has been handed
//! to the client (or it failed); after that the memory belongs to the client.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dmabuf_loader::{ErrorKind, LoadError};

#[derive(Debug, Default)]
struct State {
    bytes: u64,
    loads: u32,
}

/// The shared budget.
#[derive(Debug)]
pub struct Admission {
    max_bytes: u64,
    max_loads: u32,
    state: Mutex<State>,
    idle: Condvar,
}

/// One admitted load's share; returned to the budget on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    bytes: u64,
}

impl Admission {
    pub fn new(max_bytes: u64, max_loads: u32) -> Arc<Self> {
        Arc::new(Admission {
            max_bytes,
            max_loads,
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
        })
    }

    /// Admits a load of `bytes`, or refuses it with `ErrorKind::Busy` naming the limit hit.
    pub fn try_admit(self: &Arc<Self>, bytes: u64) -> Result<Permit, LoadError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.loads >= self.max_loads {
            return Err(LoadError::msg(
                ErrorKind::Busy,
                format!(
                    "{} loads already running (max_concurrent_loads = {}); retry later",
                    s.loads, self.max_loads
                ),
            ));
        }
        if s.bytes.saturating_add(bytes) > self.max_bytes {
            return Err(LoadError::msg(
                ErrorKind::Busy,
                format!(
                    "{bytes} more bytes would exceed the in-flight budget: {} of {} bytes \
                     (max_bytes_in_flight) are being loaded; retry later",
                    s.bytes, self.max_bytes
                ),
            ));
        }
        s.bytes += bytes;
        s.loads += 1;
        Ok(Permit {
            admission: Arc::clone(self),
            bytes,
        })
    }

    /// (bytes, loads) currently admitted.
    pub fn in_flight(&self) -> (u64, u32) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (s.bytes, s.loads)
    }

    /// Waits until no load is admitted, at most `timeout`; true if idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (s, _) = self
            .idle
            .wait_timeout_while(s, timeout, |s| s.loads > 0)
            .unwrap_or_else(|p| p.into_inner());
        s.loads == 0
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self
            .admission
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.bytes -= self.bytes;
        s.loads -= 1;
        if s.loads == 0 {
            self.admission.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_cap_then_release() {
        let a = Admission::new(1 << 30, 2);
        let p1 = a.try_admit(10).unwrap();
        let _p2 = a.try_admit(10).unwrap();
        let e = a.try_admit(10).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Busy);
        assert!(format!("{e}").contains("max_concurrent_loads"), "{e}");
        drop(p1);
        assert_eq!(a.in_flight(), (10, 1));
        a.try_admit(10).unwrap();
    }

    #[test]
    fn byte_budget_is_shared_and_exact() {
        let a = Admission::new(100, 10);
        let p = a.try_admit(60).unwrap();
        let e = a.try_admit(41).unwrap_err();
        assert!(format!("{e}").contains("max_bytes_in_flight"), "{e}");
        let q = a.try_admit(40).unwrap();
        assert_eq!(a.in_flight(), (100, 2));
        drop(p);
        drop(q);
        assert_eq!(a.in_flight(), (0, 0));
        assert!(a.wait_idle(Duration::ZERO));
    }

    #[test]
    fn wait_idle_wakes_when_the_last_permit_goes() {
        let a = Admission::new(100, 10);
        let p = a.try_admit(1).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(p);
        });
        assert!(a.wait_idle(Duration::from_secs(10)));
        t.join().unwrap();
    }
}
