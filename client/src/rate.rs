//! The rate shown next to the progress bar of `load --async`.
//!
//! Ours, not indicatif's `{bytes_per_sec}`: that one starts from the first callbacks, a few
//! milliseconds apart (the service reports every few MiB), and showed 22 GiB/s and then 455 MiB/s
//! for one cold load. Here the rate is the bytes done since the first callback over the time
//! since it (the start-up before the first read is not counted), and it stays hidden until it
//! means something: half a second and two callbacks in.

use std::time::{Duration, Instant};

use dmabuf_loader::size;

/// Until this long after the first callback, no rate is shown.
const SETTLE: Duration = Duration::from_millis(500);

/// "812 MiB/s", or `None` while a rate would mislead (too early, one callback, nothing moved).
pub fn rate(done_since_first: u64, elapsed: Duration, callbacks: u64) -> Option<String> {
    if callbacks < 2 || elapsed < SETTLE || done_since_first == 0 {
        return None;
    }
    let per_sec = (done_since_first as f64 / elapsed.as_secs_f64()) as u64;
    Some(format!("{}/s", size::format(per_sec)))
}

/// Feeds [`rate`] from the callbacks of one load.
#[derive(Default)]
pub struct Rate {
    first: Option<(Instant, u64)>,
    callbacks: u64,
}

impl Rate {
    /// One `onProgress(done, _)`; returns the text to show (empty while hidden).
    pub fn update(&mut self, done: u64) -> String {
        self.callbacks += 1;
        let (t0, d0) = *self.first.get_or_insert((Instant::now(), done));
        rate(done.saturating_sub(d0), t0.elapsed(), self.callbacks).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_until_it_means_something() {
        let ms = Duration::from_millis;
        // One callback, or a few milliseconds of them: what made the old bar say 22 GiB/s.
        assert_eq!(rate(8 << 20, ms(2000), 1), None);
        assert_eq!(rate(16 << 20, ms(1), 3), None);
        assert_eq!(rate(64 << 20, ms(499), 9), None);
        assert_eq!(rate(0, ms(2000), 5), None);
        // Then bytes since the first callback over the time since it.
        assert_eq!(rate(512 << 20, ms(1000), 65).as_deref(), Some("512 MiB/s"));
        assert_eq!(rate(3 << 29, ms(2000), 10).as_deref(), Some("768 MiB/s"));
    }

    #[test]
    fn the_first_callback_starts_the_clock() {
        let mut r = Rate::default();
        assert_eq!(r.update(100 << 20), "");
        assert_eq!(r.update(200 << 20), "", "too early");
    }
}
