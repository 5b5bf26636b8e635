//! Pacing of Azure writes, so the controller stays inside ARM's write budget instead of
//! provoking 429s.
//!
//! ARM throttles writes per subscription and region with a token bucket (200 writes, refilled
//! at 10 per second). [`WritePacer`] keeps a copy of that bucket on the client side, as the
//! generic cell rate algorithm: a write may go when the bucket has a token, otherwise the
//! resource gets a slot in the queue and is requeued for it, so waiting resources neither
//! hold a worker nor retry in a herd. A 429 empties the copy until Azure's `Retry-After`.
//!
//! Written here rather than with `governor`: each waiting resource must *reserve* its future
//! slot (governor only says "not until T", so every waiter would wake at the same T), and a
//! 429 must drain the bucket until Azure's `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A reserved slot older than this is forgotten (its resource went away or chose another
/// action).
const STALE_SLOT: Duration = Duration::from_secs(60);

/// The client-side copy of Azure's write bucket, shared by all reconciles.
#[derive(Debug)]
pub struct WritePacer {
    /// Time one token takes to come back.
    interval: Duration,
    /// How far the bucket may run ahead: `(burst - 1) × interval`.
    tolerance: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the bucket would be full again ("theoretical arrival time").
    full_at: Instant,
    /// Resources waiting for their slot, by key.
    slots: HashMap<String, Instant>,
    /// When stale slots were last swept.
    swept: Instant,
}

impl WritePacer {
    /// A full bucket of `burst` writes, one more every `interval`.
    pub fn new(burst: u32, interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            state: Mutex::new(State {
                full_at: now,
                slots: HashMap::new(),
                swept: now,
            }),
        }
    }

    /// Whether the resource `key` may send a write now; otherwise how long until its slot,
    /// which stays reserved for it until it comes back.
    pub fn admit(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut state = super::lock(&self.state);
        if let Some(slot) = state.slots.get(key).copied() {
            if now >= slot {
                state.slots.remove(key);
                return Ok(());
            }
            return Err(slot - now);
        }
        let earliest = state.full_at.checked_sub(self.tolerance).unwrap_or(now);
        state.full_at = state.full_at.max(now) + self.interval;
        if earliest <= now {
            return Ok(());
        }
        if now.duration_since(state.swept) > STALE_SLOT {
            state
                .slots
                .retain(|_, slot| now.saturating_duration_since(*slot) < STALE_SLOT);
            state.swept = now;
        }
        state.slots.insert(key.to_owned(), earliest);
        Err(earliest - now)
    }

    /// Azure answered the write admitted at `admitted` saying its bucket holds `remaining`
    /// writes (`x-ms-ratelimit-remaining-subscription-writes`): other clients of the
    /// subscription spend it too, so the copy never holds more. It may hold fewer (it refills
    /// at the configured rate).
    ///
    /// Counted from the admission, not the answer: a bucket kept empty by a steady queue is
    /// reported as 0 left, and counting that from the answer would push every slot back by
    /// the request's round trip.
    pub fn reported_remaining(&self, remaining: u64, admitted: Instant) {
        let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
        // `remaining` more writes could have gone at `admitted`, the next one `interval` later.
        let Some(full_at) = (admitted + self.tolerance + self.interval)
            .checked_sub(self.interval.saturating_mul(remaining))
        else {
            return;
        };
        let mut state = super::lock(&self.state);
        state.full_at = state.full_at.max(full_at);
    }

    /// Azure answered a write with 429: its bucket is empty for `retry_after`, then refills
    /// at the usual rate.
    pub fn throttled(&self, retry_after: Duration, now: Instant) {
        let mut state = super::lock(&self.state);
        state.full_at = state.full_at.max(now + retry_after + self.tolerance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(burst: u32, per_second: u32, now: Instant) -> WritePacer {
        WritePacer::new(burst, Duration::from_secs(1) / per_second, now)
    }

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_hands_out_slots_in_order() {
        let t0 = Instant::now();
        let p = pacer(3, 10, t0);
        for key in ["a", "b", "c"] {
            assert_eq!(p.admit(key, t0), Ok(()));
        }
        assert_eq!(p.admit("d", t0), Err(Duration::from_millis(100)));
        assert_eq!(p.admit("e", t0), Err(Duration::from_millis(200)));
        // Coming back early keeps the slot; at the slot the write goes.
        assert_eq!(
            p.admit("d", t0 + Duration::from_millis(50)),
            Err(Duration::from_millis(50))
        );
        assert_eq!(p.admit("d", t0 + Duration::from_millis(100)), Ok(()));
        // A newcomer queues behind e.
        assert_eq!(
            p.admit("f", t0 + Duration::from_millis(100)),
            Err(Duration::from_millis(200))
        );
        assert_eq!(p.admit("e", t0 + Duration::from_millis(200)), Ok(()));
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let p = pacer(2, 10, t0);
        assert_eq!(p.admit("a", t0), Ok(()));
        assert_eq!(p.admit("b", t0), Ok(()));
        assert!(p.admit("c", t0).is_err());
        // Long after: full again.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(p.admit("x", later), Ok(()));
        assert_eq!(p.admit("y", later), Ok(()));
        assert!(p.admit("z", later).is_err());
    }

    #[test]
    fn azure_reporting_fewer_writes_left_shrinks_the_copy_and_more_changes_nothing() {
        let t0 = Instant::now();
        let p = pacer(200, 10, t0);
        // Someone else spent most of the bucket: two writes are left, then the refill rate.
        p.reported_remaining(2, t0);
        assert_eq!(p.admit("a", t0), Ok(()));
        assert_eq!(p.admit("b", t0), Ok(()));
        assert_eq!(p.admit("c", t0), Err(Duration::from_millis(100)));
        // Azure reporting more than the copy holds (its hourly counters say 1199) or nothing
        // left after what is already queued changes no slot.
        let q = pacer(3, 10, t0);
        q.reported_remaining(1199, t0);
        for key in ["a", "b", "c"] {
            assert_eq!(q.admit(key, t0), Ok(()));
        }
        assert_eq!(q.admit("d", t0), Err(Duration::from_millis(100)));
        q.reported_remaining(0, t0);
        assert_eq!(q.admit("e", t0), Err(Duration::from_millis(200)));
        // Empty: the next write waits one refill.
        let r = pacer(200, 10, t0);
        r.reported_remaining(0, t0);
        assert_eq!(r.admit("a", t0), Err(Duration::from_millis(100)));
    }

    #[test]
    fn an_empty_bucket_reported_after_a_round_trip_keeps_the_queue_at_the_rate() {
        let t0 = Instant::now();
        let p = pacer(1, 10, t0);
        let round_trip = Duration::from_millis(80);
        let mut at = t0;
        for i in 0..5 {
            assert_eq!(
                p.admit(&format!("w{i}"), at),
                Ok(()),
                "write {i} at its slot"
            );
            // Azure's answer, 80 ms later: nothing left (it refills at the same rate).
            p.reported_remaining(0, at);
            let wait = p
                .admit(&format!("w{}", i + 1), at + round_trip)
                .unwrap_err();
            assert_eq!(
                wait,
                Duration::from_millis(20),
                "the next slot stays 100 ms on"
            );
            at += Duration::from_millis(100);
        }
    }

    #[test]
    fn a_429_empties_the_bucket_until_retry_after() {
        let t0 = Instant::now();
        let p = pacer(200, 10, t0);
        p.throttled(Duration::from_secs(2), t0);
        assert_eq!(p.admit("a", t0), Err(Duration::from_secs(2)));
        assert_eq!(p.admit("b", t0), Err(Duration::from_millis(2100)));
        assert_eq!(p.admit("a", t0 + Duration::from_secs(2)), Ok(()));
    }
}
