//! An in-memory Kubernetes API server for controller tests, leader-election tests and the
//! convergence benchmark.
//!
//! It earns its place where the real server (the envtest tier: tests/envtest_scenarios.rs,
//! crates/testkit/src/real_cluster.rs, crates/testkit) cannot go: injected faults (failed requests,
//! latency, dropped watches), exact request accounting, thousands of objects for the benchmark,
//! and the quickstart without a cluster. What it does NOT model, so a test that needs any of it
//! belongs in the real tier:
//! - no OpenAPI schema: no validation against the CRD, no defaulting, no pruning of unknown
//!   fields, no CEL rules (`x-kubernetes-validations`), no printer columns;
//! - no authentication or authorization: no RBAC, no ServiceAccounts, every client is admin;
//! - no admission, no API discovery (only `/version`), no namespace lifecycle, no
//!   garbage collection, no field-selector index beyond name and namespace;
//! - server-side apply and strategic merge are approximations (see the end of this header).
//!
//! [`FakeApiServer::start`] serves plain HTTP on `127.0.0.1:0` (axum), so a [`kube::Client`] from
//! [`FakeApiServer::client`] talks to it exactly as to a real apiserver, and a separate operator
//! process can use it through [`FakeApiServer::write_kubeconfig`]. Objects are kept as JSON,
//! keyed by resource, namespace and name; resources come from a small table
//! ([`default_resources`]: `blobbackupinstances` and `blobrestores` of `dataprotection.blobbackup.io/v1alpha1`, core/v1
//! and events.k8s.io/v1 `events`, `coordination.k8s.io/v1` `leases`, core/v1 `namespaces`).
//!
//! What behaves as in a real apiserver:
//! - get, list (namespaced and all-namespaces, `limit`/`continue` paging, label selectors,
//!   `metadata.name`/`metadata.namespace` field selectors), watch (`resourceVersion`,
//!   `allowWatchBookmarks`, `timeoutSeconds`, `sendInitialEvents` with the initial-events-end
//!   bookmark; ADDED/MODIFIED/DELETED after the given resourceVersion, selector transitions
//!   become ADDED/DELETED, 410 Gone as an ERROR event once the history has been compacted);
//! - create (201, 409 AlreadyExists, `generateName`, name validation, status dropped when the
//!   resource has a status subresource), replace (409 Conflict on a stale resourceVersion; custom
//!   resources need one), merge / JSON (RFC 6902, `test` of a missing path against null passes as
//!   in the apiserver) / strategic merge patches (415 for custom resources) and server-side apply
//!   (`fieldManager`, `force`; creates missing objects), `/status` writes touching only
//!   `.status`, main-resource writes ignoring `.status`, `metadata.generation` bumped on
//!   spec changes and on the deletion timestamp, a global string resourceVersion counter, uid and
//!   creationTimestamp on create, no-op writes that change nothing (no new resourceVersion, no
//!   watch event);
//! - delete with finalizers (deletionTimestamp set, MODIFIED, 202; removing the last finalizer
//!   later deletes; new finalizers are refused while deleting), preconditions, delete collection;
//! - core/v1 events and events.k8s.io/v1 events share one storage, as in Kubernetes; writes
//!   through events.k8s.io/v1 are validated like the apiserver does (required fields, note of at
//!   most 1 KiB, type Normal or Warning);
//! - errors are `kind: Status` bodies with the apiserver's reasons and messages.
//!
//! Accounting and control: every HTTP request is counted by (verb, resource, subresource,
//! namespace, name) and, unless `record_requests` is off, kept as a [`RequestRecord`] (status
//! code, patch type, field manager, whether it changed anything). The in-process helpers
//! (`create`, `get`, `edit`, `delete`, ...) act on the same store with the same rules but are not
//! counted. Faults (`fail_next`, `set_failure_share`, `hang_where`), latency and `drop_watches` simulate a
//! troubled apiserver.
//!
//! Approximations:
//! - Server-side apply tracks field ownership per (manager, operation, subresource) at leaf
//!   granularity. Lists are atomic except `metadata.finalizers` (a set), `metadata.ownerReferences`
//!   (a map keyed by `uid`) and any list named `conditions` (a map keyed by `type`). Applying
//!   conflicts (409) when a field owned by another manager would change value; fields the applier
//!   owned before and no longer sends are removed unless someone else owns them; updates take
//!   ownership of the fields they change. `metadata.managedFields` is rendered (FieldsV1) but
//!   ignored on input. No schema: no defaulting, pruning of unknown fields or validation beyond
//!   names and events; nulls are dropped.
//! - Strategic merge patch is a JSON merge patch with `$`-directives dropped (fine for Lease and
//!   Event, which have no merge-keyed lists).
//! - Lists always serve the latest state (`resourceVersion`/`resourceVersionMatch` ignored); a
//!   `continue` token pages through the live store and reports the first page's resourceVersion.
//! - No namespace lifecycle (objects may live in namespaces that do not exist), no
//!   propagationPolicy finalizers, no garbage collection through ownerReferences, no auth.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Field manager recorded for writes made through the in-process helpers.
pub const HELPER_FIELD_MANAGER: &str = "fake-apiserver";
/// Largest request body accepted, as the apiserver's 3 MiB limit.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Events queued for live watches before a slow one is cut off (it then resumes from history).
const BROADCAST_CAPACITY: usize = 1 << 16;
/// Names of ObjectMeta fields that server-side apply tracks.
const TRACKED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

// ---------------------------------------------------------------------------------------------
// Resource table and options
// ---------------------------------------------------------------------------------------------

/// One kind of object the server stores, served under `/apis/{group}/{version}` (`/api/v1` for
/// the core group).
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub has_status: bool,
    /// A custom resource: `metadata.generation` tracks spec changes, PUT needs a
    /// resourceVersion and strategic merge patch is refused, as for CRDs.
    pub custom: bool,
    /// Served from another resource's storage with a conversion.
    pub view: Option<View>,
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` as the apiserver names resources in messages (`plural` for core).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn kind_qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// Conversions between a served resource and the storage it shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// core/v1 `events`, stored as events.k8s.io/v1 `events`.
    CoreV1Event,
}

/// The resources the operator and its libraries use.
pub fn default_resources() -> Vec<ResourceType> {
    let builtin = |group, version, plural, kind, namespaced, has_status| ResourceType {
        group,
        version,
        plural,
        kind,
        namespaced,
        has_status,
        custom: false,
        view: None,
    };
    vec![
        ResourceType {
            custom: true,
            ..builtin(
                "dataprotection.blobbackup.io",
                "v1alpha1",
                "blobbackupinstances",
                "BlobBackupInstance",
                true,
                true,
            )
        },
        ResourceType {
            custom: true,
            ..builtin(
                "dataprotection.blobbackup.io",
                "v1alpha1",
                "blobrestores",
                "BlobRestore",
                true,
                true,
            )
        },
        builtin("events.k8s.io", "v1", "events", "Event", true, false),
        ResourceType {
            view: Some(View::CoreV1Event),
            ..builtin("", "v1", "events", "Event", true, false)
        },
        builtin("coordination.k8s.io", "v1", "leases", "Lease", true, false),
        builtin("", "v1", "namespaces", "Namespace", false, true),
    ]
}

/// Settings for [`FakeApiServer::start_with`].
#[derive(Clone, Debug)]
pub struct FakeApiOptions {
    pub resources: Vec<ResourceType>,
    /// Watch events kept for resuming watches; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// How often open watches that asked for bookmarks receive one.
    pub bookmark_interval: Duration,
    /// Watch length when the client sends no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Keep every request for [`FakeApiServer::requests`] (counters are always kept).
    pub record_requests: bool,
    /// The `major.minor` that `GET /version` answers.
    pub kubernetes_version: (u32, u32),
}

impl Default for FakeApiOptions {
    fn default() -> Self {
        Self {
            resources: default_resources(),
            watch_history: 100_000,
            bookmark_interval: Duration::from_secs(5),
            default_watch_timeout: Duration::from_secs(1800),
            record_requests: true,
            kubernetes_version: (1, 33),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public request accounting and errors
// ---------------------------------------------------------------------------------------------

/// The apiserver's verbs (as in audit logs and RBAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        })
    }
}

/// The body format of a PATCH request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    fn from_content_type(value: &str) -> Option<Self> {
        let media = value.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// What a request addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub verb: Verb,
    pub group: String,
    /// The plural resource name, e.g. `blobbackupinstances`.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl RequestInfo {
    /// True when `resource` is this request's plural or `plural.group`.
    pub fn is_resource(&self, resource: &str) -> bool {
        names_resource(&self.group, &self.resource, resource)
    }
}

/// One served request, for assertions and benchmark reports.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub info: RequestInfo,
    pub patch_type: Option<PatchType>,
    pub field_manager: Option<String>,
    /// HTTP status code of the response.
    pub status: u16,
    /// Whether the request changed stored state (no-op writes do not).
    pub changed: bool,
    /// Whether the response was an injected fault.
    pub injected: bool,
}

/// A Kubernetes API error, returned as a `kind: Status` body.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": rt.group, "kind": rt.plural}));
        self
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// `{plural.group} "{name}" {what}`, with details naming the object.
    fn about(code: u16, reason: &str, rt: &ResourceType, name: &str, what: &str) -> Self {
        let message = format!("{} \"{name}\" {what}", rt.qualified());
        Self::new(code, reason, message).with_details(rt, name)
    }

    fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::about(404, "NotFound", rt, name, "not found")
    }

    fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::about(409, "AlreadyExists", rt, name, "already exists")
    }

    fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified()
            ),
        )
        .with_details(rt, name)
    }

    fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    fn invalid(rt: &ResourceType, name: &str, causes: &[String]) -> Self {
        let list = match causes {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut error = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {list}", rt.kind_qualified()),
        );
        error.details = Some(json!({
            "name": name, "group": rt.group, "kind": rt.kind,
            "causes": causes.iter().map(|c| json!({"reason": "FieldValueInvalid", "message": c})).collect::<Vec<_>>(),
        }));
        error
    }

    fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self::new(
            code,
            reason,
            format!("fake apiserver: injected fault ({code})"),
        )
    }

    /// The `kind: Status` body the apiserver sends.
    pub fn status_body(&self) -> Value {
        let mut body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        body
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &self.status_body())
    }
}

/// A [`FakeApiServer::wait_for`] condition did not hold in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("condition not met within {0:?}")]
pub struct WaitTimeout(pub Duration);

// ---------------------------------------------------------------------------------------------
// The server handle
// ---------------------------------------------------------------------------------------------

/// A running fake apiserver; see the module docs for its semantics.
pub struct FakeApiServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts a server with [`default_resources`] on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(FakeApiOptions::default()).await
    }

    /// Starts a server with the given resource table and limits on `127.0.0.1:0`.
    pub async fn start_with(options: FakeApiOptions) -> std::io::Result<Self> {
        let storage = storage_indexes(&options.resources)?;
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let inner = Arc::new(Inner {
            storage,
            options,
            state: Mutex::new(StoreState::default()),
            events,
            epoch: watch::Sender::new(0),
            revision: watch::Sender::new(0),
            open_watches: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .fallback(serve_request)
            .with_state(inner.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                eprintln!("fake apiserver stopped: {error}");
            }
        });
        let server = Self {
            inner,
            addr,
            stop: Some(stop),
            task: Some(task),
        };
        // Every API server has it, and the operator names its cluster after its uid. A table
        // without namespaces just has none.
        let _ = server.create(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "kube-system"},
        }));
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube config for this server with default namespace `default`.
    pub fn kube_config(&self) -> kube::Config {
        let uri = http::Uri::from_maybe_shared(self.url()).unwrap_or_default();
        kube::Config::new(uri)
    }

    /// A client for this server with default namespace `default`.
    pub fn client(&self) -> kube::Result<kube::Client> {
        self.client_in("default")
    }

    /// A client for this server with the given default namespace.
    pub fn client_in(&self, namespace: &str) -> kube::Result<kube::Client> {
        // kube's rustls connector needs a process-wide crypto provider even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = self.kube_config();
        config.default_namespace = namespace.to_string();
        kube::Client::try_from(config)
    }

    /// Writes a kubeconfig (context `fake-apiserver`, namespace `default`) for other processes.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        // A fixed document with one URL in it; no serializer needed.
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake-apiserver\n  cluster:\n    server: {}\n\
             users:\n- name: fake-apiserver\n  user: {{}}\ncontexts:\n- name: fake-apiserver\n  context:\n    \
             cluster: fake-apiserver\n    user: fake-apiserver\n    namespace: default\n\
             current-context: fake-apiserver\n",
            self.url()
        );
        std::fs::write(path, text)
    }

    /// Creates an object (its `apiVersion` and `kind` pick the resource; namespace defaults to
    /// `default`), as a POST would, without counting a request.
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        let api_version = object.get("apiVersion").and_then(Value::as_str);
        let kind = object.get("kind").and_then(Value::as_str);
        let res = self
            .inner
            .resources()
            .iter()
            .position(|rt| Some(rt.api_version().as_str()) == api_version && Some(rt.kind) == kind)
            .ok_or_else(ApiError::no_route)?;
        let namespace = if self.inner.resources()[res].namespaced {
            meta_str(&object, "namespace")
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let mut st = self.inner.lock();
        let outcome = self
            .inner
            .create(&mut st, res, &namespace, object, &WriteCtx::helper())?;
        Ok(self.inner.present(res, &outcome.object).into_owned())
    }

    /// The object, or None. `resource` is a plural (`leases`) or `plural.group`; plain `events`
    /// means events.k8s.io/v1. `namespace` is "" for cluster-scoped resources.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = self.inner.resolve(resource)?;
        let key = self.inner.key(res, namespace, name);
        let st = self.inner.lock();
        let stored = st.objects.get(&key)?;
        Some(self.inner.present(res, &stored.obj).into_owned())
    }

    /// All objects of a resource in all namespaces, ordered by namespace and name.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        self.list_where(resource, None)
    }

    /// All objects of a resource in one namespace.
    pub fn list_in(&self, resource: &str, namespace: &str) -> Vec<Value> {
        self.list_where(resource, Some(namespace))
    }

    fn list_where(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(res) = self.inner.resolve(resource) else {
            return Vec::new();
        };
        let st = self.inner.lock();
        self.inner
            .scan(&st, res, namespace, None)
            .map(|(_, stored)| self.inner.present(res, &stored.obj).into_owned())
            .collect()
    }

    /// Edits an object out of band like a PUT would: of the main resource (status changes are
    /// ignored) or of `/status` (only status changes count).
    pub fn edit(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        sub: Subresource,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiError> {
        let (res, key) = self.inner.locate(resource, namespace, name)?;
        let mut st = self.inner.lock();
        let live = self.inner.live(&st, res, &key)?;
        let mut doc = self.inner.present(res, &live.obj).into_owned();
        edit(&mut doc);
        let target = Target { res, key, sub };
        let outcome =
            self.inner
                .replace(&mut st, &target, live, doc, false, &WriteCtx::helper())?;
        Ok(self.inner.present(res, &outcome.object).into_owned())
    }

    /// Replaces an object's finalizers (an empty list lets a terminating object go).
    pub fn set_finalizers(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        finalizers: &[&str],
    ) -> Result<Value, ApiError> {
        self.edit(resource, namespace, name, Subresource::Main, |doc| {
            if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("finalizers".into(), json!(finalizers));
            }
        })
    }

    /// Deletes an object as a DELETE would: returns the object when finalizers keep it
    /// (now with a deletionTimestamp), None when it is gone.
    pub fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let (res, key) = self.inner.locate(resource, namespace, name)?;
        let mut st = self.inner.lock();
        let outcome = self
            .inner
            .delete(&mut st, res, &key, &Value::Null, &WriteCtx::helper())?;
        Ok(st
            .objects
            .get(&key)
            .map(|_| self.inner.present(res, &outcome.object).into_owned()))
    }

    /// events.k8s.io/v1 events (however they were written) whose `regarding` is the object.
    pub fn events_for(&self, namespace: &str, name: &str) -> Vec<Value> {
        self.list("events.events.k8s.io")
            .into_iter()
            .filter(|event| {
                let regarding = event.get("regarding");
                let field = |f: &str| regarding.and_then(|r| r.get(f)).and_then(Value::as_str);
                field("name") == Some(name) && field("namespace").unwrap_or_default() == namespace
            })
            .collect()
    }

    /// Waits until `done` holds, re-checking on every store change and every 20 ms.
    pub async fn wait_for<F>(&self, timeout: Duration, mut done: F) -> Result<(), WaitTimeout>
    where
        F: FnMut(&Self) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut revision = self.inner.revision.subscribe();
        loop {
            if done(self) {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(WaitTimeout(timeout));
            }
            let tick = (deadline - now).min(Duration::from_millis(20));
            let _ = tokio::time::timeout(tick, revision.changed()).await;
        }
    }

    /// Waits until the object exists and `done` holds for it; returns it.
    pub async fn wait_for_object<F>(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        timeout: Duration,
        mut done: F,
    ) -> Result<Value, WaitTimeout>
    where
        F: FnMut(&Value) -> bool,
    {
        let mut found = None;
        self.wait_for(timeout, |server| {
            found = server
                .get(resource, namespace, name)
                .filter(|object| done(object));
            found.is_some()
        })
        .await?;
        found.ok_or(WaitTimeout(timeout))
    }

    /// Waits until the object is gone.
    pub async fn wait_for_absent(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        self.wait_for(timeout, |server| {
            server.get(resource, namespace, name).is_none()
        })
        .await
    }

    /// Every request served so far (when `record_requests` is on).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.lock().requests.clone()
    }

    /// Forgets recorded requests and counters.
    pub fn clear_requests(&self) {
        let mut st = self.inner.lock();
        st.requests.clear();
        st.counts.clear();
    }

    /// Requests with this verb on `resource` (plural or `plural.group`) and subresource.
    pub fn request_count(&self, verb: Verb, resource: &str, subresource: Option<&str>) -> u64 {
        self.inner
            .lock()
            .counts
            .iter()
            .filter(|(key, _)| key.matches(verb, resource, subresource))
            .map(|(_, count)| count)
            .sum()
    }

    /// Like [`request_count`](Self::request_count), for one object.
    pub fn request_count_for(
        &self,
        verb: Verb,
        resource: &str,
        subresource: Option<&str>,
        namespace: &str,
        name: &str,
    ) -> u64 {
        self.count_per_object(&[verb], resource, subresource)
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests with any of `verbs` per (namespace, name), e.g. status writes per instance:
    /// `count_per_object(&[Verb::Patch, Verb::Update], "blobbackupinstances", Some("status"))`.
    pub fn count_per_object(
        &self,
        verbs: &[Verb],
        resource: &str,
        subresource: Option<&str>,
    ) -> BTreeMap<(String, String), u64> {
        let st = self.inner.lock();
        let mut out = BTreeMap::new();
        for (key, count) in &st.counts {
            let Some(name) = &key.name else { continue };
            if verbs
                .iter()
                .any(|verb| key.matches(*verb, resource, subresource))
            {
                *out.entry((key.namespace.clone().unwrap_or_default(), name.clone()))
                    .or_insert(0) += count;
            }
        }
        out
    }

    /// Answers the next `count` requests with `status` (and a matching Status body).
    pub fn fail_next(&self, count: u64, status: u16) {
        self.inner.lock().faults.push(FaultRule {
            remaining: count,
            status,
            filter: None,
        });
    }

    /// Answers the next `count` requests for which `filter` holds with `status`.
    pub fn fail_next_where(
        &self,
        count: u64,
        status: u16,
        filter: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static,
    ) {
        self.inner.lock().faults.push(FaultRule {
            remaining: count,
            status,
            filter: Some(Arc::new(filter)),
        });
    }

    /// Leaves every request for which `filter` holds unanswered, as a hung connection would
    /// (no answer, no error), until the server drops its connections (`drop_watches`,
    /// `shutdown` or drop), then answers 503.
    pub fn hang_where(&self, filter: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static) {
        self.inner.lock().hangs.push(Arc::new(filter));
    }

    /// Answers a share (0.0 to 1.0) of all requests with `status`, evenly spread and
    /// deterministic (0.25 fails every fourth request). 0.0 turns it off.
    pub fn set_failure_share(&self, share: f64, status: u16) {
        let mut st = self.inner.lock();
        st.failure_share = (share > 0.0).then_some((share.min(1.0), status));
        st.share_credit = 0.0;
    }

    /// Delays every request by `latency` before it is served.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.lock().latency = latency;
    }

    /// Ends every open watch stream, as an apiserver restart or a load balancer blip would.
    pub fn drop_watches(&self) {
        self.inner.epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.inner.open_watches.load(Ordering::SeqCst)
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }

    /// Ends watches and stops serving.
    pub async fn shutdown(mut self) {
        self.drop_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.drop_watches();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------------

/// (storage index, namespace or "" when cluster-scoped, name)
type ObjKey = (usize, String, String);
type RequestFilter = Arc<dyn Fn(&RequestInfo) -> bool + Send + Sync>;

#[derive(Clone)]
struct Stored {
    obj: Arc<Value>,
    managed: Vec<ssa::Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

struct WatchRecord {
    rv: u64,
    storage: usize,
    event: EventType,
    object: Arc<Value>,
    previous: Option<Arc<Value>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CountKey {
    verb: Verb,
    group: String,
    resource: String,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl CountKey {
    fn matches(&self, verb: Verb, resource: &str, subresource: Option<&str>) -> bool {
        self.verb == verb
            && names_resource(&self.group, &self.resource, resource)
            && self.subresource.as_deref() == subresource
    }
}

/// Whether `query` is `plural` or `plural.group`.
fn names_resource(group: &str, plural: &str, query: &str) -> bool {
    query == plural
        || (!group.is_empty()
            && query
                .strip_prefix(plural)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(group))
}

struct FaultRule {
    remaining: u64,
    status: u16,
    filter: Option<RequestFilter>,
}

#[derive(Default)]
struct StoreState {
    rv: u64,
    objects: BTreeMap<ObjKey, Stored>,
    history: VecDeque<Arc<WatchRecord>>,
    compacted_rv: u64,
    requests: Vec<RequestRecord>,
    counts: HashMap<CountKey, u64>,
    faults: Vec<FaultRule>,
    /// Requests these match are never answered (see `hang_where`).
    hangs: Vec<RequestFilter>,
    failure_share: Option<(f64, u16)>,
    share_credit: f64,
    latency: Duration,
}

struct Inner {
    storage: Vec<usize>,
    options: FakeApiOptions,
    state: Mutex<StoreState>,
    events: broadcast::Sender<Arc<WatchRecord>>,
    epoch: watch::Sender<u64>,
    revision: watch::Sender<u64>,
    open_watches: AtomicUsize,
}

/// The part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

/// An addressed object: resource index as served, storage key, subresource.
struct Target {
    res: usize,
    key: ObjKey,
    sub: Subresource,
}

struct WriteCtx {
    manager: String,
    dry_run: bool,
    force: bool,
}

impl WriteCtx {
    fn helper() -> Self {
        Self {
            manager: HELPER_FIELD_MANAGER.to_string(),
            dry_run: false,
            force: false,
        }
    }
}

struct Outcome {
    status: StatusCode,
    object: Arc<Value>,
    changed: bool,
}

fn storage_indexes(resources: &[ResourceType]) -> std::io::Result<Vec<usize>> {
    resources
        .iter()
        .enumerate()
        .map(|(index, rt)| match rt.view {
            None => Ok(index),
            Some(View::CoreV1Event) => resources
                .iter()
                .position(|r| {
                    r.group == "events.k8s.io" && r.plural == "events" && r.view.is_none()
                })
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "core/v1 events need events.k8s.io/v1 events in the resource table",
                    )
                }),
        })
        .collect()
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, StoreState> {
        // A panicking test thread must not wedge the server for the others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn resources(&self) -> &[ResourceType] {
        &self.options.resources
    }

    fn resolve(&self, resource: &str) -> Option<usize> {
        let resources = self.resources();
        resources
            .iter()
            .position(|rt| !rt.group.is_empty() && rt.qualified() == resource)
            .or_else(|| {
                resources
                    .iter()
                    .position(|rt| rt.plural == resource && rt.view.is_none())
            })
            .or_else(|| resources.iter().position(|rt| rt.plural == resource))
    }

    /// A helper's resource name, namespace and name as a resource index and storage key.
    fn locate(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(usize, ObjKey), ApiError> {
        let res = self.resolve(resource).ok_or_else(ApiError::no_route)?;
        Ok((res, self.key(res, namespace, name)))
    }

    /// The stored object, or the apiserver's 404.
    fn live(&self, st: &StoreState, res: usize, key: &ObjKey) -> Result<Stored, ApiError> {
        st.objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.resources()[res], &key.2))
    }

    fn key(&self, res: usize, namespace: &str, name: &str) -> ObjKey {
        let namespace = if self.resources()[res].namespaced {
            namespace.to_string()
        } else {
            String::new()
        };
        (self.storage[res], namespace, name.to_string())
    }

    fn storage_type(&self, res: usize) -> &ResourceType {
        &self.resources()[self.storage[res]]
    }

    fn present<'a>(&self, res: usize, obj: &'a Value) -> Cow<'a, Value> {
        match self.resources()[res].view {
            Some(View::CoreV1Event) => Cow::Owned(events::to_core(obj)),
            None => Cow::Borrowed(obj),
        }
    }

    fn to_storage(&self, res: usize, obj: Value) -> Value {
        match self.resources()[res].view {
            Some(View::CoreV1Event) => events::from_core(obj),
            None => obj,
        }
    }

    /// Objects of a resource, optionally in one namespace, optionally after a key.
    fn scan<'a>(
        &self,
        st: &'a StoreState,
        res: usize,
        namespace: Option<&'a str>,
        after: Option<ObjKey>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Stored)> + 'a {
        let storage = self.storage[res];
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Included((
                storage,
                namespace.unwrap_or_default().to_string(),
                String::new(),
            )),
        };
        st.objects
            .range((start, Bound::Unbounded))
            .take_while(move |(key, _)| key.0 == storage && namespace.is_none_or(|ns| key.1 == ns))
    }

    fn commit(
        &self,
        st: &mut StoreState,
        key: ObjKey,
        mut obj: Value,
        managed: Vec<ssa::Entry>,
        event: EventType,
        previous: Option<Arc<Value>>,
    ) -> Arc<Value> {
        st.rv += 1;
        set_meta(
            &mut obj,
            "resourceVersion",
            Value::String(st.rv.to_string()),
        );
        let obj = Arc::new(obj);
        if event == EventType::Deleted {
            st.objects.remove(&key);
        } else {
            st.objects.insert(
                key.clone(),
                Stored {
                    obj: obj.clone(),
                    managed,
                },
            );
        }
        let record = Arc::new(WatchRecord {
            rv: st.rv,
            storage: key.0,
            event,
            object: obj.clone(),
            previous,
        });
        st.history.push_back(record.clone());
        while st.history.len() > self.options.watch_history {
            if let Some(old) = st.history.pop_front() {
                st.compacted_rv = old.rv;
            }
        }
        // No receivers just means no open watches.
        let _ = self.events.send(record);
        self.revision.send_replace(st.rv);
        obj
    }

    // ---- create -----------------------------------------------------------------------------

    fn create(
        &self,
        st: &mut StoreState,
        res: usize,
        namespace: &str,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Outcome, ApiError> {
        let rt = &self.resources()[res];
        check_type(rt, &body, false)?;
        if meta_str(&body, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            // What etcd3 storage answers (as a 500) when a client sends an object it read.
            return Err(ApiError::new(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut obj = self.to_storage(res, body);
        self.prepare_new(res, namespace, &mut obj)?;
        self.insert_new(st, res, namespace, obj, ssa::Operation::Update, ctx)
    }

    /// Name, namespace and server-owned metadata of a new object.
    fn prepare_new(&self, res: usize, namespace: &str, obj: &mut Value) -> Result<(), ApiError> {
        let rt = &self.resources()[res];
        let body_namespace = meta_str(obj, "namespace").map(str::to_string);
        if rt.namespaced
            && body_namespace
                .as_deref()
                .is_some_and(|ns| !ns.is_empty() && ns != namespace)
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let name = match meta_str(obj, "name").filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => match meta_str(obj, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => format!(
                    "{prefix}{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..5]
                ),
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        &[
                            "metadata.name: Required value: name or generateName is required"
                                .into(),
                        ],
                    ));
                }
            },
        };
        if rt.has_status
            && let Some(map) = obj.as_object_mut()
        {
            map.remove("status");
        }
        let meta = meta_mut(obj);
        meta.insert("name".into(), Value::String(name));
        if rt.namespaced {
            meta.insert("namespace".into(), Value::String(namespace.to_string()));
        } else {
            meta.remove("namespace");
        }
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "generation",
        ] {
            meta.remove(field);
        }
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        meta.insert("creationTimestamp".into(), Value::String(now()));
        if self.storage_type(res).custom {
            meta.insert("generation".into(), json!(1));
        }
        let storage_rt = self.storage_type(res);
        set_type(obj, storage_rt);
        normalize(obj);
        Ok(())
    }

    fn insert_new(
        &self,
        st: &mut StoreState,
        res: usize,
        namespace: &str,
        mut obj: Value,
        operation: ssa::Operation,
        ctx: &WriteCtx,
    ) -> Result<Outcome, ApiError> {
        // The creator owns every field it set.
        let scope = scope_of(self.storage_type(res), Subresource::Main);
        let managed = vec![ssa::Entry::new(
            &ctx.manager,
            operation,
            scope,
            ssa::fields_of(&obj, scope),
        )];
        let rt = &self.resources()[res];
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        self.validate(res, &obj, None)?;
        let key = self.key(res, namespace, &name);
        if st.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        render_managed(&mut obj, &managed, &self.storage_type(res).api_version());
        let object = if ctx.dry_run {
            Arc::new(obj)
        } else {
            self.commit(st, key, obj, managed, EventType::Added, None)
        };
        Ok(Outcome {
            status: StatusCode::CREATED,
            object,
            changed: !ctx.dry_run,
        })
    }

    // ---- update and patch -------------------------------------------------------------------

    /// PUT semantics for `incoming` (in the served form of `target.res`).
    fn replace(
        &self,
        st: &mut StoreState,
        target: &Target,
        live: Stored,
        incoming: Value,
        require_rv: bool,
        ctx: &WriteCtx,
    ) -> Result<Outcome, ApiError> {
        let rt = &self.resources()[target.res];
        let name = &target.key.2;
        check_type(rt, &incoming, false)?;
        check_identity(rt, &target.key, &incoming)?;
        match meta_str(&incoming, "resourceVersion").filter(|rv| !rv.is_empty()) {
            Some(rv) if Some(rv) != meta_str(&live.obj, "resourceVersion") => {
                return Err(ApiError::stale(rt, name));
            }
            None if require_rv && self.storage_type(target.res).custom => {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    &["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update".into()],
                ));
            }
            _ => {}
        }
        let incoming = self.to_storage(target.res, incoming);
        let storage_rt = self.storage_type(target.res);
        let mut new = match target.sub {
            Subresource::Status => {
                let mut new = (*live.obj).clone();
                set_top(&mut new, "status", incoming.get("status").cloned());
                new
            }
            Subresource::Main => {
                let mut new = incoming;
                if storage_rt.has_status {
                    set_top(&mut new, "status", live.obj.get("status").cloned());
                }
                new
            }
        };
        carry_server_meta(&live.obj, &mut new, storage_rt, &target.key);
        normalize(&mut new);
        let mut managed = live.managed.clone();
        ssa::record_update(
            &mut managed,
            &live.obj,
            &new,
            &ctx.manager,
            scope_of(storage_rt, target.sub),
            &now(),
        );
        self.write_existing(st, target, &live, new, managed, ctx)
    }

    fn patch(
        &self,
        st: &mut StoreState,
        target: &Target,
        patch_type: PatchType,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Outcome, ApiError> {
        if patch_type == PatchType::Apply {
            return self.apply(st, target, body, ctx);
        }
        if patch_type == PatchType::Strategic && self.storage_type(target.res).custom {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let live = self.live(st, target.res, &target.key)?;
        let mut doc = self.present(target.res, &live.obj).into_owned();
        match patch_type {
            PatchType::Merge | PatchType::Strategic => {
                let mut patch: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
                if patch_type == PatchType::Strategic {
                    drop_directives(&mut patch);
                }
                json_patch::merge(&mut doc, &patch);
            }
            PatchType::Json => {
                let patch: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                // evanphx/json-patch (the apiserver's) treats a missing path as equal to null;
                // kube-runtime's finalizer helper relies on it.
                let ops: Vec<_> = patch
                    .0
                    .into_iter()
                    .filter(|op| match op {
                        json_patch::PatchOperation::Test(test) => {
                            !(test.value.is_null() && doc.pointer(test.path.as_str()).is_none())
                        }
                        _ => true,
                    })
                    .collect();
                json_patch::patch(&mut doc, &ops)
                    .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
            }
            PatchType::Apply => return Err(ApiError::bad_request("unexpected apply patch")),
        }
        self.replace(st, target, live, doc, false, ctx)
    }

    fn apply(
        &self,
        st: &mut StoreState,
        target: &Target,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Outcome, ApiError> {
        let rt = &self.resources()[target.res];
        let storage_rt = self.storage_type(target.res);
        let name = &target.key.2;
        if ctx.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
            ));
        }
        let applied = parse_apply_body(body)?;
        check_type(rt, &applied, true)?;
        check_identity(rt, &target.key, &applied)?;
        let applied = self.to_storage(target.res, applied);
        let scope = scope_of(storage_rt, target.sub);
        let Some(live) = st.objects.get(&target.key).cloned() else {
            if target.sub == Subresource::Status {
                return Err(ApiError::not_found(rt, name));
            }
            let mut obj = ssa::scoped(&applied, scope);
            set_type(&mut obj, storage_rt);
            set_meta(&mut obj, "name", Value::String(name.clone()));
            self.prepare_new(target.res, &target.key.1, &mut obj)?;
            return self.insert_new(
                st,
                target.res,
                &target.key.1,
                obj,
                ssa::Operation::Apply,
                ctx,
            );
        };
        if let Some(rv) = meta_str(&applied, "resourceVersion").filter(|rv| !rv.is_empty())
            && Some(rv) != meta_str(&live.obj, "resourceVersion")
        {
            return Err(ApiError::stale(rt, name));
        }
        let (mut new, managed) = ssa::apply(
            &live.obj,
            &live.managed,
            &applied,
            &ctx.manager,
            scope,
            ctx.force,
            &now(),
        )
        .map_err(|conflicts| apply_conflict(rt, name, &conflicts))?;
        normalize(&mut new);
        self.write_existing(st, target, &live, new, managed, ctx)
    }

    /// Validates and stores a changed object (or deletes it when its last finalizer went).
    fn write_existing(
        &self,
        st: &mut StoreState,
        target: &Target,
        live: &Stored,
        mut new: Value,
        managed: Vec<ssa::Entry>,
        ctx: &WriteCtx,
    ) -> Result<Outcome, ApiError> {
        let storage_rt = self.storage_type(target.res);
        self.validate(target.res, &new, Some(&live.obj))?;
        if storage_rt.custom && spec_changed(&live.obj, &new, storage_rt.has_status) {
            bump_generation(&mut new);
        }
        render_managed(&mut new, &managed, &storage_rt.api_version());
        if let Some(rv) = live.obj.pointer("/metadata/resourceVersion") {
            set_meta(&mut new, "resourceVersion", rv.clone());
        }
        if new == *live.obj {
            return Ok(Outcome {
                status: StatusCode::OK,
                object: live.obj.clone(),
                changed: false,
            });
        }
        if ctx.dry_run {
            return Ok(Outcome {
                status: StatusCode::OK,
                object: Arc::new(new),
                changed: false,
            });
        }
        let finished =
            new.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&new).is_empty();
        let event = if finished {
            EventType::Deleted
        } else {
            EventType::Modified
        };
        let object = self.commit(
            st,
            target.key.clone(),
            new,
            managed,
            event,
            Some(live.obj.clone()),
        );
        Ok(Outcome {
            status: StatusCode::OK,
            object,
            changed: true,
        })
    }

    /// Name rules for new objects, finalizer rules while deleting, events.k8s.io rules.
    fn validate(&self, res: usize, new: &Value, live: Option<&Value>) -> Result<(), ApiError> {
        let rt = &self.resources()[res];
        let name = meta_str(new, "name").unwrap_or_default();
        let mut causes = Vec::new();
        if live.is_none() {
            let label_only = !rt.namespaced && rt.plural == "namespaces";
            if !valid_dns_name(name, label_only) {
                causes.push(format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 {} must consist of lower case \
                     alphanumeric characters{}, and must start and end with an alphanumeric character",
                    if label_only { "label" } else { "subdomain" },
                    if label_only { " or '-'" } else { ", '-' or '.'" },
                ));
            }
        }
        if let Some(live) = live
            && live.pointer("/metadata/deletionTimestamp").is_some()
        {
            let old = finalizers(live);
            let added: Vec<&str> = finalizers(new)
                .into_iter()
                .filter(|f| !old.contains(f))
                .collect();
            if !added.is_empty() {
                causes.push(format!(
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, \
                     found new finalizers {added:?}"
                ));
            }
        }
        if rt.group == "events.k8s.io" && rt.plural == "events" {
            causes.extend(events::validate_v1(new));
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(rt, name, &causes))
        }
    }

    // ---- delete -----------------------------------------------------------------------------

    fn delete(
        &self,
        st: &mut StoreState,
        res: usize,
        key: &ObjKey,
        options: &Value,
        ctx: &WriteCtx,
    ) -> Result<Outcome, ApiError> {
        let rt = &self.resources()[res];
        let name = &key.2;
        let live = self.live(st, res, key)?;
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            let wanted = options
                .get("preconditions")
                .and_then(|p| p.get(field))
                .and_then(Value::as_str);
            let actual = meta_str(&live.obj, field).unwrap_or_default();
            if let Some(wanted) = wanted
                && wanted != actual
            {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                        "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}"
                    ),
                ));
            }
        }
        if finalizers(&live.obj).is_empty() {
            let object = if ctx.dry_run {
                live.obj.clone()
            } else {
                let obj = (*live.obj).clone();
                self.commit(
                    st,
                    key.clone(),
                    obj,
                    Vec::new(),
                    EventType::Deleted,
                    Some(live.obj.clone()),
                )
            };
            return Ok(Outcome {
                status: StatusCode::OK,
                object,
                changed: !ctx.dry_run,
            });
        }
        if live.obj.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Outcome {
                status: StatusCode::ACCEPTED,
                object: live.obj.clone(),
                changed: false,
            });
        }
        let mut new = (*live.obj).clone();
        set_meta(&mut new, "deletionTimestamp", Value::String(now()));
        set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
        if self.storage_type(res).custom {
            bump_generation(&mut new);
        }
        let target = Target {
            res,
            key: key.clone(),
            sub: Subresource::Main,
        };
        let managed = live.managed.clone();
        let outcome = self.write_existing(st, &target, &live, new, managed, ctx)?;
        Ok(Outcome {
            status: StatusCode::ACCEPTED,
            ..outcome
        })
    }

    // ---- read -------------------------------------------------------------------------------

    fn list(
        &self,
        st: &StoreState,
        res: usize,
        namespace: Option<&str>,
        query: &Query,
        as_metadata: bool,
    ) -> Result<Value, ApiError> {
        let rt = &self.resources()[res];
        let filter = Filter::new(rt, namespace, query)?;
        let (list_rv, after) = match query.continue_token.as_deref() {
            Some(token) => {
                let mut parts = token.splitn(3, '|');
                match (
                    parts.next().and_then(|rv| rv.parse::<u64>().ok()),
                    parts.next(),
                    parts.next(),
                ) {
                    (Some(rv), Some(ns), Some(name)) => (rv, Some(self.key(res, ns, name))),
                    _ => return Err(ApiError::bad_request("invalid continue token")),
                }
            }
            None => (st.rv, None),
        };
        let limit = query.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut next = None;
        for (_, stored) in self.scan(st, res, namespace, after) {
            let view = self.present(res, &stored.obj);
            if !filter.matches(&view) {
                continue;
            }
            if items.len() == limit {
                next = items_token(list_rv, &items);
                break;
            }
            items.push(if as_metadata {
                partial_metadata(&view)
            } else {
                view.into_owned()
            });
        }
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if let Some(token) = next {
            metadata["continue"] = Value::String(token);
        }
        let (api_version, kind) = if as_metadata {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadataList".to_string(),
            )
        } else {
            (rt.api_version(), format!("{}List", rt.kind))
        };
        Ok(json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items}))
    }
}

/// The continue token after the last listed item.
fn items_token(list_rv: u64, items: &[Value]) -> Option<String> {
    let last = items.last()?;
    let ns = meta_str(last, "namespace").unwrap_or_default();
    let name = meta_str(last, "name")?;
    Some(format!("{list_rv}|{ns}|{name}"))
}

fn scope_of(rt: &ResourceType, sub: Subresource) -> ssa::Scope {
    match sub {
        Subresource::Main => ssa::Scope::Main {
            has_status: rt.has_status,
        },
        Subresource::Status => ssa::Scope::Status,
    }
}

fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[ssa::Conflict]) -> ApiError {
    let described: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\": {}",
                c.manager,
                ssa::path_string(&c.path)
            )
        })
        .collect();
    let plural = if conflicts.len() == 1 { "" } else { "s" };
    let mut error = ApiError::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {} conflict{plural}: {}",
            conflicts.len(),
            described.join("; ")
        ),
    )
    .with_details(rt, name);
    if let Some(details) = error.details.as_mut() {
        details["causes"] = conflicts
            .iter()
            .map(|c| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager),
                       "field": ssa::path_string(&c.path)})
            })
            .collect();
    }
    error
}

// ---------------------------------------------------------------------------------------------
// Object helpers
// ---------------------------------------------------------------------------------------------

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The object's metadata map, created when missing (callers have checked it is an object).
fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = match obj {
        Value::Object(map) => map,
        _ => unreachable_object(),
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(meta) => meta,
        _ => unreachable_object(),
    }
}

/// Both call sites made the value an object on the line before.
fn unreachable_object() -> ! {
    unreachable!("value was just made an object")
}

fn set_meta(obj: &mut Value, field: &str, value: Value) {
    meta_mut(obj).insert(field.to_string(), value);
}

fn set_top(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = obj.as_object_mut() {
        match value {
            Some(value) => {
                map.insert(field.to_string(), value);
            }
            None => {
                map.remove(field);
            }
        }
    }
}

fn set_type(obj: &mut Value, rt: &ResourceType) {
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(rt.api_version()));
        map.insert("kind".into(), Value::String(rt.kind.to_string()));
    }
}

fn finalizers(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn bump_generation(obj: &mut Value) {
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    set_meta(obj, "generation", json!(generation + 1));
}

/// Whether anything but metadata (and status, when it is a subresource) differs.
fn spec_changed(old: &Value, new: &Value, has_status: bool) -> bool {
    let relevant = |v: &Value| -> BTreeMap<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| {
                        !(matches!(k.as_str(), "metadata" | "apiVersion" | "kind")
                            || (has_status && k.as_str() == "status"))
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    relevant(old) != relevant(new)
}

/// Request bodies must be objects of the addressed resource's type.
fn check_type(rt: &ResourceType, body: &Value, required: bool) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let expected_version = rt.api_version();
    match body.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )));
        }
        None if required => return Err(ApiError::bad_request("apiVersion must be set")),
        _ => {}
    }
    match body.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rt.kind
        ))),
        None if required => Err(ApiError::bad_request("kind must be set")),
        _ => Ok(()),
    }
}

/// The body's name and namespace, when given, must be the URL's.
fn check_identity(rt: &ResourceType, key: &ObjKey, body: &Value) -> Result<(), ApiError> {
    if let Some(name) = meta_str(body, "name").filter(|n| !n.is_empty())
        && name != key.2
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            key.2
        )));
    }
    if rt.namespaced
        && let Some(ns) = meta_str(body, "namespace").filter(|n| !n.is_empty())
        && ns != key.1
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Keeps the server-owned metadata of `live` on an incoming object.
fn carry_server_meta(live: &Value, new: &mut Value, rt: &ResourceType, key: &ObjKey) {
    if !new.is_object() {
        *new = Value::Object(Map::new());
    }
    set_type(new, rt);
    let live_meta = live.get("metadata");
    let meta = meta_mut(new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match live_meta.and_then(|m| m.get(field)) {
            Some(value) => {
                meta.insert(field.into(), value.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    meta.insert("name".into(), Value::String(key.2.clone()));
    if rt.namespaced {
        meta.insert("namespace".into(), Value::String(key.1.clone()));
    } else {
        meta.remove("namespace");
    }
    for field in ["resourceVersion", "managedFields", "selfLink"] {
        meta.remove(field);
    }
}

/// Drops nulls (the apiserver prunes them) and empty metadata collections (omitempty in Go).
fn normalize(obj: &mut Value) {
    strip_nulls(obj);
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|_, v| match v {
            Value::Array(items) => !items.is_empty(),
            Value::Object(map) => !map.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => true,
        });
    }
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Strategic-merge directives (`$patch`, `$retainKeys`, `$setElementOrder/...`) have no merge
/// patch equivalent; dropping them is the documented approximation.
fn drop_directives(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|k, _| !k.starts_with('$'));
        map.values_mut().for_each(drop_directives);
    }
}

fn render_managed(obj: &mut Value, managed: &[ssa::Entry], api_version: &str) {
    let meta = meta_mut(obj);
    if managed.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), ssa::render(managed, api_version));
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Ok(value);
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("apply body is not UTF-8: {e}")))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("apply body is neither JSON nor YAML: {e}")))
}

/// RFC 1123 subdomain (or label) as the apiserver checks names.
fn valid_dns_name(name: &str, label_only: bool) -> bool {
    let max = if label_only { 63 } else { 253 };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    !name.is_empty()
        && name.len() <= max
        && if label_only {
            label_ok(name)
        } else {
            name.split('.').all(label_ok)
        }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// HTTP layer
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Query {
    watch: bool,
    resource_version: Option<String>,
    timeout_seconds: Option<u64>,
    allow_bookmarks: bool,
    send_initial_events: bool,
    label_selector: Option<String>,
    field_selector: Option<String>,
    limit: Option<usize>,
    continue_token: Option<String>,
    field_manager: Option<String>,
    force: bool,
    dry_run: bool,
}

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        let mut query = Self::default();
        let truthy = |v: &str| v == "true" || v == "1";
        for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "watch" => query.watch = truthy(&value),
                "resourceVersion" => query.resource_version = Some(value),
                "timeoutSeconds" => query.timeout_seconds = value.parse().ok(),
                "allowWatchBookmarks" => query.allow_bookmarks = truthy(&value),
                "sendInitialEvents" => query.send_initial_events = truthy(&value),
                "labelSelector" => query.label_selector = Some(value),
                "fieldSelector" => query.field_selector = Some(value),
                "limit" => query.limit = value.parse().ok(),
                "continue" => query.continue_token = Some(value).filter(|v| !v.is_empty()),
                "fieldManager" => query.field_manager = Some(value),
                "force" => query.force = truthy(&value),
                "dryRun" => query.dry_run = value == "All",
                _ => {}
            }
        }
        query
    }
}

struct Route {
    res: usize,
    namespace: Option<String>,
    name: Option<String>,
    sub: Subresource,
}

impl Inner {
    fn route(&self, path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::no_route()),
        };
        let find = |plural: &str, namespaced: bool| {
            self.resources().iter().position(|rt| {
                rt.group == group
                    && rt.version == version
                    && rt.plural == plural
                    && rt.namespaced == namespaced
            })
        };
        let (res, namespace, tail) = match rest {
            ["namespaces", ns, plural, tail @ ..] if find(plural, true).is_some() => {
                (find(plural, true), Some(ns.to_string()), tail)
            }
            [plural, tail @ ..] => (
                find(plural, false).or_else(|| find(plural, true)),
                None,
                tail,
            ),
            [] => (None, None, rest),
        };
        let res = res.ok_or_else(ApiError::no_route)?;
        let rt = &self.resources()[res];
        let (name, sub) = match tail {
            [] => (None, Subresource::Main),
            [name] => (Some(name.to_string()), Subresource::Main),
            [name, "status"] if rt.has_status => (Some(name.to_string()), Subresource::Status),
            _ => return Err(ApiError::no_route()),
        };
        if rt.namespaced && namespace.is_none() && name.is_some() {
            return Err(ApiError::no_route());
        }
        Ok(Route {
            res,
            namespace,
            name,
            sub,
        })
    }

    fn take_fault(&self, st: &mut StoreState, info: &RequestInfo) -> Option<u16> {
        st.faults.retain(|rule| rule.remaining > 0);
        for rule in st.faults.iter_mut() {
            if rule.filter.as_ref().is_none_or(|filter| filter(info)) {
                rule.remaining -= 1;
                return Some(rule.status);
            }
        }
        let (share, status) = st.failure_share?;
        st.share_credit += share;
        if st.share_credit >= 1.0 - 1e-9 {
            st.share_credit -= 1.0;
            return Some(status);
        }
        None
    }

    fn record(&self, record: RequestRecord) {
        let mut st = self.lock();
        let key = CountKey {
            verb: record.info.verb,
            group: record.info.group.clone(),
            resource: record.info.resource.clone(),
            subresource: record.info.subresource.clone(),
            namespace: record.info.namespace.clone(),
            name: record.info.name.clone(),
        };
        *st.counts.entry(key).or_insert(0) += 1;
        if self.options.record_requests {
            st.requests.push(record);
        }
    }
}

fn verb_of(method: &Method, route: &Route, query: &Query) -> Result<Verb, ApiError> {
    let named = route.name.is_some();
    let verb = match (method.as_str(), named) {
        ("GET", true) => Verb::Get,
        ("GET", false) if query.watch => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!(
                    "the server does not allow this method on the requested resource ({method})"
                ),
            ));
        }
    };
    Ok(verb)
}

async fn serve_request(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    match path.as_str() {
        "/version" => {
            let (major, minor) = inner.options.kubernetes_version;
            return json_response(
                StatusCode::OK,
                &json!({"major": major.to_string(), "minor": minor.to_string(),
                        "gitVersion": format!("v{major}.{minor}.0-fake"), "platform": "linux/amd64"}),
            );
        }
        "/healthz" | "/livez" | "/readyz" => return (StatusCode::OK, "ok").into_response(),
        _ => {}
    }
    let latency = inner.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let query = Query::parse(parts.uri.query());
    let route = match inner.route(&path) {
        Ok(route) => route,
        Err(error) => return error.into_response(),
    };
    let verb = match verb_of(&parts.method, &route, &query) {
        Ok(verb) => verb,
        Err(error) => return error.into_response(),
    };
    let rt = &inner.resources()[route.res];
    if rt.namespaced && route.namespace.is_none() && !matches!(verb, Verb::List | Verb::Watch) {
        return ApiError::no_route().into_response();
    }
    let patch_type = if verb == Verb::Patch {
        let content_type = header_str(&parts.headers, header::CONTENT_TYPE);
        match PatchType::from_content_type(content_type) {
            Some(patch_type) => Some(patch_type),
            None => {
                return ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {content_type}"),
                )
                .into_response();
            }
        }
    } else {
        None
    };
    let field_manager = query.field_manager.clone().or_else(|| {
        (patch_type != Some(PatchType::Apply)).then(|| {
            let agent = header_str(&parts.headers, header::USER_AGENT);
            agent.split('/').next().unwrap_or_default().to_string()
        })
    });
    let info = RequestInfo {
        verb,
        group: rt.group.to_string(),
        resource: rt.plural.to_string(),
        subresource: (route.sub == Subresource::Status).then(|| "status".to_string()),
        namespace: route.namespace.clone(),
        name: route.name.clone(),
    };
    let mut record = RequestRecord {
        info: info.clone(),
        patch_type,
        field_manager: field_manager.clone(),
        status: 0,
        changed: false,
        injected: false,
    };
    let hangs = inner.lock().hangs.iter().any(|filter| filter(&info));
    if hangs {
        let mut epoch = inner.epoch.subscribe();
        let _ = epoch.changed().await;
        record.status = 503;
        record.injected = true;
        inner.record(record);
        return ApiError::injected(503).into_response();
    }
    let fault = {
        let mut st = inner.lock();
        inner.take_fault(&mut st, &info)
    };
    if let Some(status) = fault {
        record.status = status;
        record.injected = true;
        inner.record(record);
        return ApiError::injected(status).into_response();
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => {
            record.status = 413;
            inner.record(record);
            return ApiError::new(413, "RequestEntityTooLarge", error.to_string()).into_response();
        }
    };
    let accept = header_str(&parts.headers, header::ACCEPT);
    let as_metadata = accept.contains("as=PartialObjectMetadata");
    let ctx = WriteCtx {
        manager: field_manager.unwrap_or_default(),
        dry_run: query.dry_run,
        force: query.force,
    };
    let (response, changed) =
        inner.dispatch(&route, verb, patch_type, &query, &bytes, &ctx, as_metadata);
    record.status = response.status().as_u16();
    record.changed = changed;
    inner.record(record);
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

impl Inner {
    #[allow(clippy::too_many_arguments)] // one request's parts, split once in serve_request
    fn dispatch(
        self: &Arc<Self>,
        route: &Route,
        verb: Verb,
        patch_type: Option<PatchType>,
        query: &Query,
        body: &Bytes,
        ctx: &WriteCtx,
        as_metadata: bool,
    ) -> (Response, bool) {
        let res = route.res;
        let namespace = route.namespace.clone().unwrap_or_default();
        let name = route.name.clone().unwrap_or_default();
        let target = Target {
            res,
            key: self.key(res, &namespace, &name),
            sub: route.sub,
        };
        let parse_body = || -> Result<Value, ApiError> {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
        };
        let write = |result: Result<Outcome, ApiError>| match result {
            Ok(outcome) => {
                let view = self.present(res, &outcome.object);
                (json_response(outcome.status, &view), outcome.changed)
            }
            Err(error) => (error.into_response(), false),
        };
        match verb {
            Verb::Get => {
                let st = self.lock();
                match st.objects.get(&target.key) {
                    Some(stored) => {
                        let view = self.present(res, &stored.obj);
                        let body = if as_metadata {
                            partial_metadata(&view)
                        } else {
                            view.into_owned()
                        };
                        (json_response(StatusCode::OK, &body), false)
                    }
                    None => (
                        ApiError::not_found(&self.resources()[res], &name).into_response(),
                        false,
                    ),
                }
            }
            Verb::List => {
                let st = self.lock();
                match self.list(&st, res, route.namespace.as_deref(), query, as_metadata) {
                    Ok(list) => (json_response(StatusCode::OK, &list), false),
                    Err(error) => (error.into_response(), false),
                }
            }
            Verb::Watch => match self.watch(route, query, as_metadata) {
                Ok(response) => (response, false),
                Err(error) => (error.into_response(), false),
            },
            Verb::Create => write(parse_body().and_then(|obj| {
                let mut st = self.lock();
                self.create(&mut st, res, &namespace, obj, ctx)
            })),
            Verb::Update => write(parse_body().and_then(|obj| {
                let mut st = self.lock();
                let live = self.live(&st, res, &target.key)?;
                self.replace(&mut st, &target, live, obj, true, ctx)
            })),
            Verb::Patch => {
                let patch_type = patch_type.unwrap_or(PatchType::Merge);
                let mut st = self.lock();
                write(self.patch(&mut st, &target, patch_type, body, ctx))
            }
            Verb::Delete => {
                let options = if body.is_empty() {
                    Ok(Value::Null)
                } else {
                    parse_body()
                };
                write(options.and_then(|options| {
                    let mut st = self.lock();
                    self.delete(&mut st, res, &target.key, &options, ctx)
                }))
            }
            Verb::DeleteCollection => {
                let mut st = self.lock();
                match self.delete_collection(&mut st, res, route.namespace.as_deref(), query, ctx) {
                    Ok((list, changed)) => (json_response(StatusCode::OK, &list), changed),
                    Err(error) => (error.into_response(), false),
                }
            }
        }
    }

    fn delete_collection(
        &self,
        st: &mut StoreState,
        res: usize,
        namespace: Option<&str>,
        query: &Query,
        ctx: &WriteCtx,
    ) -> Result<(Value, bool), ApiError> {
        let rt = &self.resources()[res];
        let filter = Filter::new(rt, namespace, query)?;
        let keys: Vec<ObjKey> = self
            .scan(st, res, namespace, None)
            .filter(|(_, stored)| filter.matches(&self.present(res, &stored.obj)))
            .map(|(key, _)| key.clone())
            .collect();
        let mut items = Vec::new();
        let mut changed = false;
        for key in keys {
            let outcome = self.delete(st, res, &key, &Value::Null, ctx)?;
            changed |= outcome.changed;
            items.push(self.present(res, &outcome.object).into_owned());
        }
        let list = json!({"apiVersion": rt.api_version(), "kind": format!("{}List", rt.kind),
                          "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
        Ok((list, changed))
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors and watches
// ---------------------------------------------------------------------------------------------

struct Filter {
    namespace: Option<String>,
    labels: Vec<selector::LabelReq>,
    fields: Vec<selector::FieldReq>,
}

impl Filter {
    fn new(rt: &ResourceType, namespace: Option<&str>, query: &Query) -> Result<Self, ApiError> {
        let labels = selector::parse_labels(query.label_selector.as_deref().unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        let is_event = rt.plural == "events";
        let fields = selector::parse_fields(
            query.field_selector.as_deref().unwrap_or_default(),
            |field| {
                matches!(field, "metadata.name" | "metadata.namespace")
                    || (is_event && events::selectable(field))
            },
        )
        .map_err(ApiError::bad_request)?;
        Ok(Self {
            namespace: namespace.map(str::to_string),
            labels,
            fields,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let namespace_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| meta_str(obj, "namespace").unwrap_or_default() == ns);
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        namespace_ok
            && selector::labels_match(&self.labels, labels)
            && selector::fields_match(&self.fields, obj)
    }
}

/// Ends a watch's bookkeeping however its task finishes.
struct OpenWatch(Arc<Inner>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    fn watch(
        self: &Arc<Self>,
        route: &Route,
        query: &Query,
        as_metadata: bool,
    ) -> Result<Response, ApiError> {
        let res = route.res;
        let rt = &self.resources()[res];
        let filter = Filter::new(rt, route.namespace.as_deref(), query)?;
        let requested = query
            .resource_version
            .as_deref()
            .filter(|rv| !rv.is_empty() && *rv != "0");
        let requested = match requested {
            Some(rv) if !query.send_initial_events => {
                Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?)
            }
            _ => None,
        };
        let (records, live, seen_rv, gone) = {
            let st = self.lock();
            let live = self.events.subscribe();
            let storage = self.storage[res];
            let (records, gone): (Vec<Arc<WatchRecord>>, bool) = match requested {
                Some(rv) if rv < st.compacted_rv => (Vec::new(), true),
                Some(rv) => (
                    st.history
                        .iter()
                        .filter(|r| r.rv > rv && r.storage == storage)
                        .cloned()
                        .collect(),
                    false,
                ),
                None => (
                    self.scan(&st, res, route.namespace.as_deref(), None)
                        .map(|(_, stored)| {
                            Arc::new(WatchRecord {
                                rv: 0,
                                storage,
                                event: EventType::Added,
                                object: stored.obj.clone(),
                                previous: None,
                            })
                        })
                        .collect(),
                    false,
                ),
            };
            (records, live, st.rv, gone)
        };
        let timeout = query
            .timeout_seconds
            .filter(|t| *t > 0)
            .map(Duration::from_secs)
            .unwrap_or(self.options.default_watch_timeout);
        let session = WatchSession {
            inner: self.clone(),
            res,
            filter,
            as_metadata,
            bookmarks: query.allow_bookmarks,
            initial_end: query.send_initial_events,
            timeout,
            seen_rv,
        };
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        self.open_watches.fetch_add(1, Ordering::SeqCst);
        let guard = OpenWatch(self.clone());
        let epoch = self.epoch.subscribe();
        tokio::spawn(async move {
            let _guard = guard;
            session.run(records, gone, live, epoch, tx).await;
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|bytes| (Ok::<Bytes, Infallible>(bytes), rx))
        });
        let mut response = Response::new(Body::from_stream(stream));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

struct WatchSession {
    inner: Arc<Inner>,
    res: usize,
    filter: Filter,
    as_metadata: bool,
    bookmarks: bool,
    initial_end: bool,
    timeout: Duration,
    seen_rv: u64,
}

impl WatchSession {
    async fn run(
        mut self,
        records: Vec<Arc<WatchRecord>>,
        gone: bool,
        mut live: broadcast::Receiver<Arc<WatchRecord>>,
        mut epoch: watch::Receiver<u64>,
        tx: mpsc::Sender<Bytes>,
    ) {
        if gone {
            let status = ApiError::new(410, "Expired", "too old resource version").status_body();
            let _ = tx.send(event_line("ERROR", &status)).await;
            return;
        }
        for record in &records {
            if let Some(line) = self.render(record)
                && tx.send(line).await.is_err()
            {
                return;
            }
        }
        if self.initial_end && tx.send(self.bookmark(true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(self.inner.options.bookmark_interval);
        ticker.tick().await;
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = epoch.changed() => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if self.bookmarks => Some(self.bookmark(false)),
                received = live.recv() => match received {
                    Ok(record) if record.rv > self.seen_rv => {
                        self.seen_rv = record.rv;
                        self.render(&record)
                    }
                    Ok(_) => None,
                    // A lagging or closed feed ends the watch; the client resumes from history.
                    Err(_) => return,
                },
            };
            if let Some(line) = line
                && tx.send(line).await.is_err()
            {
                return;
            }
        }
    }

    fn render(&self, record: &WatchRecord) -> Option<Bytes> {
        if record.storage != self.inner.storage[self.res] {
            return None;
        }
        let now = self.inner.present(self.res, &record.object);
        let matches_now = self.filter.matches(&now);
        let event = match record.event {
            EventType::Added | EventType::Deleted if !matches_now => return None,
            EventType::Added => "ADDED",
            EventType::Deleted => "DELETED",
            EventType::Modified => {
                let before = record
                    .previous
                    .as_ref()
                    .is_some_and(|p| self.filter.matches(&self.inner.present(self.res, p)));
                match (before, matches_now) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
        };
        if self.as_metadata {
            Some(event_line(event, &partial_metadata(&now)))
        } else {
            Some(event_line(event, &now))
        }
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let rt = &self.inner.resources()[self.res];
        let mut metadata = json!({"resourceVersion": self.seen_rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": metadata});
        event_line("BOOKMARK", &object)
    }
}

fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line = format!("{{\"type\":\"{event}\",\"object\":").into_bytes();
    if serde_json::to_writer(&mut line, object).is_err() {
        line.extend_from_slice(b"{}");
    }
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

// ---------------------------------------------------------------------------------------------
// Server-side apply: field ownership
// ---------------------------------------------------------------------------------------------

mod ssa {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::{Map, Value, json};

    use super::TRACKED_METADATA;

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub(super) enum Seg {
        Field(String),
        /// A list-map item by its key fields as JSON, e.g. `{"type":"Ready"}`.
        Key(String),
        /// A set item by its JSON value.
        Item(String),
    }

    pub(super) type FieldPath = Vec<Seg>;
    pub(super) type FieldSet = BTreeSet<FieldPath>;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Operation {
        Apply,
        Update,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Scope {
        Main { has_status: bool },
        Status,
    }

    impl Scope {
        fn subresource(self) -> &'static str {
            match self {
                Scope::Main { .. } => "",
                Scope::Status => "status",
            }
        }

        fn includes(self, top: &str) -> bool {
            match self {
                Scope::Main { has_status } => {
                    top != "apiVersion" && top != "kind" && !(has_status && top == "status")
                }
                Scope::Status => top == "status",
            }
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    pub(super) struct Entry {
        pub manager: String,
        pub operation: Operation,
        pub subresource: &'static str,
        pub time: String,
        pub fields: FieldSet,
    }

    impl Entry {
        pub(super) fn new(
            manager: &str,
            operation: Operation,
            scope: Scope,
            fields: FieldSet,
        ) -> Self {
            Self {
                manager: manager.to_string(),
                operation,
                subresource: scope.subresource(),
                time: super::now(),
                fields,
            }
        }

        fn is(&self, manager: &str, operation: Operation, scope: Scope) -> bool {
            self.manager == manager
                && self.operation == operation
                && self.subresource == scope.subresource()
        }
    }

    pub(super) struct Conflict {
        pub manager: String,
        pub path: FieldPath,
    }

    enum ListKind {
        Map(&'static [&'static str]),
        Set,
        Atomic,
    }

    fn declared_kind(path: &[Seg]) -> ListKind {
        match path {
            [Seg::Field(m), Seg::Field(f)] if m == "metadata" && f == "finalizers" => ListKind::Set,
            [Seg::Field(m), Seg::Field(f)] if m == "metadata" && f == "ownerReferences" => {
                ListKind::Map(&["uid"])
            }
            [.., Seg::Field(f)] if f == "conditions" => ListKind::Map(&["type"]),
            _ => ListKind::Atomic,
        }
    }

    /// The declared kind, unless the items do not fit it (then the list is atomic).
    fn list_kind(path: &[Seg], items: &[Value]) -> ListKind {
        match declared_kind(path) {
            ListKind::Map(keys) if items.iter().all(|i| item_key(i, keys).is_some()) => {
                ListKind::Map(keys)
            }
            ListKind::Set if items.iter().all(|i| !i.is_object() && !i.is_array()) => ListKind::Set,
            _ => ListKind::Atomic,
        }
    }

    fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
        let obj = item.as_object()?;
        let mut key = Map::new();
        for k in keys {
            key.insert(
                (*k).to_string(),
                obj.get(*k).filter(|v| !v.is_null())?.clone(),
            );
        }
        Some(Value::Object(key).to_string())
    }

    /// The applied object restricted to what the scope lets a manager own.
    pub(super) fn scoped(applied: &Value, scope: Scope) -> Value {
        let mut out = Map::new();
        for (k, v) in applied.as_object().into_iter().flatten() {
            if !scope.includes(k) {
                continue;
            }
            if k == "metadata" {
                let meta: Map<String, Value> = TRACKED_METADATA
                    .iter()
                    .filter_map(|f| v.get(*f).map(|fv| ((*f).to_string(), fv.clone())))
                    .collect();
                if !meta.is_empty() {
                    out.insert(k.clone(), Value::Object(meta));
                }
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    }

    /// The leaf fields (and list items) of an object that a manager can own in this scope.
    pub(super) fn fields_of(obj: &Value, scope: Scope) -> FieldSet {
        let mut out = FieldSet::new();
        let mut path = Vec::new();
        for (k, v) in obj.as_object().into_iter().flatten() {
            if !scope.includes(k) {
                continue;
            }
            path.push(Seg::Field(k.clone()));
            if k == "metadata" {
                for field in TRACKED_METADATA {
                    if let Some(fv) = v.get(field) {
                        path.push(Seg::Field(field.to_string()));
                        collect(fv, &mut path, &mut out);
                        path.pop();
                    }
                }
            } else {
                collect(v, &mut path, &mut out);
            }
            path.pop();
        }
        out
    }

    fn collect(value: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        match value {
            Value::Null => {}
            Value::Object(map) if !map.is_empty() => collect_children(map, path, out),
            Value::Array(items) => match list_kind(path, items) {
                ListKind::Map(keys) => {
                    for item in items {
                        let (Some(key), Some(map)) = (item_key(item, keys), item.as_object())
                        else {
                            continue;
                        };
                        path.push(Seg::Key(key));
                        out.insert(path.clone());
                        collect_children(map, path, out);
                        path.pop();
                    }
                }
                ListKind::Set => {
                    for item in items {
                        path.push(Seg::Item(item.to_string()));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                ListKind::Atomic => {
                    out.insert(path.clone());
                }
            },
            _ => {
                out.insert(path.clone());
            }
        }
    }

    fn collect_children(map: &Map<String, Value>, path: &mut FieldPath, out: &mut FieldSet) {
        for (k, child) in map {
            path.push(Seg::Field(k.clone()));
            collect(child, path, out);
            path.pop();
        }
    }

    fn position(list: &Value, prefix: &[Seg], seg: &Seg) -> Option<usize> {
        let items = list.as_array()?;
        match seg {
            Seg::Key(key) => {
                let ListKind::Map(keys) = declared_kind(prefix) else {
                    return None;
                };
                items
                    .iter()
                    .position(|i| item_key(i, keys).as_deref() == Some(key.as_str()))
            }
            Seg::Item(item) => {
                let wanted: Value = serde_json::from_str(item).ok()?;
                items.iter().position(|i| *i == wanted)
            }
            Seg::Field(_) => None,
        }
    }

    pub(super) fn get<'a>(value: &'a Value, path: &[Seg]) -> Option<&'a Value> {
        let mut current = value;
        for (i, seg) in path.iter().enumerate() {
            current = match seg {
                Seg::Field(k) => current.as_object()?.get(k)?,
                _ => {
                    let index = position(current, &path[..i], seg)?;
                    current.as_array()?.get(index)?
                }
            };
        }
        Some(current)
    }

    fn child_mut<'a>(value: &'a mut Value, prefix: &[Seg], seg: &Seg) -> Option<&'a mut Value> {
        match seg {
            Seg::Field(k) => value.as_object_mut()?.get_mut(k),
            _ => {
                let index = position(value, prefix, seg)?;
                value.as_array_mut()?.get_mut(index)
            }
        }
    }

    /// Removes a field or item, then any object that became empty on the way down.
    fn remove(value: &mut Value, prefix: &mut FieldPath, rest: &[Seg]) {
        let Some((seg, tail)) = rest.split_first() else {
            return;
        };
        if tail.is_empty() {
            match seg {
                Seg::Field(k) => {
                    if let Some(map) = value.as_object_mut() {
                        map.remove(k);
                    }
                }
                _ => {
                    if let Some(index) = position(value, prefix, seg)
                        && let Some(items) = value.as_array_mut()
                    {
                        items.remove(index);
                    }
                }
            }
            return;
        }
        let emptied = {
            let Some(child) = child_mut(value, prefix, seg) else {
                return;
            };
            prefix.push(seg.clone());
            remove(child, prefix, tail);
            prefix.pop();
            child.as_object().is_some_and(Map::is_empty)
        };
        if emptied
            && let Seg::Field(k) = seg
            && let Some(map) = value.as_object_mut()
        {
            map.remove(k);
        }
    }

    fn without_nulls(value: &Value) -> Value {
        let mut copy = value.clone();
        super::strip_nulls(&mut copy);
        copy
    }

    /// Merges an applied configuration into the live object: objects field by field, list-maps
    /// item by key, sets by value, anything else replaced.
    fn merge(live: &mut Value, applied: &Value, path: &mut FieldPath) {
        match applied {
            Value::Object(fields) if live.is_object() => {
                for (k, av) in fields {
                    if av.is_null() {
                        continue;
                    }
                    path.push(Seg::Field(k.clone()));
                    if let Some(map) = live.as_object_mut() {
                        match map.get_mut(k) {
                            Some(lv) => merge(lv, av, path),
                            None => {
                                map.insert(k.clone(), without_nulls(av));
                            }
                        }
                    }
                    path.pop();
                }
            }
            Value::Array(items) if live.is_array() => {
                let live_kind =
                    list_kind(path, live.as_array().map(Vec::as_slice).unwrap_or_default());
                let merged = match (list_kind(path, items), live_kind, live.as_array_mut()) {
                    (ListKind::Map(keys), ListKind::Map(_), Some(live_items)) => {
                        for item in items {
                            let key = item_key(item, keys);
                            match live_items.iter_mut().find(|i| item_key(i, keys) == key) {
                                Some(existing) => {
                                    path.push(Seg::Key(key.unwrap_or_default()));
                                    merge(existing, item, path);
                                    path.pop();
                                }
                                None => live_items.push(without_nulls(item)),
                            }
                        }
                        true
                    }
                    (ListKind::Set, ListKind::Set, Some(live_items)) => {
                        for item in items {
                            if !live_items.contains(item) {
                                live_items.push(item.clone());
                            }
                        }
                        true
                    }
                    _ => false,
                };
                if !merged {
                    *live = without_nulls(applied);
                }
            }
            _ => *live = without_nulls(applied),
        }
    }

    /// Server-side apply of `applied` by `manager`; Err lists conflicts when not forced.
    pub(super) fn apply(
        live: &Value,
        entries: &[Entry],
        applied: &Value,
        manager: &str,
        scope: Scope,
        force: bool,
        now: &str,
    ) -> Result<(Value, Vec<Entry>), Vec<Conflict>> {
        let applied = scoped(applied, scope);
        let new_set = fields_of(&applied, scope);
        let mut entries = entries.to_vec();
        let is_self = |e: &Entry| e.is(manager, Operation::Apply, scope);
        let mut conflicts = Vec::new();
        for path in new_set
            .iter()
            .filter(|p| matches!(p.last(), Some(Seg::Field(_))))
        {
            let current = get(live, path);
            if current.is_none() || current == get(&applied, path) {
                continue;
            }
            for entry in entries
                .iter()
                .filter(|e| !is_self(e) && e.fields.contains(path))
            {
                conflicts.push(Conflict {
                    manager: entry.manager.clone(),
                    path: path.clone(),
                });
            }
        }
        if !conflicts.is_empty() {
            if !force {
                return Err(conflicts);
            }
            for entry in entries.iter_mut().filter(|e| !is_self(e)) {
                for conflict in &conflicts {
                    entry.fields.remove(&conflict.path);
                }
            }
        }
        let previous = entries
            .iter()
            .find(|e| is_self(e))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let others: FieldSet = entries
            .iter()
            .filter(|e| !is_self(e))
            .flat_map(|e| e.fields.iter().cloned())
            .collect();
        let mut obj = live.clone();
        let stale: Vec<&FieldPath> = previous
            .difference(&new_set)
            .filter(|p| !others.contains(*p))
            .collect();
        for path in stale.into_iter().rev() {
            remove(&mut obj, &mut Vec::new(), path);
        }
        merge(&mut obj, &applied, &mut Vec::new());
        let object_changed = obj != *live;
        match entries.iter_mut().find(|e| is_self(e)) {
            Some(entry) => {
                if entry.fields != new_set || object_changed {
                    entry.time = now.to_string();
                }
                entry.fields = new_set;
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: Operation::Apply,
                subresource: scope.subresource(),
                time: now.to_string(),
                fields: new_set,
            }),
        }
        prune(&mut entries, &obj);
        Ok((obj, entries))
    }

    /// Ownership after a non-apply write: the writer takes the fields it changed.
    pub(super) fn record_update(
        entries: &mut Vec<Entry>,
        old: &Value,
        new: &Value,
        manager: &str,
        scope: Scope,
        now: &str,
    ) {
        let old_fields = fields_of(old, scope);
        let new_fields = fields_of(new, scope);
        let changed: FieldSet = new_fields
            .iter()
            .filter(|p| match p.last() {
                Some(Seg::Field(_)) => get(old, p) != get(new, p),
                _ => !old_fields.contains(*p),
            })
            .cloned()
            .collect();
        if changed.is_empty() && old_fields.is_subset(&new_fields) {
            return;
        }
        let is_self = |e: &Entry| e.is(manager, Operation::Update, scope);
        for entry in entries.iter_mut().filter(|e| !is_self(e)) {
            entry.fields.retain(|p| !changed.contains(p));
        }
        if !changed.is_empty() {
            match entries.iter_mut().find(|e| is_self(e)) {
                Some(entry) => {
                    entry.fields.extend(changed);
                    entry.time = now.to_string();
                }
                None => entries.push(Entry {
                    manager: manager.to_string(),
                    operation: Operation::Update,
                    subresource: scope.subresource(),
                    time: now.to_string(),
                    fields: changed,
                }),
            }
        }
        prune(entries, new);
    }

    /// Drops ownership of fields that are gone or no longer leaves, and empty entries.
    fn prune(entries: &mut Vec<Entry>, obj: &Value) {
        for entry in entries.iter_mut() {
            entry.fields.retain(|p| match get(obj, p) {
                None => false,
                Some(Value::Object(map)) => {
                    map.is_empty() || !matches!(p.last(), Some(Seg::Field(_)))
                }
                Some(_) => true,
            });
        }
        entries.retain(|e| !e.fields.is_empty());
    }

    #[derive(Default)]
    struct Node(BTreeMap<String, Node>);

    impl Node {
        fn to_value(&self) -> Value {
            Value::Object(
                self.0
                    .iter()
                    .map(|(k, n)| (k.clone(), n.to_value()))
                    .collect(),
            )
        }
    }

    /// `metadata.managedFields` in the apiserver's FieldsV1 format.
    pub(super) fn render(entries: &[Entry], api_version: &str) -> Value {
        let rendered = entries
            .iter()
            .map(|entry| {
                let mut root = Node::default();
                for path in &entry.fields {
                    let mut node = &mut root;
                    for seg in path {
                        let key = match seg {
                            Seg::Field(k) => format!("f:{k}"),
                            Seg::Key(k) => format!("k:{k}"),
                            Seg::Item(v) => format!("v:{v}"),
                        };
                        node = node.0.entry(key).or_default();
                    }
                    if !matches!(path.last(), Some(Seg::Field(_))) {
                        node.0.entry(".".into()).or_default();
                    }
                }
                let mut out = json!({
                    "manager": entry.manager,
                    "operation": match entry.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                    "apiVersion": api_version,
                    "time": entry.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": root.to_value(),
                });
                if !entry.subresource.is_empty() {
                    out["subresource"] = Value::String(entry.subresource.to_string());
                }
                out
            })
            .collect();
        Value::Array(rendered)
    }

    /// `.spec.holderIdentity`, `.status.conditions[{"type":"Ready"}].status`
    pub(super) fn path_string(path: &[Seg]) -> String {
        path.iter()
            .map(|seg| match seg {
                Seg::Field(k) => format!(".{k}"),
                Seg::Key(k) => format!("[{k}]"),
                Seg::Item(v) => format!("[={v}]"),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Label and field selectors
// ---------------------------------------------------------------------------------------------

mod selector {
    use serde_json::{Map, Value};

    #[derive(Clone, Debug)]
    pub(super) enum LabelReq {
        Eq(String, String),
        NotEq(String, String),
        In(String, Vec<String>),
        NotIn(String, Vec<String>),
        Exists(String),
        NotExists(String),
    }

    #[derive(Clone, Debug)]
    pub(super) struct FieldReq {
        path: String,
        equal: bool,
        value: String,
    }

    /// Splits at commas outside parentheses (`env in (a,b),tier`).
    fn split_top_level(s: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts
    }

    pub(super) fn parse_labels(s: &str) -> Result<Vec<LabelReq>, String> {
        split_top_level(s)
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(parse_label)
            .collect()
    }

    fn parse_label(part: &str) -> Result<LabelReq, String> {
        if let Some(key) = part.strip_prefix('!') {
            return Ok(LabelReq::NotExists(key.trim().to_string()));
        }
        if let Some(open) = part.find('(') {
            let close = part
                .rfind(')')
                .filter(|close| *close > open)
                .ok_or_else(|| {
                    format!("unable to parse requirement: unbalanced parenthesis in {part:?}")
                })?;
            let mut head = part[..open].split_whitespace();
            let values: Vec<String> = part[open + 1..close]
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            return match (head.next(), head.next(), head.next()) {
                (Some(key), Some("in"), None) => Ok(LabelReq::In(key.to_string(), values)),
                (Some(key), Some("notin"), None) => Ok(LabelReq::NotIn(key.to_string(), values)),
                _ => Err(format!("unable to parse requirement: {part:?}")),
            };
        }
        let pair = |(k, v): (&str, &str)| (k.trim().to_string(), v.trim().to_string());
        if let Some((k, v)) = part.split_once("!=").map(pair) {
            return Ok(LabelReq::NotEq(k, v));
        }
        if let Some((k, v)) = part
            .split_once("==")
            .or_else(|| part.split_once('='))
            .map(pair)
        {
            return Ok(LabelReq::Eq(k, v));
        }
        Ok(LabelReq::Exists(part.to_string()))
    }

    pub(super) fn labels_match(reqs: &[LabelReq], labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        reqs.iter().all(|req| match req {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }

    /// Parses `a=b,c!=d`; fields not accepted by `supported` are refused as the apiserver does.
    pub(super) fn parse_fields(
        s: &str,
        supported: impl Fn(&str) -> bool,
    ) -> Result<Vec<FieldReq>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|part| {
                let (path, equal, value) = if let Some((k, v)) = part.split_once("!=") {
                    (k, false, v)
                } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('='))
                {
                    (k, true, v)
                } else {
                    return Err(format!(
                        "invalid selector: '{part}'; can't understand '{part}'"
                    ));
                };
                let path = path.trim();
                if !supported(path) {
                    return Err(format!("field label not supported: {path}"));
                }
                Ok(FieldReq {
                    path: path.to_string(),
                    equal,
                    value: value.trim().to_string(),
                })
            })
            .collect()
    }

    pub(super) fn fields_match(reqs: &[FieldReq], obj: &Value) -> bool {
        reqs.iter().all(|req| {
            let found = req.path.split('.').try_fold(obj, |v, part| v.get(part));
            let actual = match found {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == req.value) == req.equal
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Events: the two API versions over one storage, and events.k8s.io/v1 validation
// ---------------------------------------------------------------------------------------------

mod events {
    use serde_json::Value;

    /// core/v1 field names and their events.k8s.io/v1 names.
    const RENAMES: [(&str, &str); 7] = [
        ("involvedObject", "regarding"),
        ("message", "note"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
        ("reportingComponent", "reportingController"),
    ];

    fn convert(obj: &Value, to_core: bool) -> Value {
        let Some(map) = obj.as_object() else {
            return obj.clone();
        };
        let mut out = serde_json::Map::new();
        for (k, v) in map {
            let renamed = RENAMES.iter().find_map(|(core, v1)| {
                let (from, to) = if to_core { (v1, core) } else { (core, v1) };
                (k.as_str() == *from).then_some(*to)
            });
            out.insert(renamed.unwrap_or(k).to_string(), v.clone());
        }
        let api_version = if to_core { "v1" } else { "events.k8s.io/v1" };
        out.insert("apiVersion".into(), Value::String(api_version.into()));
        out.insert("kind".into(), Value::String("Event".into()));
        Value::Object(out)
    }

    pub(super) fn to_core(obj: &Value) -> Value {
        convert(obj, true)
    }

    pub(super) fn from_core(obj: Value) -> Value {
        convert(&obj, false)
    }

    /// Field selectors the apiserver accepts for events (either version's names).
    pub(super) fn selectable(field: &str) -> bool {
        let head = field.split('.').next().unwrap_or_default();
        matches!(
            head,
            "involvedObject"
                | "regarding"
                | "reason"
                | "reportingComponent"
                | "reportingController"
                | "source"
                | "type"
        )
    }

    /// What the apiserver checks on events.k8s.io/v1 writes.
    pub(super) fn validate_v1(event: &Value) -> Vec<String> {
        let text = |field: &str| event.get(field).and_then(Value::as_str).unwrap_or_default();
        let mut causes = Vec::new();
        for field in [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ] {
            if text(field).is_empty() {
                causes.push(format!("{field}: Required value"));
            }
        }
        for (field, max) in [
            ("action", 128),
            ("reason", 128),
            ("reportingController", 253),
            ("reportingInstance", 128),
        ] {
            if text(field).len() > max {
                causes.push(format!(
                    "{field}: Too long: may not be more than {max} bytes"
                ));
            }
        }
        if text("note").len() > 1024 {
            causes.push("note: Too long: may not be more than 1024 bytes".into());
        }
        if !matches!(text("type"), "Normal" | "Warning") {
            causes.push(format!(
                "type: Unsupported value: \"{}\": supported values: \"Normal\", \"Warning\"",
                text("type")
            ));
        }
        if let Some(count) = event.pointer("/series/count").and_then(Value::as_i64)
            && count < 2
        {
            causes.push(format!(
                "series.count: Invalid value: {count}: should be at least 2"
            ));
        }
        let namespace = event
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(regarding) = event
            .pointer("/regarding/namespace")
            .and_then(Value::as_str)
            && !regarding.is_empty()
            && regarding != namespace
        {
            causes.push(format!(
                "regarding.namespace: Invalid value: \"{regarding}\": does not match event.namespace"
            ));
        }
        causes
    }
}
