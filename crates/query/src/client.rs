//! A small client of the query API for the CLI (`duckmesh query`) and for tests, plus the
//! table, CSV and JSON renderings of a result.

use crate::model::{DatasetList, ErrorBody, Format, QueryRequest, QueryResponse};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not usable.
    #[error("invalid URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why.
        message: String,
    },
    /// The server could not be reached, or the connection failed.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{status} {error_code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The stable error code.
        error_code: String,
        /// The server's explanation.
        message: String,
        /// `Retry-After` seconds of a 429.
        retry_after: Option<u64>,
    },
    /// The answer was not what the API promises.
    #[error("unexpected response: {message}")]
    Decode {
        /// What was wrong.
        message: String,
    },
}

impl ClientError {
    /// The server's error code, or a client-side one.
    pub fn error_code(&self) -> &str {
        match self {
            ClientError::InvalidUrl { .. } => "invalid_url",
            ClientError::Transport { .. } => "unreachable",
            ClientError::Api { error_code, .. } => error_code,
            ClientError::Decode { .. } => "bad_response",
        }
    }
}

/// A client of one query deployment.
#[derive(Debug, Clone)]
pub struct QueryClient {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

/// A raw answer: status, content type and body (for `csv` and `arrow`).
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: bytes::Bytes,
}

impl QueryClient {
    /// A client for the API at `base_url` (e.g. `http://localhost:8080`), sending `api_key`
    /// as a bearer token when given.
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Result<Self, ClientError> {
        let base = base_url.into().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl { url: base, message: "expected http:// or https://".into() });
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|source| ClientError::Transport { url: base.clone(), source })?;
        Ok(Self { base, api_key, http })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut builder = self.http.request(method, &url);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        (url, builder)
    }

    async fn send(url: &str, builder: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = builder.send().await.map_err(|source| ClientError::Transport { url: url.to_owned(), source })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let text = response.text().await.unwrap_or_default();
        let (error_code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error_code, body.message),
            Err(_) => ("http_error".to_owned(), text),
        };
        Err(ClientError::Api { status, error_code, message, retry_after })
    }

    async fn json<T: serde::de::DeserializeOwned>(url: &str, response: reqwest::Response) -> Result<T, ClientError> {
        let bytes = response.bytes().await.map_err(|source| ClientError::Transport { url: url.to_owned(), source })?;
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode { message: error.to_string() })
    }

    /// Runs a query and returns its JSON answer (`format` is forced to `json`).
    pub async fn query(&self, request: &QueryRequest) -> Result<QueryResponse, ClientError> {
        let request = QueryRequest { format: Some(Format::Json), ..request.clone() };
        let (url, builder) = self.request(reqwest::Method::POST, "/v1/query");
        let response = Self::send(&url, builder.json(&request)).await?;
        Self::json(&url, response).await
    }

    /// Runs a query through `path` (`/v1/query` or `/v1/task/query`) in the request's own
    /// format and returns the raw answer.
    pub async fn query_raw(&self, path: &str, request: &QueryRequest) -> Result<RawAnswer, ClientError> {
        let (url, builder) = self.request(reqwest::Method::POST, path);
        let response = Self::send(&url, builder.json(request)).await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.bytes().await.map_err(|source| ClientError::Transport { url: url.clone(), source })?;
        Ok(RawAnswer { content_type, body })
    }

    /// Posts records to `POST /v1/ingest/{dataset}` as NDJSON (`body` holds one JSON object
    /// per line, or a JSON array) and returns the durable ack.
    pub async fn ingest(
        &self,
        dataset: &str,
        namespace: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Result<crate::ingest::IngestResponse, ClientError> {
        let mut path = format!("/v1/ingest/{dataset}");
        if let Some(namespace) = namespace {
            path.push_str(&format!("?namespace={namespace}"));
        }
        let (url, builder) = self.request(reqwest::Method::POST, &path);
        let builder = builder.header(reqwest::header::CONTENT_TYPE, "application/x-ndjson").body(body);
        let response = Self::send(&url, builder).await?;
        Self::json(&url, response).await
    }

    /// The caller tenant's datasets.
    pub async fn datasets(&self) -> Result<DatasetList, ClientError> {
        let (url, builder) = self.request(reqwest::Method::GET, "/v1/datasets");
        let response = Self::send(&url, builder).await?;
        Self::json(&url, response).await
    }
}

fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The result as a table for a terminal, with a line saying how many rows and where an
/// exported result went.
pub fn render_table(response: &QueryResponse) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(response.columns.iter().map(|column| column.name.clone()));
    for row in &response.rows {
        table.add_row(row.iter().map(cell_text));
    }
    let mut out = table.to_string();
    out.push('\n');
    out.push_str(&summary(response));
    out
}

/// A one-line summary: rows, snapshots, time, export.
pub fn summary(response: &QueryResponse) -> String {
    let snapshots: Vec<String> = response.snapshots.iter().map(|(name, id)| format!("{name}@{id}")).collect();
    let mut line = format!(
        "({} row{}, {} ms{})",
        response.row_count,
        if response.row_count == 1 { "" } else { "s" },
        response.elapsed_ms,
        if snapshots.is_empty() { String::new() } else { format!(", {}", snapshots.join(" ")) }
    );
    if let Some(export) = &response.export {
        line.push_str(&format!(
            "\nresult exported as Parquet ({} rows, {} bytes); download until {}:\n{}",
            export.row_count, export.bytes, export.expires_at, export.url
        ));
    }
    line
}

/// The result as CSV with a header line (the API's CSV writer, with `\n` line ends).
pub fn render_csv(response: &QueryResponse) -> String {
    let mut writer = crate::format::CsvText::new(csv::Terminator::Any(b'\n'));
    let mut rendered = writer.record(response.columns.iter().map(|c| c.name.as_str()));
    for row in &response.rows {
        let cells: Vec<String> = row.iter().map(cell_text).collect();
        rendered = rendered.and_then(|()| writer.record(cells.iter().map(String::as_str)));
    }
    // Writing to memory fails only on a bug; say so rather than print half a table.
    match rendered.and_then(|()| writer.finish()) {
        Ok(text) => text,
        Err(error) => format!("error: {error}\n"),
    }
}

/// The whole response as pretty JSON.
pub fn render_json(response: &QueryResponse) -> String {
    serde_json::to_string_pretty(response).unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ColumnInfo;
    use std::collections::BTreeMap;

    fn response() -> QueryResponse {
        QueryResponse {
            query_id: "q".into(),
            columns: vec![
                ColumnInfo { name: "zone".into(), data_type: "VARCHAR".into() },
                ColumnInfo { name: "trips".into(), data_type: "BIGINT".into() },
            ],
            rows: vec![vec![Value::from("a,b"), Value::from(3)], vec![Value::Null, Value::from(1)]],
            row_count: 2,
            snapshots: BTreeMap::from([("trips".to_owned(), 4)]),
            visibility_tokens: BTreeMap::new(),
            files_scanned: 1,
            bytes_scanned: 10,
            files_downloaded: 0,
            elapsed_ms: 7,
            exported: false,
            export: None,
        }
    }

    #[test]
    fn renderings() {
        let table = render_table(&response());
        assert!(
            table.contains("zone") && table.contains("a,b") && table.contains("(2 rows, 7 ms, trips@4)"),
            "{table}"
        );
        assert_eq!(render_csv(&response()), "zone,trips\n\"a,b\",3\n,1\n");
        let json: QueryResponse = serde_json::from_str(&render_json(&response())).expect("round trip");
        assert_eq!(json, response());
        assert!(QueryClient::new("localhost:8080", None).is_err());
    }
}
