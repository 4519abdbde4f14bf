//! Live ingest end to end with the real binary, a real PostgreSQL and a real S3-compatible
//! server: concurrent producers posting overlapping batches with retries get every acked
//! record exactly once; SIGKILLed coordinator and API processes lose nothing; an ack's token
//! reads its writes; poison records are parked and replayed; read-only mode refuses ingest.

mod common;

use common::{free_port, s3_env, signal, until, wait};
use duckmesh_catalog::Catalog;
use duckmesh_query::QueryRequest;
use duckmesh_query::client::{ClientError, QueryClient};
use duckmesh_storage::testing::MotoServer;
use duckmesh_testkit::TestDatabase;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DATASET_YAML: &str = r#"
apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata:
  name: events
spec:
  schema:
    - {name: id, type: VARCHAR}
    - {name: n, type: BIGINT}
    - {name: day, type: DATE}
  ingest:
    dedupeKey: id
"#;

/// One producer's batches: 40-record windows sliding by 20 over a key space that the next
/// producer shares half of, so producers post overlapping keys.
fn batches(producer: usize, count: usize) -> Vec<Vec<String>> {
    (0..count)
        .map(|batch| {
            let start = producer * 200 + batch * 20;
            (start..start + 40).map(|n| format!("e{n:05}")).collect()
        })
        .collect()
}

fn body(keys: &[String]) -> String {
    keys.iter()
        .map(|key| json!({"id": key, "n": key[1..].parse::<i64>().unwrap_or(0), "day": "2026-11-23"}).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the producers were told.
#[derive(Default)]
struct Acks {
    accepted: u64,
    duplicates: u64,
    keys: BTreeSet<String>,
    max_token: i64,
    posted: u64,
}

/// Posts every batch until it is acknowledged (retrying connection errors, 5xx and 429 as a
/// client must), and posts every other batch a second time, as a client that lost an ack does.
async fn produce(client: QueryClient, producer: usize, count: usize, acks: Arc<Mutex<Acks>>) {
    for (index, keys) in batches(producer, count).into_iter().enumerate() {
        let sends = if index % 2 == 0 { 2 } else { 1 };
        for _ in 0..sends {
            let ack = loop {
                match client.ingest("events", None, body(&keys)).await {
                    Ok(ack) => break ack,
                    Err(ClientError::Api { status, .. }) if status < 429 => panic!("refused with {status}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            let mut acks = acks.lock().expect("acks");
            acks.accepted += ack.accepted;
            acks.duplicates += ack.duplicates;
            acks.max_token = acks.max_token.max(ack.visibility_token);
            acks.posted += keys.len() as u64;
            acks.keys.extend(keys.iter().cloned());
        }
    }
}

async fn count_visible(client: &QueryClient, token: i64) -> (i64, i64) {
    let mut request = QueryRequest::new("SELECT count(*), count(DISTINCT id) FROM events");
    request.min_visibility_token = Some(token);
    request.timeout_ms = Some(30_000);
    let answer = client.query(&request).await.expect("barrier query");
    (answer.rows[0][0].as_i64().unwrap_or(-1), answer.rows[0][1].as_i64().unwrap_or(-1))
}

fn duckmesh(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_duckmesh"));
    command.args(args).env("DUCKMESH_LOG", "info");
    command
}

fn cli_output(command: &mut Command) -> String {
    let output = command.output().expect("run duckmesh");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_mode_ingest_is_exactly_once_reads_its_writes_and_parks_poison() {
    let db = TestDatabase::new().await.expect("test database");
    let state = tempfile::tempdir().expect("state dir");
    let file = state.path().join("events.yaml");
    std::fs::write(&file, DATASET_YAML).expect("yaml");
    let dev = duckmesh(&["dev"])
        .arg(&file)
        .arg("--state-dir")
        .arg(state.path())
        .arg("--database-url")
        .arg(db.url())
        .args(["--listen", "127.0.0.1:0", "--keep-serving"])
        .env("DUCKMESH_COORDINATOR_LINGER_MS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start duckmesh dev");
    let info = state.path().join("dev.json");
    let api_url = until("the dev API", Duration::from_secs(60), async || {
        let text = std::fs::read_to_string(&info).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        value["api_url"].as_str().map(str::to_owned)
    })
    .await;
    let client = QueryClient::new(&api_url, None).expect("client");

    let acks = Arc::new(Mutex::new(Acks::default()));
    let producers: Vec<_> = (0..4).map(|p| tokio::spawn(produce(client.clone(), p, 10, Arc::clone(&acks)))).collect();
    for producer in producers {
        producer.await.expect("producer");
    }
    let (accepted, duplicates, distinct, token, posted) = {
        let acks = acks.lock().expect("acks");
        (acks.accepted, acks.duplicates, acks.keys.len() as u64, acks.max_token, acks.posted)
    };
    assert_eq!(accepted, distinct, "each distinct key accepted exactly once");
    assert_eq!(duplicates, posted - distinct, "every other copy counted as a duplicate");
    assert_eq!(count_visible(&client, token).await, (distinct as i64, distinct as i64));

    // A poison record (a date that does not exist) is acked, parked, and replayed fixed.
    let ack = client
        .ingest("events", None, "{\"id\": \"bad\", \"n\": 1, \"day\": \"2026-13-45\"}\n{\"id\": \"good\", \"n\": 2}")
        .await
        .expect("acked");
    assert_eq!(ack.accepted, 2);
    let mut strict = QueryRequest::new("SELECT id FROM events WHERE id IN ('bad', 'good')");
    strict.min_visibility_token = Some(ack.visibility_token);
    strict.timeout_ms = Some(30_000);
    let rows = client.query(&strict).await.expect("barrier passes once bad is parked").rows;
    assert_eq!(rows, vec![vec![json!("good")]], "ingest went on without the poison record");
    let listed = cli_output(duckmesh(&["dead-letters", "list", "--json", "--state-dir"]).arg(state.path()));
    let letters: Vec<Value> = serde_json::from_str(&listed).expect("dead letters JSON");
    assert_eq!(letters.len(), 1, "{listed}");
    assert_eq!(
        (letters[0]["key"].as_str(), letters[0]["error_code"].as_str()),
        (Some("bad"), Some("conversion_failed"))
    );
    assert!(letters[0]["error_message"].as_str().unwrap_or_default().contains("day"), "{listed}");
    let id = letters[0]["id"].as_i64().expect("id").to_string();
    cli_output(
        duckmesh(&["dead-letters", "replay", &id, "--payload", r#"{"id": "bad", "n": 1, "day": "2026-12-31"}"#])
            .arg("--state-dir")
            .arg(state.path()),
    );
    let fixed = until("the replayed record", Duration::from_secs(30), async || {
        let answer = client.query(&QueryRequest::new("SELECT day::VARCHAR FROM events WHERE id = 'bad'")).await.ok()?;
        answer.rows.first().cloned()
    })
    .await;
    assert_eq!(fixed, vec![json!("2026-12-31")]);

    // Read-only mode: ingest is refused with 503, queries work, and off again accepts.
    let on = cli_output(duckmesh(&["read-only", "on", "--reason", "drill", "--state-dir"]).arg(state.path()));
    assert!(on.contains("ON") && on.contains("drill"), "{on}");
    let refused = client.ingest("events", None, "{\"id\": \"ro\"}").await.expect_err("read-only");
    assert!(matches!(&refused, ClientError::Api { status: 503, error_code, .. } if error_code == "read_only"));
    assert_eq!(count_visible(&client, 1).await.0, distinct as i64 + 2);
    cli_output(duckmesh(&["read-only", "off", "--state-dir"]).arg(state.path()));
    assert_eq!(client.ingest("events", None, "{\"id\": \"ro\"}").await.expect("accepted").accepted, 1);

    // `duckmesh ingest` streams NDJSON in batches; sending it again stores nothing twice.
    let lines: Vec<String> = (0..10).map(|n| format!("{{\"id\": \"cli-{n}\", \"n\": {n}}}")).collect();
    let ndjson = state.path().join("cli.ndjson");
    std::fs::write(&ndjson, lines.join("\n")).expect("ndjson");
    let send = |file: &Path| {
        let mut command = duckmesh(&["ingest", "events", "--batch", "3", "--max-batch-bytes", "1024", "--state-dir"]);
        command.arg(state.path()).arg(file);
        command
    };
    let first = cli_output(&mut send(&ndjson));
    assert!(first.starts_with("10 records accepted, 0 duplicates"), "{first}");
    let again = cli_output(&mut send(&ndjson));
    assert!(again.starts_with("0 records accepted, 10 duplicates"), "{again}");
    let token = again.split("token ").nth(1).and_then(|rest| rest.split(' ').next()).expect("token");
    let mut cli_rows = QueryRequest::new("SELECT count(*) FROM events WHERE id LIKE 'cli-%'");
    cli_rows.min_visibility_token = Some(token.parse().expect("token number"));
    assert_eq!(client.query(&cli_rows).await.expect("read-your-writes").rows, vec![vec![json!(10)]]);
    // A bad line stops the upload there; the batches before it are acked and say so.
    let broken = state.path().join("broken.ndjson");
    std::fs::write(&broken, format!("{}\n{{\"id\": \"cli-x\"}}\nnot json\n", lines[..3].join("\n"))).expect("ndjson");
    let output = send(&broken).output().expect("run duckmesh ingest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("line 5 is not JSON"), "{stderr}");
    assert!(
        stderr.contains("3 records in 1 request were acknowledged before this (0 accepted, 3 duplicates)"),
        "{stderr}"
    );

    // A record the API refuses (a NUL, issue 20) is final: no retries, the command names the
    // input line and the request's records (none stored), and exits non-zero at once. A
    // byte-order mark at the start of the file is skipped.
    let refused = state.path().join("refused.ndjson");
    let nul_lines = ["{\"id\": \"nul-1\"}", "{\"id\": \"nul-2\"}", "{\"id\": \"nul-3\"}", "{\"id\": \"nul-\\u0000\"}"];
    std::fs::write(&refused, format!("\u{feff}{}\n", nul_lines.join("\n"))).expect("ndjson");
    let output = send(&refused).output().expect("run duckmesh ingest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("400 nul_character: record 0, field \"id\""), "{stderr}");
    assert!(stderr.contains("the request with the record of line 4 was refused as a whole"), "{stderr}");
    assert!(stderr.contains("the rejected record is line 4"), "{stderr}");
    assert!(stderr.contains("3 records in 1 request were acknowledged before this (3 accepted"), "{stderr}");

    // A JSON array on stdin is streamed the same way; a broken element stops it there.
    let array = |elements: &[String]| {
        let mut command = duckmesh(&["ingest", "events", "-", "--batch", "3", "--state-dir"]);
        command.arg(state.path()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("run duckmesh ingest");
        let text = format!("[{}]", elements.join(",\n"));
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("duckmesh ingest ends")
    };
    let elements: Vec<String> = (0..7).map(|n| format!("{{\"id\": \"arr-{n}\", \"n\": {n}}}")).collect();
    let output = array(&elements);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && stdout.starts_with("7 records accepted, 0 duplicates"), "{output:?}");
    let mut broken = elements.clone();
    broken.insert(4, "{\"id\": }".to_owned());
    let output = array(&broken);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("not a JSON array of records") && stderr.contains("line 5 column 8 (after element 4)"),
        "{stderr}"
    );
    assert!(stderr.contains("3 records in 1 request were acknowledged before this"), "{stderr}");

    signal(dev.id(), "INT");
    let (status, _, stderr) = wait(dev).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// A `duckmesh api` or `duckmesh coordinator` process on the test catalog and S3 prefix.
struct Stack {
    db: TestDatabase,
    catalog: Catalog,
    s3: duckmesh_storage::S3Config,
    logs: tempfile::TempDir,
    api_port: u16,
}

impl Stack {
    fn spawn(&self, role: &str, run: usize) -> Child {
        let mut command = duckmesh(&[role]);
        command
            .env("DUCKMESH_DATABASE_URL", self.db.url())
            .env("DUCKMESH_QUERY_AUTH", "none")
            .env("DUCKMESH_API_LISTEN", format!("127.0.0.1:{}", self.api_port))
            .env("DUCKMESH_API_RATE_LIMIT_PER_USER", "0")
            .env("DUCKMESH_API_RATE_LIMIT_PER_TENANT", "0")
            .env("DUCKMESH_QUERY_RATE_LIMIT_PER_USER", "0")
            .env("DUCKMESH_QUERY_CACHE_DIR", self.logs.path().join("cache"))
            .env("DUCKMESH_COORDINATOR_LISTEN", "127.0.0.1:0")
            .env("DUCKMESH_COORDINATOR_CLAIM_LEASE_SECONDS", "2")
            .env("DUCKMESH_COORDINATOR_LINGER_MS", "20")
            .env("DUCKMESH_COORDINATOR_BATCH_MAX_EVENTS", "60")
            .env("DUCKMESH_COORDINATOR_WORK_DIR", self.logs.path().join("work"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.logs.path().join(format!("{role}-{run}.log"))).expect("log"));
        s3_env(&mut command, &self.s3);
        command.spawn().unwrap_or_else(|error| panic!("start duckmesh {role}: {error}"))
    }

    async fn claimed(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM ingest_events WHERE snapshot_id IS NULL AND claim_expires_at > clock_timestamp()",
        )
        .fetch_one(self.catalog.pool())
        .await
        .expect("claimed events")
    }
}

fn kill(child: &mut Child) {
    signal(child.id(), "KILL");
    child.wait().expect("reap");
}

fn log_tail(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).expect("logs").flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!(
                "== {}\n{}\n",
                entry.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_coordinator_and_api_lose_and_duplicate_nothing() {
    let db = TestDatabase::new().await.expect("test database");
    let catalog = db.catalog().await.expect("catalog");
    let moto = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
    let stack = Stack {
        catalog,
        s3: moto.scoped_config(),
        logs: tempfile::tempdir().expect("logs"),
        api_port: free_port(),
        db,
    };
    let yaml = stack.logs.path().join("events.yaml");
    std::fs::write(&yaml, DATASET_YAML).expect("yaml");
    // The Dataset as the operator would register it, through the same code path as dev mode.
    let resources = duckmesh_dev::source::load(&[yaml]).expect("yaml");
    duckmesh_dev::source::apply(&stack.catalog, &resources).await.expect("apply");

    let mut api = stack.spawn("api", 1);
    let mut coordinator = stack.spawn("coordinator", 1);
    let client = QueryClient::new(format!("http://127.0.0.1:{}", stack.api_port), None).expect("client");
    until("the API", Duration::from_secs(60), async || client.datasets().await.ok()).await;

    let acks = Arc::new(Mutex::new(Acks::default()));
    let producers: Vec<_> = (0..3).map(|p| tokio::spawn(produce(client.clone(), p, 40, Arc::clone(&acks)))).collect();

    // Kill the coordinator while it holds claimed, uncommitted events (a batch can commit in
    // the instant between the check and the kill: then try again); start another.
    let mut stranded = 0;
    for run in 2..12 {
        until("a claimed batch", Duration::from_secs(60), async || (stack.claimed().await > 0).then_some(())).await;
        kill(&mut coordinator);
        stranded = stack.claimed().await;
        coordinator = stack.spawn("coordinator", run);
        if stranded > 0 {
            break;
        }
    }
    assert!(stranded > 0, "a coordinator was killed holding claimed events");
    // Kill the API mid-load; producers retry against the restarted one.
    until("more acks", Duration::from_secs(60), async || (acks.lock().ok()?.posted > 1500).then_some(())).await;
    kill(&mut api);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut api = stack.spawn("api", 2);
    for producer in producers {
        producer.await.expect("producer");
    }

    let (accepted, distinct, token) = {
        let acks = acks.lock().expect("acks");
        (acks.accepted, acks.keys.len() as i64, acks.max_token)
    };
    assert!(accepted as i64 <= distinct, "never more accepted than distinct keys");
    let visible = count_visible(&client, token).await;
    assert_eq!(visible, (distinct, distinct), "every acked record exactly once\n{}", log_tail(stack.logs.path()));
    let (committed, reclaimed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE snapshot_id IS NOT NULL), count(*) FILTER (WHERE claims > 1) FROM ingest_events",
    )
    .fetch_one(stack.catalog.pool())
    .await
    .expect("event states");
    assert_eq!(committed, distinct, "no acked record lost from the buffer");
    assert!(reclaimed > 0, "the killed coordinator's {stranded} claimed events were reclaimed and committed");
    let dataset = stack.catalog.dataset_by_name("default", "events").await.expect("dataset");
    assert_eq!(dataset.row_count, distinct, "snapshot row counts match");
    kill(&mut coordinator);
    kill(&mut api);
}
