//! The Azure half of a restore step: performs a decided [`Action`] and turns the answer into
//! the [`Observation`] the next decision reads.

use dataprotection::{ArmClient, ArmError, LroStart, OperationJobExtendedInfo, Poll, WriteAnswer};

use super::decide::{Action, Observation};
use crate::api::OperationAction;
use crate::controller::azure::{Performed, observed_error, poll_refusal, polled_status};
use crate::controller::decide::{AzureCall, PollHandle};

/// Performs `action`; `None` for [`Action::None`]. A write's answer says what is left of its
/// budget; findRestorableTimeRanges' figure is not read (its copy counts it all the same).
pub(crate) async fn perform(arm: &ArmClient, action: &Action) -> Option<Performed<Observation>> {
    let read_failed = |error: ArmError| Observation::Failed {
        call: AzureCall::Get,
        error: observed_error(&error),
    };
    let observation = match action {
        Action::None => return None,
        Action::FindRanges { instance, from, to } => {
            match arm.find_restorable_time_ranges(instance, *from, *to).await {
                Ok(ranges) => Observation::Ranges(ranges),
                Err(error) => read_failed(error),
            }
        }
        Action::ListRecoveryPoints(instance) => match arm.recovery_points(instance).await {
            Ok(points) => Observation::RecoveryPoints(
                points
                    .iter()
                    .filter_map(|p| Some((p.point_name()?.to_owned(), p.time())))
                    .collect(),
            ),
            Err(error) => read_failed(error),
        },
        Action::ValidateRestore { instance, request } => {
            return Some(started(
                OperationAction::ValidateRestore,
                arm.validate_restore(instance, request).await,
            ));
        }
        Action::Restore { instance, request } => {
            return Some(started(
                OperationAction::Restore,
                arm.restore(instance, request).await,
            ));
        }
        Action::Poll { url, instance } => polled(arm.poll(url, instance).await),
        Action::GetJob { vault, job } => match arm.job(vault, job).await {
            Ok(job) => Observation::Job(job.and_then(|j| j.properties).map(|j| j.state())),
            Err(error) => read_failed(error),
        },
    };
    Some(Performed {
        observation,
        remaining: None,
    })
}

fn started(
    action: OperationAction,
    answer: WriteAnswer<OperationJobExtendedInfo>,
) -> Performed<Observation> {
    Performed {
        observation: started_observation(action, answer.result),
        remaining: answer.remaining,
    }
}

fn started_observation(
    action: OperationAction,
    answer: Result<LroStart<OperationJobExtendedInfo>, ArmError>,
) -> Observation {
    match answer {
        Ok(LroStart::Done(body)) => Observation::Started {
            action,
            poll: None,
            job_id: body.and_then(|b| b.job_id),
        },
        Ok(LroStart::Pending { handle, body }) => Observation::Started {
            action,
            poll: Some(PollHandle {
                url: handle.poll_url,
                retry_after: handle.retry_after,
            }),
            job_id: body.and_then(|b| b.job_id),
        },
        // Refused before anything left this process: Azure never saw the request.
        Err(
            error @ (ArmError::WriteGateClosed { .. }
            | ArmError::Auth { .. }
            | ArmError::Config { .. }),
        ) => Observation::NotSent {
            action,
            message: error.to_string(),
        },
        Err(error) => Observation::Failed {
            call: AzureCall::Start(action),
            error: observed_error(&error),
        },
    }
}

fn polled(answer: Result<Poll, ArmError>) -> Observation {
    match answer {
        Ok(poll) => Observation::Polled {
            status: polled_status(poll.status),
            retry_after: poll.retry_after,
            job_id: poll.job_id,
        },
        Err(error) => match poll_refusal(&error) {
            Some(message) => Observation::PollRefused { message },
            None => Observation::Failed {
                call: AzureCall::Poll,
                error: observed_error(&error),
            },
        },
    }
}
