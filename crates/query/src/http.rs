//! The HTTP surface: routes, authentication and rate limits, JSON errors, request counting.
//! Handlers declare what they read as typed extractors ([`extract`]).

mod extract;

use crate::auth::{Principal, presented_key};
use crate::error::Error;
use crate::ingest::{IngestResponse, IngestService};
use crate::metrics::{QueryKind, Route};
use crate::model::{DatasetList, ErrorBody, Health, IntegrityList, QueryRequest, QueryResponse, SnapshotPage};
use crate::service::{QueryAnswer, QueryService, RawBody, Readiness};
use axum::Router;
use axum::extract::{FromRef, Path, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use extract::{ApiJson, ApiQuery, IngestBody, JsonBody, Parameters, Traceparent};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use std::future::Future;

const JSON: &str = "application/json";

/// The routes' state: the query service and the ingest service sharing its catalog, metrics,
/// configuration and rate limiters. Handlers take either as `State<_>`.
#[derive(Debug, Clone)]
struct AppState {
    query: QueryService,
    ingest: IngestService,
}

impl FromRef<AppState> for QueryService {
    fn from_ref(state: &AppState) -> Self {
        state.query.clone()
    }
}

impl FromRef<AppState> for IngestService {
    fn from_ref(state: &AppState) -> Self {
        state.ingest.clone()
    }
}

/// Every route of the query deployment, `/metrics` included.
pub fn router(service: QueryService) -> Router {
    let metrics = duckmesh_telemetry::metrics_router(service.metrics());
    let state =
        AppState { ingest: IngestService::new(std::sync::Arc::clone(service.shared())), query: service.clone() };
    Router::new()
        .route("/v1/query", post(query).route_layer(from_fn_with_state(service.clone(), limit_query_rate)))
        .route("/v1/task/query", post(task_query))
        .route("/v1/ingest/{dataset}", post(ingest))
        .route("/v1/datasets", get(datasets))
        .route("/v1/datasets/{name}/snapshots", get(snapshots))
        .route("/v1/integrity", get(integrity))
        .route_layer(from_fn_with_state(service.clone(), authenticate))
        .route("/v1/health", get(health))
        .route("/healthz", get(healthz))
        .route("/v1/ready", get(ready))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi_json))
        .fallback(not_found)
        .with_state(state)
        .merge(metrics)
        .layer(from_fn_with_state(service, count))
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(CONTENT_TYPE, HeaderValue::from_static(JSON))], body).into_response(),
        Err(error) => Error::Internal { message: format!("encoding the response: {error}") }.into_response(),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody { error_code: self.error_code().to_owned(), message: self.to_string() };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error_code\":\"internal\"}".to_vec());
        let mut response = (status, [(CONTENT_TYPE, HeaderValue::from_static(JSON))], bytes).into_response();
        if let Some(seconds) = self.retry_after() {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn route_of(path: &str) -> Route {
    match path {
        "/v1/query" => Route::Query,
        "/v1/task/query" => Route::TaskQuery,
        "/v1/datasets" => Route::Datasets,
        "/v1/integrity" => Route::Integrity,
        "/v1/health" | "/healthz" => Route::Health,
        "/v1/ready" | "/readyz" => Route::Ready,
        "/v1/openapi.json" => Route::Other,
        "/metrics" => Route::Metrics,
        path if path.starts_with("/v1/ingest/") => Route::Ingest,
        path if path.starts_with("/v1/datasets/") && path.ends_with("/snapshots") => Route::Snapshots,
        _ => Route::Other,
    }
}

/// Counts every response in `http_requests_total{route, status_class}`.
async fn count(State(service): State<QueryService>, request: Request, next: Next) -> Response {
    let route = route_of(request.uri().path());
    let response = next.run(request).await;
    service.api_metrics().observe_http(route, response.status().as_u16());
    response
}

/// Resolves the caller from the API key (or the no-auth principal) and applies the API-wide
/// rate limits.
async fn authenticate(State(service): State<QueryService>, mut request: Request, next: Next) -> Response {
    let principal = match &service.config().auth {
        None => Principal::local(),
        Some(keys) => match presented_key(request.headers()) {
            None => {
                return Error::Unauthorized {
                    message: "an API key is required (Authorization: Bearer <key> or X-API-Key)".into(),
                }
                .into_response();
            }
            Some(key) => match keys.authenticate(key) {
                Some(principal) => principal.clone(),
                None => return Error::Unauthorized { message: "unknown API key".into() }.into_response(),
            },
        },
    };
    if let Err(error) = service.rate_limiter().check_api(&principal) {
        return error.into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Counts a `POST /v1/query` against the caller's per-user query rate, before its body is
/// read.
async fn limit_query_rate(
    State(service): State<QueryService>,
    principal: Principal,
    request: Request,
    next: Next,
) -> Response {
    match service.rate_limiter().check_query(&principal) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

impl JsonBody for QueryRequest {
    const WHAT: &'static str = "a query request";
    const MAX_BYTES: usize = 2 * 1024 * 1024;
}

/// `POST /v1/query`: an interactive query.
#[utoipa::path(
    post,
    path = "/v1/query",
    tag = "query",
    summary = "Run one read-only SQL query (60 s limit, per-user query rate)",
    request_body(content = QueryRequest, content_type = "application/json"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The answer: JSON (default, and every exported result), CSV or an Arrow IPC stream; \
         CSV and Arrow carry the metadata in `X-DuckMesh-*` headers",
         content(
             (QueryResponse = "application/json"),
             (String = "text/csv"),
             (Vec<u8> = "application/vnd.apache.arrow.stream"),
         ),
         headers(
             ("X-DuckMesh-Query-Id" = String, description = "The query id"),
             ("X-DuckMesh-Row-Count" = u64, description = "Rows in the result"),
             ("X-DuckMesh-Elapsed-Ms" = u64, description = "Milliseconds from receipt to response"),
             ("X-DuckMesh-Snapshots" = String, description = "JSON object: dataset → snapshot id read"),
         )),
        (status = 400, description = "`invalid_request` (malformed body, unknown field, pin of a dataset the query does \
         not read), `query_invalid` (does not parse or bind), `query_not_allowed` (not exactly one read-only query), \
         `query_too_complex` (past the text, select-list or nesting limits)",
         body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key, or an unknown one", body = ErrorBody),
        (status = 404, description = "`dataset_not_found`, `snapshot_not_found`", body = ErrorBody),
        (status = 409, description = "`dataset_empty`: no committed snapshot and no declared schema", body = ErrorBody),
        (status = 422, description = "`query_out_of_memory`", body = ErrorBody),
        (status = 429, description = "`rate_limited` or `overloaded`",
         headers(("Retry-After" = u64, description = "Seconds to wait before retrying")), body = ErrorBody),
        (status = 500, description = "`engine_error`, `io_error`, `internal`: a fault on our side", body = ErrorBody),
        (status = 502, description = "`input_corrupt` or a permanent `object_store_*` failure", body = ErrorBody),
        (status = 503, description = "`catalog_unavailable` or a transient `object_store_*` failure", body = ErrorBody),
        (status = 504, description = "`consistency_timeout` (strict barrier not reached) or `query_timeout`",
         body = ErrorBody),
    )
)]
pub(crate) async fn query(
    State(service): State<QueryService>,
    principal: Principal,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Response, Error> {
    Ok(answer_response(service.query(&principal, request, QueryKind::Interactive).await?))
}

/// `POST /v1/task/query`: a query from a task.
#[utoipa::path(
    post,
    path = "/v1/task/query",
    tag = "query",
    summary = "Run one read-only SQL query from a task (300 s limit, no per-user query rate)",
    request_body(content = QueryRequest, content_type = "application/json"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The answer: JSON (default, and every exported result), CSV or an Arrow IPC stream; \
         CSV and Arrow carry the metadata in `X-DuckMesh-*` headers",
         content(
             (QueryResponse = "application/json"),
             (String = "text/csv"),
             (Vec<u8> = "application/vnd.apache.arrow.stream"),
         ),
         headers(
             ("X-DuckMesh-Query-Id" = String, description = "The query id"),
             ("X-DuckMesh-Row-Count" = u64, description = "Rows in the result"),
             ("X-DuckMesh-Elapsed-Ms" = u64, description = "Milliseconds from receipt to response"),
             ("X-DuckMesh-Snapshots" = String, description = "JSON object: dataset → snapshot id read"),
         )),
        (status = 400, description = "`invalid_request` (malformed body, unknown field, pin of a dataset the query does \
         not read), `query_invalid` (does not parse or bind), `query_not_allowed` (not exactly one read-only query), \
         `query_too_complex` (past the text, select-list or nesting limits)",
         body = ErrorBody),
        (status = 401, description = "`unauthorized`: no API key, or an unknown one", body = ErrorBody),
        (status = 404, description = "`dataset_not_found`, `snapshot_not_found`", body = ErrorBody),
        (status = 409, description = "`dataset_empty`: no committed snapshot and no declared schema", body = ErrorBody),
        (status = 422, description = "`query_out_of_memory`", body = ErrorBody),
        (status = 429, description = "`rate_limited` or `overloaded`",
         headers(("Retry-After" = u64, description = "Seconds to wait before retrying")), body = ErrorBody),
        (status = 500, description = "`engine_error`, `io_error`, `internal`: a fault on our side", body = ErrorBody),
        (status = 502, description = "`input_corrupt` or a permanent `object_store_*` failure", body = ErrorBody),
        (status = 503, description = "`catalog_unavailable` or a transient `object_store_*` failure", body = ErrorBody),
        (status = 504, description = "`consistency_timeout` (strict barrier not reached) or `query_timeout`",
         body = ErrorBody),
    )
)]
pub(crate) async fn task_query(
    State(service): State<QueryService>,
    principal: Principal,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Response, Error> {
    Ok(answer_response(service.query(&principal, request, QueryKind::Task).await?))
}

fn answer_response(answer: QueryAnswer) -> Response {
    let QueryAnswer { response, body } = answer;
    let Some(body) = body else {
        let mut out = json_response(StatusCode::OK, &response);
        insert_metadata(out.headers_mut(), &response);
        return out;
    };
    let (content_type, bytes) = match body {
        RawBody::Csv(text) => ("text/csv; charset=utf-8", text.into_bytes()),
        RawBody::Arrow(data) => ("application/vnd.apache.arrow.stream", data),
    };
    let mut out = (StatusCode::OK, [(CONTENT_TYPE, HeaderValue::from_static(content_type))], bytes).into_response();
    insert_metadata(out.headers_mut(), &response);
    if let Ok(columns) = serde_json::to_string(&response.columns)
        && let Ok(value) = HeaderValue::from_str(&columns)
    {
        out.headers_mut().insert("x-duckmesh-columns", value);
    }
    out
}

fn insert_metadata(headers: &mut HeaderMap, response: &crate::model::QueryResponse) {
    if let Ok(value) = HeaderValue::from_str(&response.query_id) {
        headers.insert("x-duckmesh-query-id", value);
    }
    headers.insert("x-duckmesh-row-count", HeaderValue::from(response.row_count));
    headers.insert("x-duckmesh-elapsed-ms", HeaderValue::from(response.elapsed_ms));
    if let Ok(snapshots) = serde_json::to_string(&response.snapshots)
        && let Ok(value) = HeaderValue::from_str(&snapshots)
    {
        headers.insert("x-duckmesh-snapshots", value);
    }
}

/// `POST /v1/ingest/{dataset}[?namespace=]`: a JSON array or NDJSON of records.
#[utoipa::path(
    post,
    path = "/v1/ingest/{dataset}",
    tag = "ingest",
    summary = "Buffer records durably; the ack's visibility token makes them visible to queries",
    params(
        ("dataset" = String, Path, description = "The dataset to write", example = "events"),
        ("namespace" = Option<String>, Query, min_length = 1,
         description = "Its namespace (default DUCKMESH_QUERY_NAMESPACE)"),
    ),
    request_body(
        description = "A JSON array of records (objects whose fields are column names); NDJSON (one object per \
                       line) is accepted too. At most DUCKMESH_INGEST_MAX_RECORDS records and \
                       DUCKMESH_INGEST_MAX_BODY_BYTES bytes.",
        content = Vec<serde_json::Map<String, serde_json::Value>>,
        content_type = "application/json",
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Stored durably (or already stored: duplicates)", body = IngestResponse),
        (status = 400, description = "`invalid_record` (names the record and field) or `invalid_request` \
         (malformed body, too many records, unknown parameter)", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`dataset_not_found`", body = ErrorBody),
        (status = 409, description = "`schema_required`: the Dataset has no schema", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 429, description = "`rate_limited` or `ingest_backpressure`",
         headers(("Retry-After" = u64, description = "Seconds to wait before retrying")), body = ErrorBody),
        (status = 500, description = "`internal`: a fault on our side", body = ErrorBody),
        (status = 503, description = "`read_only` (emergency read-only mode) or `catalog_unavailable`: nothing was \
         acked", body = ErrorBody),
    )
)]
pub(crate) async fn ingest(
    State(service): State<IngestService>,
    Path(name): Path<String>,
    principal: Principal,
    ApiQuery(IngestParameters { namespace }): ApiQuery<IngestParameters>,
    Traceparent(traceparent): Traceparent,
    IngestBody(body): IngestBody,
) -> Result<Response, Error> {
    let ack = service.ingest(&principal, &name, namespace.as_deref(), &body, traceparent.as_deref()).await?;
    Ok(json_response(StatusCode::OK, &ack))
}

/// The query string of `POST /v1/ingest/{dataset}`: `?namespace=`, its only parameter.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IngestParameters {
    namespace: Option<String>,
}

impl Parameters for IngestParameters {
    fn check(&self) -> Result<(), Error> {
        non_empty(self.namespace.as_deref())
    }
}

/// A `namespace` given empty is refused rather than taken as the default.
fn non_empty(namespace: Option<&str>) -> Result<(), Error> {
    match namespace {
        Some("") => Err(Error::InvalidRequest { message: "the namespace parameter is empty".into() }),
        _ => Ok(()),
    }
}

/// `GET /v1/datasets`.
#[utoipa::path(
    get,
    path = "/v1/datasets",
    tag = "datasets",
    summary = "The caller tenant's datasets: current snapshot, token, files, rows, bytes, last commit, schema",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every dataset of the caller's tenant", body = DatasetList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`",
         headers(("Retry-After" = u64, description = "Seconds to wait before retrying")), body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`catalog_unavailable`", body = ErrorBody),
    )
)]
pub(crate) async fn datasets(State(service): State<QueryService>, principal: Principal) -> Result<Response, Error> {
    Ok(json_response(StatusCode::OK, &service.datasets(&principal).await?))
}

/// The query string of `GET /v1/datasets/{name}/snapshots`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotParameters {
    before: Option<i64>,
    limit: Option<i64>,
    namespace: Option<String>,
}

impl Parameters for SnapshotParameters {
    fn check(&self) -> Result<(), Error> {
        non_empty(self.namespace.as_deref())
    }
}

/// `GET /v1/datasets/{name}/snapshots`: time travel.
#[utoipa::path(
    get,
    path = "/v1/datasets/{name}/snapshots",
    tag = "datasets",
    summary = "A dataset's snapshots, newest first",
    params(
        ("name" = String, Path, description = "The dataset", example = "trips"),
        ("before" = Option<i64>, Query, description = "Only snapshots older than this id (`next_before` of the \
         previous page)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("namespace" = Option<String>, Query, description = "Its namespace (default DUCKMESH_QUERY_NAMESPACE)"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page of snapshots", body = SnapshotPage),
        (status = 400, description = "`invalid_request`: bad `limit` or `before`, unknown parameter", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`dataset_not_found`", body = ErrorBody),
        (status = 429, description = "`rate_limited`",
         headers(("Retry-After" = u64, description = "Seconds to wait before retrying")), body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`catalog_unavailable`", body = ErrorBody),
    )
)]
pub(crate) async fn snapshots(
    State(service): State<QueryService>,
    Path(name): Path<String>,
    principal: Principal,
    ApiQuery(SnapshotParameters { before, limit, namespace }): ApiQuery<SnapshotParameters>,
) -> Result<Response, Error> {
    let page = service.snapshots(&principal, &name, namespace.as_deref(), before, limit).await?;
    Ok(json_response(StatusCode::OK, &page))
}

/// The query string of `GET /v1/integrity`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntegrityParameters {
    namespace: Option<String>,
    limit: Option<usize>,
}

impl Parameters for IntegrityParameters {
    fn check(&self) -> Result<(), Error> {
        non_empty(self.namespace.as_deref())
    }
}

/// `GET /v1/integrity`: the latest integrity run of each dataset.
#[utoipa::path(
    get,
    path = "/v1/integrity",
    tag = "datasets",
    summary = "The latest integrity run (catalog against bucket) of each of the caller tenant's datasets",
    params(
        ("namespace" = Option<String>, Query, description = "The namespace (default DUCKMESH_QUERY_NAMESPACE)"),
        ("limit" = Option<usize>, Query, minimum = 0, maximum = 100, description = "Problems listed per dataset \
         (default 20; the counts cover them all)"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The latest run of each dataset that has one", body = IntegrityList),
        (status = 400, description = "`invalid_request`: bad `limit`, empty `namespace`, unknown parameter", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 429, description = "`rate_limited`",
         headers(("Retry-After" = u64, description = "Seconds to wait before retrying")), body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`catalog_unavailable`", body = ErrorBody),
    )
)]
pub(crate) async fn integrity(
    State(service): State<QueryService>,
    principal: Principal,
    ApiQuery(IntegrityParameters { namespace, limit }): ApiQuery<IntegrityParameters>,
) -> Result<Response, Error> {
    Ok(json_response(StatusCode::OK, &service.integrity(&principal, namespace.as_deref(), limit).await?))
}

/// `GET /v1/health`: liveness only.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "operations",
    responses((status = 200, description = "The process serves requests", body = Health))
)]
pub(crate) async fn health() -> Response {
    json_response(StatusCode::OK, &Health { status: "ok".into() })
}

/// `GET /healthz`: [`health`] under the Kubernetes name.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process serves requests", body = Health))
)]
pub(crate) async fn healthz() -> Response {
    health().await
}

/// `GET /v1/ready`: catalog, object store and cache checks.
#[utoipa::path(
    get,
    path = "/v1/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Every check passed", body = Readiness),
        (status = 503, description = "A check failed; each check says why", body = Readiness),
    )
)]
pub(crate) async fn ready(State(service): State<QueryService>) -> Response {
    let readiness = service.readiness().await;
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &readiness)
}

/// `GET /readyz`: [`ready`] under the Kubernetes name.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Every check passed", body = Readiness),
        (status = 503, description = "A check failed; each check says why", body = Readiness),
    )
)]
pub(crate) async fn readyz(state: State<QueryService>) -> Response {
    ready(state).await
}

/// `GET /v1/openapi.json`: this API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API (docs/openapi.json)",
               content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json() -> Response {
    (StatusCode::OK, [(CONTENT_TYPE, HeaderValue::from_static(JSON))], crate::openapi::document_json()).into_response()
}

async fn not_found() -> Response {
    let body = ErrorBody { error_code: "route_not_found".into(), message: "no such endpoint".into() };
    json_response(StatusCode::NOT_FOUND, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_parameters() {
        let query_parameters = |raw| {
            extract::parameters::<SnapshotParameters>(raw)
                .map(|SnapshotParameters { before, limit, namespace }| (before, limit, namespace))
        };
        let namespace_parameter = |raw| extract::parameters::<IngestParameters>(raw).map(|p| p.namespace);
        assert_eq!(route_of("/v1/datasets/trips/snapshots"), Route::Snapshots);
        assert_eq!(route_of("/healthz"), Route::Health);
        assert_eq!(route_of("/nope"), Route::Other);
        assert_eq!(query_parameters(Some("before=5&limit=2")).expect("ok"), (Some(5), Some(2), None));
        assert_eq!(query_parameters(None).expect("ok"), (None, None, None));
        assert_eq!(query_parameters(Some("limit=x")).expect_err("bad").error_code(), "invalid_request");
        assert_eq!(query_parameters(Some("offset=1")).expect_err("bad").error_code(), "invalid_request");
        // Values are percent-decoded (they were taken as written before).
        assert_eq!(
            query_parameters(Some("namespace=team%2Da&limit=%33")).expect("ok"),
            (None, Some(3), Some("team-a".into()))
        );
        assert_eq!(namespace_parameter(Some("namespace=data%2Eteam")).expect("ok").as_deref(), Some("data.team"));
        assert_eq!(namespace_parameter(Some("namespace=")).expect_err("empty").error_code(), "invalid_request");
        let unknown = namespace_parameter(Some("namespaces=x")).expect_err("unknown");
        assert!(unknown.to_string().contains("namespaces"), "{unknown}");
    }
}
