//! The restore calls: restorable time ranges, recovery points, validateRestore, restore, and
//! the backup jobs a restore creates.

use http::Method;

use super::{ArmClient, Body, WriteAnswer};
use crate::error::ArmError;
use crate::ids::{BackupInstanceId, VaultId};
use crate::models::{
    FindRestorableTimeRangesRequest, FindRestorableTimeRangesResponseResource, JobResource,
    OPERATIONAL_STORE, OperationJobExtendedInfo, RecoveryPointResource, RecoveryPointResourceList,
    RestorableTimeRange, RestoreRequest, ValidateRestoreRequest,
};
use crate::operation_ids as ops;

impl ArmClient {
    /// POST `.../findRestorableTimeRanges` for the operational store, between `start` and
    /// `end`: the ranges the instance's blobs can be restored to.
    pub async fn find_restorable_time_ranges(
        &self,
        id: &BackupInstanceId,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
    ) -> Result<Vec<RestorableTimeRange>, ArmError> {
        let mut segments = id.path_segments();
        segments.push("findRestorableTimeRanges");
        let time = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.7fZ").to_string();
        let body = FindRestorableTimeRangesRequest {
            source_data_store_type: OPERATIONAL_STORE.to_string(),
            start_time: Some(time(start)),
            end_time: Some(time(end)),
        };
        let response = self
            .send(
                ops::FIND_RESTORABLE_TIME_RANGES,
                Method::POST,
                self.url(&segments)?,
                Some(&body),
            )
            .await?;
        if response.status != 200 {
            return Err(response.unexpected());
        }
        let found: FindRestorableTimeRangesResponseResource = response.json()?;
        Ok(found
            .properties
            .map(|p| p.restorable_time_ranges)
            .unwrap_or_default())
    }

    /// Every recovery point of the backup instance (vaulted backup), following `nextLink`
    /// (on the ARM endpoint only).
    pub async fn recovery_points(
        &self,
        id: &BackupInstanceId,
    ) -> Result<Vec<RecoveryPointResource>, ArmError> {
        let mut segments = id.path_segments();
        segments.push("recoveryPoints");
        self.all_pages(
            ops::RECOVERY_POINTS_LIST,
            self.url(&segments)?,
            |page: RecoveryPointResourceList| (page.value, page.next_link),
        )
        .await
    }

    /// POST `.../validateRestore` with `{"restoreRequestObject": request}`: 200 done (with the
    /// job Azure names), 202 pending; a 400 is Azure refusing the restore. A POST spends the
    /// subscription's write budget like any ARM write: the answer says what is left of it.
    pub async fn validate_restore(
        &self,
        id: &BackupInstanceId,
        request: &RestoreRequest,
    ) -> WriteAnswer<OperationJobExtendedInfo> {
        let body = ValidateRestoreRequest {
            restore_request_object: request.clone(),
        };
        let mut segments = id.path_segments();
        segments.push("validateRestore");
        self.start(
            ops::VALIDATE_FOR_RESTORE,
            Method::POST,
            &segments,
            Some(&body),
            Body::Resource,
        )
        .await
    }

    /// POST `.../restore` with `request`: 200 done (the body names the job), 202 pending (the
    /// operation's status names the job once it succeeded). Send it once: every answer but an
    /// error before Azure took the request may mean a restore is running. It spends the
    /// subscription's write budget; the answer says what is left of it.
    pub async fn restore(
        &self,
        id: &BackupInstanceId,
        request: &RestoreRequest,
    ) -> WriteAnswer<OperationJobExtendedInfo> {
        let mut segments = id.path_segments();
        segments.push("restore");
        self.start(
            ops::TRIGGER_RESTORE,
            Method::POST,
            &segments,
            Some(request),
            Body::Resource,
        )
        .await
    }

    /// GET `.../backupVaults/{vault}/backupJobs/{job}`; `job` is the job's name or its full
    /// ARM ID (Azure hands out either). `None` when Azure answers 404.
    pub async fn job(&self, vault: &VaultId, job: &str) -> Result<Option<JobResource>, ArmError> {
        let name = job
            .trim()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        if name.is_empty() {
            return Err(ArmError::Config {
                message: format!("the job id {job:?} names no job"),
            });
        }
        let mut segments = vault.path_segments();
        segments.extend(["backupJobs", name]);
        let response = self
            .send::<()>(ops::JOBS_GET, Method::GET, self.url(&segments)?, None)
            .await?;
        match response.status {
            200 => response.json().map(Some),
            404 => Ok(None),
            _ => Err(response.unexpected()),
        }
    }
}
