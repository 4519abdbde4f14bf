//! `init()` end to end: a child process configured only by standard `OTEL_*` variables
//! ships its spans over OTLP/HTTP to a fake collector on loopback, scrubbed, and writes
//! JSON log lines to stderr carrying the same trace id.
//!
//! The child is this test binary re-run with one ignored test selected, because `init()`
//! installs a process-wide subscriber and reads the real environment.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use duckmesh_telemetry::Error;
use tracing::{info, info_span};

const SERVICE: &str = "duckmesh-otlp-test";
const SPAN_NAME: &str = "otlp-child-span";

/// One HTTP request received by the fake collector.
struct Received {
    request_line: String,
    content_type: String,
    body: Vec<u8>,
}

fn read_request(stream: TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut content_length = 0;
    let mut content_type = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().ok()?,
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(Received { request_line: request_line.trim_end().to_owned(), content_type, body })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[test]
fn otlp_export_reaches_the_collector() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    let (sender, receiver) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_collector = Arc::clone(&stop);
    let collector = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !stop_collector.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    if let Some(request) = read_request(stream)
                        && sender.send(request).is_err()
                    {
                        return;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });

    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_emits_one_trace", "--ignored", "--nocapture", "--test-threads=1"])
        .env_remove("RUST_LOG")
        .env_remove("DUCKMESH_LOG")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env("DUCKMESH_LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{address}"))
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");

    let request = receiver.recv_timeout(Duration::from_secs(30)).expect("collector received an export");
    assert_eq!(request.request_line, "POST /v1/traces HTTP/1.1");
    assert_eq!(request.content_type, "application/x-protobuf");
    assert!(contains(&request.body, SERVICE.as_bytes()), "service.name missing");
    assert!(contains(&request.body, SPAN_NAME.as_bytes()), "span missing");
    assert!(contains(&request.body, b"acme"), "tenant attribute missing");
    assert!(!contains(&request.body, b"hunter2"), "secret exported");
    stop.store(true, Ordering::Relaxed);
    let _ = collector.join();

    // The child's stderr is JSON lines; the one inside the span has its trace id.
    let line = stderr
        .lines()
        .find(|line| line.contains("\"message\":\"inside the span\""))
        .unwrap_or_else(|| panic!("no log line in child stderr:\n{stderr}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(json["service"], SERVICE);
    assert_eq!(json["tenant_id"], "acme");
    let trace_id = json["trace_id"].as_str().expect("trace id on the line");
    assert_eq!(trace_id.len(), 32);
    let trace_bytes: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).expect("hex")).collect();
    assert!(contains(&request.body, &trace_bytes), "exported span has another trace id");
    assert!(!stderr.contains("hunter2"), "secret logged");
}

#[test]
#[ignore = "spawned as a child process by otlp_export_reaches_the_collector"]
fn child_emits_one_trace() {
    let guard = duckmesh_telemetry::init(SERVICE).expect("init from the environment");
    assert!(guard.exporting_traces());
    assert!(matches!(duckmesh_telemetry::init("second"), Err(Error::SubscriberAlreadySet(_))));
    let span = info_span!(SPAN_NAME, tenant_id = "acme", password = "hunter2");
    span.in_scope(|| info!(url = "postgres://duck:hunter2@db/catalog", "inside the span"));
    drop(span);
    drop(guard);
}
