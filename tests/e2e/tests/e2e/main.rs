//! The end-to-end tests on the testbed, one module per concern, in one test
//! binary: `cargo test -p firedrill-e2e --test e2e soak::` runs one module.
//!
//! Tests run in parallel threads of this one process. Each takes the
//! testbed by `zones_lock()` (alone: it changes nodes or other cluster-wide
//! state, runs an operator, creates what an operator would act on, lists
//! cluster-wide, or has timing to keep) or by `zones_lock_shared()` (beside
//! other such tests, never during a drill), whichever module it is in.
//! Namespaces are named after the process (`Namespace::create`), so two
//! tests never use the same prefix.

mod apf;
mod api;
mod bad_inputs;
mod cascades;
mod cluster;
mod dataplane;
mod demo;
mod engine;
mod gate;
mod helm;
mod image;
mod leader;
mod power;
mod prometheus;
mod resilience;
mod rpo;
mod safety;
mod schedule;
mod slos;
mod soak;
mod tls;
mod verdicts;
