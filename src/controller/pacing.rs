//! Pacing of Azure writes, so the controller stays inside ARM's write budget instead of
//! provoking 429s.
//!
//! ARM throttles writes per subscription and region with a token bucket (200 writes, refilled
//! at 10 per second). [`WritePacer`] keeps a copy of that bucket on the client side, as the
//! generic cell rate algorithm: a write may go when the bucket has a token, otherwise the
//! resource gets a slot in the queue and is requeued for it, so waiting resources neither
//! hold a worker nor retry in a herd. A 429 empties the copy until Azure's `Retry-After`,
//! cut to `--retry-after-max`.
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
    /// The longest `Retry-After` a 429 may stop the writes for.
    max_throttle: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the bucket would be full again ("theoretical arrival time").
    full_at: Instant,
    /// Writes counted in `full_at` so far (sent, or holding a slot).
    counted: u64,
    /// Resources waiting for their slot, by key.
    slots: HashMap<String, Slot>,
    /// When stale slots were last swept.
    swept: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    at: Instant,
    /// Its write's number in [`State::counted`].
    number: u64,
}

/// A write [`WritePacer::admit`] let through: when, and its number among the writes the copy
/// counted, so that Azure's answer to it can be applied ([`WritePacer::reported_remaining`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    at: Instant,
    number: u64,
}

impl WritePacer {
    /// A full bucket of `burst` writes, one more every `interval`; a 429 stops the writes for
    /// at most `max_throttle`.
    pub fn new(burst: u32, interval: Duration, max_throttle: Duration, now: Instant) -> Self {
        Self {
            interval,
            tolerance: interval.saturating_mul(burst.max(1).saturating_sub(1)),
            max_throttle,
            state: Mutex::new(State {
                full_at: now,
                counted: 0,
                slots: HashMap::new(),
                swept: now,
            }),
        }
    }

    /// Whether the resource `key` may send a write now; otherwise how long until its slot,
    /// which stays reserved for it until it comes back.
    pub fn admit(&self, key: &str, now: Instant) -> Result<Admission, Duration> {
        let mut state = super::lock(&self.state);
        if let Some(slot) = state.slots.get(key).copied() {
            if now >= slot.at {
                state.slots.remove(key);
                return Ok(Admission {
                    at: now,
                    number: slot.number,
                });
            }
            return Err(slot.at - now);
        }
        let earliest = state.full_at.checked_sub(self.tolerance).unwrap_or(now);
        state.full_at = state.full_at.max(now) + self.interval;
        state.counted += 1;
        let number = state.counted;
        if earliest <= now {
            return Ok(Admission { at: now, number });
        }
        if now.duration_since(state.swept) > STALE_SLOT {
            state
                .slots
                .retain(|_, slot| now.saturating_duration_since(slot.at) < STALE_SLOT);
            state.swept = now;
        }
        state.slots.insert(
            key.to_owned(),
            Slot {
                at: earliest,
                number,
            },
        );
        Err(earliest - now)
    }

    /// Azure answered the write of `admission` saying its bucket holds `remaining` writes
    /// (`x-ms-ratelimit-remaining-subscription-writes`): other clients of the subscription
    /// spend it too, so the copy never holds more. It may hold fewer (it refills at the
    /// configured rate).
    ///
    /// Counted from the admission, not the answer: a bucket kept empty by a steady queue is
    /// reported as 0 left, and counting that from the answer would push every slot back by
    /// the request's round trip. Writes the copy counted after this one (sent by other
    /// reconciles, or waiting for their slots) are not in Azure's figure and stay counted.
    pub fn reported_remaining(&self, remaining: u64, admission: Admission) {
        let mut state = super::lock(&self.state);
        let counted_since = state.counted.saturating_sub(admission.number);
        let times = |n: u64| {
            self.interval
                .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
        };
        // `remaining` more writes could have gone at the admission, then one per interval;
        // the writes counted since take their places after those.
        let ahead = (self.tolerance + self.interval).saturating_add(times(counted_since));
        let spent = times(remaining);
        let full_at = if ahead >= spent {
            admission.at.checked_add(ahead - spent)
        } else {
            admission.at.checked_sub(spent - ahead)
        };
        if let Some(full_at) = full_at {
            state.full_at = state.full_at.max(full_at);
        }
    }

    /// Azure answered a write with 429: its bucket is empty for `retry_after` (at most
    /// `max_throttle`: any header value is accepted), then refills at the usual rate.
    pub fn throttled(&self, retry_after: Duration, now: Instant) {
        let wait = retry_after
            .min(self.max_throttle)
            .saturating_add(self.tolerance);
        let mut state = super::lock(&self.state);
        // Checked: even an absurd configuration must not panic the controller.
        if let Some(until) = now.checked_add(wait) {
            state.full_at = state.full_at.max(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_THROTTLE: Duration = Duration::from_secs(300);

    fn pacer(burst: u32, per_second: u32, now: Instant) -> WritePacer {
        WritePacer::new(
            burst,
            Duration::from_secs(1) / per_second,
            MAX_THROTTLE,
            now,
        )
    }

    /// `admit`, without the admission.
    fn go(p: &WritePacer, key: &str, now: Instant) -> Result<(), Duration> {
        p.admit(key, now).map(|_| ())
    }

    fn admitted(p: &WritePacer, key: &str, now: Instant) -> Admission {
        p.admit(key, now).expect("admitted")
    }

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_hands_out_slots_in_order() {
        let t0 = Instant::now();
        let p = pacer(3, 10, t0);
        for key in ["a", "b", "c"] {
            assert_eq!(go(&p, key, t0), Ok(()));
        }
        assert_eq!(go(&p, "d", t0), Err(Duration::from_millis(100)));
        assert_eq!(go(&p, "e", t0), Err(Duration::from_millis(200)));
        // Coming back early keeps the slot; at the slot the write goes.
        assert_eq!(
            go(&p, "d", t0 + Duration::from_millis(50)),
            Err(Duration::from_millis(50))
        );
        assert_eq!(go(&p, "d", t0 + Duration::from_millis(100)), Ok(()));
        // A newcomer queues behind e.
        assert_eq!(
            go(&p, "f", t0 + Duration::from_millis(100)),
            Err(Duration::from_millis(200))
        );
        assert_eq!(go(&p, "e", t0 + Duration::from_millis(200)), Ok(()));
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let p = pacer(2, 10, t0);
        assert_eq!(go(&p, "a", t0), Ok(()));
        assert_eq!(go(&p, "b", t0), Ok(()));
        assert!(go(&p, "c", t0).is_err());
        // Long after: full again.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(go(&p, "x", later), Ok(()));
        assert_eq!(go(&p, "y", later), Ok(()));
        assert!(go(&p, "z", later).is_err());
    }

    #[test]
    fn azure_reporting_fewer_writes_left_shrinks_the_copy_and_more_changes_nothing() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Someone else spent most of the bucket: two writes are left after ours, then the
        // refill rate.
        let p = pacer(200, 10, t0);
        let ours = admitted(&p, "ours", t0);
        p.reported_remaining(2, ours);
        assert_eq!(go(&p, "a", t0), Ok(()));
        assert_eq!(go(&p, "b", t0), Ok(()));
        assert_eq!(go(&p, "c", t0), Err(ms(100)));
        // Azure reporting more than the copy holds (its hourly counters say 1199), or nothing
        // left once the burst is spent and a slot handed out, changes no slot.
        let q = pacer(3, 10, t0);
        let first = admitted(&q, "a", t0);
        q.reported_remaining(1199, first);
        for key in ["b", "c"] {
            assert_eq!(go(&q, key, t0), Ok(()));
        }
        assert_eq!(go(&q, "d", t0), Err(ms(100)));
        let d = admitted(&q, "d", t0 + ms(100));
        q.reported_remaining(0, d);
        assert_eq!(go(&q, "e", t0 + ms(100)), Err(ms(100)));
    }

    #[test]
    fn writes_admitted_after_the_one_azure_answered_stay_counted() {
        let t0 = Instant::now();
        let p = pacer(200, 10, t0);
        // Eleven writes go at once; Azure answers the first: nothing left after it.
        let first = admitted(&p, "w0", t0);
        for i in 1..=10 {
            assert_eq!(go(&p, &format!("w{i}"), t0), Ok(()));
        }
        p.reported_remaining(0, first);
        // Ten more are already on their way, so the next goes after eleven refills.
        assert_eq!(go(&p, "next", t0), Err(Duration::from_millis(1100)));
    }

    #[test]
    fn an_empty_bucket_reported_after_a_round_trip_keeps_the_queue_at_the_rate() {
        let t0 = Instant::now();
        let p = pacer(1, 10, t0);
        let round_trip = Duration::from_millis(80);
        let mut at = t0;
        let mut write = admitted(&p, "w0", at);
        for i in 1..=5 {
            // Azure's answer, 80 ms later: nothing left (it refills at the same rate).
            p.reported_remaining(0, write);
            let key = format!("w{i}");
            let wait = go(&p, &key, at + round_trip).unwrap_err();
            assert_eq!(
                wait,
                Duration::from_millis(20),
                "the next slot stays 100 ms on"
            );
            at += Duration::from_millis(100);
            write = admitted(&p, &key, at);
        }
    }

    #[test]
    fn a_429_empties_the_bucket_until_retry_after() {
        let t0 = Instant::now();
        let p = pacer(200, 10, t0);
        p.throttled(Duration::from_secs(2), t0);
        assert_eq!(go(&p, "a", t0), Err(Duration::from_secs(2)));
        assert_eq!(go(&p, "b", t0), Err(Duration::from_millis(2100)));
        assert_eq!(go(&p, "a", t0 + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn any_retry_after_stops_the_writes_for_at_most_the_longest_wait() {
        let t0 = Instant::now();
        let p = pacer(200, 10, t0);
        // Near u64::MAX seconds: no overflow of Instant + Duration, cut to the longest wait.
        p.throttled(Duration::from_secs(u64::MAX), t0);
        p.throttled(Duration::MAX, t0);
        assert_eq!(go(&p, "a", t0), Err(MAX_THROTTLE));
        assert_eq!(go(&p, "a", t0 + MAX_THROTTLE), Ok(()));
    }
}
