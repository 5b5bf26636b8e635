//! Status writes: server-side apply on the status subresource with the resourceVersion the
//! status was decided on, retries for a status that records an operation just started, and
//! the memory of one that still could not be written. Generic over the kind.

use std::fmt::Debug;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use super::state::States;
use super::{Error, FIELD_MANAGER};
use crate::telemetry::Metrics;

/// Attempts at writing a status that records an operation just started (its poll URL must
/// not be lost), and the pause before the first retry (doubling).
const STATUS_WRITE_ATTEMPTS: u32 = 3;
const STATUS_WRITE_RETRY: Duration = Duration::from_millis(200);

/// What a kind needs for its status to be written by this module: every custom resource with
/// a status (a trait alias, implemented for all of them).
pub trait StatusResource:
    Resource<DynamicType = ()> + HasStatus<Status: Serialize + Clone> + Clone + DeserializeOwned + Debug
{
}

impl<K> StatusResource for K where
    K: Resource<DynamicType = ()>
        + HasStatus<Status: Serialize + Clone>
        + Clone
        + DeserializeOwned
        + Debug
{
}

/// Writes `obj`'s status by server-side apply on the status subresource, as the one field
/// manager of the status (forced: the status is ours alone). The apply carries the
/// resourceVersion the status was decided on, so a writer that decided on a stale copy (a
/// replica that lost its lease, a cache behind a spec edit) gets a 409 Conflict instead of
/// overwriting newer state.
pub async fn apply_status<K>(api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: StatusResource,
{
    let mut body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": obj.status(),
    });
    if let Some(version) = &obj.meta().resource_version {
        body["metadata"] = json!({"resourceVersion": version});
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&obj.name_any(), &params, &Patch::Apply(&body))
        .await
}

/// Writes statuses of kind `K` and remembers each write in the resources' [`States`].
pub struct StatusWriter<'a, K: StatusResource> {
    /// The resource's namespace.
    pub api: &'a Api<K>,
    /// The resource's key.
    pub key: &'a ObjectRef<K>,
    /// Every resource's record.
    pub states: &'a States<K>,
    /// Counts the writes.
    pub metrics: &'a Metrics,
}

impl<K: StatusResource> StatusWriter<'_, K> {
    /// Writes `obj`'s status (see [`apply_status`]). A status that records an operation just
    /// started (`precious`) is retried a few times on transient trouble, and if it still cannot
    /// be written it is kept in memory and written first on the next reconcile
    /// ([`Self::write_unwritten`]): losing its poll URL would mean sending the operation again.
    pub async fn write(&self, obj: &K, precious: bool) -> Result<K, Error> {
        let attempts = if precious { STATUS_WRITE_ATTEMPTS } else { 1 };
        let mut pause = STATUS_WRITE_RETRY;
        let mut attempt = 1;
        loop {
            match apply_status(self.api, obj).await {
                Ok(written) => {
                    self.metrics.record_status_write();
                    self.states.remember_write(self.key, &written);
                    return Ok(written);
                }
                // A refusal (409: a stale resourceVersion, 422: invalid) would only be
                // refused again; network trouble, 429 and 5xx may pass on a second try.
                Err(error) if attempt < attempts && !is_refusal(&error) => {
                    warn!(%error, attempt, "cannot record the Azure operation just started; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(error) => {
                    if precious && let Some(status) = obj.status() {
                        warn!(%error, "cannot record the Azure operation just started; keeping it to write first on the next reconcile");
                        let uid = obj.meta().uid.clone().unwrap_or_default();
                        self.states.keep_unwritten(self.key, uid, status.clone());
                    }
                    return Err(Error::WriteStatus(error));
                }
            }
        }
    }

    /// Writes the status kept by a failed `precious` [`Self::write`], onto a fresh read of the
    /// resource (its resourceVersion), before anything else is decided. `Ok(None)`: nothing
    /// was kept, or the resource is gone.
    pub async fn write_unwritten(&self, obj: &K) -> Result<Option<K>, Error> {
        let Some((uid, status)) = self.states.take_unwritten(self.key) else {
            return Ok(None);
        };
        if obj.meta().uid.as_deref() != Some(uid.as_str()) {
            // Another resource of the same name: the kept status is not about it.
            return Ok(None);
        }
        let fresh = match self.api.get_opt(&obj.name_any()).await {
            Ok(fresh) => fresh,
            Err(error) => {
                self.states.keep_unwritten(self.key, uid, status);
                return Err(Error::Read(error));
            }
        };
        let Some(mut fresh) = fresh else {
            return Ok(None);
        };
        info!("writing the status of an Azure operation that could not be recorded before");
        *fresh.status_mut() = Some(status);
        self.write(&fresh, true).await.map(Some)
    }
}

/// Whether the API server refused a request for what it asked (4xx other than 429): sending
/// it again unchanged cannot succeed.
fn is_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429)
}
