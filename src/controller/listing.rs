//! The watch's lists, put in the cache as their pages arrive, so reconciles start with the
//! first page instead of after the last.
//!
//! kube-runtime's reflector keeps a list's objects aside (`InitApply`) until the list ends
//! (`InitDone`), then swaps them into the cache in one go, and its `Controller` starts no
//! reconcile before the first swap. That costs startup (about 2 s to the first reconcile at
//! 3,000 resources on a real API server, BENCHMARKS.md), and on a relist (after the watch
//! lost its place) a resource new in an early page is triggered before the swap, found
//! missing from the cache, and skipped until it changes again.
//!
//! [`apply_lists_as_they_arrive`] rewrites the watch's events instead: a listed object is an
//! `Apply` (in the cache at once, reconciled like any change), and at a list's end every
//! cached object the list did not hold gets a `Delete` (it was deleted while the watch was
//! not looking). The cache is marked listed before the first list's first object (an empty
//! `Init`/`InitDone`, the only ones passed on); the first list's real end is reported to
//! `on_listed` (readiness waits for it).

use std::collections::HashSet;

use futures::{Stream, StreamExt, TryStreamExt, stream};
use kube::Resource;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{Predicate, WatchStreamExt};

use super::changes::changed;

/// The watch's list page size: the first reconcile waits for the first page, so it is half of
/// kube's (and client-go's) 500, at the cost of twice the list requests.
pub const LIST_PAGE_SIZE: u32 = 250;

/// The watch's configuration, for both controllers: lists in pages of [`LIST_PAGE_SIZE`].
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

/// A controller's reconcile triggers from its watch's `events`, as both controllers take them:
/// the lists applied as they arrive ([`apply_lists_as_they_arrive`], `on_listed` once the
/// first has ended) and reflected into `writer` (whose reader is `cache`); each Delete handed
/// to `on_deleted`, to forget what is kept of the resource; and only the resources `predicate`
/// sees change ([`changed`]).
pub fn reconcile_triggers<K, S>(
    events: S,
    cache: Store<K>,
    writer: Writer<K>,
    on_listed: impl FnOnce() + Send,
    on_deleted: impl Fn(&K) + Send,
    predicate: impl Predicate<K> + Send,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()>
        + Lookup<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    S: Stream<Item = watcher::Result<Event<K>>> + Send,
{
    let events = apply_lists_as_they_arrive(events, cache, on_listed)
        .reflect(writer)
        .inspect_ok(move |event| {
            if let Event::Delete(obj) = event {
                on_deleted(obj);
            }
        });
    changed(events, predicate).applied_objects()
}

/// The watch's `events` with its lists applied as they arrive (see the module's docs).
/// `cache` is the store the returned events are reflected into; `on_listed` is called once,
/// when the first list has ended.
pub fn apply_lists_as_they_arrive<K, S>(
    events: S,
    cache: Store<K>,
    on_listed: impl FnOnce() + Send,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource<DynamicType = ()> + Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = watcher::Result<Event<K>>> + Send,
{
    let mut lists = Lists {
        begun: false,
        listing: None,
    };
    let mut on_listed = Some(on_listed);
    events.flat_map(move |event| match event {
        Ok(event) => {
            let (events, listed) = lists.next(event, &cache);
            if listed && let Some(on_listed) = on_listed.take() {
                on_listed();
            }
            stream::iter(events).map(Ok).left_stream()
        }
        Err(error) => stream::iter([Err(error)]).right_stream(),
    })
}

/// What the lists so far have shown.
struct Lists<K: Lookup<DynamicType = ()>> {
    /// Whether a list has begun (the cache was marked listed then).
    begun: bool,
    /// The objects of the list in progress, `None` between lists.
    listing: Option<HashSet<ObjectRef<K>>>,
}

impl<K> Lists<K>
where
    K: Resource<DynamicType = ()> + Lookup<DynamicType = ()> + Clone,
{
    /// The events to pass on for `event`, and whether a list has just ended.
    fn next(&mut self, event: Event<K>, cache: &Store<K>) -> (Vec<Event<K>>, bool) {
        match event {
            Event::Init => {
                // A list that restarts (a page failed) begins again: what it held so far is in
                // the cache, and the new list's end decides what stays.
                self.listing = Some(HashSet::new());
                if self.begun {
                    (vec![], false)
                } else {
                    self.begun = true;
                    (vec![Event::Init, Event::InitDone], false)
                }
            }
            Event::InitApply(obj) => {
                if let Some(listing) = &mut self.listing {
                    listing.insert(ObjectRef::from_obj(&obj));
                }
                (vec![Event::Apply(obj)], false)
            }
            Event::InitDone => {
                // kube's watcher ends only lists it began; one it did not is ignored rather
                // than taken for an empty list.
                let Some(listed) = self.listing.take() else {
                    return (vec![], false);
                };
                let gone = cache
                    .state()
                    .into_iter()
                    .filter(|obj| !listed.contains(&ObjectRef::from_obj(obj.as_ref())))
                    .map(|obj| Event::Delete(obj.as_ref().clone()))
                    .collect();
                (gone, true)
            }
            event @ (Event::Apply(_) | Event::Delete(_)) => (vec![event], false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::executor::block_on;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::reflector;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn object(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// What passing `events` through [`apply_lists_as_they_arrive`] into kube's reflector
    /// shows, event by event: the event passed on (in short), whether the cache was ready,
    /// and the names in the cache right after the reflector took it. And how often
    /// `on_listed` was called.
    fn reflected(events: Vec<Event<ConfigMap>>) -> (Vec<(String, bool, Vec<String>)>, usize) {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let on_listed = move || {
            counted.fetch_add(1, Ordering::SeqCst);
        };
        let events = stream::iter(events.into_iter().map(Ok));
        let seen = block_on(
            apply_lists_as_they_arrive(events, reader.clone(), on_listed)
                .reflect(writer)
                .map(|event| {
                    let event = match event.expect("no errors in these tables") {
                        Event::Init => "Init".to_owned(),
                        Event::InitApply(o) => format!("InitApply {}", o.metadata.name.unwrap()),
                        Event::InitDone => "InitDone".to_owned(),
                        Event::Apply(o) => format!("Apply {}", o.metadata.name.unwrap()),
                        Event::Delete(o) => format!("Delete {}", o.metadata.name.unwrap()),
                    };
                    let ready = reader.wait_until_ready().now_or_never().is_some();
                    let mut names: Vec<String> = reader
                        .state()
                        .iter()
                        .map(|o| o.metadata.name.clone().unwrap())
                        .collect();
                    names.sort();
                    (event, ready, names)
                })
                .collect::<Vec<_>>(),
        );
        (seen, calls.load(Ordering::SeqCst))
    }

    fn row(event: &str, ready: bool, names: &[&str]) -> (String, bool, Vec<String>) {
        (
            event.to_owned(),
            ready,
            names.iter().map(|n| (*n).to_owned()).collect(),
        )
    }

    #[test]
    fn the_first_list_is_in_the_cache_as_it_arrives_and_reported_at_its_end() {
        let (seen, listed) = reflected(vec![
            Event::Init,
            Event::InitApply(object("a")),
            Event::InitApply(object("b")),
            Event::InitDone,
            Event::Apply(object("c")),
            Event::Delete(object("a")),
        ]);
        assert_eq!(
            seen,
            [
                row("Init", false, &[]),
                row("InitDone", true, &[]),
                row("Apply a", true, &["a"]),
                row("Apply b", true, &["a", "b"]),
                row("Apply c", true, &["a", "b", "c"]),
                row("Delete a", true, &["b", "c"]),
            ]
        );
        assert_eq!(listed, 1);
    }

    #[test]
    fn a_relist_applies_what_it_holds_at_once_and_deletes_what_it_does_not() {
        let (seen, listed) = reflected(vec![
            Event::Init,
            Event::InitApply(object("a")),
            Event::InitApply(object("b")),
            Event::InitDone,
            // The watch lost its place: a was deleted and c created meanwhile.
            Event::Init,
            Event::InitApply(object("c")),
            Event::InitApply(object("b")),
            Event::InitDone,
        ]);
        assert_eq!(
            &seen[4..],
            [
                row("Apply c", true, &["a", "b", "c"]),
                row("Apply b", true, &["a", "b", "c"]),
                row("Delete a", true, &["b", "c"]),
            ]
        );
        assert_eq!(listed, 1, "reported once, at the first list's end");
    }

    #[test]
    fn a_list_cut_off_and_begun_again_ends_with_what_the_last_one_held() {
        let (seen, listed) = reflected(vec![
            Event::Init,
            Event::InitApply(object("a")),
            Event::InitApply(object("b")),
            // A page failed: the watcher lists again from the start; b was deleted meanwhile.
            Event::Init,
            Event::InitApply(object("a")),
            Event::InitDone,
        ]);
        assert_eq!(
            seen.last(),
            Some(&row("Delete b", true, &["a"])),
            "{seen:?}"
        );
        assert_eq!(listed, 1);
    }

    #[test]
    fn a_list_that_never_ends_is_not_reported() {
        let (seen, listed) = reflected(vec![Event::Init, Event::InitApply(object("a"))]);
        assert_eq!(seen.last(), Some(&row("Apply a", true, &["a"])));
        assert_eq!(listed, 0);
    }
}
