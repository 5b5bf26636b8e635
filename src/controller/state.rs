//! What the controller remembers about each resource between reconciles: one record per
//! resource, in one map keyed by the resource's [`ObjectRef`], forgotten once when the
//! resource is gone. Generic over the kind, so a second controller keeps its own.
//!
//! The record's first use is the stale-cache guard ([`States::is_stale`]): the watch cache can
//! be older than the controller's own last write (the watch event of a status write can arrive
//! after a short requeue fires), and acting on it could start an operation twice.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use kube::core::object::HasStatus;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;

// A panic elsewhere while holding a lock leaves plain maps behind; keep using them.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key of a resource: its namespace and name (not its uid or resourceVersion, which
/// change or are unknown when a requeue or a deletion names it).
pub fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectRef<K> {
    let key = ObjectRef::new(&obj.name_any());
    match obj.namespace() {
        Some(namespace) => key.within(&namespace),
        None => key,
    }
}

/// What the controller remembers about one resource.
#[derive(Debug)]
pub struct Record<S> {
    /// The resource's uid when last written.
    uid: String,
    /// Whether its finalizer was on after our last write.
    finalized: bool,
    /// A fingerprint of the status after our last write ([`status_fingerprint`]): a copy
    /// of every status would be most of the controller's memory at 10,000 resources.
    status: u64,
    /// A status recording an Azure operation already sent that could not be written (its poll
    /// URL): written before anything else happens to the resource, or the operation would be
    /// sent again. For the resource with this uid. Boxed: it is rarely set, and inline it
    /// would make every record the size of a whole status (hundreds of bytes, times every
    /// bucket of the map's table at 10,000 resources; BENCHMARKS.md, "Memory").
    unwritten: Option<Box<(String, S)>>,
    /// A status newer than the API's, kept in memory only (a started PUT's poll URL, whose
    /// intent the API holds; the caller may keep only the part that differs): used instead of
    /// the API's while that is still the status it was kept over (by its fingerprint), for the
    /// resource with this uid. Boxed, as above.
    kept: Option<Box<(String, u64, S)>>,
    /// Set by a conflict: the watch cache is behind someone's write, so read afresh.
    read_fresh: bool,
    /// The status of our last write (`status`) records the intent of a write not sent: it
    /// waits for its slot in Azure's write budget.
    unsent: bool,
}

impl<S> Default for Record<S> {
    fn default() -> Self {
        Self {
            uid: String::new(),
            finalized: false,
            status: 0,
            unwritten: None,
            kept: None,
            read_fresh: false,
            unsent: false,
        }
    }
}

/// The records of every resource of kind `K` the controller has written.
pub struct States<K: Resource<DynamicType = ()> + HasStatus> {
    records: Mutex<HashMap<ObjectRef<K>, Record<K::Status>>>,
    /// Whether the controller's finalizer is on a resource.
    finalized: fn(&K) -> bool,
}

impl<K: Resource<DynamicType = ()> + HasStatus> std::fmt::Debug for States<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("States")
            .field("resources", &lock(&self.records).len())
            .finish()
    }
}

impl<K> States<K>
where
    K: Resource<DynamicType = ()> + HasStatus,
    K::Status: Serialize + Clone,
{
    /// No records yet; `finalized` tells whether the controller's finalizer is on a resource.
    pub fn new(finalized: fn(&K) -> bool) -> Self {
        Self {
            records: Mutex::new(HashMap::new()),
            finalized,
        }
    }

    /// Whether the watch cache's copy is older than our own last write to the resource (or a
    /// conflict said someone else wrote it): then read it afresh.
    pub fn is_stale(&self, key: &ObjectRef<K>, cached: &K) -> bool {
        lock(&self.records).get(key).is_some_and(|record| {
            record.read_fresh
                || (cached.meta().uid.as_deref() == Some(record.uid.as_str())
                    && (record.status != status_fingerprint(cached.status())
                        || record.finalized != (self.finalized)(cached)))
        })
    }

    /// Remembers what we just wrote (or read afresh) of the resource.
    pub fn remember_write(&self, key: &ObjectRef<K>, written: &K) {
        let mut records = lock(&self.records);
        let record = records.entry(key.clone()).or_default();
        record.uid = written.meta().uid.clone().unwrap_or_default();
        record.finalized = (self.finalized)(written);
        record.status = status_fingerprint(written.status());
        record.read_fresh = false;
    }

    /// The fresh read found the resource gone: nothing more to read afresh.
    pub fn read_gone(&self, key: &ObjectRef<K>) {
        if let Some(record) = lock(&self.records).get_mut(key) {
            record.read_fresh = false;
        }
    }

    /// A conflict: the watch cache is behind someone's write; the next reconcile reads afresh.
    pub fn read_fresh_next(&self, key: &ObjectRef<K>) {
        lock(&self.records)
            .entry(key.clone())
            .or_default()
            .read_fresh = true;
    }

    /// Keeps a status that could not be written, for the resource with this uid, to write
    /// first on the next reconcile.
    pub fn keep_unwritten(&self, key: &ObjectRef<K>, uid: String, status: K::Status) {
        lock(&self.records)
            .entry(key.clone())
            .or_default()
            .unwritten = Some(Box::new((uid, status)));
    }

    /// The status kept by [`Self::keep_unwritten`], taken out.
    pub fn take_unwritten(&self, key: &ObjectRef<K>) -> Option<(String, K::Status)> {
        lock(&self.records)
            .get_mut(key)
            .and_then(|record| record.unwritten.take())
            .map(|unwritten| *unwritten)
    }

    /// Keeps `status`, newer than the API's `persisted`, in memory for the resource `obj`
    /// (see [`Self::take_kept`]).
    pub fn keep(
        &self,
        key: &ObjectRef<K>,
        obj: &K,
        persisted: Option<&K::Status>,
        status: K::Status,
    ) {
        let uid = obj.meta().uid.clone().unwrap_or_default();
        lock(&self.records).entry(key.clone()).or_default().kept =
            Some(Box::new((uid, status_fingerprint(persisted), status)));
    }

    /// The status kept by [`Self::keep`], taken out, if `obj` is the same resource and the API
    /// still holds the status it was kept over; `None` otherwise (someone else wrote since, or
    /// the resource was recreated: the API's status says what to do).
    pub fn take_kept(&self, key: &ObjectRef<K>, obj: &K) -> Option<K::Status> {
        let (uid, over, status) = *lock(&self.records).get_mut(key)?.kept.take()?;
        (obj.meta().uid.as_deref() == Some(uid.as_str())
            && over == status_fingerprint(obj.status()))
        .then_some(status)
    }

    /// Remembers that `obj`'s status, the one we last wrote, records the intent of a write that
    /// was not sent (see [`Self::take_unsent`]). Nothing when it is not the one we last wrote.
    pub fn remember_unsent(&self, key: &ObjectRef<K>, obj: &K) {
        if let Some(record) = lock(&self.records).get_mut(key) {
            record.unsent = holds_our_last_write(record, obj);
        }
    }

    /// Whether `obj` (as the API holds it) is the same resource, with the same status, that
    /// [`Self::remember_unsent`] remembered: then its intent was not sent. Taken out: asked
    /// once, at the reconcile that sends the write (or waits again).
    pub fn take_unsent(&self, key: &ObjectRef<K>, obj: &K) -> bool {
        lock(&self.records).get_mut(key).is_some_and(|record| {
            std::mem::take(&mut record.unsent) && holds_our_last_write(record, obj)
        })
    }

    /// Resources with a record.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.records).len()
    }

    /// Forgets a resource that is gone.
    pub fn forget(&self, key: &ObjectRef<K>) {
        lock(&self.records).remove(key);
    }
}

/// Whether `obj` is the resource of `record`'s last write (same uid), with the status written.
fn holds_our_last_write<K>(record: &Record<K::Status>, obj: &K) -> bool
where
    K: Resource + HasStatus,
    K::Status: Serialize,
{
    obj.meta().uid.as_deref() == Some(record.uid.as_str())
        && record.status == status_fingerprint(obj.status())
}

/// A hash of the status as the API would serialize it (no allocation): enough to tell whether
/// the watch cache has caught up with our last write.
fn status_fingerprint<S: Serialize>(status: Option<&S>) -> u64 {
    // serde_json writes into any io::Write; this one feeds the bytes to the hasher.
    struct HashWriter(DefaultHasher);
    impl std::io::Write for HashWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut writer = HashWriter(DefaultHasher::new());
    // Serializing plain data into a writer that never fails cannot fail either.
    let _ = serde_json::to_writer(&mut writer, &status);
    writer.0.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BlobBackupInstance, BlobBackupInstanceSpec, BlobBackupInstanceStatus, DeletionPolicy,
        PolicyRef, StorageAccountRef, VaultRef,
    };

    /// Every resource has a record, and the map's table holds a slot of key and record for
    /// each (rounded up to a power of two): a record as large as a status cost about 9 MB
    /// at 10,000 resources.
    #[test]
    fn a_record_does_not_hold_a_status_inline() {
        let record = std::mem::size_of::<Record<BlobBackupInstanceStatus>>();
        let status = std::mem::size_of::<BlobBackupInstanceStatus>();
        assert!(
            record <= 64,
            "a record takes {record} bytes (a status {status})"
        );
    }

    fn resource(uid: &str, protection: &str) -> BlobBackupInstance {
        // The spec plays no part here.
        let spec = BlobBackupInstanceSpec {
            vault: VaultRef { id: String::new() },
            policy: PolicyRef {
                name: None,
                id: None,
            },
            storage_account: StorageAccountRef {
                id: String::new(),
                location: String::new(),
            },
            backup_instance_name: None,
            vaulted_backup: None,
            deletion_policy: DeletionPolicy::Delete,
        };
        let mut obj = BlobBackupInstance::new("bbi", spec);
        obj.metadata.namespace = Some("ns".into());
        obj.metadata.uid = Some(uid.into());
        obj.status = Some(BlobBackupInstanceStatus {
            protection_status: Some(protection.into()),
            ..BlobBackupInstanceStatus::default()
        });
        obj
    }

    /// A status kept in memory is the resource's newest only while the API still holds the
    /// status it was kept over, for the same resource; taken once.
    #[test]
    fn a_kept_status_is_used_only_over_the_status_it_was_kept_over() {
        let states = States::<BlobBackupInstance>::new(|_| true);
        let api = resource("uid-1", "written");
        let key = key_of(&api);
        let newer = resource("uid-1", "kept").status.unwrap();
        let keep = || states.keep(&key, &api, api.status.as_ref(), newer.clone());

        keep();
        assert_eq!(states.take_kept(&key, &api), Some(newer.clone()));
        assert_eq!(states.take_kept(&key, &api), None, "taken once");

        keep();
        let written_since = resource("uid-1", "someone else's");
        assert_eq!(states.take_kept(&key, &written_since), None);
        assert_eq!(states.take_kept(&key, &api), None, "dropped");

        keep();
        assert_eq!(states.take_kept(&key, &resource("uid-2", "written")), None);
    }

    /// An unsent intent is remembered only over our own last write, and believed only while
    /// the API still holds that status, for the same resource; taken once.
    #[test]
    fn an_unsent_intent_is_believed_only_over_our_last_write() {
        let states = States::<BlobBackupInstance>::new(|_| true);
        let written = resource("uid-1", "intent");
        let key = key_of(&written);
        states.remember_unsent(&key, &written);
        assert!(!states.take_unsent(&key, &written), "never written by us");

        states.remember_write(&key, &written);
        states.remember_unsent(&key, &written);
        assert!(states.take_unsent(&key, &written));
        assert!(!states.take_unsent(&key, &written), "taken once");

        states.remember_unsent(&key, &resource("uid-1", "not what we wrote"));
        assert!(!states.take_unsent(&key, &written));

        states.remember_unsent(&key, &written);
        assert!(!states.take_unsent(&key, &resource("uid-1", "someone else's")));
        states.remember_unsent(&key, &written);
        assert!(!states.take_unsent(&key, &resource("uid-2", "intent")));
    }
}
