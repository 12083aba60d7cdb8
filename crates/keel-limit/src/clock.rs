//! The local limiter's time: microseconds since a monotonic anchor.

use std::time::Duration;

use tokio::time::Instant;

/// Monotonic microseconds since the clock was made.
///
/// Backed by `tokio::time::Instant`, so tests running with Tokio's paused time
/// (`tokio::time::pause`/`advance`) move it too; outside a paused runtime it is the OS's
/// monotonic clock. Copies share the anchor.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock { anchor: Instant::now() }
    }

    /// Microseconds since the anchor (saturating at `u64::MAX`, ~584 000 years).
    pub fn now_micros(&self) -> u64 {
        micros(self.anchor.elapsed())
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// `duration` in whole microseconds, saturating.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let clock = Clock::new();
        assert_eq!(clock.now_micros(), 0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now_micros(), 1_500_000);
        assert_eq!(micros(Duration::MAX), u64::MAX);
    }
}
