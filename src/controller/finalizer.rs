//! Finalizer patches: JSON patches whose `test` fails if the finalizers changed since they were
//! read (the API server does not deduplicate finalizers). Generic over the kind.
//!
//! Not kube's `finalizer` helper: it removes the finalizer as soon as one cleanup reconcile
//! returns, but here the finalizer may go only once Azure has confirmed the deletion, which
//! takes several reconciles that `decide` tracks in status.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::FIELD_MANAGER;

/// Adds `finalizer` to `obj`; the resource as the API server wrote it.
pub async fn add<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let operations = match &obj.meta().finalizers {
        None => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ]),
        Some(finalizers) => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ]),
    };
    patch(api, obj, operations).await
}

/// Removes `finalizer` from `obj`, testing that it is still at the index read. A resource
/// already gone needs nothing more.
pub async fn remove<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(index) = obj.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let operations = json!([
        {"op": "test", "path": path, "value": finalizer},
        {"op": "remove", "path": path},
    ]);
    match patch(api, obj, operations).await {
        Ok(_) => Ok(()),
        // Removing the last finalizer lets the apiserver delete the object; an already
        // deleted object needs nothing more.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

async fn patch<K>(api: &Api<K>, obj: &K, operations: serde_json::Value) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(operations).map_err(kube::Error::SerdeError)?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(&obj.name_any(), &params, &Patch::Json::<()>(patch))
        .await
}
