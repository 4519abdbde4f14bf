//! A mocked API server in the controller-rs style: `tower_test::mock::pair` gives a client
//! whose every request lands here; each test states the requests it expects, in order, checks
//! each one and answers it. A missing request fails after a timeout instead of hanging, and an
//! unexpected one fails the assertion on its method or path.

#![allow(dead_code)]

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::Value;
use std::time::Duration;

/// The server side of the mock.
pub struct ApiServerVerifier(tower_test::mock::Handle<Request<Body>, Response<Body>>);

/// One request as the verifier saw it.
#[derive(Debug)]
pub struct Seen {
    /// `GET`, `POST`, `PATCH`, `PUT`, `DELETE`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The JSON body (`Null` when empty).
    pub body: Value,
    respond: Option<tower_test::mock::SendResponse<Response<Body>>>,
}

impl Seen {
    /// Answers with `status` and a JSON body.
    pub fn reply(mut self, status: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("serialises");
        let response = Response::builder().status(status).body(Body::from(bytes)).expect("response");
        if let Some(send) = self.respond.take() {
            send.send_response(response);
        }
    }

    /// Answers 200 with the request's own body (what a PATCH or PUT would return).
    pub fn echo(self) {
        let body = self.body.clone();
        self.reply(StatusCode::OK, &body);
    }

    /// Answers with a Kubernetes `Status` failure.
    pub fn fail(self, code: u16, reason: &str) {
        let status = StatusCode::from_u16(code).expect("status code");
        self.reply(
            status,
            &serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("mocked {reason}"), "reason": reason, "code": code
            }),
        );
    }

    /// Asserts method and path.
    pub fn expect(self, method: &str, path: &str) -> Self {
        assert_eq!(
            (self.method.as_str(), self.path.as_str()),
            (method, path),
            "unexpected request: {} {}?{}",
            self.method,
            self.path,
            self.query
        );
        self
    }
}

/// A client backed by the mock, and its verifier.
pub fn mock_client() -> (Client, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServerVerifier(handle))
}

impl ApiServerVerifier {
    /// The next request; fails the test when none comes within 30 s (longer than
    /// any clock advance a paused-time test makes).
    pub async fn next(&mut self) -> Seen {
        let (request, respond) = tokio::time::timeout(Duration::from_secs(30), self.0.next_request())
            .await
            .expect("the expected API request did not arrive in time")
            .expect("the client hung up before sending the expected request");
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.expect("request body");
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON request body") };
        Seen { method, path, query, body, respond: Some(respond) }
    }

    /// The next request, or `None` once the client is gone (for servers that answer
    /// whatever comes, without a script).
    pub async fn try_next(&mut self) -> Option<Seen> {
        let (request, respond) = self.0.next_request().await?;
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.ok()?;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Some(Seen { method, path, query, body, respond: Some(respond) })
    }

    /// Answers an event publication (the recorder POSTs to events.k8s.io) and returns its body.
    pub async fn event(&mut self, namespace: &str) -> Value {
        let seen = self.next().await.expect("POST", &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"));
        let body = seen.body.clone();
        seen.reply(StatusCode::CREATED, &body);
        body
    }
}

/// Runs `work` against the client while `verify` plays the API server; fails if either takes
/// longer than 60 s.
pub async fn exchange<T, W, V>(work: W, verify: V) -> T
where
    W: std::future::Future<Output = T>,
    V: std::future::Future<Output = ()> + Send + 'static,
{
    let verifier = tokio::spawn(verify);
    let result = tokio::time::timeout(Duration::from_secs(60), work).await.expect("the call finished in time");
    tokio::time::timeout(Duration::from_secs(60), verifier)
        .await
        .expect("the verifier finished in time")
        .expect("the verifier's assertions held");
    result
}

/// A migrated catalog holding the datasets `datasets` in namespace `default`, owned by tenant
/// `acme` (the tenant the tests' Jobs and Tasks run as).
pub async fn catalog_with(
    datasets: &[&str],
) -> Result<(duckmesh_testkit::TestDatabase, duckmesh_catalog::Catalog), duckmesh_testkit::BoxError> {
    let db = duckmesh_testkit::TestDatabase::new().await?;
    let catalog = db.catalog().await?;
    for name in datasets {
        let object = duckmesh_scheduler::ObjectRef {
            namespace: "default".into(),
            name: (*name).into(),
            uid: format!("uid-{name}"),
            generation: 1,
        };
        let spec: duckmesh_resources::DatasetSpec = serde_json::from_value(serde_json::json!({"tenant": "acme"}))?;
        duckmesh_scheduler::apply_dataset(&catalog, &object, &spec).await?;
    }
    Ok((db, catalog))
}
