//! Measuring an SLO from its probe samples. Pure: no clocks, no I/O.
//!
//! **Time-weighted.** A sample stands for the time from its start until the
//! next sample starts, but at most [`Timeline::cap_ms`] (the longer of the
//! interval and the timeout, plus one interval): a probe that hangs until its
//! timeout counts as down for that whole time, and a gap in the samples (the
//! operator restarting) is unmeasured rather than credited to the last
//! answer.
//!
//! **Exact under compaction.** Samples are kept as [`Segment`]s: summaries
//! with the counts and times of each outcome plus a few boundary facts
//! (first failure, the last failure's recovery, an outage still open at the
//! end, the longest outage inside). Two neighbouring segments merge into one
//! whose numbers are exactly those of all their samples together, so the
//! bounded recording ([`MAX_SEGMENTS`] per SLO) never changes an outcome:
//! availability, time to recover, longest outage and first failure stay
//! exact. Segments are never merged across a *mark* (injection, the start of
//! the restore), so windows that begin and end at marks are measured exactly.
//!
//! Definitions, over the measured window `[start, end)` (injection until the
//! zone is restored):
//! - **time to recover**: from `start` to the first successful sample after
//!   the last failed one. Zero when no sample in the window failed. None
//!   ("never recovered") when the last answered sample in the window failed,
//!   or there is none. Samples are taken every `interval`, so the measured
//!   value is at most one interval later than the true moment of recovery.
//! - **longest outage**: the longest stretch from a failed sample that follows
//!   a healthy one (or the window start) to the next healthy sample (or the
//!   window end).
//! - **availability**: time covered by successful samples over time covered
//!   by answered (successful or failed) samples, in percent.
//! - **errors**: samples where the probe could not run at all judge nothing;
//!   their share of the window's time is reported, and too large a share
//!   makes the SLO Inconclusive (see [`crate::verdict`]).

use serde::{Deserialize, Serialize};

/// At most this many segments are kept per SLO. A segment serializes to
/// about 100 bytes, so 32 SLOs (the most an experiment may have) stay well
/// under the 1 MiB object limit.
pub const MAX_SEGMENTS: usize = 160;

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

impl Outcome {
    fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Error => 2,
        }
    }
}

/// A stretch of samples, summarised so that neighbours merge exactly.
/// Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Start of the first sample.
    #[serde(rename = "s")]
    pub start: i64,
    /// End of the time the last sample stands for.
    #[serde(rename = "e")]
    pub end: i64,
    /// The outcome of every sample in it (a plain run); absent when mixed.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Samples by outcome: ok, failed, error.
    #[serde(rename = "n")]
    pub counts: [u64; 3],
    /// Milliseconds covered by ok, failed and error samples.
    #[serde(rename = "t")]
    pub ms: [i64; 3],
    #[serde(rename = "fo", default, skip_serializing_if = "Option::is_none")]
    pub first_ok: Option<i64>,
    #[serde(rename = "ff", default, skip_serializing_if = "Option::is_none")]
    pub first_fail: Option<i64>,
    #[serde(rename = "lf", default, skip_serializing_if = "Option::is_none")]
    pub last_fail: Option<i64>,
    /// Start of the first successful sample after the last failed one.
    #[serde(rename = "ra", default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<i64>,
    /// Start of the first failed sample after the last successful one: an
    /// outage still open at the segment's end.
    #[serde(rename = "op", default, skip_serializing_if = "Option::is_none")]
    pub open_since: Option<i64>,
    /// The longest outage that began and ended inside.
    #[serde(rename = "mx", default)]
    pub longest_closed: i64,
}

impl Segment {
    /// One sample (or a piece of one) standing for `[start, end)`.
    pub fn sample(outcome: Outcome, start: i64, end: i64, count: u64) -> Self {
        let mut s = Segment {
            start,
            end,
            outcome: Some(outcome),
            counts: [0; 3],
            ms: [0; 3],
            first_ok: None,
            first_fail: None,
            last_fail: None,
            recovered_at: None,
            open_since: None,
            longest_closed: 0,
        };
        s.counts[outcome.index()] = count;
        s.ms[outcome.index()] = (end - start).max(0);
        match outcome {
            Outcome::Ok => s.first_ok = Some(start),
            Outcome::Fail => {
                s.first_fail = Some(start);
                s.last_fail = Some(start);
                s.open_since = Some(start);
            }
            Outcome::Error => {}
        }
        s
    }

    /// `self` followed by `next`, exactly.
    pub fn then(&self, next: &Segment) -> Segment {
        let (a, b) = (self, next);
        let mut counts = a.counts;
        let mut ms = a.ms;
        for i in 0..3 {
            counts[i] += b.counts[i];
            ms[i] += b.ms[i];
        }
        let bridged = match (a.open_since, b.first_ok) {
            (Some(t), Some(o)) => o - t,
            _ => 0,
        };
        Segment {
            start: a.start,
            end: b.end,
            outcome: if a.outcome == b.outcome {
                a.outcome
            } else {
                None
            },
            counts,
            ms,
            first_ok: a.first_ok.or(b.first_ok),
            first_fail: a.first_fail.or(b.first_fail),
            last_fail: b.last_fail.or(a.last_fail),
            recovered_at: if b.last_fail.is_some() {
                b.recovered_at
            } else if a.last_fail.is_some() {
                a.recovered_at.or(b.first_ok)
            } else {
                None
            },
            open_since: if b.first_ok.is_some() {
                b.open_since
            } else {
                a.open_since.or(b.open_since)
            },
            longest_closed: a.longest_closed.max(b.longest_closed).max(bridged),
        }
    }

    fn samples(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The part of this segment inside `[from, to)`. Exact for a plain run
    /// (its samples are evenly spaced); proportional for a mixed one, which
    /// only happens when a window edge is not a mark.
    fn clip(&self, from: i64, to: i64) -> Option<Segment> {
        let (s, e) = (self.start.max(from), self.end.min(to));
        if s >= e && !(s == e && self.start == self.end && s >= from && s < to) {
            return None;
        }
        if s == self.start && e == self.end {
            return Some(self.clone());
        }
        let span = (self.end - self.start).max(1) as f64;
        let n = self.samples();
        let inside = |count: u64| -> u64 {
            if count == 0 {
                return 0;
            }
            // Sample k of `count` starts at start + k * span / count.
            let step = span / count as f64;
            let first = ((s - self.start) as f64 / step).ceil().max(0.0) as u64;
            let last = (((e - self.start) as f64 / step).ceil() as u64).min(count);
            last.saturating_sub(first)
        };
        if let Some(o) = self.outcome {
            return Some(Segment::sample(o, s, e, inside(n)));
        }
        let share = (e - s) as f64 / span;
        let mut out = self.clone();
        out.start = s;
        out.end = e;
        for i in 0..3 {
            out.counts[i] = (self.counts[i] as f64 * share).round() as u64;
            out.ms[i] = (self.ms[i] as f64 * share).round() as i64;
        }
        let clamp = |t: Option<i64>| t.map(|t| t.clamp(s, e));
        out.first_ok = clamp(out.first_ok);
        out.first_fail = clamp(out.first_fail);
        out.last_fail = clamp(out.last_fail);
        out.recovered_at = clamp(out.recovered_at);
        out.open_since = clamp(out.open_since);
        Some(out)
    }
}

/// One SLO's samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    #[serde(rename = "seg", default)]
    pub segments: Vec<Segment>,
    /// The latest sample: what it stands for is known once the next one starts.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<(i64, Outcome)>,
    /// The longest time one sample may stand for.
    #[serde(rename = "cap", default)]
    pub cap_ms: i64,
    /// Window edges (injection, start of the restore): never merged across.
    #[serde(rename = "m", default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<i64>,
    /// Start of the first sample that was not Ok after the last Ok one.
    #[serde(rename = "bad", default, skip_serializing_if = "Option::is_none")]
    pub bad_since: Option<i64>,
    /// The most recent reason a probe failed or could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// How long a sample may stand for when the timeline does not say.
const DEFAULT_CAP_MS: i64 = 60_000;

/// The longest `last_error` kept (it is shown in statuses and reports).
const MAX_ERROR_LEN: usize = 300;

impl Timeline {
    /// A timeline whose samples stand for at most `cap_ms` each.
    pub fn with_cap(cap_ms: i64) -> Self {
        Timeline {
            cap_ms,
            ..Default::default()
        }
    }

    fn cap(&self) -> i64 {
        if self.cap_ms > 0 {
            self.cap_ms
        } else {
            DEFAULT_CAP_MS
        }
    }

    /// Add one sample, taken at `at`. Samples arrive in time order; one
    /// taken no later than the previous one (the wall clock stepped back) is
    /// placed a millisecond after it, so that every sample stands for some
    /// time and a window edge never falls inside a merged run.
    pub fn push(&mut self, at: i64, outcome: Outcome) {
        let at = match self.pending {
            Some((p_at, _)) if at <= p_at => p_at + 1,
            _ => at,
        };
        if let Some((p_at, p_outcome)) = self.pending.take() {
            let end = at.min(p_at + self.cap()).max(p_at);
            self.append(p_outcome, p_at, end, true);
        }
        self.pending = Some((at, outcome));
        match outcome {
            Outcome::Ok => self.bad_since = None,
            _ => {
                self.bad_since.get_or_insert(at);
            }
        }
        if self.segments.len() > MAX_SEGMENTS {
            self.compact(MAX_SEGMENTS * 3 / 4);
        }
    }

    /// Remember why the probe failed (bounded).
    pub fn set_error(&mut self, why: String) {
        let mut why = why;
        if why.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !why.is_char_boundary(cut) {
                cut -= 1;
            }
            why.truncate(cut);
            why.push('…');
        }
        self.last_error = Some(why);
    }

    /// A window edge at `t`: no segment will span it.
    pub fn mark(&mut self, t: i64) {
        if !self.marks.contains(&t) {
            self.marks.push(t);
            self.marks.sort_unstable();
        }
    }

    fn marked_between(&self, from: i64, to: i64) -> bool {
        self.marks.iter().any(|m| from <= *m && *m <= to)
    }

    /// Add a sample's time `[start, end)`, split at marks, merging into the
    /// last segment when it continues a plain run (if `merge`).
    fn append(&mut self, outcome: Outcome, start: i64, end: i64, merge: bool) {
        let mut cuts: Vec<i64> = self
            .marks
            .iter()
            .copied()
            .filter(|m| start < *m && *m < end)
            .collect();
        cuts.push(end);
        let mut from = start;
        let mut first = true;
        for to in cuts {
            // Only the piece where the sample starts counts it.
            let piece = Segment::sample(outcome, from, to, first as u64);
            first = false;
            let merge = merge
                && self.segments.last().is_some_and(|last| {
                    last.outcome == Some(outcome) && last.end == from && !self.marks.contains(&from)
                });
            if merge {
                let last = self.segments.last_mut().unwrap();
                *last = last.then(&piece);
            } else {
                self.segments.push(piece);
            }
            from = to;
        }
    }

    /// Merge neighbours (never across a mark) until at most `keep` segments
    /// are left, shortest pairs first: fine detail goes where it is least visible.
    fn compact(&mut self, keep: usize) {
        while self.segments.len() > keep {
            let best = (0..self.segments.len() - 1)
                .filter(|&i| !self.marked_between(self.segments[i].end, self.segments[i + 1].start))
                .min_by_key(|&i| self.segments[i + 1].end - self.segments[i].start);
            let Some(i) = best else {
                return;
            };
            let b = self.segments.remove(i + 1);
            self.segments[i] = self.segments[i].then(&b);
        }
    }

    /// Every segment, with the pending sample standing until `now`.
    pub fn segments_until(&self, now: i64) -> Vec<Segment> {
        let mut copy = self.clone();
        if let Some((at, o)) = copy.pending.take() {
            let end = now.min(at + self.cap()).max(at);
            // A sample taken at `now` stands for no time yet: kept apart, it
            // stays outside any window that ends at `now`.
            copy.append(o, at, end, end > at);
        }
        copy.segments
    }

    /// The numbers for the window `[start, end)`, as of `now` (the pending
    /// sample stands until `now` at most).
    pub fn measure(&self, start: i64, end: i64, now: i64) -> Measurement {
        let mut w: Option<Segment> = None;
        for seg in self.segments_until(now.max(start)) {
            if let Some(piece) = seg.clip(start, end) {
                w = Some(match w {
                    None => piece,
                    Some(acc) => acc.then(&piece),
                });
            }
        }
        let window_ms = (end.min(now.max(start)) - start).max(0);
        let largest_gap = self.largest_gap(start, end.min(now.max(start)), now);
        let Some(w) = w else {
            return Measurement {
                window_start: start,
                window_ms,
                largest_gap,
                ..Default::default()
            };
        };
        let mut m = Measurement {
            ok: w.counts[0],
            failed: w.counts[1],
            errors: w.counts[2],
            ok_ms: w.ms[0],
            fail_ms: w.ms[1],
            error_ms: w.ms[2],
            first_failure_at: w.first_fail,
            last_failure_at: w.last_fail,
            window_start: start,
            window_ms,
            largest_gap,
            ..Default::default()
        };
        if w.first_ok.is_none() && w.first_fail.is_none() {
            return m;
        }
        match (w.first_fail, w.recovered_at) {
            (None, _) => m.time_to_recover_ms = Some(0),
            (Some(_), Some(r)) => {
                m.time_to_recover_ms = Some((r - start).max(0));
                m.recovered_at = Some(r);
            }
            (Some(_), None) => {}
        }
        let window_end = end.min(now.max(start)).max(w.end.min(end));
        let mut longest = w.longest_closed;
        if let Some(t) = w.open_since {
            longest = longest.max(window_end - t);
        }
        // A window that begins failing: the outage began with the window.
        if let Some(f) = w.first_fail
            && w.first_ok.is_none_or(|o| f < o)
        {
            longest = longest.max(w.first_ok.unwrap_or(window_end) - start);
        }
        m.longest_outage_ms = longest.max(0);
        m
    }

    /// The longest stretch of `[start, end)` that no segment covers, if
    /// any: where the samples stopped (a stopped or restarted operator).
    /// Gaps inside a compacted segment count toward coverage but are not
    /// located here.
    fn largest_gap(&self, start: i64, end: i64, now: i64) -> Option<(i64, i64)> {
        let mut best: Option<(i64, i64)> = None;
        let mut at = start;
        let mut consider = |from: i64, to: i64| {
            if to > from && best.is_none_or(|(a, b)| to - from > b - a) {
                best = Some((from, to));
            }
        };
        for seg in self.segments_until(now.max(start)) {
            if seg.end <= start || seg.start >= end {
                continue;
            }
            consider(at, seg.start.min(end));
            at = at.max(seg.end);
        }
        consider(at, end);
        best
    }

    /// Milliseconds the probe has not been healthy at `now` (failed or could
    /// not run since the last healthy answer); 0 when the last answer was healthy.
    pub fn failing_for(&self, now: i64) -> i64 {
        self.bad_since.map(|t| (now - t).max(0)).unwrap_or(0)
    }
}

/// The numbers of one SLO over one window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Measurement {
    pub ok: u64,
    pub failed: u64,
    /// Samples where the probe could not run.
    pub errors: u64,
    pub ok_ms: i64,
    pub fail_ms: i64,
    pub error_ms: i64,
    pub time_to_recover_ms: Option<i64>,
    pub longest_outage_ms: i64,
    pub first_failure_at: Option<i64>,
    pub recovered_at: Option<i64>,
    /// Start of the last failed sample in the window.
    pub last_failure_at: Option<i64>,
    /// Where the window starts.
    pub window_start: i64,
    /// How long the window was (until `now` if it has not ended).
    pub window_ms: i64,
    /// The longest stretch of the window no sample stands for.
    pub largest_gap: Option<(i64, i64)>,
}

impl Measurement {
    pub fn samples(&self) -> u64 {
        self.ok + self.failed + self.errors
    }

    /// Time healthy over time answered, in percent; None without answers.
    pub fn availability_percent(&self) -> Option<f64> {
        let answered = self.ok_ms + self.fail_ms;
        if answered > 0 {
            Some(self.ok_ms as f64 * 100.0 / answered as f64)
        } else if self.ok + self.failed > 0 {
            Some(self.ok as f64 * 100.0 / (self.ok + self.failed) as f64)
        } else {
            None
        }
    }

    /// The share of the window the samples stand for, in percent (100 for
    /// an empty window).
    pub fn coverage_percent(&self) -> f64 {
        if self.window_ms <= 0 {
            return 100.0;
        }
        let covered = self.ok_ms + self.fail_ms + self.error_ms;
        (covered as f64 * 100.0 / self.window_ms as f64).min(100.0)
    }

    /// The share of the measured time the probe could not run, in percent.
    pub fn error_percent(&self) -> f64 {
        let total = self.ok_ms + self.fail_ms + self.error_ms;
        if total > 0 {
            self.error_ms as f64 * 100.0 / total as f64
        } else if self.samples() > 0 {
            self.errors as f64 * 100.0 / self.samples() as f64
        } else {
            0.0
        }
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

    fn tl() -> Timeline {
        Timeline::with_cap(1_000)
    }

    #[test]
    fn never_failed_recovers_in_zero() {
        let mut t = tl();
        fill(&mut t, 0, 10_000, 100, Ok);
        let m = t.measure(0, 10_000, 10_000);
        assert_eq!(m.time_to_recover_ms, Some(0));
        assert_eq!((m.ok, m.failed), (100, 0));
        assert_eq!(m.availability_percent(), Some(100.0));
        assert_eq!(m.longest_outage_ms, 0);
        assert_eq!(m.first_failure_at, None);
    }

    #[test]
    fn outage_then_recovery() {
        // Injection at 1000; down from 2000 until 5000; probes every 100 ms.
        let mut t = tl();
        fill(&mut t, 0, 2000, 100, Ok);
        fill(&mut t, 2000, 5000, 100, Fail);
        fill(&mut t, 5000, 9000, 100, Ok);
        let m = t.measure(1000, 9000, 9000);
        assert_eq!(m.time_to_recover_ms, Some(4000));
        assert_eq!(m.recovered_at, Some(5000));
        assert_eq!(m.first_failure_at, Some(2000));
        assert_eq!(m.longest_outage_ms, 3000);
        assert_eq!((m.ok, m.failed), (50, 30));
        assert_eq!((m.ok_ms, m.fail_ms), (5000, 3000));
        assert_eq!(m.availability_percent(), Some(62.5));
    }

    #[test]
    fn never_recovered() {
        let mut t = tl();
        fill(&mut t, 0, 1000, 100, Ok);
        fill(&mut t, 1000, 6000, 100, Fail);
        let m = t.measure(500, 6000, 6000);
        assert_eq!(m.time_to_recover_ms, None);
        assert_eq!(m.recovered_at, None);
        assert_eq!(
            m.longest_outage_ms, 5000,
            "the outage lasts to the window's end"
        );
    }

    #[test]
    fn the_final_streak_counts_not_the_first_recovery() {
        let mut t = tl();
        fill(&mut t, 0, 1000, 100, Fail);
        fill(&mut t, 1000, 2000, 100, Ok);
        fill(&mut t, 2000, 4000, 100, Fail);
        fill(&mut t, 4000, 6000, 100, Ok);
        let m = t.measure(0, 6000, 6000);
        assert_eq!(m.time_to_recover_ms, Some(4000));
        assert_eq!(m.longest_outage_ms, 2000);
    }

    #[test]
    fn errors_are_not_judged_but_counted() {
        let mut t = tl();
        fill(&mut t, 0, 1000, 100, Error);
        fill(&mut t, 1000, 2000, 100, Ok);
        let m = t.measure(0, 2000, 2000);
        assert_eq!(m.errors, 10);
        assert_eq!(m.availability_percent(), Some(100.0));
        assert_eq!(m.error_percent(), 50.0);
        let mut only_errors = tl();
        fill(&mut only_errors, 0, 1000, 100, Error);
        let m = only_errors.measure(0, 1000, 1000);
        assert_eq!(m.availability_percent(), None);
        assert_eq!(m.time_to_recover_ms, None);
        assert_eq!(m.error_percent(), 100.0);
    }

    #[test]
    fn the_window_clips_samples() {
        let mut t = Timeline::with_cap(2_000);
        fill(&mut t, 0, 10_000, 1000, Ok); // samples at 0,1000,...,9000
        let m = t.measure(3000, 6000, 10_000); // 3000, 4000, 5000
        assert_eq!(m.ok, 3);
        assert_eq!(m.ok_ms, 3000);
        assert_eq!(
            t.measure(3100, 3900, 10_000).samples(),
            0,
            "no sample starts between two samples"
        );
        assert_eq!(
            t.measure(3100, 3900, 10_000).ok_ms,
            800,
            "but the time is covered"
        );
    }

    #[test]
    fn a_hung_probe_is_down_for_its_whole_timeout() {
        // interval 1 s, timeout 10 s, a 60 s black hole inside a 10 min
        // window. A probe that hangs takes 10 s, so the next one starts 10 s
        // later: 6 failed samples against ~540 healthy ones, but 60 s of 600.
        let (interval, timeout) = (1_000, 10_000);
        let mut t = Timeline::with_cap(timeout.max(interval) + interval);
        let mut at = 0;
        while at < 600_000 {
            let dark = (300_000..360_000).contains(&at);
            t.push(at, if dark { Fail } else { Ok });
            at += if dark { timeout } else { interval };
        }
        let m = t.measure(0, 600_000, 600_000);
        assert_eq!(m.failed, 6);
        let by_count = m.ok as f64 * 100.0 / (m.ok + m.failed) as f64;
        assert!(by_count > 98.9, "{by_count}");
        assert_eq!(m.availability_percent(), Some(90.0));
        assert_eq!(m.longest_outage_ms, 60_000);
    }

    #[test]
    fn a_gap_in_the_samples_is_unmeasured() {
        let mut t = tl(); // a sample stands for at most 1 s
        fill(&mut t, 0, 5000, 100, Ok);
        // The operator was away for 20 s.
        fill(&mut t, 25_000, 30_000, 100, Fail);
        let m = t.measure(0, 30_000, 30_000);
        assert_eq!(
            m.ok_ms,
            5000 + 900,
            "the last sample before the gap stands for one cap"
        );
        assert_eq!(m.fail_ms, 5000);
    }

    #[test]
    fn failing_for_counts_errors_too() {
        let mut t = tl();
        fill(&mut t, 0, 1000, 100, Ok);
        assert_eq!(t.failing_for(1000), 0);
        fill(&mut t, 1000, 1300, 100, Fail);
        fill(&mut t, 1300, 1500, 100, Error);
        assert_eq!(t.failing_for(1600), 600);
        t.push(1600, Ok);
        assert_eq!(t.failing_for(1700), 0);
    }

    /// The truth, sample by sample, with the same rules: (ok ms, fail ms,
    /// error ms, time to recover, longest outage, first failure).
    fn truth(
        samples: &[(i64, Outcome)],
        cap: i64,
        start: i64,
        end: i64,
    ) -> (i64, i64, i64, Option<i64>, i64, Option<i64>) {
        let mut ms = [0i64; 3];
        let mut first_fail = None;
        let mut last_fail = None;
        let mut recovered = None;
        let mut open: Option<i64> = None;
        let mut longest = 0;
        let mut first_ok = None;
        for (i, (at, o)) in samples.iter().enumerate() {
            let stop = samples
                .get(i + 1)
                .map(|(n, _)| *n)
                .unwrap_or(end)
                .min(at + cap);
            let (s, e) = ((*at).max(start), stop.min(end));
            if s >= e {
                continue;
            }
            ms[o.index()] += e - s;
            match o {
                Ok => {
                    first_ok.get_or_insert(s);
                    if last_fail.is_some() && recovered.is_none() {
                        recovered = Some(s);
                    }
                    if let Some(t) = open.take() {
                        longest = longest.max(s - t);
                    }
                }
                Fail => {
                    first_fail.get_or_insert(s);
                    last_fail = Some(s);
                    recovered = None;
                    open.get_or_insert(s);
                }
                Error => {}
            }
        }
        if let Some(t) = open {
            longest = longest.max(end - t);
        }
        if let Some(f) = first_fail
            && first_ok.is_none_or(|o| f < o)
        {
            longest = longest.max(first_ok.unwrap_or(end) - start);
        }
        let ttr = match (first_fail, recovered) {
            (None, _) => Some(0),
            (Some(_), Some(r)) => Some(r - start),
            _ => None,
        };
        (ms[0], ms[1], ms[2], ttr, longest, first_fail)
    }

    #[test]
    fn thirty_two_slos_flapping_for_twenty_minutes_stay_exact_and_small() {
        // 32 SLOs, a sample every 100 ms for 20 minutes, outcomes that flip
        // in irregular bursts (and some errors): far more runs than are kept.
        let (step, minutes) = (100, 20);
        let end = minutes * 60_000;
        let (inject, restore) = (5 * 60_000 + 37, 15 * 60_000 + 11);
        let mut recording = crate::probe::Recording::default();
        let mut truths = vec![];
        for slo in 0..32u64 {
            let mut t = Timeline::with_cap(step * 3);
            t.mark(inject);
            let mut samples = vec![];
            let mut state = slo.wrapping_mul(2654435761) | 1;
            let mut at = 0;
            while at < end {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let o = match state % 10 {
                    0..=5 => Ok,
                    6..=8 => Fail,
                    _ => Error,
                };
                // Healthy for good after 14 minutes, so a recovery exists.
                let o = if at > 14 * 60_000 { Ok } else { o };
                t.push(at, o);
                samples.push((at, o));
                if at == 15 * 60_000 {
                    t.mark(restore);
                }
                at += step;
            }
            assert!(t.segments.len() <= MAX_SEGMENTS, "{}", t.segments.len());
            let m = t.measure(inject, restore, end);
            let (ok, fail, err, ttr, longest, ff) = truth(&samples, step * 3, inject, restore);
            assert_eq!(
                (m.ok_ms, m.fail_ms, m.error_ms),
                (ok, fail, err),
                "slo {slo}"
            );
            assert_eq!(m.time_to_recover_ms, ttr, "slo {slo}");
            assert_eq!(m.longest_outage_ms, longest, "slo {slo}");
            assert_eq!(m.first_failure_at, ff, "slo {slo}");
            truths.push((ok, fail));
            recording.slos.insert(format!("slo-{slo:02}"), t);
        }
        let bytes = serde_json::to_string(&recording).unwrap().len();
        assert!(
            bytes < 900 * 1024,
            "the recording of 32 SLOs is {bytes} bytes"
        );
    }

    #[test]
    fn a_restart_mid_window_continues_exactly() {
        let step = 200;
        let cap = step * 3;
        let (inject, restore, end) = (10_000, 70_000, 80_000);
        let mut t = Timeline::with_cap(cap);
        t.mark(inject);
        let mut samples = vec![];
        let mut at = 0;
        let mut push = |t: &mut Timeline, at: i64| {
            let o = if (30_000..41_000).contains(&at) || at % 3_000 < 400 && at < 50_000 {
                Fail
            } else {
                Ok
            };
            t.push(at, o);
            samples.push((at, o));
        };
        while at < 40_000 {
            push(&mut t, at);
            at += step;
        }
        // The operator dies; a new one loads the saved recording 5 s later.
        let saved = serde_json::to_string(&t).unwrap();
        let mut t: Timeline = serde_json::from_str(&saved).unwrap();
        at += 5_000;
        while at < end {
            if at == 70_000 {
                t.mark(restore);
            }
            push(&mut t, at);
            at += step;
        }
        let m = t.measure(inject, restore, end);
        let (ok, fail, _, ttr, longest, ff) = truth(&samples, cap, inject, restore);
        assert_eq!((m.ok_ms, m.fail_ms), (ok, fail));
        assert_eq!(m.time_to_recover_ms, ttr);
        assert_eq!(m.longest_outage_ms, longest);
        assert_eq!(m.first_failure_at, ff);
        assert!(
            (ok + fail) < restore - inject,
            "the 5 s gap is not credited to anyone"
        );
    }

    #[test]
    fn compaction_never_merges_across_a_mark() {
        let mut t = Timeline::with_cap(300);
        t.mark(10_050);
        for i in 0..(MAX_SEGMENTS as i64 * 4) {
            t.push(i * 100, if i % 2 == 0 { Ok } else { Fail });
        }
        assert!(t.segments.len() <= MAX_SEGMENTS);
        assert!(
            t.segments
                .iter()
                .all(|s| !(s.start < 10_050 && 10_050 < s.end)),
            "a segment spans the mark"
        );
    }
}
