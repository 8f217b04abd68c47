//! Live progress on stderr: sent / ok / errors and the success rate.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::report::Stats;

/// Redrawing more often than this is wasted work at high request rates.
const REFRESH: Duration = Duration::from_millis(100);

/// A progress bar, or nothing when hidden (then every call is a no-op).
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_update: Option<Instant>,
}

impl Progress {
    /// A bar of `total` completed requests, or a spinner when only a duration bounds the run.
    pub fn new(visible: bool, total: Option<u64>) -> Self {
        let bar = visible.then(|| {
            let (bar, template) = match total {
                Some(total) => (
                    ProgressBar::new(total),
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
                ),
                None => (
                    ProgressBar::new_spinner(),
                    "{spinner} [{elapsed_precise}] {msg}",
                ),
            };
            // The templates are constant; should one not parse, the default style is still fine.
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(REFRESH);
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            last_update: None,
        }
    }

    pub fn hidden() -> Self {
        Self::new(false, None)
    }

    pub fn update(&mut self, sent: u64, stats: &Stats) {
        let Some(bar) = &self.bar else {
            return;
        };
        bar.set_position(stats.completed());
        let now = Instant::now();
        if self
            .last_update
            .is_some_and(|last| now.duration_since(last) < REFRESH)
        {
            return;
        }
        self.last_update = Some(now);
        bar.set_message(message(sent, stats, now.duration_since(self.started)));
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn message(sent: u64, stats: &Stats, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        stats.ok as f64 / seconds
    } else {
        0.0
    };
    format!(
        "sent {sent}  ok {}  errors {}  {rate:.1} ok/s",
        stats.ok,
        stats.failed()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{ErrorKind, Sample};

    #[test]
    fn message_shows_counts_and_rate() {
        let mut stats = Stats::new().expect("histogram");
        for result in [Ok(crate::runner::Answer::Accepted), Err(ErrorKind::Http5xx)] {
            stats.record(
                None,
                &Sample {
                    image: 0,
                    status: Some(200),
                    latency: Duration::from_millis(1),
                    result,
                },
            );
        }
        assert_eq!(
            message(3, &stats, Duration::from_secs(2)),
            "sent 3  ok 1  errors 1  0.5 ok/s"
        );
        assert_eq!(
            message(0, &stats, Duration::ZERO),
            "sent 0  ok 1  errors 1  0.0 ok/s"
        );
    }
}
