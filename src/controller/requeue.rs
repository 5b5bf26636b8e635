//! When to reconcile each resource again.
//!
//! Not kube-runtime's `Action::requeue`: its scheduler keeps, for every waiting resource, two
//! copies of the resource's `ObjectRef` (name, namespace, uid and resourceVersion, four
//! strings) in a hash map beside its delay queue, about 900 bytes each. At 10,000 Ready
//! resources, all waiting for their resync, that was 9 MiB of the 64 MiB budget
//! (BENCHMARKS.md). [`Requeues`] keeps one shared key (an `ObjectRef` of name and namespace
//! only, behind an `Arc`) and one slot of the same `DelayQueue` per resource, and hands the controller a reconcile request
//! (`Controller::reconcile_on`) only when it is due, so kube's scheduler holds an entry for
//! a moment instead of for the whole wait.
//!
//! The latest decision wins: scheduling a resource replaces whatever requeue it had, because
//! the reconcile that asks has seen the newest state. kube still runs one reconcile per
//! resource at a time and holds a request that arrives during one until it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio_util::time::{DelayQueue, delay_queue};

use kube::Resource;

/// The pending requeues of all resources of kind `K`, keyed by their name and namespace.
#[derive(Debug)]
pub struct Requeues<K: Resource<DynamicType = ()>> {
    state: Mutex<State<K>>,
}

impl<K: Resource<DynamicType = ()>> Default for Requeues<K> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                queue: DelayQueue::new(),
                slots: HashMap::new(),
            }),
        }
    }
}

#[derive(Debug)]
struct State<K: Resource<DynamicType = ()>> {
    queue: DelayQueue<Arc<ObjectRef<K>>>,
    slots: HashMap<Arc<ObjectRef<K>>, delay_queue::Key>,
}

impl<K: Resource<DynamicType = ()>> Requeues<K> {
    fn state(&self) -> MutexGuard<'_, State<K>> {
        // Both maps are updated together under the lock, before anything that could panic.
        super::lock(&self.state)
    }

    /// Reconcile `key` again after `delay`, instead of any requeue it had. Must be called
    /// inside a Tokio runtime (the queue's timer).
    pub fn schedule(&self, key: &ObjectRef<K>, delay: Duration) {
        let mut state = self.state();
        let State { queue, slots } = &mut *state;
        match slots.get(key) {
            Some(slot) => queue.reset(slot, delay),
            None => {
                let key = Arc::new(key.clone());
                let slot = queue.insert(key.clone(), delay);
                slots.insert(key, slot);
            }
        }
    }

    /// No requeue for `key`: it is reconciled again only when it changes.
    pub fn cancel(&self, key: &ObjectRef<K>) {
        let mut state = self.state();
        if let Some(slot) = state.slots.remove(key) {
            state.queue.remove(&slot);
        }
    }

    /// Resources with a requeue pending.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state().slots.len()
    }

    /// The resources whose requeue is due, as they fall due, for `Controller::reconcile_on`.
    /// It never ends; there must be one such stream at a time.
    pub fn due(self: Arc<Self>) -> impl Stream<Item = ObjectRef<K>> + Send
    where
        K: Send + Sync + 'static,
    {
        futures::stream::poll_fn(move |cx| {
            let mut state = self.state();
            // An empty queue answers Ready(None) with the waker kept: an insert wakes it.
            match state.queue.poll_expired(cx) {
                Poll::Ready(Some(expired)) => {
                    let key = expired.into_inner();
                    state.slots.remove(&key);
                    Poll::Ready(Some(ObjectRef::clone(&key)))
                }
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BlobBackupInstance;
    use futures::StreamExt;

    /// The key of "namespace/name".
    fn key(key: &str) -> ObjectRef<BlobBackupInstance> {
        let (namespace, name) = key.split_once('/').unwrap();
        ObjectRef::new(name).within(namespace)
    }

    fn names(refs: &[ObjectRef<BlobBackupInstance>]) -> Vec<String> {
        refs.iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name))
            .collect()
    }

    /// What falls due within the next `seconds` of paused time.
    async fn due_within(
        due: &mut (impl Stream<Item = ObjectRef<BlobBackupInstance>> + Unpin),
        seconds: u64,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, due.next()).await {
            out.push(r);
        }
        names(&out)
    }

    #[tokio::test(start_paused = true)]
    async fn requeues_fall_due_in_order_and_once() {
        let requeues = Arc::new(Requeues::default());
        let mut due = Box::pin(requeues.clone().due());
        requeues.schedule(&key("ns/b"), Duration::from_secs(20));
        requeues.schedule(&key("ns/a"), Duration::from_secs(10));
        assert!(due_within(&mut due, 9).await.is_empty());
        assert_eq!(due_within(&mut due, 2).await, ["ns/a"]);
        assert_eq!(due_within(&mut due, 10).await, ["ns/b"]);
        assert!(due_within(&mut due, 60).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_latest_schedule_replaces_the_pending_one() {
        let requeues = Arc::new(Requeues::default());
        let mut due = Box::pin(requeues.clone().due());
        requeues.schedule(&key("ns/a"), Duration::from_secs(1));
        // A later reconcile decided to wait longer: the short requeue is gone.
        requeues.schedule(&key("ns/a"), Duration::from_secs(600));
        assert!(due_within(&mut due, 599).await.is_empty());
        assert_eq!(due_within(&mut due, 2).await, ["ns/a"]);
        // And the other way round: a long wait shortened.
        requeues.schedule(&key("ns/a"), Duration::from_secs(600));
        requeues.schedule(&key("ns/a"), Duration::from_secs(1));
        assert_eq!(due_within(&mut due, 2).await, ["ns/a"]);
        assert!(due_within(&mut due, 700).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_resources_never_fall_due() {
        let requeues = Arc::new(Requeues::default());
        let mut due = Box::pin(requeues.clone().due());
        requeues.schedule(&key("ns/a"), Duration::from_secs(1));
        requeues.schedule(&key("ns/b"), Duration::from_secs(1));
        requeues.schedule(&key("other/c"), Duration::from_secs(1));
        requeues.cancel(&key("ns/a"));
        requeues.cancel(&key("ns/never-scheduled"));
        assert_eq!(due_within(&mut due, 5).await, ["ns/b", "other/c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_schedule_wakes_a_waiting_stream() {
        let requeues = Arc::new(Requeues::default());
        let mut due = Box::pin(requeues.clone().due());
        // The stream is parked on an empty queue when the first requeue arrives.
        let waiting = tokio::spawn(async move { due.next().await.map(|r| r.name) });
        tokio::task::yield_now().await;
        requeues.schedule(&key("ns/a"), Duration::from_secs(3));
        assert_eq!(waiting.await.unwrap().as_deref(), Some("a"));
    }
}
