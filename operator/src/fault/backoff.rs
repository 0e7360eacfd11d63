//! How a watch or a poll that fails waits before it tries again: 250 ms
//! doubling to 30 s, each wait ±20 % at random, back to the start after a
//! success. An API server that cannot be reached is asked a handful of
//! times a minute, not thousands of times a second, and watchers that lost it
//! together do not come back together.
//!
//! A watcher stream is [`paced`]; a hand-made loop asks a [`Backoff`] for
//! the next wait itself. (kube's `StreamBackoff`, behind the watcher's
//! `default_backoff()`, starts over on every `Ok` item, and a watcher says
//! `Event::Init` before each attempt to list: against an API server that
//! fails every list it never gets past its first wait.)

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use std::time::Duration;

/// The first wait.
pub const FIRST: Duration = Duration::from_millis(250);
/// No wait is longer.
pub const CAP: Duration = Duration::from_secs(30);
/// Each wait is this fraction shorter or longer at random.
pub const JITTER: f64 = 0.2;

/// The wait after `failures` failures in a row (1-based), where `unit` in
/// `[0, 1)` draws the jitter: [`FIRST`] doubling per failure, ±[`JITTER`],
/// never more than [`CAP`]. Pure.
pub fn delay(failures: u32, unit: f64) -> Duration {
    let base = FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(CAP);
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0);
    base.mul_f64(factor).min(CAP)
}

/// Failures in a row and the random draws for their jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff seeded at random (every one differs, even in one process).
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default(),
        );
        Self::seeded(h.finish())
    }

    /// A backoff whose jitter is drawn from `seed`.
    pub fn seeded(seed: u64) -> Self {
        Backoff {
            failures: 0,
            rng: seed,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// One more failure: how long to wait before the next try.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay(self.failures, self.unit())
    }

    /// A success: the next failure waits [`FIRST`] again.
    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    /// The next draw in `[0, 1)` (splitmix64).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// A controller's trigger watches wait the same way (kube's default waits
/// up to a minute after each failure, so a resource created just after an
/// API server outage could go unseen for two).
impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.fail())
    }
}

impl kube::runtime::utils::Backoff for Backoff {
    fn reset(&mut self) {
        self.succeed();
    }
}

/// `events` of a watcher, waiting out a [`Backoff`] after every error
/// before the watcher tries again, and starting over only once the watch
/// delivers something (not on the `Init` it says before every list). One
/// line is logged per failure, with the wait, and one when it works again;
/// `what` names the watch in them.
pub fn paced<K, S>(
    what: &'static str,
    events: S,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Send + 'static,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
{
    let start = (events.boxed(), Backoff::new(), None::<Duration>);
    futures::stream::unfold(start, move |(mut events, mut backoff, wait)| async move {
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        let ev = events.next().await?;
        let wait = match &ev {
            Err(error) => {
                let wait = backoff.fail();
                tracing::warn!(%error, failures = backoff.failures(), retry_in = ?wait, "{what} failed");
                Some(wait)
            }
            Ok(watcher::Event::Init) => None,
            Ok(_) => {
                if backoff.failures() > 0 {
                    tracing::info!(failures = backoff.failures(), "{what} works again");
                }
                backoff.succeed();
                None
            }
        };
        Some((ev, (events, backoff, wait)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Whether `wait` is `base` ±20 % (to a microsecond) and at most [`CAP`].
    fn jittered(wait: Duration, base: Duration) -> bool {
        let slack = Duration::from_micros(1);
        wait + slack >= base.mul_f64(1.0 - JITTER)
            && wait <= base.mul_f64(1.0 + JITTER) + slack
            && wait <= CAP
    }

    #[test]
    fn as_a_controllers_trigger_backoff_it_waits_the_same_and_starts_over_on_reset() {
        use kube::runtime::utils::Backoff as _;
        let mut b = Backoff::seeded(7);
        let waits: Vec<Duration> = (&mut b).take(10).collect();
        for (i, w) in waits.iter().enumerate() {
            assert!(jittered(*w, delay(i as u32 + 1, 0.5)), "wait {i}: {w:?}");
        }
        assert_eq!(b.failures(), 10);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(jittered(b.next().unwrap(), FIRST));
    }

    #[test]
    fn waits_double_from_a_quarter_second_up_to_thirty_seconds_with_a_fifth_of_jitter() {
        let bases: Vec<u64> = (1..=10).map(|n| delay(n, 0.5).as_millis() as u64).collect();
        assert_eq!(
            bases,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(delay(0, 0.5), FIRST);
        assert_eq!(delay(u32::MAX, 0.5), CAP);
        for n in 1..=40 {
            let base = delay(n, 0.5);
            let (low, high) = (delay(n, 0.0), delay(n, 0.999_999));
            assert!(jittered(low, base) && jittered(high, base), "failure {n}");
            assert!(low < base.mul_f64(0.81), "failure {n}: {low:?}");
            assert!(
                high > base.mul_f64(1.19) || (base == CAP && high == CAP),
                "failure {n}: {high:?}"
            );
        }
    }

    #[test]
    fn a_backoff_stays_within_its_bounds_starts_over_after_a_success_and_differs_per_seed() {
        let mut b = Backoff::seeded(7);
        for n in 1..=20u32 {
            let wait = b.fail();
            assert!(jittered(wait, delay(n, 0.5)), "failure {n}: {wait:?}");
        }
        assert_eq!(b.failures(), 20);
        b.succeed();
        assert_eq!(b.failures(), 0);
        assert!(jittered(b.fail(), FIRST));
        // Watchers that failed together come back at different times.
        let firsts: BTreeSet<Duration> = (0..100u64).map(|s| Backoff::seeded(s).fail()).collect();
        assert!(firsts.len() > 50, "{} distinct waits", firsts.len());
        assert_ne!(Backoff::new().rng, Backoff::new().rng);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_watch_waits_longer_after_each_error_and_starts_over_after_an_event() {
        type Ev = watcher::Result<watcher::Event<()>>;
        let failed = || Err(watcher::Error::NoResourceVersion);
        // The watcher says Init before each list; here every list fails but the fourth.
        let mut items: Vec<Ev> = vec![];
        for i in 0..6 {
            items.push(Ok(watcher::Event::Init));
            items.push(if i == 3 {
                Ok(watcher::Event::InitDone)
            } else {
                failed()
            });
        }
        let start = tokio::time::Instant::now();
        let mut at = vec![];
        let mut events = std::pin::pin!(paced("a test watch", futures::stream::iter(items)));
        while let Some(ev) = events.next().await {
            if ev.is_err() {
                at.push(start.elapsed());
            }
        }
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps.len(), 4, "{at:?}");
        // 250 ms, 500 ms, 1 s; the list that worked starts over: 250 ms.
        for (gap, base) in gaps.iter().zip([FIRST, FIRST * 2, FIRST * 4, FIRST]) {
            assert!(jittered(*gap, base), "{gaps:?}");
        }
    }
}
