//! The OpenAPI document: the committed `docs/openapi.json` must equal what the handlers and
//! types generate (regenerate with `DUCKMESH_BLESS=1 cargo test -p duckmesh-query --test openapi`
//! or `just openapi`), it documents every route with its error answers and authentication, and
//! the server serves it at `GET /v1/openapi.json`.

mod common;

use common::*;
use duckmesh_testkit::BoxError;
use serde_json::Value;
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn committed_document_matches_the_handlers() {
    let generated = duckmesh_query::openapi::document_json();
    let path = committed_path();
    if std::env::var_os("DUCKMESH_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `just openapi` (DUCKMESH_BLESS=1 cargo test -p duckmesh-query --test \
         openapi) and commit it"
    );
}

#[test]
fn every_route_is_documented_with_its_errors_and_auth() {
    let document: Value = serde_json::from_str(&duckmesh_query::openapi::document_json()).expect("JSON");
    assert!(document["openapi"].as_str().is_some_and(|version| version.starts_with("3.1")), "{}", document["openapi"]);
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(
        (schemes["api_key"]["in"].as_str(), schemes["api_key"]["name"].as_str()),
        (Some("header"), Some("X-API-Key"))
    );
    let error_body = &document["components"]["schemas"]["ErrorBody"];
    assert_eq!(error_body["required"], serde_json::json!(["error_code", "message"]));

    let authenticated: &[(&str, &str, &[&str])] = &[
        ("/v1/query", "post", &["200", "400", "401", "404", "409", "422", "429", "500", "502", "503", "504"]),
        ("/v1/task/query", "post", &["200", "400", "401", "404", "409", "422", "429", "500", "502", "503", "504"]),
        ("/v1/ingest/{dataset}", "post", &["200", "400", "401", "404", "409", "413", "429", "500", "503"]),
        ("/v1/datasets", "get", &["200", "401", "429", "500", "503"]),
        ("/v1/datasets/{name}/snapshots", "get", &["200", "400", "401", "404", "429", "500", "503"]),
        ("/v1/integrity", "get", &["200", "400", "401", "429", "500", "503"]),
    ];
    for (path, method, statuses) in authenticated {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let security = operation["security"].as_array().expect("security");
        assert_eq!(security.len(), 2, "{path}: bearer or X-API-Key");
        let responses = operation["responses"].as_object().expect("responses");
        let mut documented: Vec<&str> = responses.keys().map(String::as_str).collect();
        documented.sort_unstable();
        assert_eq!(documented, *statuses, "{method} {path}");
        for (status, response) in responses {
            if status != "200" {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
            if status == "429" {
                assert!(response["headers"]["Retry-After"].is_object(), "{path}: Retry-After");
            }
        }
    }
    for path in ["/v1/health", "/healthz", "/v1/ready", "/readyz", "/v1/openapi.json", "/metrics"] {
        let operation = &document["paths"][path]["get"];
        assert!(operation.is_object(), "GET {path} is not documented");
        assert!(operation.get("security").is_none(), "{path} needs no key");
    }
    assert_eq!(document["paths"].as_object().map(|paths| paths.len()), Some(12), "a route was added or dropped");
}

#[tokio::test]
async fn the_server_serves_the_document() -> Result<(), BoxError> {
    let env = env().await?;
    let server = start(&env, config(&env)).await?;
    let response = reqwest::get(format!("{}/v1/openapi.json", server.url)).await?;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await?, duckmesh_query::openapi::document_json());
    server.stop().await
}
