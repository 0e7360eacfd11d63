//! The write canary: which writes a write probe made, which of them the
//! service acknowledged, and, once they are read back after the drill,
//! which acknowledged writes were lost and how much time the loss covers
//! (the recovery point). Pure: no I/O, so every rule here is unit-tested.
//!
//! The invariant: the log is bounded whatever the drill's length. A write is
//! a sequence number; acknowledged writes are kept as ranges of consecutive
//! numbers with the times of the first and the last, so a service that
//! acknowledges every write costs one range for the whole drill. A refused
//! write, a write that timed out or a stall in the writing starts a new
//! range, so a time read off a range is never more than half an interval
//! out. Past [`MAX_RANGES`] the log stops keeping acknowledgements and counts
//! them instead: those writes are unverified, never lost and never kept.
//!
//! Sequence numbers start at the Unix millisecond the writer (re)starts and
//! grow by one a write; the writer makes at most one write per 100 ms, so a
//! restarted operator never reuses a number an earlier run of it wrote, even
//! one it wrote after the log was last saved.

use serde::{Deserialize, Serialize};

/// The most ranges a log keeps.
pub const MAX_RANGES: usize = 4096;

/// Acknowledged writes `first..=last`, made at `first_ms` and `last_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckRange {
    pub first: u64,
    pub last: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// The acknowledged writes of one write probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteLog {
    /// What every id starts with: `fd-` and the start of the experiment's uid.
    pub prefix: String,
    /// The next write's sequence number.
    pub next: u64,
    /// The probe's interval: a longer pause between two acknowledged
    /// writes than half as much again starts a new range.
    pub interval_ms: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<AckRange>,
    /// Acknowledged writes not kept because the log was full.
    #[serde(default)]
    pub unlogged: u64,
}

impl WriteLog {
    /// A log for the experiment with uid `uid`, writing every `interval_ms`,
    /// started at `now_ms`.
    pub fn new(uid: &str, interval_ms: i64, now_ms: i64) -> WriteLog {
        let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
        WriteLog {
            prefix: format!("fd-{short}"),
            next: now_ms.max(0) as u64,
            interval_ms: interval_ms.max(1),
            ranges: vec![],
            unlogged: 0,
        }
    }

    /// Continue a saved log after a restart at `now_ms`: numbers written
    /// after the save are skipped.
    pub fn resume(&mut self, interval_ms: i64, now_ms: i64) {
        self.next = self.next.max(now_ms.max(0) as u64);
        self.interval_ms = interval_ms.max(1);
    }

    /// The next write's sequence number, taken.
    pub fn issue(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// The id a write carries.
    pub fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.prefix)
    }

    /// Write `seq`, made at `at_ms`, was acknowledged. Writes are
    /// acknowledged in the order they are issued.
    pub fn ack(&mut self, seq: u64, at_ms: i64) {
        let stall = self.interval_ms + self.interval_ms / 2;
        if let Some(r) = self.ranges.last_mut()
            && seq == r.last + 1
            && at_ms >= r.last_ms
            && at_ms - r.last_ms <= stall
        {
            r.last = seq;
            r.last_ms = at_ms;
            return;
        }
        if self.ranges.len() >= MAX_RANGES {
            self.unlogged += 1;
            return;
        }
        self.ranges.push(AckRange {
            first: seq,
            last: seq,
            first_ms: at_ms,
            last_ms: at_ms,
        });
    }

    /// How many acknowledged writes the log keeps.
    pub fn acknowledged(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// The acknowledged writes it keeps, in order.
    pub fn acked(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|r| r.first..=r.last)
    }

    /// When write `seq` was made, if it was acknowledged: exact at a range's
    /// ends, evenly spread between them.
    pub fn time_of(&self, seq: u64) -> Option<i64> {
        let i = self.ranges.partition_point(|r| r.last < seq);
        let r = self.ranges.get(i).filter(|r| r.first <= seq)?;
        if r.last == r.first {
            return Some(r.first_ms);
        }
        let span = (r.last_ms - r.first_ms) as i128;
        let k = (seq - r.first) as i128;
        let n = (r.last - r.first) as i128;
        Some(r.first_ms + (span * k / n) as i64)
    }
}

/// What reading one acknowledged write back found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The service returned it.
    Found,
    /// The service says it does not have it (404/410, or a 2xx answer
    /// without the id).
    Missing,
    /// The read itself failed (an error answer, no answer, the deadline):
    /// the write is unverified.
    Failed(String),
}

/// Acknowledged writes lost one after another: `first..=last`, with `after`
/// the last acknowledged write read back before them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostRun {
    pub first: u64,
    pub last: u64,
    pub count: u64,
    pub after: Option<u64>,
}

/// The read-back, fed in the log's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readback {
    pub found: u64,
    pub missing: u64,
    pub unverified: u64,
    pub runs: Vec<LostRun>,
    /// The latest reason a read failed.
    pub last_error: Option<String>,
    last_found: Option<u64>,
    /// Whether the last write fed was missing (the next one extends its run).
    in_run: bool,
}

impl Readback {
    /// Feed the read of write `seq` (in increasing order).
    pub fn record(&mut self, seq: u64, read: Read) {
        match read {
            Read::Found => {
                self.found += 1;
                self.last_found = Some(seq);
                self.in_run = false;
            }
            Read::Missing => {
                self.missing += 1;
                let extend = self.in_run || self.runs.len() >= MAX_RANGES;
                match self.runs.last_mut() {
                    Some(r) if extend => {
                        r.last = seq;
                        r.count += 1;
                    }
                    _ => self.runs.push(LostRun {
                        first: seq,
                        last: seq,
                        count: 1,
                        after: self.last_found,
                    }),
                }
                self.in_run = true;
            }
            Read::Failed(why) => {
                self.unverified += 1;
                self.last_error = Some(why);
            }
        }
    }
}

/// One lost write: its id and when it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    pub id: String,
    pub at_ms: i64,
}

/// What the write canary measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loss {
    /// Acknowledged writes, kept in the log or not.
    pub acknowledged: u64,
    pub lost: u64,
    /// Acknowledged writes that could not be read back, or were not kept.
    pub unverified: u64,
    pub first: Option<LostWrite>,
    pub last: Option<LostWrite>,
    /// The worst span of lost time: from the last write read back before a
    /// run of lost writes to the last write of that run (from one interval
    /// before the run's first write when none was read back before it).
    pub recovery_point_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// What the read-back `rb` of `log` shows.
pub fn loss(log: &WriteLog, rb: &Readback) -> Loss {
    let time = |seq: u64| log.time_of(seq).unwrap_or(0);
    let lost_write = |seq: u64| LostWrite {
        id: log.id(seq),
        at_ms: time(seq),
    };
    let recovery_point_ms = rb
        .runs
        .iter()
        // With no write read back before the run, the last safe moment is
        // unknown: at least one interval before its first lost write, so a
        // single lost write is never a recovery point of zero.
        .map(|r| {
            time(r.last)
                - r.after
                    .map(time)
                    .unwrap_or_else(|| time(r.first) - log.interval_ms)
        })
        .max();
    Loss {
        acknowledged: log.acknowledged() + log.unlogged,
        lost: rb.missing,
        unverified: rb.unverified + log.unlogged,
        first: rb.runs.first().map(|r| lost_write(r.first)),
        last: rb.runs.last().map(|r| lost_write(r.last)),
        recovery_point_ms,
        last_error: if log.unlogged > 0 && rb.last_error.is_none() {
            Some(format!(
                "the write log was full ({MAX_RANGES} ranges): {} acknowledged writes were not kept",
                log.unlogged
            ))
        } else {
            rb.last_error.clone()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of writes every 100 ms from t=1000; `acked(i)` says whether the
    /// i-th was acknowledged.
    fn log_of(n: u64, acked: impl Fn(u64) -> bool) -> WriteLog {
        let mut log = WriteLog::new("0a1b2c3d-4e5f", 100, 5_000);
        for i in 0..n {
            let seq = log.issue();
            if acked(i) {
                log.ack(seq, 1_000 + i as i64 * 100);
            }
        }
        log
    }

    #[test]
    fn ten_writes_a_second_for_ten_minutes_acknowledged_cost_one_range() {
        let log = log_of(6_000, |_| true);
        assert_eq!(log.ranges.len(), 1);
        assert_eq!(log.acknowledged(), 6_000);
        assert_eq!(log.id(5_000), "fd-0a1b2c3d-5000");
        assert_eq!(log.time_of(5_000 + 1_234), Some(1_000 + 123_400));
        assert_eq!(log.time_of(5_000 + 6_000), None);
        // Saved and read back, it is the same log.
        let json = serde_json::to_string(&log).unwrap();
        assert!(json.len() < 200, "{json}");
        assert_eq!(serde_json::from_str::<WriteLog>(&json).unwrap(), log);
    }

    #[test]
    fn a_refused_write_or_a_stall_starts_a_new_range_so_times_stay_exact() {
        // Writes 10..20 refused.
        let log = log_of(40, |i| !(10..20).contains(&i));
        assert_eq!(log.ranges.len(), 2);
        assert_eq!(log.acknowledged(), 30);
        assert_eq!(log.time_of(5_000 + 15), None);
        assert_eq!(log.time_of(5_000 + 25), Some(3_500));
        // A pause of 1 s between two acknowledged writes: a new range.
        let mut log = WriteLog::new("u", 100, 0);
        for at in [0, 100, 200, 1_200, 1_300] {
            let s = log.issue();
            log.ack(s, at);
        }
        assert_eq!(log.ranges.len(), 2);
        assert_eq!(log.time_of(3), Some(1_200));
    }

    #[test]
    fn the_log_is_bounded_and_what_it_cannot_keep_is_unverified_not_lost() {
        // Every other write refused: one range per acknowledged write.
        let log = log_of(2 * MAX_RANGES as u64 + 20, |i| i % 2 == 0);
        assert_eq!(log.ranges.len(), MAX_RANGES);
        assert_eq!(log.unlogged, 10);
        let mut rb = Readback::default();
        for s in log.acked() {
            rb.record(s, Read::Found);
        }
        let l = loss(&log, &rb);
        assert_eq!(
            (l.acknowledged, l.lost, l.unverified),
            (MAX_RANGES as u64 + 10, 0, 10)
        );
        assert!(
            l.last_error
                .unwrap()
                .contains("10 acknowledged writes were not kept")
        );
    }

    #[test]
    fn a_restarted_writer_never_reuses_a_number() {
        let mut log = WriteLog::new("u", 100, 10_000);
        for _ in 0..30 {
            log.issue();
        }
        let saved = log.clone();
        // Written after the save, then the operator restarted 2 s later.
        log.issue();
        let mut resumed = saved;
        resumed.resume(100, 12_000);
        assert!(resumed.issue() > log.next);
        // A clock that went back never lowers the numbers either.
        let mut back = log.clone();
        back.resume(100, 0);
        assert_eq!(back.issue(), log.next);
    }

    /// Read back a log: writes whose index satisfies `lost` are missing,
    /// `failed` ones cannot be read.
    fn read_back(log: &WriteLog, lost: impl Fn(u64) -> bool, failed: impl Fn(u64) -> bool) -> Loss {
        let mut rb = Readback::default();
        for s in log.acked() {
            let i = s - 5_000;
            let read = if failed(i) {
                Read::Failed("HTTP 503".into())
            } else if lost(i) {
                Read::Missing
            } else {
                Read::Found
            };
            rb.record(s, read);
        }
        loss(log, &rb)
    }

    #[test]
    fn the_last_two_seconds_lost_make_a_two_second_recovery_point() {
        // Writes every 100 ms; the primary died after write 99 (t=10.9s),
        // and the standby lagged 2 s: writes 80..=99 are gone.
        let log = log_of(200, |i| !(100..110).contains(&i));
        let l = read_back(&log, |i| (80..100).contains(&i), |_| false);
        assert_eq!(l.lost, 20);
        assert_eq!(l.first.as_ref().unwrap().id, "fd-0a1b2c3d-5080");
        assert_eq!(l.first.unwrap().at_ms, 9_000);
        assert_eq!(l.last.unwrap().at_ms, 10_900);
        // From the last write that survived (79, t=8.9s) to the last lost.
        assert_eq!(l.recovery_point_ms, Some(2_000));
        assert_eq!(l.unverified, 0);
    }

    #[test]
    fn nothing_lost_is_no_recovery_point_and_failed_reads_are_not_losses() {
        let log = log_of(50, |_| true);
        let l = read_back(&log, |_| false, |i| i == 7 || i == 8);
        assert_eq!((l.lost, l.unverified), (0, 2));
        assert_eq!(l.recovery_point_ms, None);
        assert_eq!(l.last_error.as_deref(), Some("HTTP 503"));
        // A failed read between a kept and a lost write does not move the
        // recovery point's start: it is measured from the last write read back.
        let l = read_back(&log, |i| i == 9, |i| i == 8);
        assert_eq!(l.recovery_point_ms, Some(200));
    }

    #[test]
    fn the_worst_run_of_losses_is_the_recovery_point() {
        let log = log_of(100, |_| true);
        let l = read_back(&log, |i| i < 3 || (50..55).contains(&i), |_| false);
        assert_eq!(l.lost, 8);
        // The first run has nothing before it: its own span and one
        // interval, 0.3 s; the second, from write 49 to write 54: 0.5 s.
        assert_eq!(l.recovery_point_ms, Some(500));
        assert_eq!(l.first.unwrap().id, "fd-0a1b2c3d-5000");
        assert_eq!(l.last.unwrap().id, "fd-0a1b2c3d-5054");
        // A single lost write with nothing kept before it is one interval.
        let l = read_back(&log, |i| i == 0, |_| false);
        assert_eq!(l.recovery_point_ms, Some(100));
    }
}
