//! Which watch events call for a reconcile: a resource seen for the first time, or one whose
//! predicate value (its generation, deletion and other controllers' finalizers) changed; never
//! the controller's own status writes.
//!
//! kube-runtime's `predicate_filter` does the same with a cache entry per resource of its
//! name, namespace and uid as three strings (about 200 bytes with the map's slack, 2 MB at
//! 10,000 resources, a thirtieth of the 64 MiB budget; BENCHMARKS.md, "Memory"). [`changed`]
//! keeps 16 bytes per resource: a hash of the three, and the predicate's value. Two resources
//! whose keys collide (about 1 in 10^11 at 10,000) would share an entry, which at worst lets a
//! change of one through unnoticed until its next resync. An entry goes with the resource's
//! Delete event (the watch's lists deliver one for a resource deleted while it was down, see
//! [`super::listing`]), not after kube's hour.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use futures::{Stream, TryStreamExt, future};
use kube::Resource;
use kube::runtime::Predicate;
use kube::runtime::watcher::{self, Event};

/// The watch's `events` without the Applies that change nothing `predicate` looks at.
pub fn changed<K, S>(
    events: S,
    predicate: impl Predicate<K> + Send,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Send,
    S: Stream<Item = watcher::Result<Event<K>>> + Send,
{
    let mut seen: HashMap<u64, u64> = HashMap::new();
    events.try_filter(move |event| {
        let pass = match event {
            Event::Apply(obj) | Event::InitApply(obj) => match predicate.hash_property(obj) {
                Some(value) => seen.insert(key(obj), value) != Some(value),
                None => true,
            },
            Event::Delete(obj) => {
                seen.remove(&key(obj));
                true
            }
            Event::Init | Event::InitDone => true,
        };
        future::ready(pass)
    })
}

/// A resource's entry: a hash of its namespace, name and uid (a resource deleted and made
/// again under its name is a new one).
fn key<K: Resource>(obj: &K) -> u64 {
    let meta = obj.meta();
    let mut hasher = DefaultHasher::new();
    meta.namespace.hash(&mut hasher);
    meta.name.hash(&mut hasher);
    meta.uid.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use futures::executor::block_on;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::predicates;

    fn object(name: &str, uid: &str, generation: i64) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                uid: Some(uid.to_owned()),
                generation: Some(generation),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The events passed on, in short: `Apply name/generation` and the like.
    fn passed(events: Vec<Event<ConfigMap>>) -> Vec<String> {
        let short = |o: &ConfigMap| {
            format!(
                "{}/{}",
                o.metadata.name.as_deref().unwrap(),
                o.metadata.generation.unwrap()
            )
        };
        let events = futures::stream::iter(events.into_iter().map(Ok));
        block_on(
            changed(events, predicates::generation)
                .map(|event| match event.unwrap() {
                    Event::Apply(o) => format!("Apply {}", short(&o)),
                    Event::InitApply(o) => format!("InitApply {}", short(&o)),
                    Event::Delete(o) => format!("Delete {}", short(&o)),
                    Event::Init => "Init".to_owned(),
                    Event::InitDone => "InitDone".to_owned(),
                })
                .collect(),
        )
    }

    #[test]
    fn only_first_sights_and_changes_pass() {
        let out = passed(vec![
            Event::Apply(object("a", "u1", 1)),
            // Our own status write: same generation.
            Event::Apply(object("a", "u1", 1)),
            Event::Apply(object("b", "u2", 1)),
            Event::Apply(object("a", "u1", 2)),
            Event::InitApply(object("a", "u1", 2)),
        ]);
        assert_eq!(out, ["Apply a/1", "Apply b/1", "Apply a/2"]);
    }

    #[test]
    fn a_deleted_resource_is_forgotten_and_one_made_again_is_new() {
        let out = passed(vec![
            Event::Apply(object("a", "u1", 1)),
            Event::Delete(object("a", "u1", 1)),
            Event::Apply(object("a", "u1", 1)),
            // Deleted and made again under its name, while the watch was away: a new uid.
            Event::Apply(object("a", "u2", 1)),
        ]);
        assert_eq!(out, ["Apply a/1", "Delete a/1", "Apply a/1", "Apply a/1"]);
    }
}
