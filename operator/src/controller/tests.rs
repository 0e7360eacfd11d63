//! The state machine without a cluster.

use super::runtime::retry_delay;
use std::time::Duration;

#[test]
fn retries_back_off_from_one_second_to_at_most_thirty() {
    let secs: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
}
