//! Restores: restorable time ranges (from each operational instance's protection start),
//! validateRestore and restore (long-running, like the other actions), and the backup jobs a
//! restore creates, which run for the operation latency and end `Completed`, or `Failed` when
//! the admin API armed a failure for the next restore.

use std::collections::HashMap;
use std::time::Instant;

use jiff::Timestamp;
use serde_json::json;

use dataprotection::models::{
    FindRestorableTimeRangesRequest, OPERATIONAL_STORE, RestoreCriteria, RestoreRequest,
    VAULT_STORE, ValidateRestoreRequest, parse_azure_time,
};

use super::{
    Ctx, INVALID_PARAMETER, Outcome, Phase, RETAINED_RECOVERY_POINTS, Refusal, State, Verdict,
    end_time, instance_key, instance_not_found, recovery_points_taken, start_time,
};
use crate::keys::{KeyedId, parse_storage_account_id};
use crate::model::{ErrorBody, UserFacingError, missing_permissions, parse_body};
use dataprotection::OperationAction;

const JOB_TYPE: &str = "Microsoft.DataProtection/backupVaults/backupJobs";

/// The restores' part of the world.
#[derive(Default)]
pub(crate) struct Restores {
    /// By job id.
    jobs: HashMap<String, Job>,
    /// The error the next restore's job ends with (admin API).
    fail_next: Option<UserFacingError>,
}

struct Job {
    vault_key: String,
    instance_id: String,
    account_id: String,
    account_name: String,
    start_wall: Timestamp,
    started: Instant,
    done_at: Instant,
    failure: Option<UserFacingError>,
}

/// A restore request the emulator accepts, and what it needs to run it.
struct Checked {
    instance_id: String,
    account_id: String,
    account_name: String,
    permission_failure: Option<ErrorBody>,
}

/// The earliest restorable time of an instance protected since `since` (an instant of this
/// process): that moment on the wall clock, rounded up to the second so that the range
/// printed and the range checked are the same.
fn restorable_from(ctx: &Ctx, since: Instant) -> Timestamp {
    let age = ctx.now.saturating_duration_since(since);
    let at = ctx.wall - jiff::SignedDuration::try_from(age).unwrap_or_default();
    let up = i64::from(at.subsec_nanosecond() > 0);
    Timestamp::from_second(at.as_second() + up).unwrap_or(at)
}

impl State {
    /// Makes the next restore's job fail with `code` and `message`.
    pub fn fail_next_restore(&mut self, code: &str, message: &str) {
        self.restores.fail_next = Some(UserFacingError::new(code, message, "emulator"));
    }

    /// POST backupInstances/{name}/findRestorableTimeRanges: an operational instance can be
    /// restored to any time from when its protection was configured until now.
    pub fn find_restorable_time_ranges(
        &mut self,
        ctx: &Ctx,
        vault: &KeyedId,
        name: &str,
        body: &[u8],
    ) -> Verdict {
        self.vault(vault)?;
        let request: FindRestorableTimeRangesRequest =
            parse_body(body).map_err(Refusal::InvalidContent)?;
        if !request
            .source_data_store_type
            .eq_ignore_ascii_case(OPERATIONAL_STORE)
        {
            return Err(Refusal::UserError {
                code: INVALID_PARAMETER,
                message: format!(
                    "sourceDataStoreType '{}' has no restorable time ranges; use {OPERATIONAL_STORE}.",
                    request.source_data_store_type
                ),
            });
        }
        let bound = |text: &Option<String>, field: &str| -> Result<Option<Timestamp>, Refusal> {
            text.as_deref()
                .map(|t| {
                    parse_azure_time(t).ok_or_else(|| {
                        Refusal::InvalidContent(format!("{field} '{t}' is not an ISO 8601 time"))
                    })
                })
                .transpose()
        };
        let from = bound(&request.start_time, "startTime")?;
        let to = bound(&request.end_time, "endTime")?;
        let key = instance_key(&vault.key, name);
        let Some(instance) = self.live(&key, ctx.now) else {
            return Err(instance_not_found(vault, name));
        };
        let since = instance.protected_since.filter(|_| !instance.vaulted);
        let instance_name = instance.name.clone();
        let mut ranges = Vec::new();
        if let Some(since) = since {
            let earliest = restorable_from(ctx, since);
            let start = from.map_or(earliest, |f| f.max(earliest));
            let end = to.map_or(ctx.wall, |t| t.min(ctx.wall));
            if start <= end {
                ranges.push(json!({
                    "startTime": start_time(start),
                    "endTime": start_time(end),
                    "objectType": "RestorableTimeRange",
                }));
            }
        }
        Ok(Outcome::RestorableTimeRanges(json!({
                "id": instance_name,
                "type": "Microsoft.DataProtection/backupVaults/backupInstances/findRestorableTimeRanges",
                "properties": {
                    "objectType": "AzureBackupFindRestorableTimeRangesResponse",
                    "restorableTimeRanges": ranges,
                },
        })))
    }

    /// POST backupInstances/{name}/validateRestore.
    pub fn validate_restore(
        &mut self,
        ctx: &Ctx,
        vault: &KeyedId,
        name: &str,
        body: &[u8],
    ) -> Verdict {
        let request: ValidateRestoreRequest = parse_body(body).map_err(Refusal::InvalidContent)?;
        let checked = self.check_restore(
            ctx,
            vault,
            name,
            &request.restore_request_object,
            "Validate for Restore",
        )?;
        let op = self.start_operation(
            ctx,
            &vault.key,
            OperationAction::ValidateRestore,
            None,
            checked.permission_failure,
        );
        Ok(Outcome::Accepted(self.operation_link(ctx, &op)))
    }

    /// POST backupInstances/{name}/restore: an operation that, once it succeeds, names the
    /// restore's job (`properties.jobId`); the job runs for the operation latency after it.
    pub fn trigger_restore(
        &mut self,
        ctx: &Ctx,
        vault: &KeyedId,
        name: &str,
        body: &[u8],
    ) -> Verdict {
        let request: RestoreRequest = parse_body(body).map_err(Refusal::InvalidContent)?;
        let checked = self.check_restore(ctx, vault, name, &request, "Trigger Restore")?;
        let permission_failure = checked.permission_failure.clone();
        let op = self.start_operation(
            ctx,
            &vault.key,
            OperationAction::Restore,
            Some(instance_key(&vault.key, name)),
            checked.permission_failure,
        );
        if permission_failure.is_none() {
            let operation = &self.operations[&op];
            let started = operation.done_at;
            let job = Job {
                vault_key: vault.key.clone(),
                instance_id: checked.instance_id,
                account_id: checked.account_id,
                account_name: checked.account_name,
                start_wall: ctx.wall + operation.duration,
                started,
                done_at: started + self.behavior.latency,
                failure: self.restores.fail_next.take(),
            };
            let job_id = operation.job_id.clone();
            self.restores.jobs.insert(job_id, job);
        }
        Ok(Outcome::Accepted(self.operation_link(ctx, &op)))
    }

    /// GET backupVaults/{vault}/backupJobs/{id}.
    pub fn get_job(&self, ctx: &Ctx, vault: &KeyedId, id: &str) -> Verdict {
        let vault_display = self.vault(vault)?.id.display.clone();
        let job = self
            .restores
            .jobs
            .iter()
            .find(|(job_id, job)| job_id.eq_ignore_ascii_case(id) && job.vault_key == vault.key)
            .map(|(_, job)| job)
            .ok_or_else(|| Refusal::ResourceNotFound {
                resource_type: JOB_TYPE,
                name: format!("{}/{id}", vault.name),
                resource_group: vault.resource_group.clone(),
            })?;
        let (status, end) = if ctx.now < job.started {
            ("NotStarted", None)
        } else if ctx.now < job.done_at {
            ("InProgress", None)
        } else if job.failure.is_some() {
            ("Failed", Some(job.done_at))
        } else {
            ("Completed", Some(job.done_at))
        };
        let end = end.map(|at| {
            end_time(
                job.start_wall
                    + jiff::SignedDuration::try_from(at - job.started).unwrap_or_default(),
            )
        });
        let errors: Vec<&UserFacingError> =
            job.failure.iter().filter(|_| status == "Failed").collect();
        let (subscription, resource_group) = parse_storage_account_id(&job.account_id)
            .map(|a| (a.subscription, a.resource_group))
            .unwrap_or_default();
        let mut properties = json!({
            "activityID": ctx.activity_id,
            "backupInstanceFriendlyName": job.account_name,
            "backupInstanceId": job.instance_id,
            "dataSourceId": job.account_id,
            "dataSourceLocation": "",
            "dataSourceName": job.account_name,
            "dataSourceType": "Microsoft.Storage/storageAccounts/blobServices",
            "isUserTriggered": true,
            "operation": "Restore",
            "operationCategory": "Restore",
            "progressEnabled": false,
            "sourceResourceGroup": resource_group,
            "sourceSubscriptionID": subscription,
            "startTime": start_time(job.start_wall),
            "status": status,
            "subscriptionId": vault.subscription,
            "supportedActions": [],
            "vaultName": vault.name,
            "errorDetails": errors,
        });
        if let Some(end) = end {
            properties["endTime"] = json!(end);
        }
        Ok(Outcome::BackupJob(json!({
            "id": format!("{vault_display}/backupJobs/{id}"),
            "name": id,
            "type": JOB_TYPE,
            "properties": properties,
        })))
    }

    /// What Azure checks of a restore before it accepts it.
    fn check_restore(
        &mut self,
        ctx: &Ctx,
        vault: &KeyedId,
        name: &str,
        request: &RestoreRequest,
        stage: &str,
    ) -> Result<Checked, Refusal> {
        let bad = |code: &'static str, message: String| Refusal::UserError { code, message };
        let principal_id = self.vault(vault)?.principal_id.clone();
        let key = instance_key(&vault.key, name);
        let Some(instance) = self.live(&key, ctx.now) else {
            return Err(instance_not_found(vault, name));
        };
        if instance.pending.is_some() || !matches!(instance.phase, Phase::Configured) {
            return Err(bad(
                INVALID_PARAMETER,
                format!(
                    "The backup instance {name} is not in a protected state; restore it once protection is configured."
                ),
            ));
        }
        let (vaulted, since, taken) = (
            instance.vaulted,
            instance.protected_since,
            recovery_points_taken(instance, ctx.now),
        );
        let instance_id = instance.id.clone();
        let source_key = instance.account_key.clone();
        let containers: Vec<String> = instance
            .props
            .vaulted_containers()
            .map(<[String]>::to_vec)
            .unwrap_or_default();
        if let Some(source) = &request.source_resource_id
            && !source
                .trim_end_matches('/')
                .eq_ignore_ascii_case(&source_key)
        {
            return Err(bad(
                INVALID_PARAMETER,
                format!(
                    "sourceResourceId {source} is not the datasource of the backup instance {name}."
                ),
            ));
        }
        let target =
            parse_storage_account_id(&request.restore_target_info.datasource_info.resource_id)
                .map_err(|m| {
                    bad(
                        INVALID_PARAMETER,
                        format!("restoreTargetInfo.datasourceInfo.resourceID: {m}"),
                    )
                })?;
        let store = request.source_data_store_type.as_str();
        let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if is(
            &request.object_type,
            "AzureBackupRecoveryTimeBasedRestoreRequest",
        ) {
            if !is(store, OPERATIONAL_STORE) || vaulted {
                return Err(bad(
                    INVALID_PARAMETER,
                    format!(
                        "A point-in-time restore reads the {OPERATIONAL_STORE}, which only operational backup instances have."
                    ),
                ));
            }
            let at = request
                .recovery_point_time
                .as_deref()
                .and_then(parse_azure_time)
                .ok_or_else(|| {
                    bad(
                        INVALID_PARAMETER,
                        "recoveryPointTime is required and must be an ISO 8601 time.".into(),
                    )
                })?;
            let start = since.map(|since| restorable_from(ctx, since));
            if start.is_none_or(|start| at < start || at > ctx.wall) {
                return Err(bad(
                    "UserErrorInvalidRecoveryPointInTime",
                    format!(
                        "The point in time {at} is outside the restorable time ranges of the backup instance; list them with findRestorableTimeRanges."
                    ),
                ));
            }
            if target.key != source_key {
                return Err(bad(
                    INVALID_PARAMETER,
                    "Operational backup restores blobs to the original storage account only."
                        .into(),
                ));
            }
        } else if is(
            &request.object_type,
            "AzureBackupRecoveryPointBasedRestoreRequest",
        ) {
            if !is(store, VAULT_STORE) || !vaulted {
                return Err(bad(
                    INVALID_PARAMETER,
                    format!(
                        "A recovery point restore reads the {VAULT_STORE}, which only vaulted backup instances have."
                    ),
                ));
            }
            let point = request.recovery_point_id.as_deref().unwrap_or_default();
            let index = point
                .strip_prefix("rp-")
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n < taken && *n + RETAINED_RECOVERY_POINTS >= taken);
            if index.is_none() {
                return Err(bad(
                    "UserErrorRestorePointNotFoundInBackupVault",
                    format!("The recovery point '{point}' was not found in the Backup vault."),
                ));
            }
            for criterion in request
                .restore_target_info
                .restore_criteria
                .iter()
                .flatten()
            {
                let RestoreCriteria::ItemPathBasedRestoreCriteria {
                    item_path,
                    sub_item_path_prefix,
                    ..
                } = criterion
                else {
                    return Err(bad(
                        INVALID_PARAMETER,
                        "A vaulted blob restore takes ItemPathBasedRestoreCriteria.".into(),
                    ));
                };
                if !containers.iter().any(|c| c.eq_ignore_ascii_case(item_path)) {
                    return Err(bad(
                        INVALID_PARAMETER,
                        format!(
                            "The container '{item_path}' is not among the backed-up containers ({}).",
                            containers.join(", ")
                        ),
                    ));
                }
                if target.key != source_key && sub_item_path_prefix.is_some() {
                    return Err(bad(
                        INVALID_PARAMETER,
                        "Prefix-based restore is not supported when restoring vaulted blobs to another storage account; restore whole containers.".into(),
                    ));
                }
            }
        } else {
            return Err(bad(
                INVALID_PARAMETER,
                format!(
                    "objectType '{}' is not a blob restore request.",
                    request.object_type
                ),
            ));
        }
        let account = self.accounts.get(&target.key).ok_or_else(|| {
            Refusal::ReferenceNotFound(format!(
                "The storage account {} was not found.",
                target.display
            ))
        })?;
        let permission_failure = (!account.granted.contains(&vault.key)).then(|| {
            missing_permissions(stage, &principal_id, &account.id.display, ctx.activity_id)
        });
        Ok(Checked {
            instance_id,
            account_id: account.id.display.clone(),
            account_name: account.id.name.clone(),
            permission_failure,
        })
    }
}
