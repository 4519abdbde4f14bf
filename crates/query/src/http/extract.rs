//! The typed extractors the handlers declare: the caller, query-string parameters, a JSON
//! body, the ingest body and its trace context. Each refuses a bad request with the API's own
//! JSON error (`invalid_request`, `payload_too_large`) rather than axum's plain-text rejection.

use crate::auth::Principal;
use crate::error::Error;
use crate::ingest::IngestService;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;
use std::convert::Infallible;

/// The caller, as the authentication middleware resolved it.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Error::Internal { message: "request reached a handler without authentication".into() })
    }
}

/// A route's query-string parameters.
pub(crate) trait Parameters: DeserializeOwned {
    /// Refuses what the types alone cannot (an empty `namespace`), once deserialized.
    fn check(&self) -> Result<(), Error>;
}

/// Query-string parameters read into `T` (percent-decoded, `+` as a space); an unknown
/// parameter, a repeated one or a value of the wrong type is `invalid_request` naming it.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: Parameters, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        parameters(parts.uri.query()).map(ApiQuery)
    }
}

/// The query string `raw` read into `T` and checked.
pub(crate) fn parameters<T: Parameters>(raw: Option<&str>) -> Result<T, Error> {
    let parameters: T = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|error| Error::InvalidRequest { message: format!("query parameters: {error}") })?;
    parameters.check()?;
    Ok(parameters)
}

/// A JSON request body.
pub(crate) trait JsonBody: DeserializeOwned {
    /// What the body should be, for the error message ("a query request").
    const WHAT: &'static str;
    /// The most bytes read.
    const MAX_BYTES: usize;
}

/// A JSON body read into `T`; an unreadable, oversized or malformed body is `invalid_request`.
/// Unlike axum's `Json`, any content type is taken.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: JsonBody, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Error> {
        let body = axum::body::to_bytes(request.into_body(), T::MAX_BYTES)
            .await
            .map_err(|error| Error::InvalidRequest { message: format!("unreadable body: {error}") })?;
        serde_json::from_slice(&body)
            .map(ApiJson)
            .map_err(|error| Error::InvalidRequest { message: format!("body is not {}: {error}", T::WHAT) })
    }
}

/// The raw body of an ingest request, at most `DUCKMESH_INGEST_MAX_BODY_BYTES`
/// (`payload_too_large` past it).
#[derive(Debug)]
pub(crate) struct IngestBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for IngestBody
where
    IngestService: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        let limit = IngestService::from_ref(state).config().ingest.max_body_bytes;
        match axum::body::to_bytes(request.into_body(), limit).await {
            Ok(body) => Ok(IngestBody(body)),
            Err(error) => {
                let inner = error.into_inner();
                if inner.is::<http_body_util::LengthLimitError>() {
                    return Err(Error::PayloadTooLarge { limit });
                }
                Err(Error::InvalidRequest { message: format!("unreadable body: {inner}") })
            }
        }
    }
}

/// The W3C `traceparent` header, stored with ingested records; ignored when it is not text or
/// is longer than 128 bytes.
#[derive(Debug)]
pub(crate) struct Traceparent(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Traceparent {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let value = parts
            .headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .filter(|value| value.len() <= 128)
            .map(str::to_owned);
        Ok(Traceparent(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::IngestParameters;
    use crate::model::QueryRequest;
    use axum::body::Body;

    #[tokio::test]
    async fn bad_requests_are_refused_with_the_api_errors() {
        let request = Request::builder().uri("/v1/query").body(Body::from(r#"{"sql": 1}"#)).expect("request");
        let error = ApiJson::<QueryRequest>::from_request(request, &()).await.expect_err("not a query request");
        assert_eq!(error.error_code(), "invalid_request");
        assert!(error.to_string().contains("body is not a query request"), "{error}");
        // No content type is needed.
        let request = Request::builder().uri("/v1/query").body(Body::from(r#"{"sql": "SELECT 1"}"#)).expect("request");
        let ApiJson(parsed) = ApiJson::<QueryRequest>::from_request(request, &()).await.expect("a query request");
        assert_eq!(parsed.sql, "SELECT 1");

        let (mut parts, ()) =
            Request::builder().uri("/v1/ingest/x?namespace=team%2Da").body(()).expect("uri").into_parts();
        let ApiQuery(parameters) =
            ApiQuery::<IngestParameters>::from_request_parts(&mut parts, &()).await.expect("percent-decoded");
        assert_eq!(parameters.namespace.as_deref(), Some("team-a"));
        let (mut parts, ()) = Request::builder().uri("/v1/ingest/x?namespace=").body(()).expect("uri").into_parts();
        let error = ApiQuery::<IngestParameters>::from_request_parts(&mut parts, &()).await.expect_err("empty");
        assert_eq!(error.error_code(), "invalid_request");

        let error = Principal::from_request_parts(&mut parts, &()).await.expect_err("not authenticated");
        assert_eq!(error.error_code(), "internal");
    }
}
