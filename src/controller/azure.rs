//! The Azure half of a reconcile step: performs a decided [`Action`] with the ARM client and
//! turns the answer into the [`Observation`] the next decision reads.

use std::time::Duration;

use tracing::{debug, warn};

use crate::api::OperationAction;
use dataprotection::ids::BackupInstanceId;
use dataprotection::{
    ArmClient, ArmError, AzureErrorDetail, BackupInstance, BackupInstanceResource, OperationStatus,
    Poll, WriteAnswer,
};

use super::decide::{
    Action, AzureCall, LastRecoveryPoint, Observation, ObservedError, ObservedId, ObservedInstance,
    PollHandle, PolledStatus, Target,
};

/// What an Azure call said: the observation (of either controller's kind), and for a write,
/// what its answer said is left of the budget it spent
/// (`x-ms-ratelimit-remaining-subscription-writes` or `-deletes`).
pub(crate) struct Performed<O = Observation> {
    pub observation: O,
    pub remaining: Option<u64>,
}

/// Performs `action` against Azure. `None` for actions that are not Azure calls.
pub(crate) async fn perform(arm: &ArmClient, action: &Action) -> Option<Performed> {
    let read = |observation| Performed {
        observation,
        remaining: None,
    };
    let performed = match action {
        Action::None | Action::AddFinalizer | Action::RemoveFinalizer => return None,
        Action::GetInstance(id) => match arm.get(id).await {
            Ok(Some(resource)) => {
                let mut instance = observed_instance(&resource);
                // Vaulted backup only: operational backup keeps no discrete recovery points.
                if instance.containers.is_some() {
                    instance.last_recovery_point = last_recovery_point(arm, id).await;
                }
                read(Observation::Instance(Some(instance)))
            }
            Ok(None) => read(Observation::Instance(None)),
            Err(error) => read(failed(AzureCall::Get, error)),
        },
        Action::Validate(target) => {
            let answer = arm
                .validate_for_backup(&target.spec.vault, &request_body(target))
                .await;
            started(OperationAction::Validate, answer)
        }
        Action::Put {
            target,
            operation,
            tags,
        } => {
            let answer = arm
                .create_or_update_tagged(&target.instance, &request_body(target), tags)
                .await;
            started(*operation, answer)
        }
        Action::Delete(id) => started(OperationAction::Delete, arm.delete(id).await),
        Action::StopProtection(id) => started(
            OperationAction::StopProtection,
            arm.stop_protection(id).await,
        ),
        Action::Sync(id) => started(OperationAction::Sync, arm.sync(id).await),
        Action::Poll { url, instance } => read(poll_observation(arm.poll(url, instance).await)),
    };
    Some(performed)
}

/// What a poll says. A URL the client will not use (not an operation of the vault on the
/// ARM endpoint), or whose answer it will not take (a redirect, which it does not follow, or
/// a body over its size limit), would fail the same way on every poll: waiting on it would
/// stall the resource, and block its deletion, for good. So it is `PollRefused`: the operation
/// ends as Failed and the instance is read instead.
fn poll_observation(result: Result<Poll, ArmError>) -> Observation {
    match result {
        Ok(poll) => Observation::Polled {
            status: polled_status(poll.status),
            retry_after: poll.retry_after,
        },
        Err(error) => match poll_refusal(&error) {
            Some(message) => Observation::PollRefused { message },
            None => failed(AzureCall::Poll, error),
        },
    }
}

/// Why a poll URL will never answer usefully (so the operation is ended, not polled again), or
/// `None` for a failure worth retrying. Shared by every controller that polls.
pub(crate) fn poll_refusal(error: &ArmError) -> Option<String> {
    match error {
        ArmError::ForeignPollUrl { .. } | ArmError::PollPathRefused { .. } => Some(format!(
            "{error}. Check --arm-endpoint, and who else writes this resource's status"
        )),
        // Their messages say what to check.
        ArmError::Redirected { .. } | ArmError::ResponseTooLarge { .. } => Some(error.to_string()),
        _ => None,
    }
}

/// The latest recovery point of a vaulted instance. A failed list is logged and leaves the
/// recorded time as it was: it says nothing about the protection itself.
async fn last_recovery_point(arm: &ArmClient, id: &BackupInstanceId) -> LastRecoveryPoint {
    match arm.latest_recovery_point(id).await {
        Ok(Some(at)) => LastRecoveryPoint::At(at),
        Ok(None) => LastRecoveryPoint::NoneYet,
        Err(error) => {
            log_failure(&error);
            LastRecoveryPoint::NotRead
        }
    }
}

/// The validate and PUT body for the spec's target, as the article builds it.
fn request_body(target: &Target) -> BackupInstance {
    let spec = &target.spec;
    BackupInstance::for_blob_account(
        &spec.storage_account,
        &spec.location,
        &spec.policy,
        spec.containers.as_deref(),
    )
}

fn started<T>(action: OperationAction, answer: WriteAnswer<T>) -> Performed {
    let observation = match answer.result {
        Ok(start) => Observation::Started {
            action,
            poll: start.handle().map(|handle| PollHandle {
                url: handle.poll_url.clone(),
                retry_after: handle.retry_after,
            }),
        },
        Err(error) => failed(AzureCall::Start(action), error),
    };
    Performed {
        observation,
        remaining: answer.remaining,
    }
}

fn failed(call: AzureCall, error: ArmError) -> Observation {
    let error = observed_error(&error);
    Observation::Failed { call, error }
}

/// Reduces Azure's backup instance to what decisions compare.
pub(crate) fn observed_instance(resource: &BackupInstanceResource) -> ObservedInstance {
    let tags = resource.tags.clone().unwrap_or_default();
    let Some(properties) = resource.properties.as_ref() else {
        return ObservedInstance {
            id: ObservedId::parse(resource.id.as_deref().unwrap_or_default()),
            tags,
            ..ObservedInstance::default()
        };
    };
    let protection = properties.protection_status.as_ref();
    let protection_error = protection
        .and_then(|p| p.error_details.as_ref())
        .or(properties.protection_error_details.as_ref())
        .map(AzureErrorDetail::from_user_facing);
    ObservedInstance {
        id: ObservedId::parse(resource.id.as_deref().unwrap_or_default()),
        datasource_id: ObservedId::parse(&properties.data_source_info.resource_id),
        policy_id: ObservedId::parse(&properties.policy_info.policy_id),
        containers: properties.vaulted_containers().map(<[String]>::to_vec),
        protection_status: protection.and_then(|p| p.status.clone()),
        protection_state: properties.current_protection_state.clone(),
        provisioning_state: properties.provisioning_state.clone(),
        protection_error,
        last_recovery_point: LastRecoveryPoint::NotRead,
        tags,
    }
}

pub(crate) fn polled_status(status: OperationStatus) -> PolledStatus {
    match status {
        OperationStatus::InProgress { raw } => {
            debug!(status = %raw, "Azure operation still running");
            PolledStatus::InProgress
        }
        OperationStatus::Succeeded => PolledStatus::Succeeded,
        OperationStatus::Failed(detail) => PolledStatus::Failed(detail),
        OperationStatus::Canceled => PolledStatus::Canceled,
    }
}

/// What a failed call tells the decision: who can fix it, the HTTP status, `Retry-After`,
/// and Azure's error; for failures without an Azure error body, the error's own text (which
/// carries Azure's request ids when there were any).
pub(crate) fn observed_error(error: &ArmError) -> ObservedError {
    log_failure(error);
    let class = error.class();
    let azure = match error.azure_detail() {
        Some(detail) => detail.clone(),
        None => AzureErrorDetail {
            message: error.to_string(),
            ..AzureErrorDetail::default()
        },
    };
    ObservedError {
        class,
        http_status: error.http_status(),
        retry_after: error.retry_after(),
        azure,
    }
}

/// Logs a failed call with the ids a support ticket needs.
fn log_failure(error: &ArmError) {
    match error {
        ArmError::Azure {
            operation,
            status,
            detail,
            request_id,
            correlation_id,
            ..
        } => warn!(
            operation,
            status,
            code = %detail.code,
            request_id = request_id.as_deref().unwrap_or_default(),
            correlation_id = correlation_id.as_deref().unwrap_or_default(),
            "Azure call failed: {error}"
        ),
        ArmError::Decode {
            operation,
            status,
            request_id,
            ..
        } => warn!(
            operation,
            status,
            request_id = request_id.as_deref().unwrap_or_default(),
            "cannot read Azure's answer: {error}"
        ),
        other => warn!("Azure call failed: {other}"),
    }
}

/// How long Azure's 429 (`error`, answering a write) says the write's budget is empty: its
/// `Retry-After`, or `retry_after_min` without one; `None` for any other error. Shared by
/// every controller that writes.
pub(crate) fn throttled_for(error: &ObservedError, retry_after_min: Duration) -> Option<Duration> {
    (error.http_status == Some(429)).then(|| error.retry_after.unwrap_or(retry_after_min))
}

/// The operationId of a call that failed with a 429, for the throttling metric.
pub(crate) fn throttled_operation(observation: &Observation) -> Option<&'static str> {
    let Observation::Failed { call, error } = observation else {
        return None;
    };
    if error.http_status != Some(429) {
        return None;
    }
    use dataprotection::operation_ids as ops;
    Some(match call {
        AzureCall::Get => ops::GET,
        AzureCall::Poll => ops::OPERATION_STATUS,
        AzureCall::Start(OperationAction::Validate) => ops::VALIDATE_FOR_BACKUP,
        AzureCall::Start(OperationAction::Create | OperationAction::Update) => {
            ops::CREATE_OR_UPDATE
        }
        AzureCall::Start(OperationAction::Delete) => ops::DELETE,
        AzureCall::Start(OperationAction::StopProtection) => ops::STOP_PROTECTION,
        AzureCall::Start(OperationAction::Sync) => ops::SYNC,
        AzureCall::Start(OperationAction::ValidateRestore) => ops::VALIDATE_FOR_RESTORE,
        AzureCall::Start(OperationAction::Restore) => ops::TRIGGER_RESTORE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataprotection::transport::Oversize;

    #[test]
    fn a_poll_answer_the_client_will_not_take_is_a_refused_poll_not_a_wait() {
        for error in [
            ArmError::Redirected {
                operation: dataprotection::operation_ids::OPERATION_STATUS,
                status: 302,
                location_host: "elsewhere.example".into(),
                request_id: None,
            },
            ArmError::ResponseTooLarge {
                operation: dataprotection::operation_ids::OPERATION_STATUS,
                status: 200,
                size: Oversize::Declared(1 << 30),
                request_id: None,
            },
        ] {
            let expected = error.to_string();
            match poll_observation(Err(error)) {
                // Said once: the redirect's message already names --arm-endpoint.
                Observation::PollRefused { message } => assert_eq!(message, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
        let forged = ArmError::PollPathRefused {
            path: "/subscriptions/x/providers/Microsoft.KeyVault/vaults/v".into(),
            problem: "it names providers \"Microsoft.KeyVault\"".into(),
        };
        match poll_observation(Err(forged)) {
            Observation::PollRefused { message } => assert!(
                message
                    .ends_with("Check --arm-endpoint, and who else writes this resource's status"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        // Network trouble may pass: the operation is polled again.
        let network = ArmError::Network {
            operation: dataprotection::operation_ids::OPERATION_STATUS,
            message: "connection reset".into(),
        };
        assert!(matches!(
            poll_observation(Err(network)),
            Observation::Failed {
                call: AzureCall::Poll,
                ..
            }
        ));
    }
}
