//! Admission control: a budget of bytes being loaded at once and a cap on concurrent loads,
//! shared by every client and every method (loadFile, load, loadAsync).
//!
//! Policy: a load that does not fit is refused at once with BUSY (it is never queued), so a
//! caller never blocks a binder thread waiting for another caller, and the answer says exactly
//! why. A load holds its share from the moment it is admitted until its buffer has been handed
//! to the client (or it failed); after that the memory belongs to the client.
//!
//! Fairness between caller uids: a uid alone may use the whole budget (nothing is wasted),
//! but while other uids are loading, or were refused for lack of room in the last
//! [`WAITING_FOR`], each uid may hold at most its fair share: 1/N of the concurrent loads
//! (rounded up) and of the bytes, N being the uids competing. A uid holding nothing is never
//! refused by the share rule, only by the global limits. So one client streaming big files in
//! a loop cannot keep a camera HAL out: once the camera has been refused, the streamer's next
//! load waits until it is back under its share, and the room freed goes to the camera's retry.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a uid refused for lack of room counts as competing for the budget.
pub const WAITING_FOR: Duration = Duration::from_secs(2);

use dmabuf_loader::{ErrorKind, LoadError};

#[derive(Debug, Default)]
struct State {
    bytes: u64,
    loads: u32,
    /// (bytes, loads) held per caller uid; entries removed when they reach zero.
    per_uid: HashMap<u32, (u64, u32)>,
    /// uids refused for lack of room, and when: they compete for the budget for a while.
    waiting: HashMap<u32, Instant>,
}

impl State {
    /// uids other than `uid` that hold a permit or were refused recently.
    fn competitors(&mut self, uid: u32, now: Instant) -> u32 {
        self.waiting
            .retain(|_, t| now.duration_since(*t) < WAITING_FOR);
        let holding = self.per_uid.keys().filter(|&&u| u != uid);
        let waiting_only = self
            .waiting
            .keys()
            .filter(|&&u| u != uid && !self.per_uid.contains_key(&u));
        (holding.count() + waiting_only.count()) as u32
    }
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
    uid: u32,
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

    /// Admits a load of `bytes` for caller `uid`, or refuses it with `ErrorKind::Busy` naming
    /// the limit hit (a global limit, or the uid's fair share while others compete).
    pub fn try_admit(self: &Arc<Self>, uid: u32, bytes: u64) -> Result<Permit, LoadError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refuse = |s: &mut State, msg: String| {
            s.waiting.insert(uid, now);
            Err(LoadError::msg(ErrorKind::Busy, msg))
        };
        if s.loads >= self.max_loads {
            let msg = format!(
                "{} loads already running (max_concurrent_loads = {}); retry later",
                s.loads, self.max_loads
            );
            return refuse(&mut s, msg);
        }
        if s.bytes.saturating_add(bytes) > self.max_bytes {
            let msg = format!(
                "{bytes} more bytes would exceed the in-flight budget: {} of {} bytes \
                 (max_bytes_in_flight) are being loaded; retry later",
                s.bytes, self.max_bytes
            );
            return refuse(&mut s, msg);
        }
        let (held_bytes, held_loads) = s.per_uid.get(&uid).copied().unwrap_or_default();
        let competitors = s.competitors(uid, now);
        if held_loads > 0 && competitors > 0 {
            let n = competitors + 1;
            let fair_loads = self.max_loads.div_ceil(n);
            let fair_bytes = self.max_bytes / u64::from(n);
            if held_loads >= fair_loads || held_bytes.saturating_add(bytes) > fair_bytes {
                // Not marked waiting: this uid is already being served.
                return Err(LoadError::msg(
                    ErrorKind::Busy,
                    format!(
                        "uid {uid} already runs {held_loads} loads ({held_bytes} bytes) and {competitors} \
                         other caller(s) compete: its fair share is {fair_loads} loads / {fair_bytes} bytes; \
                         retry later"
                    ),
                ));
            }
        }
        s.bytes += bytes;
        s.loads += 1;
        let e = s.per_uid.entry(uid).or_default();
        e.0 += bytes;
        e.1 += 1;
        s.waiting.remove(&uid);
        Ok(Permit {
            admission: Arc::clone(self),
            uid,
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
        if let Some(e) = s.per_uid.get_mut(&self.uid) {
            e.0 -= self.bytes;
            e.1 -= 1;
            if e.1 == 0 {
                s.per_uid.remove(&self.uid);
            }
        }
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
        let p1 = a.try_admit(0, 10).unwrap();
        let _p2 = a.try_admit(0, 10).unwrap();
        let e = a.try_admit(0, 10).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Busy);
        assert!(format!("{e}").contains("max_concurrent_loads"), "{e}");
        drop(p1);
        assert_eq!(a.in_flight(), (10, 1));
        a.try_admit(0, 10).unwrap();
    }

    #[test]
    fn byte_budget_is_shared_and_exact() {
        let a = Admission::new(100, 10);
        let p = a.try_admit(0, 60).unwrap();
        let e = a.try_admit(0, 41).unwrap_err();
        assert!(format!("{e}").contains("max_bytes_in_flight"), "{e}");
        let q = a.try_admit(0, 40).unwrap();
        assert_eq!(a.in_flight(), (100, 2));
        drop(p);
        drop(q);
        assert_eq!(a.in_flight(), (0, 0));
        assert!(a.wait_idle(Duration::ZERO));
    }

    #[test]
    fn wait_idle_wakes_when_the_last_permit_goes() {
        let a = Admission::new(100, 10);
        let p = a.try_admit(0, 1).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(p);
        });
        assert!(a.wait_idle(Duration::from_secs(10)));
        t.join().unwrap();
    }

    #[test]
    fn a_uid_alone_may_use_the_whole_budget() {
        let a = Admission::new(100, 4);
        let held: Vec<_> = (0..4).map(|_| a.try_admit(7, 25).unwrap()).collect();
        assert_eq!(a.in_flight(), (100, 4));
        drop(held);
        assert_eq!(a.in_flight(), (0, 0));
    }

    #[test]
    fn a_refused_uid_gets_the_room_its_competitor_frees() {
        let a = Admission::new(1 << 30, 4);
        // uid 1 streams: alone, it takes every slot.
        let mut hog: Vec<_> = (0..4).map(|_| a.try_admit(1, 10).unwrap()).collect();
        // The camera (uid 2) is refused by the global cap, and now competes.
        let e = a.try_admit(2, 10).unwrap_err();
        assert!(format!("{e}").contains("max_concurrent_loads"), "{e}");
        // Two of the hog's loads end; its next two attempts exceed its share (2 of 4).
        hog.truncate(2);
        let e = a.try_admit(1, 10).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Busy);
        assert!(format!("{e}").contains("fair share is 2 loads"), "{e}");
        // The camera's retry gets in, and so does a second one (its share is 2 too).
        let _c1 = a.try_admit(2, 10).unwrap();
        let _c2 = a.try_admit(2, 10).unwrap();
        assert_eq!(a.in_flight(), (40, 4));
    }

    #[test]
    fn byte_share_applies_while_others_hold_permits() {
        let a = Admission::new(100, 10);
        let _b = a.try_admit(2, 10).unwrap();
        let _a1 = a.try_admit(1, 40).unwrap();
        // uid 1 holds 40; its share with one competitor is 50 bytes.
        let e = a.try_admit(1, 20).unwrap_err();
        assert!(format!("{e}").contains("50 bytes"), "{e}");
        a.try_admit(1, 10).unwrap();
        // A uid holding nothing is only held to the global budget.
        a.try_admit(3, 30).unwrap();
    }
}
