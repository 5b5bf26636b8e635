//! An HTTP answer as the emulator's logic builds it, and the error answers shared by routes.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use serde::Serialize;

use super::model::{CloudError, ErrorBody, UserFacingError};

pub(crate) const AZURE_ASYNC_OPERATION: HeaderName =
    HeaderName::from_static("azure-asyncoperation");

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

/// 400 with a Data Protection user error (`UserErrorInvalidParameterInRequest` and kin).
pub(crate) fn user_error(
    status: StatusCode,
    code: &str,
    message: String,
    activity_id: &str,
) -> Reply {
    Reply::error(
        status,
        ErrorBody::service(UserFacingError::new(code, message, activity_id), true),
    )
}

/// 400 `InvalidRequestContent`: the body is not JSON of the expected shape.
pub(crate) fn invalid_content(detail: &str) -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        ErrorBody::arm(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{detail}'."),
        ),
    )
}

/// ARM's 404 for a resource (vault, backup instance) that does not exist.
pub(crate) fn resource_not_found(resource_type: &str, name: &str, resource_group: &str) -> Reply {
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
