//! Sorting S3 failures: which SDK errors are transient (worth another attempt) and which
//! become a permanent typed [`Error`], plus the few response shapes the store has to
//! recognise before classifying (an unparsed multipart completion, an unsatisfiable range).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::Error;
use crate::retry::Failure;

/// Whether `error` is a 200 response carrying a multipart completion document that the
/// SDK could not parse (as opposed to S3's "200 with an `<Error>` body", which the SDK
/// turns into a proper error code).
pub(super) fn is_unparsed_completion<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    let Some(response) = error.raw_response() else {
        return false;
    };
    if response.status().as_u16() != 200 || error.code().is_some() {
        return false;
    }
    let Some(body) = response.body().bytes() else {
        return false;
    };
    let body = String::from_utf8_lossy(body);
    body.contains("<CompleteMultipartUpload") && body.contains("<ETag>") && !body.contains("<Error>")
}

pub(super) fn is_invalid_range<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    matches!(error, SdkError::ServiceError(_))
        && (error.code() == Some("InvalidRange") || error.raw_response().map(|r| r.status().as_u16()) == Some(416))
}

pub(super) fn request_error(operation: &'static str, key: &str, message: &str) -> Error {
    Error::Request {
        operation,
        key: key.to_owned(),
        status: None,
        code: None,
        message: message.to_owned(),
        source: None,
    }
}

/// Error codes that mean "try again": throttling, server trouble, and conditions a fresh
/// attempt (with fresh credentials or a corrected clock) can fix.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequests",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "BandwidthLimitExceeded",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "OperationAborted",
];

const PERMISSION_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "AccountProblem",
];

/// Sorts an SDK failure into transient (retry) or a permanent typed [`Error`].
pub(super) fn classify<E>(bucket: &str, operation: &'static str, key: &str, error: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|response| response.status().as_u16());
    let code = error.code().map(str::to_owned);
    let message = match (&error, status) {
        // Service errors: the status and S3's own code and message say it all; the SDK's
        // rendering would add the whole raw response.
        (SdkError::ServiceError(_), Some(status)) => {
            let mut message = format!("HTTP {status}");
            if let Some(code) = &code {
                message.push(' ');
                message.push_str(code);
            }
            if let Some(text) = error.message() {
                message.push_str(": ");
                message.push_str(text);
            }
            message
        }
        _ => DisplayErrorContext(&error).to_string(),
    };
    let transient = |message: String, error: SdkError<E, HttpResponse>| Failure::Transient {
        message,
        source: Some(Box::new(error)),
    };
    match &error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => transient(message, error),
        SdkError::DispatchFailure(failure) if !failure.is_user() => transient(message, error),
        SdkError::ServiceError(_) => {
            let code_str = code.as_deref().unwrap_or("");
            let status_code = status.unwrap_or(0);
            if TRANSIENT_CODES.contains(&code_str) || matches!(status_code, 429 | 500 | 502 | 503 | 504) {
                return transient(message, error);
            }
            if code_str == "NoSuchBucket" {
                return Failure::Permanent(Error::BucketNotFound { bucket: bucket.to_owned() });
            }
            if matches!(code_str, "NoSuchKey" | "NotFound") || (status_code == 404 && code_str != "NoSuchUpload") {
                return Failure::Permanent(Error::NotFound { key: key.to_owned() });
            }
            if PERMISSION_CODES.contains(&code_str) || status_code == 403 {
                return Failure::Permanent(Error::PermissionDenied {
                    operation,
                    key: key.to_owned(),
                    message: error.message().unwrap_or(code_str).to_owned(),
                });
            }
            Failure::Permanent(Error::Request {
                operation,
                key: key.to_owned(),
                status,
                code,
                message,
                source: Some(Box::new(error)),
            })
        }
        _ => Failure::Permanent(Error::Request {
            operation,
            key: key.to_owned(),
            status,
            code,
            message,
            source: Some(Box::new(error)),
        }),
    }
}
