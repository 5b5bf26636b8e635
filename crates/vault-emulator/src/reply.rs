//! HTTP answers: what the world's outcomes and refusals (`state`) look like on the wire
//! (status, headers, CloudError bodies), and the answers routing builds itself.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use serde::Serialize;
use serde_json::Value;

use super::model::{CloudError, ErrorBody, UserFacingError};
use super::state::{OperationLink, Outcome, Refusal, Verdict};

const AZURE_ASYNC_OPERATION: HeaderName = HeaderName::from_static("azure-asyncoperation");

/// Status, headers and an optional JSON body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Vec<u8>>,
}

/// Either way, an answer: `Err` carries the error answer so handlers can use `?`.
pub(crate) type Answer = Result<Reply, Reply>;

impl Reply {
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Raw bytes sent as JSON (the `malformedBody`/`emptyBody` faults send broken ones).
    pub fn body(status: StatusCode, bytes: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(bytes),
        }
    }

    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => Self::body(status, bytes),
            // Only maps with non-string keys fail to serialize; the model has none.
            Err(e) => Self::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::arm("InternalServerError", format!("emulator bug: {e}")),
            ),
        }
    }

    pub fn error(status: StatusCode, error: ErrorBody) -> Self {
        Self::json(status, &CloudError { error })
    }

    /// Adds a header; values that are not valid header text are left out.
    pub fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(value) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((name, value));
        }
        self
    }

    pub fn retry_after(self, seconds: u64) -> Self {
        self.header(RETRY_AFTER, seconds.to_string())
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let has_body = self.body.is_some();
        let mut response = match self.body {
            Some(bytes) => Response::new(Body::from(bytes)),
            None => Response::new(Body::empty()),
        };
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if has_body {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }
}

/// The answer to what a request came to; `activity_id` goes into the service's user errors.
pub(crate) fn verdict(verdict: Verdict, activity_id: &str) -> Reply {
    match verdict {
        Ok(outcome) => outcome_reply(outcome),
        Err(refusal) => refusal_reply(refusal, activity_id),
    }
}

fn outcome_reply(outcome: Outcome) -> Reply {
    match outcome {
        // validate, DELETE, stopProtection, sync and a running operation's result: 202 with
        // both URLs.
        Outcome::Accepted(link) => {
            let reply = Reply::empty(StatusCode::ACCEPTED);
            match link {
                Some(link) => pointing_at(reply, &link).header(LOCATION, &link.result_url),
                None => reply,
            }
        }
        // PUT: Azure-AsyncOperation and Retry-After only, as the article's transcript.
        Outcome::Put {
            created,
            instance,
            operation,
        } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let reply = Reply::json(status, &instance);
            match operation {
                Some(link) => pointing_at(reply, &link),
                None => reply,
            }
        }
        Outcome::Instance(instance) => Reply::json(StatusCode::OK, &instance),
        Outcome::InstancePage(page) => Reply::json(StatusCode::OK, &page),
        Outcome::RecoveryPointPage(page)
        | Outcome::RestorableTimeRanges(page)
        | Outcome::BackupJob(page) => Reply::json(StatusCode::OK, &page),
        Outcome::OperationStatus(status) => Reply::json(StatusCode::OK, &status),
        Outcome::InstanceResult(instance) => match instance {
            Some(instance) => Reply::json(StatusCode::OK, &instance),
            None => Reply::json(StatusCode::OK, &Value::Object(Default::default())),
        },
        Outcome::Job(job) => Reply::json(StatusCode::OK, &job),
        Outcome::Unchanged => Reply::empty(StatusCode::OK),
        Outcome::Gone => Reply::empty(StatusCode::NO_CONTENT),
    }
}

/// Azure-AsyncOperation and Retry-After of an operation.
fn pointing_at(reply: Reply, link: &OperationLink) -> Reply {
    reply
        .header(AZURE_ASYNC_OPERATION, &link.status_url)
        .retry_after(link.retry_after)
}

fn refusal_reply(refusal: Refusal, activity_id: &str) -> Reply {
    match refusal {
        Refusal::ResourceNotFound {
            resource_type,
            name,
            resource_group,
        } => resource_not_found(resource_type, &name, &resource_group),
        Refusal::InvalidContent(detail) => invalid_content(&detail),
        Refusal::UserError { code, message } => {
            user_error(StatusCode::BAD_REQUEST, code, message, activity_id)
        }
        Refusal::ReferenceNotFound(message) => user_error(
            StatusCode::NOT_FOUND,
            "UserErrorResourceNotFound",
            message,
            activity_id,
        ),
        Refusal::AnotherOperationInProgress => user_error(
            StatusCode::CONFLICT,
            "AnotherOperationInProgress",
            "Another operation is in progress on this backup instance; retry after it completes."
                .into(),
            activity_id,
        ),
        Refusal::AlreadyProtected(error) | Refusal::OperationFailed(error) => {
            Reply::error(StatusCode::BAD_REQUEST, error)
        }
        Refusal::OperationNotFound(id) => Reply::error(
            StatusCode::NOT_FOUND,
            ErrorBody::arm(
                "OperationNotFound",
                format!("The operation '{id}' was not found."),
            ),
        ),
    }
}

/// 400 with a Data Protection user error (`UserErrorInvalidParameterInRequest` and kin).
fn user_error(status: StatusCode, code: &str, message: String, activity_id: &str) -> Reply {
    Reply::error(
        status,
        ErrorBody::service(UserFacingError::new(code, message, activity_id), true),
    )
}

/// 400 `InvalidRequestContent`: the body is not JSON of the expected shape.
fn invalid_content(detail: &str) -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        ErrorBody::arm(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{detail}'."),
        ),
    )
}

/// ARM's 404 for a resource (vault, backup instance) that does not exist.
fn resource_not_found(resource_type: &str, name: &str, resource_group: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        ErrorBody::arm(
            "ResourceNotFound",
            format!(
                "The Resource '{resource_type}/{name}' under resource group '{resource_group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        ),
    )
}
