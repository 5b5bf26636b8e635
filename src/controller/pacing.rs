//! Pacing of Azure writes, so the controller stays inside ARM's write budgets instead of
//! provoking 429s.
//!
//! ARM throttles writes per subscription with token buckets (200 writes, refilled at 10 per
//! second), deletes in a bucket of their own. [`WritePacer`] keeps a copy of each bucket the
//! controller writes to on the client side, as the generic cell rate algorithm: a write may
//! go when its bucket has a token, otherwise the resource gets a slot in that bucket's queue
//! and is requeued for it, so waiting resources neither hold a worker nor retry in a herd,
//! and a subscription short of writes holds up no other. A 429 empties the copy until
//! Azure's `Retry-After`, cut to `--retry-after-max`.
//!
//! A bucket is made on a subscription's first write and forgotten once it is full again with
//! no one waiting: a fresh one would be the same, so the copies never outgrow the
//! subscriptions in use.
//!
//! Written here rather than with `governor`: each waiting resource must *reserve* its future
//! slot (governor only says "not until T", so every waiter would wake at the same T), and a
//! 429 must drain the bucket until Azure's `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dataprotection::WriteKind;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use super::decide::Action;

/// A reserved slot older than this is forgotten (its resource went away or chose another
/// action); the buckets are swept this often.
const STALE_SLOT: Duration = Duration::from_secs(60);

/// One of ARM's write budgets: a subscription's writes, or its deletes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    /// Lower case: subscription IDs are GUIDs, which compare without regard to case.
    subscription: String,
    kind: WriteKind,
}

impl BudgetKey {
    /// The `kind` budget of `subscription`.
    pub fn new(subscription: &str, kind: WriteKind) -> Self {
        Self {
            subscription: subscription.to_ascii_lowercase(),
            kind,
        }
    }

    /// The budget `action` spends: its vault's subscription's deletes for a DELETE, its
    /// writes for the other writes; `None` for actions that write nothing to Azure.
    pub fn of(action: &Action) -> Option<Self> {
        let (subscription, kind) = match action {
            Action::Validate(target) => (target.spec.vault.subscription(), WriteKind::Writes),
            Action::Put { target, .. } => {
                (target.instance.vault().subscription(), WriteKind::Writes)
            }
            Action::Delete(id) => (id.vault().subscription(), WriteKind::Deletes),
            Action::StopProtection(id) | Action::Sync(id) => {
                (id.vault().subscription(), WriteKind::Writes)
            }
            Action::None
            | Action::AddFinalizer
            | Action::RemoveFinalizer
            | Action::GetInstance(_)
            | Action::Poll { .. } => return None,
        };
        Some(Self::new(subscription, kind))
    }
}

/// The key of the resource `key` (of kind `K`) among the slots: its kind, namespace and name,
/// so that a BlobRestore and a BlobBackupInstance of one name wait for slots of their own.
pub fn slot_key<K: Resource<DynamicType = ()>>(key: &ObjectRef<K>) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        key.namespace.as_deref().unwrap_or_default(),
        key.name
    )
}

/// The client-side copies of Azure's write buckets, shared by all reconciles of both
/// controllers (BlobBackupInstance and BlobRestore): one process, one copy of each bucket.
#[derive(Debug)]
pub struct WritePacer {
    /// Time one token takes to come back.
    interval: Duration,
    /// How far a bucket may run ahead: `(burst - 1) × interval`.
    tolerance: Duration,
    /// The longest `Retry-After` a 429 may stop the writes for.
    max_throttle: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    buckets: HashMap<BudgetKey, Bucket>,
    /// Buckets made so far: the next one's serial.
    made: u64,
    /// When the buckets were last swept.
    swept: Instant,
}

#[derive(Debug)]
struct Bucket {
    /// Tells a bucket from the one that took its place after it was forgotten.
    serial: u64,
    /// When the bucket would be full again ("theoretical arrival time").
    full_at: Instant,
    /// Writes counted in `full_at` so far (sent, or holding a slot).
    counted: u64,
    /// Resources waiting for their slot, by key.
    slots: HashMap<String, Slot>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    at: Instant,
    /// Its write's number in [`Bucket::counted`].
    number: u64,
}

/// A write [`WritePacer::admit`] let through: its budget, when, and its number among the
/// writes the copy counted, so that Azure's answer to it can be applied
/// ([`WritePacer::reported_remaining`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    budget: BudgetKey,
    serial: u64,
    at: Instant,
    number: u64,
}

impl Admission {
    /// The budget the write spent.
    pub fn budget(&self) -> &BudgetKey {
        &self.budget
    }
}

impl WritePacer {
    /// Full buckets of `burst` writes, one more every `interval`; a 429 stops the writes of
    /// its budget for at most `max_throttle`.
    pub fn new(burst: u32, interval: Duration, max_throttle: Duration) -> Self {
        Self {
            interval,
            tolerance: interval.saturating_mul(burst.max(1).saturating_sub(1)),
            max_throttle,
            state: Mutex::new(State {
                buckets: HashMap::new(),
                made: 0,
                swept: Instant::now(),
            }),
        }
    }

    /// Whether the resource `key` may send a write spending `budget` now; otherwise how
    /// long until its slot, which stays reserved for it until it comes back.
    pub fn admit(
        &self,
        budget: &BudgetKey,
        key: &str,
        now: Instant,
    ) -> Result<Admission, Duration> {
        let mut state = super::lock(&self.state);
        if now.saturating_duration_since(state.swept) > STALE_SLOT {
            state.sweep(now);
        }
        let bucket = state.bucket(budget, now);
        let serial = bucket.serial;
        let admission = |at, number| Admission {
            budget: budget.clone(),
            serial,
            at,
            number,
        };
        if let Some(slot) = bucket.slots.get(key).copied() {
            if now >= slot.at {
                bucket.slots.remove(key);
                return Ok(admission(now, slot.number));
            }
            return Err(slot.at - now);
        }
        let earliest = bucket.full_at.checked_sub(self.tolerance).unwrap_or(now);
        bucket.full_at = bucket.full_at.max(now) + self.interval;
        bucket.counted += 1;
        let number = bucket.counted;
        if earliest <= now {
            return Ok(admission(now, number));
        }
        bucket.slots.insert(
            key.to_owned(),
            Slot {
                at: earliest,
                number,
            },
        );
        Err(earliest - now)
    }

    /// Azure answered the write of `admission` saying its budget holds `remaining` writes
    /// (`x-ms-ratelimit-remaining-subscription-writes`, or `-deletes`, of that very answer):
    /// other clients of the subscription spend it too, so the copy never holds more. It may
    /// hold fewer (it refills at the configured rate).
    ///
    /// Counted from the admission, not the answer: a bucket kept empty by a steady queue is
    /// reported as 0 left, and counting that from the answer would push every slot back by
    /// the request's round trip. Writes the copy counted after this one (sent by other
    /// reconciles, or waiting for their slots) are not in Azure's figure and stay counted.
    pub fn reported_remaining(&self, remaining: u64, admission: &Admission) {
        let mut state = super::lock(&self.state);
        let Some(bucket) = state.buckets.get_mut(&admission.budget) else {
            // Forgotten since: the figure says no more than a full bucket.
            return;
        };
        // A bucket made after the admission counted only writes that came after it.
        let counted_since = if bucket.serial == admission.serial {
            bucket.counted.saturating_sub(admission.number)
        } else {
            bucket.counted
        };
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
            bucket.full_at = bucket.full_at.max(full_at);
        }
    }

    /// Azure's answer to the write `admission` let through: the writes its budget has left,
    /// when the answer said (`remaining`), and, when it was a 429, its `Retry-After`
    /// (`throttled`).
    pub fn answered(
        &self,
        admission: &Admission,
        remaining: Option<u64>,
        throttled: Option<Duration>,
        now: Instant,
    ) {
        if let Some(remaining) = remaining {
            self.reported_remaining(remaining, admission);
        }
        if let Some(retry_after) = throttled {
            self.throttled(admission.budget(), retry_after, now);
        }
    }

    /// Azure answered a write spending `budget` with 429: that budget is empty for
    /// `retry_after` (at most `max_throttle`: any header value is accepted), then refills at
    /// the usual rate.
    pub fn throttled(&self, budget: &BudgetKey, retry_after: Duration, now: Instant) {
        let wait = retry_after
            .min(self.max_throttle)
            .saturating_add(self.tolerance);
        let mut state = super::lock(&self.state);
        let bucket = state.bucket(budget, now);
        // Checked: even an absurd configuration must not panic the controller.
        if let Some(until) = now.checked_add(wait) {
            bucket.full_at = bucket.full_at.max(until);
        }
    }
}

impl WritePacer {
    /// Forgets the slot the resource `key` ([`slot_key`]) waits for, in whichever bucket: it
    /// is gone. The write it counted stays counted (a gap in the queue, never a write too
    /// many).
    pub fn forget(&self, key: &str) {
        for bucket in super::lock(&self.state).buckets.values_mut() {
            bucket.slots.remove(key);
        }
    }

    /// Resources waiting for a slot, in every bucket.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        let state = super::lock(&self.state);
        state
            .buckets
            .values()
            .map(|bucket| bucket.slots.len())
            .sum()
    }
}

impl State {
    /// The copy of `budget`'s bucket, made full on its first use.
    fn bucket(&mut self, budget: &BudgetKey, now: Instant) -> &mut Bucket {
        let made = &mut self.made;
        self.buckets.entry(budget.clone()).or_insert_with(|| {
            *made += 1;
            Bucket {
                serial: *made,
                full_at: now,
                counted: 0,
                slots: HashMap::new(),
            }
        })
    }

    /// Drops stale slots, and the buckets that are full again with no one waiting.
    fn sweep(&mut self, now: Instant) {
        self.buckets.retain(|_, bucket| {
            bucket
                .slots
                .retain(|_, slot| now.saturating_duration_since(slot.at) < STALE_SLOT);
            bucket.full_at > now || !bucket.slots.is_empty()
        });
        self.swept = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_THROTTLE: Duration = Duration::from_secs(300);

    fn pacer(burst: u32, per_second: u32) -> WritePacer {
        WritePacer::new(burst, Duration::from_secs(1) / per_second, MAX_THROTTLE)
    }

    /// The write budget of a subscription.
    fn writes(subscription: &str) -> BudgetKey {
        BudgetKey::new(subscription, WriteKind::Writes)
    }

    /// `admit` to the writes of subscription "s", without the admission.
    fn go(p: &WritePacer, key: &str, now: Instant) -> Result<(), Duration> {
        p.admit(&writes("s"), key, now).map(|_| ())
    }

    fn admitted(p: &WritePacer, key: &str, now: Instant) -> Admission {
        p.admit(&writes("s"), key, now).expect("admitted")
    }

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_hands_out_slots_in_order() {
        let t0 = Instant::now();
        let p = pacer(3, 10);
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
        let p = pacer(2, 10);
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
        let p = pacer(200, 10);
        let ours = admitted(&p, "ours", t0);
        p.reported_remaining(2, &ours);
        assert_eq!(go(&p, "a", t0), Ok(()));
        assert_eq!(go(&p, "b", t0), Ok(()));
        assert_eq!(go(&p, "c", t0), Err(ms(100)));
        // Azure reporting more than the copy holds (its hourly counters say 1199), or nothing
        // left once the burst is spent and a slot handed out, changes no slot.
        let q = pacer(3, 10);
        let first = admitted(&q, "a", t0);
        q.reported_remaining(1199, &first);
        for key in ["b", "c"] {
            assert_eq!(go(&q, key, t0), Ok(()));
        }
        assert_eq!(go(&q, "d", t0), Err(ms(100)));
        let d = admitted(&q, "d", t0 + ms(100));
        q.reported_remaining(0, &d);
        assert_eq!(go(&q, "e", t0 + ms(100)), Err(ms(100)));
    }

    #[test]
    fn writes_admitted_after_the_one_azure_answered_stay_counted() {
        let t0 = Instant::now();
        let p = pacer(200, 10);
        // Eleven writes go at once; Azure answers the first: nothing left after it.
        let first = admitted(&p, "w0", t0);
        for i in 1..=10 {
            assert_eq!(go(&p, &format!("w{i}"), t0), Ok(()));
        }
        p.reported_remaining(0, &first);
        // Ten more are already on their way, so the next goes after eleven refills.
        assert_eq!(go(&p, "next", t0), Err(Duration::from_millis(1100)));
    }

    #[test]
    fn an_empty_bucket_reported_after_a_round_trip_keeps_the_queue_at_the_rate() {
        let t0 = Instant::now();
        let p = pacer(1, 10);
        let round_trip = Duration::from_millis(80);
        let mut at = t0;
        let mut write = admitted(&p, "w0", at);
        for i in 1..=5 {
            // Azure's answer, 80 ms later: nothing left (it refills at the same rate).
            p.reported_remaining(0, &write);
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
        let p = pacer(200, 10);
        p.throttled(&writes("s"), Duration::from_secs(2), t0);
        assert_eq!(go(&p, "a", t0), Err(Duration::from_secs(2)));
        assert_eq!(go(&p, "b", t0), Err(Duration::from_millis(2100)));
        assert_eq!(go(&p, "a", t0 + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn any_retry_after_stops_the_writes_for_at_most_the_longest_wait() {
        let t0 = Instant::now();
        let p = pacer(200, 10);
        // Near u64::MAX seconds: no overflow of Instant + Duration, cut to the longest wait.
        p.throttled(&writes("s"), Duration::from_secs(u64::MAX), t0);
        p.throttled(&writes("s"), Duration::MAX, t0);
        assert_eq!(go(&p, "a", t0), Err(MAX_THROTTLE));
        assert_eq!(go(&p, "a", t0 + MAX_THROTTLE), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn each_subscription_and_the_deletes_have_a_bucket_of_their_own() {
        let p = pacer(2, 10);
        let now = Instant::now;
        let (a, b) = (writes("a"), writes("b"));
        for key in ["a1", "a2"] {
            assert!(p.admit(&a, key, now()).is_ok());
        }
        assert_eq!(
            p.admit(&a, "a3", now()).map(|_| ()),
            Err(Duration::from_millis(100))
        );
        // b has spent nothing; a's deletes neither; a subscription in capitals is the same.
        assert!(p.admit(&b, "b1", now()).is_ok());
        let a_deletes = BudgetKey::new("a", WriteKind::Deletes);
        assert!(p.admit(&a_deletes, "a4", now()).is_ok());
        assert!(
            p.admit(&BudgetKey::new("A", WriteKind::Writes), "a5", now())
                .is_err()
        );
        // A 429 on a's writes stops a's writes only.
        p.throttled(&a, Duration::from_secs(5), now());
        assert!(p.admit(&b, "b2", now()).is_ok());
        assert!(p.admit(&a_deletes, "a6", now()).is_ok());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(
            p.admit(&a, "a3", now()).is_ok(),
            "a reserved slot is kept; the 429 moves only what comes after it"
        );
        assert!(p.admit(&a, "a7", now()).unwrap_err() > Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_full_again_with_no_one_waiting_is_forgotten() {
        let p = pacer(2, 10);
        let buckets = || super::super::lock(&p.state).buckets.len();
        let (a, b) = (writes("a"), writes("b"));
        assert!(p.admit(&a, "a1", Instant::now()).is_ok());
        // b queues one write behind its burst and never comes back for the slot.
        for key in ["b1", "b2"] {
            assert!(p.admit(&b, key, Instant::now()).is_ok());
        }
        assert!(p.admit(&b, "b3", Instant::now()).is_err());
        assert_eq!(buckets(), 2);
        // Past the sweep interval: a's bucket has been full for long and is forgotten; b's
        // slot went stale with it. A write to c sweeps.
        tokio::time::advance(STALE_SLOT + Duration::from_secs(1)).await;
        assert!(p.admit(&writes("c"), "c1", Instant::now()).is_ok());
        assert_eq!(buckets(), 1, "only c's bucket is left");
        // A forgotten bucket comes back full.
        for key in ["a2", "a3"] {
            assert!(p.admit(&a, key, Instant::now()).is_ok());
        }
        // A bucket still refilling (Azure said few writes are left) is not forgotten.
        let d = writes("d");
        let first = p.admit(&d, "d1", Instant::now()).unwrap();
        p.reported_remaining(0, &first);
        tokio::time::advance(STALE_SLOT + Duration::from_millis(10)).await;
        p.throttled(&d, Duration::from_secs(120), Instant::now());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(p.admit(&writes("e"), "e1", Instant::now()).is_ok());
        assert!(
            p.admit(&d, "d2", Instant::now()).is_err(),
            "d's throttled bucket was kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_to_a_forgotten_bucket_counts_every_write_of_its_successor() {
        let ms = Duration::from_millis;
        let p = pacer(3, 10);
        let a = writes("a");
        // Just before the first sweep, one write; by the sweep its bucket is full again and
        // forgotten, and a new one counts two more writes before Azure answers the first.
        tokio::time::advance(ms(59_950)).await;
        let first = p.admit(&a, "first", Instant::now()).unwrap();
        tokio::time::advance(ms(100)).await;
        for key in ["a1", "a2"] {
            assert!(p.admit(&a, key, Instant::now()).is_ok());
        }
        // Nothing was left after the first: the two since come after it, then the next.
        p.reported_remaining(0, &first);
        assert_eq!(p.admit(&a, "a3", Instant::now()).map(|_| ()), Err(ms(200)));
    }

    /// The backup's writes and the restore's POSTs of one subscription spend one budget, each
    /// resource waiting in a slot of its own (a BlobRestore and a BlobBackupInstance may share
    /// a name); another subscription's restore goes at once.
    #[test]
    fn backup_and_restore_writes_of_a_subscription_share_one_budget() {
        use crate::api::{BlobBackupInstance, BlobRestore};
        use crate::controller::restore;
        use dataprotection::ids::BackupInstanceId;
        let id = |subscription: &str| {
            BackupInstanceId::parse(&format!(
                "/subscriptions/{subscription}/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/v/backupInstances/bi"
            ))
            .unwrap()
        };
        let find_ranges = |subscription| restore::Action::FindRanges {
            instance: id(subscription),
            from: jiff::Timestamp::UNIX_EPOCH,
            to: jiff::Timestamp::UNIX_EPOCH,
        };
        let backup = BudgetKey::of(&Action::Sync(id("AB12"))).unwrap();
        let restore = find_ranges("ab12").budget().unwrap();
        assert_eq!(backup, restore);
        let elsewhere = find_ranges("cd34").budget().unwrap();

        let t0 = Instant::now();
        let p = pacer(1, 10);
        let backup_slot = slot_key(&ObjectRef::<BlobBackupInstance>::new("x").within("ns"));
        let restore_slot = slot_key(&ObjectRef::<BlobRestore>::new("x").within("ns"));
        assert_ne!(backup_slot, restore_slot);
        assert!(p.admit(&backup, &backup_slot, t0).is_ok());
        assert_eq!(
            p.admit(&restore, &restore_slot, t0).map(|_| ()),
            Err(Duration::from_millis(100))
        );
        assert!(p.admit(&elsewhere, &restore_slot, t0).is_ok());
    }
}
