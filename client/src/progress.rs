//! Progress of an async load on stderr. On a Linux host: an indicatif bar. On Android, where
//! indicatif is not in the tree, plain lines (`loaded 256 MiB of 1 GiB (25%)`) at most once a
//! second; logcat-style tools and `adb shell` without a tty show them as they are.

use std::time::Duration;
#[cfg(target_os = "android")]
use std::time::Instant;

/// Shows the progress of one load, or nothing when disabled (JSON output, no terminal).
pub struct Progress {
    #[cfg(not(target_os = "android"))]
    bar: Option<indicatif::ProgressBar>,
    /// The smoothed rate (hidden until it means something), shown by both forms.
    rate: crate::rate::Rate,
    #[cfg(target_os = "android")]
    last: Option<Instant>,
    #[cfg(target_os = "android")]
    enabled: bool,
}

/// Shortest time between two plain progress lines.
#[cfg_attr(not(target_os = "android"), allow(dead_code))]
const LINE_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(not(target_os = "android"))]
impl Progress {
    pub fn new(enabled: bool) -> Self {
        let bar = enabled.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{bar:40}] {bytes}/{total_bytes} {msg}",
                )
                .expect("valid progress template")
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            rate: Default::default(),
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
            b.set_message(self.rate.update(done));
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(target_os = "android")]
impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress {
            last: None,
            enabled,
            rate: Default::default(),
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        let rate = self.rate.update(done);
        if !self.enabled || self.last.is_some_and(|t| t.elapsed() < LINE_INTERVAL) {
            return;
        }
        self.last = Some(Instant::now());
        eprintln!("{} {rate}", line(done, total));
    }

    pub fn finish(self) {}
}

/// `loaded 256 MiB of 1 GiB (25%)`.
#[cfg_attr(not(target_os = "android"), allow(dead_code))]
fn line(done: u64, total: u64) -> String {
    let size = dmabuf_loader::size::format;
    match (done * 100).checked_div(total) {
        Some(pct) => format!("loaded {} of {} ({pct}%)", size(done), size(total)),
        None => format!("loaded {}", size(done)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_lines_say_how_far() {
        assert_eq!(
            super::line(256 << 20, 1 << 30),
            "loaded 256 MiB of 1 GiB (25%)"
        );
        assert_eq!(super::line(4096, 0), "loaded 4 KiB");
    }
}
