//! Pacing the pod deletes from what the API server says: a window of
//! requests in flight that grows while answers come back fast and shrinks by
//! half when the server pushes back, between a floor and a ceiling
//! (`--concurrency`). Push-back is HTTP 429 (also how API Priority and
//! Fairness refuses a request), a server error, no answer in time, or a
//! window's worth of answers most of which took longer than [`SLOW`].
//!
//! The window ([`Window`]) is pure arithmetic on outcomes, tested without
//! I/O; the gate ([`Pacer`]) holds requests back while the window is full.
//!
//! One push-back halves the window once: the answers to requests sent
//! before that halving were caused by the old, wider window, so they do not
//! halve it again (as TCP takes one loss event per round trip). Latency is
//! judged on a window's worth of answers, never on one: on a busy API
//! server one delete in a hundred is slow for reasons of its own (an etcd
//! compaction, a garbage collection), and halving on each of them held the
//! window near its floor.

use crate::metrics::{AnswerLabel, Metrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Mutex;
use std::time::Duration;

/// An answer slower than this is slow; a window's worth of answers mostly
/// slow counts as push-back: the API server queues us. (At the most this
/// machine kind's API server can take, 256 deletes in flight, a delete takes
/// 0.7–1.4 s; the window must be able to stay there.)
pub const SLOW: Duration = Duration::from_secs(2);

/// The fewest deletes the window allows in flight.
pub const FLOOR: usize = 4;

/// What one request's answer said about the API server's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer (success, or a final answer like 404) within [`SLOW`].
    Fast,
    /// An answer, but slower than [`SLOW`].
    Slow,
    /// HTTP 429: throttled (by API Priority and Fairness, or a limit).
    Throttled,
    /// A server error or a lost connection.
    Failed,
    /// No answer within the client's deadline.
    TimedOut,
    /// An answer that says nothing about load (403, 422...).
    Neutral,
}

/// Every [`Outcome`], in declaration order: `outcome as usize` indexes it
/// (and the pacer's counters).
pub const OUTCOMES: [Outcome; 6] = [
    Outcome::Fast,
    Outcome::Slow,
    Outcome::Throttled,
    Outcome::Failed,
    Outcome::TimedOut,
    Outcome::Neutral,
];

impl Outcome {
    /// What an answer that took `took` says, from its HTTP status (None: no
    /// answer, `timed_out` telling why).
    pub fn of(status: Option<u16>, timed_out: bool, took: Duration) -> Outcome {
        match status {
            None if timed_out => Outcome::TimedOut,
            None => Outcome::Failed,
            Some(429) => Outcome::Throttled,
            Some(s) if s >= 500 => Outcome::Failed,
            Some(_) if took > SLOW => Outcome::Slow,
            Some(s) if s < 300 || s == 404 || s == 409 => Outcome::Fast,
            Some(_) => Outcome::Neutral,
        }
    }

    /// The answer's label in `firedrill_delete_answers_total`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Fast => "fast",
            Outcome::Slow => "slow",
            Outcome::Throttled => "throttled",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Neutral => "neutral",
        }
    }
}

/// A request's place in the order requests were sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// The window of requests in flight (additive increase, multiplicative
/// decrease), with a slow start: until the first push-back it grows by one
/// per fast answer (doubling each round), afterwards by [`Window::step`]
/// per window's worth of fast answers.
#[derive(Clone, Debug)]
pub struct Window {
    size: f64,
    floor: usize,
    ceiling: usize,
    slow_start: bool,
    sent: u64,
    /// Requests sent before this ticket do not halve the window again.
    halved_at: u64,
    /// The share of slow answers, averaged over about a window's worth of
    /// answers to requests sent since the last halving.
    slow_share: f64,
    /// How many times the window was halved.
    pub decreases: u64,
}

impl Window {
    /// A window between `floor` and `ceiling` (the ceiling wins if they
    /// cross), starting at a quarter of the ceiling (at least the floor).
    pub fn new(floor: usize, ceiling: usize) -> Window {
        let ceiling = ceiling.max(1);
        let floor = floor.clamp(1, ceiling);
        Window {
            size: (ceiling / 4).clamp(floor, ceiling) as f64,
            floor,
            ceiling,
            slow_start: true,
            sent: 0,
            halved_at: 0,
            slow_share: 0.0,
            decreases: 0,
        }
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> usize {
        (self.size as usize).clamp(self.floor, self.ceiling)
    }

    /// How much the window grows per round of fast answers once it has been
    /// halved: a thirty-second of the ceiling (at least one), so a halved
    /// window of 256 is back in 16 rounds, a few seconds, not 128.
    pub fn step(&self) -> f64 {
        (self.ceiling / 32).max(1) as f64
    }

    /// A request is sent.
    pub fn send(&mut self) -> Ticket {
        self.sent += 1;
        Ticket(self.sent)
    }

    /// The answer to the request sent with `ticket`.
    pub fn answered(&mut self, ticket: Ticket, outcome: Outcome) {
        match outcome {
            Outcome::Throttled | Outcome::Failed | Outcome::TimedOut => self.halve(ticket),
            Outcome::Slow | Outcome::Fast => {
                let slow = outcome == Outcome::Slow;
                if !slow {
                    // Never faster than the slow start's one per answer
                    // (a window smaller than its step would otherwise
                    // jump straight back into the overload).
                    let step = if self.slow_start {
                        1.0
                    } else {
                        (self.step() / self.size.max(1.0)).min(1.0)
                    };
                    self.size = (self.size + step).min(self.ceiling as f64);
                }
                // Answers to requests sent before the last halving speak of
                // the wider window before it.
                if ticket.0 > self.halved_at {
                    let weight = 1.0 / self.limit() as f64;
                    let seen = if slow { 1.0 } else { 0.0 };
                    self.slow_share += weight * (seen - self.slow_share);
                    if self.slow_share > 0.5 {
                        self.halve(ticket);
                    }
                }
            }
            Outcome::Neutral => {}
        }
    }

    /// Halve the window, unless it was halved since `ticket` was sent.
    /// (At the floor nothing is halved, and nothing counted.)
    fn halve(&mut self, ticket: Ticket) {
        if ticket.0 > self.halved_at {
            let was = self.limit();
            self.size = (self.size / 2.0).max(self.floor as f64);
            self.halved_at = self.sent;
            self.slow_start = false;
            self.slow_share = 0.0;
            if self.limit() < was {
                self.decreases += 1;
            }
        }
    }
}

/// Holds requests back while the window is full.
pub struct Pacer {
    state: Mutex<(Window, usize)>,
    room: tokio::sync::Notify,
    /// Shows the window as it changes, and counts the answers (a counter
    /// per [`Outcome`], in [`OUTCOMES`] order).
    shown: Option<(Gauge, Vec<Counter>)>,
}

impl Pacer {
    pub fn new(window: Window) -> Pacer {
        Pacer {
            state: Mutex::new((window, 0)),
            room: tokio::sync::Notify::new(),
            shown: None,
        }
    }

    /// A pacer that shows its window in `metrics` (`firedrill_delete_window`)
    /// and counts the answers by what they said
    /// (`firedrill_delete_answers_total`).
    pub fn shown_in(window: Window, metrics: &Metrics) -> Pacer {
        metrics.delete_window.set(window.limit() as i64);
        let answers = OUTCOMES
            .iter()
            .map(|o| {
                metrics
                    .delete_answers
                    .get_or_create(&AnswerLabel {
                        answer: o.label().to_string(),
                    })
                    .clone()
            })
            .collect();
        Pacer {
            shown: Some((metrics.delete_window.clone(), answers)),
            ..Pacer::new(window)
        }
    }

    /// Wait for room in the window; the returned slot is given back with
    /// [`Slot::answered`] (or on drop, as a neutral answer).
    pub async fn slot(&self) -> Slot<'_> {
        loop {
            let notified = self.room.notified();
            {
                let mut s = self.state.lock().unwrap();
                let (window, in_flight) = &mut *s;
                if *in_flight < window.limit() {
                    *in_flight += 1;
                    let ticket = window.send();
                    return Slot {
                        pacer: self,
                        ticket,
                        sent: tokio::time::Instant::now(),
                        done: false,
                    };
                }
            }
            notified.await;
        }
    }

    /// The window now (a copy).
    pub fn window(&self) -> Window {
        self.state.lock().unwrap().0.clone()
    }

    fn give_back(&self, ticket: Ticket, outcome: Outcome) {
        let room = {
            let mut s = self.state.lock().unwrap();
            s.1 -= 1;
            s.0.answered(ticket, outcome);
            if let Some((window, answers)) = &self.shown {
                window.set(s.0.limit() as i64);
                answers[outcome as usize].inc();
            }
            s.0.limit().saturating_sub(s.1)
        };
        // Wake as many waiters as there is room for (not all of them: a
        // window of 256 would wake 256 tasks on every answer).
        for _ in 0..room {
            self.room.notify_one();
        }
    }
}

/// One request in flight.
pub struct Slot<'a> {
    pacer: &'a Pacer,
    ticket: Ticket,
    sent: tokio::time::Instant,
    done: bool,
}

impl Slot<'_> {
    /// How long since the request was let through.
    pub fn elapsed(&self) -> Duration {
        self.sent.elapsed()
    }

    /// The request was answered.
    pub fn answered(mut self, outcome: Outcome) {
        self.done = true;
        self.pacer.give_back(self.ticket, outcome);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pacer.give_back(self.ticket, Outcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Send a whole window's worth and answer the i-th with `outcome(i)`.
    fn round_of(w: &mut Window, outcome: impl Fn(usize) -> Outcome) {
        let tickets: Vec<Ticket> = (0..w.limit()).map(|_| w.send()).collect();
        for (i, t) in tickets.into_iter().enumerate() {
            w.answered(t, outcome(i));
        }
    }

    /// Send a whole window's worth and answer each with `outcome`.
    fn round(w: &mut Window, outcome: Outcome) {
        round_of(w, |_| outcome);
    }

    #[test]
    fn fast_answers_grow_the_window_to_the_ceiling_and_no_further() {
        let mut w = Window::new(FLOOR, 256);
        assert_eq!(w.limit(), 64);
        round(&mut w, Outcome::Fast);
        assert_eq!(w.limit(), 128, "slow start doubles each round");
        for _ in 0..10 {
            round(&mut w, Outcome::Fast);
        }
        assert_eq!(w.limit(), 256);
    }

    #[test]
    fn one_push_back_halves_once_however_many_answers_carry_it() {
        let mut w = Window::new(FLOOR, 256);
        for _ in 0..5 {
            round(&mut w, Outcome::Fast);
        }
        assert_eq!(w.limit(), 256);
        // A whole window throttled at once: halved once, not 256 times.
        round(&mut w, Outcome::Throttled);
        assert_eq!(w.limit(), 128);
        assert_eq!(w.decreases, 1);
        // The next round's push-back halves again.
        round(&mut w, Outcome::TimedOut);
        assert_eq!(w.limit(), 64);
    }

    #[test]
    fn after_a_push_back_the_window_grows_by_a_step_per_round() {
        let mut w = Window::new(FLOOR, 256);
        for _ in 0..5 {
            round(&mut w, Outcome::Fast);
        }
        round(&mut w, Outcome::Slow);
        assert_eq!(w.limit(), 128);
        assert_eq!(w.step(), 8.0);
        round(&mut w, Outcome::Fast);
        assert!(matches!(w.limit(), 135 | 136), "{}", w.limit());
        for _ in 0..10 {
            round(&mut w, Outcome::Fast);
        }
        assert!((205..=216).contains(&w.limit()), "{}", w.limit());
        // A small ceiling still grows by one.
        assert_eq!(Window::new(FLOOR, 16).step(), 1.0);
    }

    /// Send a window's worth and answer `slow` of them slow, the rest fast.
    fn mixed_round(w: &mut Window, slow: usize) {
        round_of(w, |i| {
            if i < slow {
                Outcome::Slow
            } else {
                Outcome::Fast
            }
        });
    }

    #[test]
    fn a_few_slow_answers_do_not_halve_the_window_a_slow_majority_does() {
        let mut w = Window::new(FLOOR, 256);
        for _ in 0..5 {
            round(&mut w, Outcome::Fast);
        }
        assert_eq!(w.limit(), 256);
        // One slow answer in a hundred, round after round: no halving.
        for _ in 0..20 {
            mixed_round(&mut w, 3);
        }
        assert_eq!(w.limit(), 256);
        assert_eq!(w.decreases, 0);
        // Most of a round slow: halved, once.
        mixed_round(&mut w, 200);
        assert_eq!(w.decreases, 1, "{:?}", w);
        // (The round's fast answers still grew it a little.)
        assert!((128..=132).contains(&w.limit()), "{}", w.limit());
        // The rest of that round's answers were for the wider window; a
        // slow round in the new one halves again.
        round(&mut w, Outcome::Slow);
        assert!((64..=66).contains(&w.limit()), "{}", w.limit());
        assert_eq!(w.decreases, 2);
    }

    #[test]
    fn from_the_floor_it_grows_no_faster_than_the_slow_start() {
        let mut w = Window::new(FLOOR, 1024);
        for _ in 0..20 {
            round(&mut w, Outcome::Throttled);
        }
        assert_eq!(w.limit(), FLOOR);
        let halvings = w.decreases;
        assert!(
            halvings <= 8,
            "halvings at the floor were counted: {halvings}"
        );
        // One fast round of 4 answers: at most +1 each.
        round(&mut w, Outcome::Fast);
        assert!(w.limit() <= 2 * FLOOR, "{}", w.limit());
        // At the floor, push-back halves nothing and counts nothing.
        round(&mut w, Outcome::Throttled);
        round(&mut w, Outcome::Throttled);
        round(&mut w, Outcome::Throttled);
        assert_eq!(w.limit(), FLOOR);
        assert!(
            w.decreases <= halvings + 2,
            "{} then {}",
            halvings,
            w.decreases
        );
    }

    #[test]
    fn push_back_never_goes_below_the_floor_and_neutral_answers_change_nothing() {
        let mut w = Window::new(FLOOR, 256);
        for _ in 0..20 {
            round(&mut w, Outcome::Failed);
        }
        assert_eq!(w.limit(), FLOOR);
        let before = w.limit();
        round(&mut w, Outcome::Neutral);
        assert_eq!(w.limit(), before);
        // A ceiling under the floor wins.
        assert_eq!(Window::new(FLOOR, 1).limit(), 1);
        assert_eq!(Window::new(FLOOR, 8).limit(), FLOOR);
    }

    #[test]
    fn every_outcome_indexes_its_own_counter() {
        for (i, o) in OUTCOMES.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
    }

    #[test]
    fn answers_are_read_for_load() {
        let ms = Duration::from_millis;
        assert_eq!(Outcome::of(Some(200), false, ms(20)), Outcome::Fast);
        assert_eq!(Outcome::of(Some(404), false, ms(20)), Outcome::Fast);
        assert_eq!(Outcome::of(Some(200), false, ms(2500)), Outcome::Slow);
        assert_eq!(Outcome::of(Some(200), false, ms(1500)), Outcome::Fast);
        assert_eq!(Outcome::of(Some(429), false, ms(5)), Outcome::Throttled);
        assert_eq!(Outcome::of(Some(503), false, ms(5)), Outcome::Failed);
        assert_eq!(Outcome::of(None, true, ms(30_000)), Outcome::TimedOut);
        assert_eq!(Outcome::of(None, false, ms(5)), Outcome::Failed);
        assert_eq!(Outcome::of(Some(403), false, ms(5)), Outcome::Neutral);
    }

    #[tokio::test]
    async fn the_pacer_lets_no_more_through_than_the_window() {
        let pacer = std::sync::Arc::new(Pacer::new(Window::new(2, 2)));
        let a = pacer.slot().await;
        let _b = pacer.slot().await;
        let waiting = {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                let _c = pacer.slot().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third request went through");
        a.answered(Outcome::Fast);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("room after an answer")
            .unwrap();
    }
}
