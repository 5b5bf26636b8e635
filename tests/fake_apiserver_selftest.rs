//! The fake apiserver behaves like a real one towards kube's Api, watcher, Controller,
//! finalizer helper, event Recorder and kube-lease-manager.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectList, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Client, CustomResource, Resource, ResourceExt};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use testkit::fake_apiserver::{FakeApiOptions, FakeApiServer, Verb};

const WAIT: Duration = Duration::from_secs(5);
const FINALIZER: &str = "dataprotection.blobbackup.io/finalizer";
const PLURAL: &str = "blobbackupinstances";

/// A stand-in with the real CRD's coordinates; the real type lives in src/api/blob_backup_instance.rs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dataprotection.blobbackup.io",
    version = "v1alpha1",
    kind = "BlobBackupInstance",
    namespaced,
    status = "TestStatus"
)]
struct TestSpec {
    account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    conditions: Vec<TestCondition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
struct TestCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn instance(name: &str) -> BlobBackupInstance {
    let mut object = BlobBackupInstance::new(
        name,
        TestSpec {
            account: format!("{name}-account"),
            policy: None,
        },
    );
    object.status = Some(TestStatus {
        phase: Some("ignored-on-create".into()),
        ..TestStatus::default()
    });
    object
}

async fn start() -> (FakeApiServer, Client) {
    let server = FakeApiServer::start().await.expect("fake apiserver starts");
    let client = server.client().expect("client for the fake apiserver");
    (server, client)
}

/// The API error a kube call failed with.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => {
            (status.code, status.reason.clone(), status.message.clone())
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Creates `instance(name)` through the API.
async fn create(api: &Api<BlobBackupInstance>, name: &str) -> BlobBackupInstance {
    api.create(&PostParams::default(), &instance(name))
        .await
        .expect("instance created")
}

fn names(list: &ObjectList<BlobBackupInstance>) -> Vec<String> {
    list.items.iter().map(ResourceExt::name_any).collect()
}

fn rv(object: &impl Resource) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .expect("numeric resourceVersion")
}

fn apply_body(status: Value) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
        "kind": "BlobBackupInstance",
        "status": status,
    }))
}

#[tokio::test]
async fn create_get_list_replace_and_patch_follow_apiserver_rules() {
    let (server, client) = start().await;
    let api: Api<BlobBackupInstance> = Api::namespaced(client.clone(), "team-a");

    let created = create(&api, "one").await;
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.status, None, "status is dropped on create");
    let (code, reason, message) =
        api_error(api.create(&PostParams::default(), &instance("one")).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert!(
        message.contains("blobbackupinstances.dataprotection.blobbackup.io \"one\" already exists")
    );
    let (code, reason, _) = api_error(api.get("missing").await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert!(api.get_opt("missing").await.unwrap().is_none());

    create(&api, "two").await;
    create(&Api::namespaced(client.clone(), "team-b"), "three").await;
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&listed), ["one", "two"]);
    assert_eq!(
        listed.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    let all = Api::<BlobBackupInstance>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);

    // Replace: a stale resourceVersion conflicts; a spec change bumps generation.
    let mut changed = created.clone();
    changed.spec.policy = Some("BlobBackup-Policy".into());
    let replaced = api
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert!(rv(&replaced) > rv(&created));
    let (code, reason, _) = api_error(api.replace("one", &PostParams::default(), &changed).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let mut unversioned = replaced.clone();
    unversioned.metadata.resource_version = None;
    let (code, reason, _) = api_error(
        api.replace("one", &PostParams::default(), &unversioned)
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (422, "Invalid"),
        "custom resources need a resourceVersion"
    );

    // A main-resource write ignores status: nothing changes, not even the resourceVersion.
    let mut status_only = replaced.clone();
    status_only.status = Some(TestStatus {
        phase: Some("sneaky".into()),
        ..TestStatus::default()
    });
    let unchanged = api
        .replace("one", &PostParams::default(), &status_only)
        .await
        .unwrap();
    assert_eq!(unchanged.status, None);
    assert_eq!(
        rv(&unchanged),
        rv(&replaced),
        "no-op writes keep the resourceVersion"
    );

    // Merge and JSON patches; strategic merge is refused for custom resources.
    let merged = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"policy": "BlobVaulted-Policy"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.spec.policy.as_deref(), Some("BlobVaulted-Policy"));
    assert_eq!(merged.metadata.generation, Some(3));
    let labelled = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/metadata/labels", "value": null},
                    {"op": "add", "path": "/metadata/labels", "value": {"team": "a"}},
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(labelled.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(
        labelled.metadata.generation,
        Some(3),
        "metadata changes keep generation"
    );
    let failed_test = Patch::Json::<()>(
        serde_json::from_value(json!([
            {"op": "test", "path": "/spec/account", "value": "someone-else"},
        ]))
        .unwrap(),
    );
    let (code, _, _) = api_error(
        api.patch("one", &PatchParams::default(), &failed_test)
            .await,
    );
    assert_eq!(code, 422);
    let (code, reason, _) = api_error(
        api.patch(
            "one",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"policy": "x"}})),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));

    // The status subresource changes only status and never generation.
    let with_status = api
        .patch_status(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"account": "ignored"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        with_status.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Ready")
    );
    assert_eq!(with_status.spec.account, "one-account");
    assert_eq!(with_status.metadata.generation, Some(3));
    let stale_status = api
        .patch_status(
            "one",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": "1"}, "status": {"phase": "Old"}}),
            ),
        )
        .await;
    assert_eq!(
        api_error(stale_status).0,
        409,
        "a resourceVersion in a patch is a precondition"
    );

    assert_eq!(server.request_count(Verb::Patch, PLURAL, Some("status")), 2);
    assert_eq!(server.request_count(Verb::Create, PLURAL, None), 4);
    assert_eq!(
        server.request_count_for(
            Verb::Patch,
            "blobbackupinstances.dataprotection.blobbackup.io",
            None,
            "team-a",
            "one"
        ),
        4
    );
    server.shutdown().await;
}

#[tokio::test]
async fn server_side_apply_owns_fields_per_manager() {
    let (server, client) = start().await;
    let api: Api<BlobBackupInstance> = Api::namespaced(client.clone(), "default");
    let operator = PatchParams::apply("operator").force();

    // Apply creates a missing object; the manager is recorded.
    let spec = json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1", "kind": "BlobBackupInstance",
        "metadata": {"name": "applied", "finalizers": [FINALIZER]},
        "spec": {"account": "acct", "policy": "p1"},
    });
    let created = api
        .patch("applied", &operator, &Patch::Apply(spec.clone()))
        .await
        .unwrap();
    assert_eq!(created.spec.policy.as_deref(), Some("p1"));
    assert_eq!(created.finalizers(), [FINALIZER]);
    let managers = created.metadata.managed_fields.clone().unwrap_or_default();
    assert_eq!(managers.len(), 1);
    assert_eq!(managers[0].manager.as_deref(), Some("operator"));
    assert_eq!(managers[0].operation.as_deref(), Some("Apply"));

    // Status apply: conditions are a map keyed by type; what the manager stops sending goes.
    let first = json!({"observedGeneration": 1, "phase": "Validating", "conditions": [
        {"type": "Ready", "status": "False", "reason": "Validating"},
        {"type": "Reconciling", "status": "True", "reason": "Validating"},
    ]});
    let status = api
        .patch_status("applied", &operator, &apply_body(first))
        .await
        .unwrap();
    assert_eq!(status.status.as_ref().map(|s| s.conditions.len()), Some(2));
    let second = json!({"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Protected"},
    ]});
    let status = api
        .patch_status("applied", &operator, &apply_body(second.clone()))
        .await
        .unwrap();
    let current = status.status.clone().unwrap_or_default();
    assert_eq!(
        current.phase, None,
        "fields the manager no longer applies are removed"
    );
    assert_eq!(
        current.conditions,
        [TestCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("Protected".into())
        }]
    );
    let again = api
        .patch_status("applied", &operator, &apply_body(second))
        .await
        .unwrap();
    assert_eq!(rv(&again), rv(&status), "an identical apply is a no-op");

    // Another manager conflicts on a field it does not own, unless it forces.
    let person = json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1", "kind": "BlobBackupInstance",
        "spec": {"policy": "p2"},
    });
    let (code, reason, message) = api_error(
        api.patch(
            "applied",
            &PatchParams::apply("person"),
            &Patch::Apply(person.clone()),
        )
        .await,
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.contains("conflict with \"operator\""), "{message}");
    assert!(message.contains(".spec.policy"), "{message}");
    let taken = api
        .patch(
            "applied",
            &PatchParams::apply("person").force(),
            &Patch::Apply(person),
        )
        .await
        .unwrap();
    assert_eq!(taken.spec.policy.as_deref(), Some("p2"));
    assert_eq!(taken.metadata.generation, Some(2));

    // The operator re-applying without the field it lost leaves the new owner's value alone;
    // applying a value it does not own now conflicts with "person".
    let without_policy = json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1", "kind": "BlobBackupInstance",
        "metadata": {"finalizers": [FINALIZER]}, "spec": {"account": "acct"},
    });
    let kept = api
        .patch(
            "applied",
            &PatchParams::apply("operator"),
            &Patch::Apply(without_policy),
        )
        .await
        .unwrap();
    assert_eq!(kept.spec.policy.as_deref(), Some("p2"));
    let (code, _, message) = api_error(
        api.patch(
            "applied",
            &PatchParams::apply("operator"),
            &Patch::Apply(spec),
        )
        .await,
    );
    assert_eq!(code, 409);
    assert!(message.contains("conflict with \"person\""), "{message}");

    // Apply needs a field manager, an apiVersion and a kind; apply to a missing status is 404.
    let missing_kind =
        Patch::Apply(json!({"apiVersion": "dataprotection.blobbackup.io/v1alpha1", "spec": {}}));
    assert_eq!(
        api_error(
            api.patch("applied", &PatchParams::apply("operator"), &missing_kind)
                .await
        )
        .0,
        400
    );
    let status_of_missing = api
        .patch_status("nope", &operator, &apply_body(json!({"phase": "x"})))
        .await;
    assert_eq!(api_error(status_of_missing).0, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn deletion_waits_for_finalizers() {
    let (server, client) = start().await;
    let api: Api<BlobBackupInstance> = Api::namespaced(client, "default");
    let mut object = instance("guarded");
    object.metadata.finalizers = Some(vec![FINALIZER.into()]);
    api.create(&PostParams::default(), &object).await.unwrap();

    let kept = api
        .delete("guarded", &DeleteParams::default())
        .await
        .unwrap();
    let kept = kept.left().expect("object kept by its finalizer");
    assert!(kept.metadata.deletion_timestamp.is_some());
    assert_eq!(
        kept.metadata.generation,
        Some(2),
        "setting deletionTimestamp bumps generation"
    );
    let again = api
        .delete("guarded", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        again.left().map(|o| rv(&o)),
        Some(rv(&kept)),
        "deleting again changes nothing"
    );

    let more = Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER, "other/finalizer"]}}));
    let (code, reason, message) =
        api_error(api.patch("guarded", &PatchParams::default(), &more).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.contains("no new finalizers can be added"),
        "{message}"
    );

    let precondition = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    assert_eq!(api_error(api.delete("guarded", &precondition).await).0, 409);

    api.patch(
        "guarded",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        api.get_opt("guarded").await.unwrap().is_none(),
        "removing the last finalizer deletes"
    );

    // The same flow through the in-process helpers.
    let mut object = instance("helper");
    object.metadata.finalizers = Some(vec![FINALIZER.into()]);
    server
        .create(serde_json::to_value(&object).unwrap())
        .unwrap();
    let kept = server
        .delete(PLURAL, "default", "helper")
        .unwrap()
        .expect("kept by finalizer");
    assert!(kept.pointer("/metadata/deletionTimestamp").is_some());
    server
        .set_finalizers(PLURAL, "default", "helper", &[])
        .unwrap();
    assert_eq!(server.get(PLURAL, "default", "helper"), None);
    server.shutdown().await;
}

async fn next_event<K, S>(stream: &mut S) -> watcher::Event<K>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("watch event in time")
        .expect("watch stream open")
        .expect("watch event without error")
}

fn applied_name(event: watcher::Event<BlobBackupInstance>) -> String {
    match event {
        watcher::Event::Apply(object) | watcher::Event::InitApply(object) => object.name_any(),
        other => panic!("expected an applied object, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_sees_changes_and_resumes_after_dropped_watches() {
    let (server, client) = start().await;
    let api: Api<BlobBackupInstance> = Api::namespaced(client, "default");
    create(&api, "before").await;
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    assert!(matches!(
        next_event(&mut stream).await,
        watcher::Event::Init
    ));
    assert_eq!(applied_name(next_event(&mut stream).await), "before");
    assert!(matches!(
        next_event(&mut stream).await,
        watcher::Event::InitDone
    ));

    create(&api, "one").await;
    assert_eq!(applied_name(next_event(&mut stream).await), "one");
    api.patch(
        "one",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"policy": "p"}})),
    )
    .await
    .unwrap();
    match next_event(&mut stream).await {
        watcher::Event::Apply(object) => assert_eq!(object.spec.policy.as_deref(), Some("p")),
        other => panic!("expected the modification, got {other:?}"),
    }
    server
        .wait_for(WAIT, |s| s.open_watches() == 1)
        .await
        .unwrap();
    server.drop_watches();
    create(&api, "two").await;
    assert_eq!(
        applied_name(next_event(&mut stream).await),
        "two",
        "resumed from its resourceVersion"
    );
    api.delete("one", &DeleteParams::default()).await.unwrap();
    match next_event(&mut stream).await {
        watcher::Event::Delete(object) => assert_eq!(object.name_any(), "one"),
        other => panic!("expected the deletion, got {other:?}"),
    }
    assert!(server.request_count(Verb::Watch, PLURAL, None) >= 2);

    // Streaming lists: initial events, then the initial-events-end bookmark.
    let mut streaming = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert!(matches!(
        next_event(&mut streaming).await,
        watcher::Event::Init
    ));
    assert_eq!(applied_name(next_event(&mut streaming).await), "before");
    assert_eq!(applied_name(next_event(&mut streaming).await), "two");
    assert!(matches!(
        next_event(&mut streaming).await,
        watcher::Event::InitDone
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn watch_selectors_bookmarks_and_expired_versions() {
    let options = FakeApiOptions {
        watch_history: 3,
        bookmark_interval: Duration::from_millis(100),
        ..FakeApiOptions::default()
    };
    let server = FakeApiServer::start_with(options).await.unwrap();
    let client = server.client().unwrap();
    let api: Api<BlobBackupInstance> = Api::namespaced(client, "default");
    for name in ["a", "b", "c", "d", "e"] {
        let mut object = instance(name);
        object.metadata.labels = Some(
            [(
                "tier".to_string(),
                if name < "c" { "gold" } else { "bronze" }.to_string(),
            )]
            .into(),
        );
        api.create(&PostParams::default(), &object).await.unwrap();
    }

    // Paging, label and field selectors.
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = api
        .list(&ListParams::default().limit(5).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&rest), ["c", "d", "e"]);
    assert_eq!(rest.metadata.continue_, None);
    let gold = api
        .list(&ListParams::default().labels("tier=gold"))
        .await
        .unwrap();
    assert_eq!(gold.items.len(), 2);
    let not_gold = api
        .list(&ListParams::default().labels("tier notin (gold),!missing"))
        .await
        .unwrap();
    assert_eq!(not_gold.items.len(), 3);
    let named = api
        .list(&ListParams::default().fields("metadata.name=d"))
        .await
        .unwrap();
    assert_eq!(names(&named), ["d"]);
    assert_eq!(
        api_error(
            api.list(&ListParams::default().fields("spec.account=x"))
                .await
        )
        .0,
        400
    );
    let metadata_only = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(metadata_only.items.len(), 5);

    // A label change moves an object into a selector's view as ADDED.
    let current = server.resource_version().to_string();
    let params = WatchParams::default().labels("tier=gold").timeout(2);
    let mut events = api.watch(&params, &current).await.unwrap().boxed();
    api.patch(
        "e",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "gold"}}})),
    )
    .await
    .unwrap();
    let added = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(added, WatchEvent::Added(ref o) if o.name_any() == "e"),
        "{added:?}"
    );
    let bookmark = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(bookmark, WatchEvent::Bookmark(_)), "{bookmark:?}");

    // History holds three events: resuming from "1" is 410 Gone.
    let mut expired = api
        .watch(&WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, expired.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    server.shutdown().await;
}

fn recorder_event(type_: EventType, reason: &str, note: &str) -> RecorderEvent {
    RecorderEvent {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

struct Reconciler {
    client: Client,
    recorder: Recorder,
    cleaned: Mutex<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>);

async fn reconcile(
    object: Arc<BlobBackupInstance>,
    ctx: Arc<Reconciler>,
) -> Result<Action, ReconcileError> {
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<BlobBackupInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, object, |event| async {
        match event {
            FinalizerEvent::Apply(object) => {
                let reference = object.object_ref(&());
                let note =
                    recorder_event(EventType::Normal, "Protected", "backup instance protected");
                ctx.recorder.publish(&note, &reference).await?;
                let status =
                    json!({"observedGeneration": object.metadata.generation, "phase": "Ready"});
                api.patch_status(
                    &object.name_any(),
                    &PatchParams::apply("test-operator").force(),
                    &apply_body(status),
                )
                .await?;
                Ok(Action::await_change())
            }
            FinalizerEvent::Cleanup(object) => {
                ctx.cleaned.lock().unwrap().push(object.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| ReconcileError(Box::new(e)))
}

#[tokio::test]
async fn controller_with_finalizer_reconciles_and_cleans_up() {
    let (server, client) = start().await;
    let reporter = Reporter {
        controller: "bbo-selftest".into(),
        instance: Some("selftest-0".into()),
    };
    let ctx = Arc::new(Reconciler {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        cleaned: Mutex::new(Vec::new()),
    });
    let all: Api<BlobBackupInstance> = Api::all(client.clone());
    let controller = Controller::new(all, watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(50)),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let running = tokio::spawn(controller);

    for (namespace, name) in [("team-a", "one"), ("team-b", "two")] {
        create(&Api::namespaced(client.clone(), namespace), name).await;
    }
    for (namespace, name) in [("team-a", "one"), ("team-b", "two")] {
        let ready = server
            .wait_for_object(PLURAL, namespace, name, WAIT, |o| {
                o.pointer("/status/phase") == Some(&json!("Ready"))
            })
            .await
            .unwrap();
        assert_eq!(
            ready.pointer("/metadata/finalizers/0"),
            Some(&json!(FINALIZER))
        );
        assert_eq!(ready.pointer("/status/observedGeneration"), Some(&json!(1)));
        let events = server.events_for(namespace, name);
        assert_eq!(events.len(), 1, "one Event object per reason: {events:?}");
        assert_eq!(events[0]["reason"], "Protected");
        assert_eq!(events[0]["reportingController"], "bbo-selftest");
    }
    let status_writes =
        server.count_per_object(&[Verb::Patch, Verb::Update], PLURAL, Some("status"));
    assert_eq!(status_writes.len(), 2);

    Api::<BlobBackupInstance>::namespaced(client.clone(), "team-a")
        .delete("one", &DeleteParams::default())
        .await
        .unwrap();
    server
        .wait_for_absent(PLURAL, "team-a", "one", WAIT)
        .await
        .unwrap();
    assert_eq!(*ctx.cleaned.lock().unwrap(), ["one"]);
    assert!(server.get(PLURAL, "team-b", "two").is_some());
    running.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn recorder_creates_then_patches_event_series_in_shared_storage() {
    let (server, client) = start().await;
    let api: Api<BlobBackupInstance> = Api::namespaced(client.clone(), "default");
    let object = create(&api, "noisy").await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "bbo-selftest".into(),
            instance: None,
        },
    );
    let event = recorder_event(
        EventType::Warning,
        "ValidationFailed",
        "UserErrorMissingRequiredPermissions",
    );
    for _ in 0..3 {
        recorder
            .publish(&event, &object.object_ref(&()))
            .await
            .unwrap();
    }
    assert_eq!(
        server.request_count(Verb::Create, "events.events.k8s.io", None),
        1
    );
    assert_eq!(server.request_count(Verb::Patch, "events", None), 2);
    let events = server.events_for("default", "noisy");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].pointer("/series/count"), Some(&json!(3)));

    // The same Event through core/v1, with the old field names.
    let core: Vec<CoreEvent> = Api::<CoreEvent>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(core.len(), 1);
    assert_eq!(core[0].involved_object.name.as_deref(), Some("noisy"));
    assert_eq!(
        core[0].message.as_deref(),
        Some("UserErrorMissingRequiredPermissions")
    );
    assert_eq!(core[0].reporting_component.as_deref(), Some("bbo-selftest"));

    // events.k8s.io/v1 validation: a note over 1 KiB is refused.
    let too_long = RecorderEvent {
        note: Some("x".repeat(1025)),
        reason: "Other".into(),
        ..event
    };
    let (code, reason, message) =
        api_error(recorder.publish(&too_long, &object.object_ref(&())).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("note: Too long"), "{message}");
    let missing: kube::Result<EventV1> = Api::<EventV1>::namespaced(client, "default")
        .create(
            &PostParams::default(),
            &EventV1 {
                metadata: kube::api::ObjectMeta {
                    name: Some("bare".into()),
                    ..Default::default()
                },
                ..EventV1::default()
            },
        )
        .await;
    assert!(api_error(missing).2.contains("eventTime: Required value"));
    server.shutdown().await;
}

/// Whether the manager's next leadership change (within WAIT) makes it the leader.
async fn leads_in_time(manager: &LeaseManager) -> bool {
    tokio::time::timeout(WAIT, manager.changed())
        .await
        .expect("leadership change in time")
        .expect("lease manager works")
}

#[tokio::test]
async fn lease_manager_elects_one_holder_and_hands_over_on_release() {
    let (server, client) = start().await;
    let build = |identity: &str| {
        LeaseManagerBuilder::new(client.clone(), "blob-backup-operator")
            .with_namespace("default")
            .with_identity(identity)
            .with_duration(2)
            .with_grace(1)
            .build()
    };
    let first = build("replica-0").await.unwrap();
    let second = build("replica-1").await.unwrap();
    assert!(leads_in_time(&first).await, "replica-0 leads");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), second.changed())
            .await
            .is_err(),
        "replica-1 waits while the lease is held"
    );
    let holder = |server: &FakeApiServer| {
        server
            .get("leases", "default", "blob-backup-operator")
            .and_then(|lease| lease.pointer("/spec/holderIdentity").cloned())
    };
    assert_eq!(holder(&server), Some(json!("replica-0")));

    // Taking a held lease by apply conflicts with the holder's field manager.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let grab = Patch::Apply(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "replica-1"},
    }));
    let (code, reason, _) = api_error(
        leases
            .patch(
                "blob-backup-operator",
                &PatchParams::apply("kube-lease-manager-replica-1"),
                &grab,
            )
            .await,
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    first.release().await.unwrap();
    assert_eq!(holder(&server), None);
    assert!(leads_in_time(&second).await, "replica-1 takes over");
    assert_eq!(holder(&server), Some(json!("replica-1")));
    assert!(server.request_count(Verb::Patch, "leases.coordination.k8s.io", None) >= 4);
    server.shutdown().await;
}

#[tokio::test]
async fn faults_counters_and_kubeconfig() {
    let (server, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client, "default");
    server.fail_next(1, 500);
    let (code, reason, _) = api_error(leases.list(&ListParams::default()).await);
    assert_eq!((code, reason.as_str()), (500, "InternalError"));
    assert!(leases.list(&ListParams::default()).await.is_ok());

    server.fail_next_where(1, 409, |info| info.verb == Verb::Get);
    assert!(leases.list(&ListParams::default()).await.is_ok());
    assert_eq!(api_error(leases.get("x").await).0, 409);
    assert_eq!(api_error(leases.get("x").await).0, 404);

    server.set_failure_share(0.5, 500);
    let mut failures = 0;
    for _ in 0..6 {
        failures += usize::from(leases.list(&ListParams::default()).await.is_err());
    }
    assert_eq!(failures, 3);
    server.set_failure_share(0.0, 500);
    let injected = server.requests().iter().filter(|r| r.injected).count();
    assert_eq!(injected, 5);
    assert_eq!(server.request_count(Verb::List, "leases", None), 9);

    // A kubeconfig for another process reaches the same server.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(config.default_namespace, "default");
    let other = Client::try_from(config).unwrap();
    server.clear_requests();
    Api::<Lease>::default_namespaced(other)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(server.request_count(Verb::List, "leases", None), 1);
    server.shutdown().await;
}
