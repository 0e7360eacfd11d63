//! Measuring an SLO from its probe samples. Pure: no clocks, no I/O.
//!
//! Samples are kept as a run-length-encoded timeline: consecutive samples with
//! the same outcome form one [`Run`] (first and last sample time, count). That
//! is exact for every number below and stays small for the signals firedrill
//! sees (healthy, an outage, healthy again); a flapping probe is bounded by
//! [`MAX_RUNS`], past which the oldest neighbouring runs are merged.
//!
//! Definitions, over the measured window `[start, end)` (injection until the
//! zone is restored):
//! - **time to recover**: from `start` to the first sample of the final
//!   healthy streak, the run of successful samples that lasts to the end of
//!   the window. Zero when no sample in the window failed. None ("never
//!   recovered") when the last sample in the window failed, or there is none.
//!   Because samples are taken every `interval`, the measured value is at
//!   most one interval later than the true moment of recovery.
//! - **longest outage**: the longest stretch from a failed sample that follows
//!   a healthy one (or the window start) to the next healthy sample (or the
//!   window end).
//! - **availability**: successful samples / samples that produced an answer,
//!   in percent. Samples where the probe could not run at all (`Error`) are
//!   counted apart and do not count as either.

use serde::{Deserialize, Serialize};

/// At most this many runs per SLO are kept.
pub const MAX_RUNS: usize = 2000;

/// What one probe said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The service answered as the SLO requires.
    Ok,
    /// The service did not (refused, timed out, wrong status, threshold breached).
    Fail,
    /// The probe itself could not run (missing Secret, Prometheus unreachable, bad query).
    Error,
}

/// Consecutive samples with the same outcome. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    #[serde(rename = "o")]
    pub outcome: Outcome,
    /// Time of the first sample.
    #[serde(rename = "s")]
    pub first: i64,
    /// Time of the last sample.
    #[serde(rename = "e")]
    pub last: i64,
    #[serde(rename = "n")]
    pub count: u64,
}

/// One SLO's samples, run-length encoded, plus the latest failure message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub runs: Vec<Run>,
    /// The most recent reason a probe failed or could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Timeline {
    /// Add one sample. Samples must arrive in time order.
    pub fn push(&mut self, at: i64, outcome: Outcome) {
        match self.runs.last_mut() {
            Some(r) if r.outcome == outcome => {
                r.last = at.max(r.last);
                r.count += 1;
            }
            _ => self.runs.push(Run {
                outcome,
                first: at,
                last: at,
                count: 1,
            }),
        }
        if self.runs.len() > MAX_RUNS {
            self.compact();
        }
    }

    /// Merge the oldest pair of short runs into the older one's outcome
    /// until the timeline fits again; keeps totals, loses fine detail first
    /// where it matters least (the beginning).
    fn compact(&mut self) {
        while self.runs.len() > MAX_RUNS {
            let b = self.runs.remove(1);
            let a = &mut self.runs[0];
            a.last = b.last;
            a.count += b.count;
        }
    }

    /// Runs clipped to samples taken in `[start, end)`.
    fn window(&self, start: i64, end: i64) -> Vec<Run> {
        self.runs
            .iter()
            .filter(|r| r.last >= start && r.first < end)
            .filter_map(|r| {
                if r.first >= start && r.last < end {
                    return Some(r.clone());
                }
                // A run straddling an edge: its samples are evenly spaced
                // (one per interval), so count those inside the window.
                let step = if r.count > 1 {
                    (r.last - r.first) as f64 / (r.count - 1) as f64
                } else {
                    1.0
                };
                let k0 = (((start - r.first) as f64 / step).ceil()).max(0.0) as u64;
                let k1 = ((((end - 1).min(r.last) - r.first) as f64 / step).floor() as u64)
                    .min(r.count - 1);
                let at = |k: u64| r.first + (k as f64 * step).round() as i64;
                (k0 <= k1).then(|| Run {
                    outcome: r.outcome,
                    first: at(k0),
                    last: at(k1),
                    count: k1 - k0 + 1,
                })
            })
            .collect()
    }

    /// The numbers for the window `[start, end)`.
    pub fn measure(&self, start: i64, end: i64) -> Measurement {
        let runs = self.window(start, end);
        let mut m = Measurement::default();
        for r in &runs {
            match r.outcome {
                Outcome::Ok => m.ok += r.count,
                Outcome::Fail => m.failed += r.count,
                Outcome::Error => m.errors += r.count,
            }
        }
        m.first_failure_at = runs
            .iter()
            .find(|r| r.outcome == Outcome::Fail)
            .map(|r| r.first);
        // Errors say nothing about the service: judge on answered samples.
        let answered: Vec<&Run> = runs
            .iter()
            .filter(|r| r.outcome != Outcome::Error)
            .collect();
        match answered.last() {
            None => {}
            Some(last) if last.outcome == Outcome::Fail => {}
            Some(_) => {
                let streak_start = answered
                    .iter()
                    .rposition(|r| r.outcome == Outcome::Fail)
                    .map(|i| answered[i + 1].first);
                match streak_start {
                    None => m.time_to_recover_ms = Some(0),
                    Some(t) => {
                        m.time_to_recover_ms = Some((t - start).max(0));
                        m.recovered_at = Some(t);
                    }
                }
            }
        }
        // Longest outage: from a failed run's first sample to the next healthy sample.
        for (i, r) in answered.iter().enumerate() {
            if r.outcome != Outcome::Fail || (i > 0 && answered[i - 1].outcome == Outcome::Fail) {
                continue;
            }
            let began = if i == 0 { start.min(r.first) } else { r.first };
            let ended = answered[i..]
                .iter()
                .find(|x| x.outcome == Outcome::Ok)
                .map(|x| x.first)
                .unwrap_or(end);
            m.longest_outage_ms = m.longest_outage_ms.max(ended - began);
        }
        m
    }

    /// Milliseconds the probe has been failing at time `now` (0 when the last answer was healthy).
    pub fn failing_for(&self, now: i64) -> i64 {
        let answered: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.outcome != Outcome::Error)
            .collect();
        match answered.last() {
            Some(r) if r.outcome == Outcome::Fail => now - r.first,
            _ => 0,
        }
    }
}

/// The numbers of one SLO over one window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Measurement {
    pub ok: u64,
    pub failed: u64,
    /// Samples where the probe could not run.
    pub errors: u64,
    pub time_to_recover_ms: Option<i64>,
    pub longest_outage_ms: i64,
    pub first_failure_at: Option<i64>,
    pub recovered_at: Option<i64>,
}

impl Measurement {
    pub fn samples(&self) -> u64 {
        self.ok + self.failed + self.errors
    }

    /// Successful over answered samples, in percent; None without answers.
    pub fn availability_percent(&self) -> Option<f64> {
        let answered = self.ok + self.failed;
        (answered > 0).then(|| self.ok as f64 * 100.0 / answered as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    /// Samples every `step` ms from `from` to `to` (exclusive) with `outcome`.
    fn fill(t: &mut Timeline, from: i64, to: i64, step: i64, outcome: Outcome) {
        let mut at = from;
        while at < to {
            t.push(at, outcome);
            at += step;
        }
    }

    #[test]
    fn never_failed_recovers_in_zero() {
        let mut t = Timeline::default();
        fill(&mut t, 0, 10_000, 100, Ok);
        let m = t.measure(0, 10_000);
        assert_eq!(m.time_to_recover_ms, Some(0));
        assert_eq!((m.ok, m.failed), (100, 0));
        assert_eq!(m.availability_percent(), Some(100.0));
        assert_eq!(m.longest_outage_ms, 0);
        assert_eq!(m.first_failure_at, None);
    }

    #[test]
    fn outage_then_recovery() {
        // Injection at 1000; down from 2000 until 5000; probes every 100 ms.
        let mut t = Timeline::default();
        fill(&mut t, 0, 2000, 100, Ok);
        fill(&mut t, 2000, 5000, 100, Fail);
        fill(&mut t, 5000, 9000, 100, Ok);
        let m = t.measure(1000, 9000);
        assert_eq!(m.time_to_recover_ms, Some(4000));
        assert_eq!(m.recovered_at, Some(5000));
        assert_eq!(m.first_failure_at, Some(2000));
        assert_eq!(m.longest_outage_ms, 3000);
        assert_eq!((m.ok, m.failed), (50, 30));
        assert_eq!(m.availability_percent(), Some(62.5));
    }

    #[test]
    fn never_recovered() {
        let mut t = Timeline::default();
        fill(&mut t, 0, 1000, 100, Ok);
        fill(&mut t, 1000, 6000, 100, Fail);
        let m = t.measure(500, 6000);
        assert_eq!(m.time_to_recover_ms, None);
        assert_eq!(m.recovered_at, None);
        assert_eq!(
            m.longest_outage_ms, 5000,
            "the outage lasts to the window's end"
        );
    }

    #[test]
    fn the_final_streak_counts_not_the_first_recovery() {
        let mut t = Timeline::default();
        fill(&mut t, 0, 1000, 100, Fail);
        fill(&mut t, 1000, 2000, 100, Ok);
        fill(&mut t, 2000, 4000, 100, Fail);
        fill(&mut t, 4000, 6000, 100, Ok);
        let m = t.measure(0, 6000);
        assert_eq!(m.time_to_recover_ms, Some(4000));
        assert_eq!(m.longest_outage_ms, 2000);
    }

    #[test]
    fn errors_are_not_judged() {
        let mut t = Timeline::default();
        fill(&mut t, 0, 1000, 100, Error);
        fill(&mut t, 1000, 2000, 100, Ok);
        let m = t.measure(0, 2000);
        assert_eq!(m.errors, 10);
        assert_eq!(m.availability_percent(), Some(100.0));
        let mut only_errors = Timeline::default();
        fill(&mut only_errors, 0, 1000, 100, Error);
        assert_eq!(only_errors.measure(0, 1000).availability_percent(), None);
        assert_eq!(only_errors.measure(0, 1000).time_to_recover_ms, None);
    }

    #[test]
    fn the_window_clips_samples() {
        let mut t = Timeline::default();
        fill(&mut t, 0, 10_000, 1000, Ok); // samples at 0,1000,...,9000
        let m = t.measure(3000, 6000); // 3000, 4000, 5000
        assert_eq!(m.ok, 3);
        assert_eq!(
            t.measure(3100, 3900).samples(),
            0,
            "no sample between two samples"
        );
    }

    #[test]
    fn flapping_is_bounded() {
        let mut t = Timeline::default();
        for i in 0..(MAX_RUNS as i64 * 3) {
            t.push(i * 10, if i % 2 == 0 { Ok } else { Fail });
        }
        assert_eq!(t.runs.len(), MAX_RUNS);
        let total: u64 = t.runs.iter().map(|r| r.count).sum();
        assert_eq!(
            total,
            MAX_RUNS as u64 * 3,
            "no sample is lost from the counts"
        );
    }

    #[test]
    fn failing_for_tracks_the_current_outage() {
        let mut t = Timeline::default();
        fill(&mut t, 0, 1000, 100, Ok);
        assert_eq!(t.failing_for(1000), 0);
        fill(&mut t, 1000, 1500, 100, Fail);
        assert_eq!(t.failing_for(1600), 600);
    }
}
