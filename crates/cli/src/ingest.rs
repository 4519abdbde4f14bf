//! `duckmesh ingest <dataset> [FILE]`: post records (NDJSON or a JSON array, from a file or
//! stdin) to a query deployment's `POST /v1/ingest/{dataset}`, in batches, and print the
//! durable acks with the visibility token to read them with.
//!
//! Both forms are streamed: a batch is sent as soon as it is full, so input of any size runs
//! in memory bounded by `--batch`/`--max-batch-bytes`. A JSON array is parsed element by
//! element on a blocking thread that hands records over through a bounded channel.

use anyhow::Context;
use duckmesh_query::client::{ClientError, QueryClient};
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Arguments of `duckmesh ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset to write.
    dataset: String,

    /// NDJSON (one JSON object per line) or a JSON array of objects, streamed either way;
    /// `-` or absent: stdin.
    file: Option<PathBuf>,

    /// Most records per request (the server's default cap is 10,000).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,

    /// Most bytes of records per request (the server's default cap is 8 MiB).
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    max_batch_bytes: u64,

    /// Namespace of the dataset (the server's default when absent).
    #[arg(long)]
    namespace: Option<String>,

    /// Base URL of the API. Default: the `duckmesh dev` instance running with --state-dir,
    /// else http://localhost:8080.
    #[arg(long, env = "DUCKMESH_API_URL")]
    url: Option<String>,

    /// The dev state directory whose running instance to use when no --url is given.
    #[arg(long, env = "DUCKMESH_STATE_DIR", default_value = ".duckmesh")]
    state_dir: PathBuf,

    /// API key (sent as a bearer token).
    #[arg(long, env = "DUCKMESH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// How many times a batch answered 429 or 503 is retried (after `Retry-After`).
    #[arg(long, default_value_t = 10)]
    retries: u32,
}

/// Reads the input and posts it batch by batch; each batch is acknowledged before the next
/// is sent. A failure names how much was acknowledged before it.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let input = open(args.file.as_deref()).await?;
    let client = QueryClient::new(crate::connect::api_url(args.url.clone(), &args.state_dir), args.api_key.clone())?;
    let mut sender = Sender { client: &client, args: &args, totals: Totals::default() };
    let mut batch = Batch::new(args.batch as usize, args.max_batch_bytes as usize);
    if let Err(error) = send_all(input, &mut batch, &mut sender).await {
        let Totals { accepted, duplicates, requests, .. } = sender.totals;
        if requests == 0 {
            return Err(error);
        }
        let plural = if requests == 1 { "" } else { "s" };
        return Err(anyhow::anyhow!(
            "{error:#}\n  note: {} records in {requests} request{plural} were acknowledged before this ({accepted} \
             accepted, {duplicates} duplicates); sending the whole input again is safe: acknowledged records \
             are recognised by their dedupe keys and not stored twice",
            accepted + duplicates
        ));
    }
    let Totals { accepted, duplicates, token, requests } = sender.totals;
    if requests == 0 {
        anyhow::bail!("no records to send (expected NDJSON or a JSON array of objects)");
    }
    crate::out::print(&format!(
        "{accepted} records accepted, {duplicates} duplicates, into {}; visible at token {token} \
         (query with --min-visibility-token {token})",
        args.dataset
    ))?;
    Ok(ExitCode::SUCCESS)
}

type Input = BufReader<Box<dyn tokio::io::AsyncRead + Unpin + Send>>;

/// The file, or stdin for `-` or no file.
async fn open(file: Option<&Path>) -> anyhow::Result<Input> {
    let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match file.filter(|path| path.as_os_str() != "-") {
        Some(path) => {
            Box::new(tokio::fs::File::open(path).await.with_context(|| format!("reading {}", path.display()))?)
        }
        None => Box::new(tokio::io::stdin()),
    };
    Ok(BufReader::with_capacity(256 * 1024, reader))
}

/// Splits the input into records and sends every full batch, then the rest.
async fn send_all(mut input: Input, batch: &mut Batch, sender: &mut Sender<'_>) -> anyhow::Result<()> {
    if starts_with_array(&mut input).await.context("reading the input")? {
        let (records, mut elements) = mpsc::channel(ARRAY_CHANNEL_RECORDS);
        let parser = tokio::task::spawn_blocking(move || stream_array(input, records));
        let mut index = 0usize;
        while let Some(record) = elements.recv().await {
            index += 1;
            if let Some(full) = batch.push(record, || format!("element {index}"))? {
                sender.send(full).await?;
            }
        }
        // The channel closed: the parser is done, or failed and says why.
        parser.await.context("the JSON array parser stopped")?.map_err(|error| {
            anyhow::anyhow!("the input is not a JSON array of records: {error} (after element {index})")
        })?;
    } else {
        let mut lines = input.lines();
        let mut number = 0usize;
        while let Some(line) = lines.next_line().await.context("reading the input")? {
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            let record = compact(&line).with_context(|| format!("line {number} is not JSON"))?;
            if let Some(full) = batch.push(record, || format!("line {number}"))? {
                sender.send(full).await?;
            }
        }
    }
    if let Some(rest) = batch.take() {
        sender.send(rest).await?;
    }
    Ok(())
}

/// The UTF-8 byte-order mark some editors put at the start of a file.
const BYTE_ORDER_MARK: &[u8] = b"\xef\xbb\xbf";

/// Whether the first non-blank byte of the input opens a JSON array (a byte-order mark at the
/// start and the blanks are consumed).
async fn starts_with_array<R: AsyncBufRead + Unpin>(input: &mut R) -> std::io::Result<bool> {
    let start = input.fill_buf().await?;
    if start.starts_with(BYTE_ORDER_MARK) {
        input.consume(BYTE_ORDER_MARK.len());
    }
    loop {
        let buffer = input.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(false);
        }
        let blanks = buffer.iter().take_while(|byte| byte.is_ascii_whitespace()).count();
        if blanks < buffer.len() {
            let opens_array = buffer[blanks] == b'[';
            input.consume(blanks);
            return Ok(opens_array);
        }
        input.consume(blanks);
    }
}

/// Records parsed ahead of the sender, at most, while it waits on the server.
const ARRAY_CHANNEL_RECORDS: usize = 1024;

/// Parses a JSON array from `input` element by element, sending each as compact JSON text,
/// then checks that nothing but blanks follows it. Stops early, without error, when the
/// receiver is gone (the sender failed and reports that itself).
fn stream_array(input: Input, records: mpsc::Sender<String>) -> serde_json::Result<()> {
    let reader = std::io::BufReader::new(tokio_util::io::SyncIoBridge::new(input));
    let mut parser = serde_json::Deserializer::from_reader(reader);
    let finished = (&mut parser).deserialize_seq(Elements(&records))?;
    if finished {
        parser.end()?;
    }
    Ok(())
}

/// Visits the array, forwarding its elements; `false` when the receiver went away.
struct Elements<'a>(&'a mpsc::Sender<String>);

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<bool, A::Error> {
        while let Some(value) = elements.next_element::<Value>()? {
            if self.0.blocking_send(value.to_string()).is_err() {
                // Skip the rest unread: the caller ends on the sender's error.
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// One NDJSON line as compact JSON text.
fn compact(line: &str) -> serde_json::Result<String> {
    serde_json::from_str::<Value>(line).map(|value| value.to_string())
}

/// Records waiting to be sent, bounded by count and bytes.
struct Batch {
    max_records: usize,
    max_bytes: usize,
    pending: Records,
    bytes: usize,
}

/// Records of one request, each with where it came from in the input (`line 5`, `element 3`).
#[derive(Debug, Default, PartialEq)]
struct Records {
    records: Vec<String>,
    sources: Vec<String>,
}

impl Batch {
    fn new(max_records: usize, max_bytes: usize) -> Self {
        Self { max_records, max_bytes, pending: Records::default(), bytes: 0 }
    }

    /// Adds a record that came from `which` of the input. Returns the batch to send first
    /// when the record does not fit beside it, or the batch with it when that reached the
    /// record cap. A record larger than the byte cap on its own is an error naming it.
    fn push(&mut self, record: String, which: impl FnOnce() -> String) -> anyhow::Result<Option<Records>> {
        let size = record.len() + 1;
        let source = which();
        if size > self.max_bytes {
            anyhow::bail!(
                "{source} is {} bytes, more than --max-batch-bytes ({}) allows in one request",
                record.len(),
                self.max_bytes
            );
        }
        let flushed = if self.bytes + size > self.max_bytes { self.take() } else { None };
        self.bytes += size;
        self.pending.records.push(record);
        self.pending.sources.push(source);
        if flushed.is_some() {
            return Ok(flushed);
        }
        Ok(if self.pending.records.len() >= self.max_records { self.take() } else { None })
    }

    /// Everything waiting, if anything is.
    fn take(&mut self) -> Option<Records> {
        self.bytes = 0;
        (!self.pending.records.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// The error for a request the server refused for good (a 4xx other than 429): the API
/// stores all of a request or nothing, so it says which input records the request held and,
/// when the server names one (`record N, …`), which of them was rejected.
fn refused(batch: &Records, error: ClientError) -> anyhow::Error {
    let range = match (batch.sources.first(), batch.sources.last()) {
        (Some(first), Some(last)) if first != last => format!("{first} to {last}"),
        (Some(first), _) => first.clone(),
        _ => "no records".into(),
    };
    let culprit = match &error {
        ClientError::Api { message, .. } => rejected_record(message).and_then(|index| batch.sources.get(index)),
        _ => None,
    };
    let culprit = culprit.map(|source| format!("; the rejected record is {source}")).unwrap_or_default();
    let count = batch.records.len();
    let records = if count == 1 { "record".to_owned() } else { format!("{count} records") };
    anyhow::anyhow!(
        "{error}\n  the request with the {records} of {range} was refused as a whole, so none of it was stored and \
         nothing after it was sent{culprit}"
    )
}

/// The record index a server's `record N, field …: …` message names.
fn rejected_record(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("record ")?;
    let digits = rest.split(|ch: char| !ch.is_ascii_digit()).next()?;
    digits.parse().ok()
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    accepted: u64,
    duplicates: u64,
    token: i64,
    requests: u64,
}

/// Posts batches, retrying 429 and 503 after `Retry-After`; any other error stops the upload.
struct Sender<'a> {
    client: &'a QueryClient,
    args: &'a Args,
    totals: Totals,
}

impl Sender<'_> {
    async fn send(&mut self, batch: Records) -> anyhow::Result<()> {
        let body = batch.records.join("\n");
        let mut attempt = 0;
        let ack = loop {
            match self.client.ingest(&self.args.dataset, self.args.namespace.as_deref(), body.clone()).await {
                Ok(ack) => break ack,
                Err(ClientError::Api { status: 429 | 503, retry_after, .. }) if attempt < self.args.retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 60))).await;
                }
                // A 4xx is final: the same request would be refused again.
                Err(error @ ClientError::Api { status, .. }) if (400..500).contains(&status) && status != 429 => {
                    return Err(refused(&batch, error));
                }
                Err(error) => return Err(error.into()),
            }
        };
        self.totals.accepted += ack.accepted;
        self.totals.duplicates += ack.duplicates;
        self.totals.token = self.totals.token.max(ack.visibility_token);
        self.totals.requests += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Runs [`stream_array`] over `text` (past its opening blanks, as `send_all` does) and
    /// collects what it sent, keeping at most `keep` records before hanging up.
    async fn parse_array(text: &str, keep: usize) -> (Vec<String>, serde_json::Result<()>) {
        let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = Box::new(std::io::Cursor::new(text.to_owned()));
        let mut input = BufReader::with_capacity(8, reader);
        assert!(starts_with_array(&mut input).await.expect("reads"), "{text:?} opens an array");
        let (records, mut received) = mpsc::channel(1);
        let parser = tokio::task::spawn_blocking(move || stream_array(input, records));
        let mut got = Vec::new();
        while got.len() < keep {
            match received.recv().await {
                Some(record) => got.push(record),
                None => break,
            }
        }
        drop(received);
        (got, parser.await.expect("the parser thread ends"))
    }

    #[tokio::test]
    async fn a_json_array_is_streamed_element_by_element() {
        let (records, result) = parse_array(" [ {\"a\": [1, 2]}, {\"b\": \"x\"} ,{}]\n ", usize::MAX).await;
        assert_eq!(records, ["{\"a\":[1,2]}", "{\"b\":\"x\"}", "{}"]);
        result.expect("a whole array");

        // A broken element: what came before it was handed over, then the error says where.
        let (records, result) = parse_array("[{\"a\": 1},\n {\"b\": }]", usize::MAX).await;
        assert_eq!(records, ["{\"a\":1}"]);
        let error = result.expect_err("malformed");
        assert_eq!((error.line(), error.is_syntax()), (2, true), "{error}");

        // Anything but blanks after the array is refused.
        let (records, result) = parse_array("[{\"a\": 1}] {\"b\": 2}", usize::MAX).await;
        assert_eq!(records.len(), 1);
        assert!(result.expect_err("trailing").to_string().contains("trailing"));

        // A receiver that hangs up (the sender failed) stops the parser instead of blocking it.
        let many = format!("[{}]", vec!["{\"n\": 1}"; 10_000].join(","));
        let (records, _) = parse_array(&many, 3).await;
        assert_eq!(records.len(), 3);
    }

    fn batches(max_records: usize, max_bytes: usize, records: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
        let mut batch = Batch::new(max_records, max_bytes);
        let mut sent = Vec::new();
        for record in records {
            sent.extend(batch.push((*record).to_owned(), || record.to_string())?);
        }
        sent.extend(batch.take());
        assert!(sent.iter().all(|batch| batch.records == batch.sources), "each record keeps its source");
        Ok(sent.into_iter().map(|batch| batch.records).collect())
    }

    #[test]
    fn a_refused_request_names_its_input_records_and_the_rejected_one() {
        let batch = Records {
            records: vec!["{}".into(), "{}".into(), "{}".into()],
            sources: vec!["line 4".into(), "line 5".into(), "line 7".into()],
        };
        let api = |message: &str| ClientError::Api {
            status: 400,
            error_code: "nul_character".into(),
            message: message.into(),
            retry_after: None,
        };
        let text = refused(&batch, api("record 1, field \"name\": the value holds a NUL character")).to_string();
        assert!(text.starts_with("400 nul_character: record 1, field \"name\""), "{text}");
        assert!(text.contains("the request with the 3 records of line 4 to line 7 was refused as a whole"), "{text}");
        assert!(text.ends_with("the rejected record is line 5"), "{text}");
        let text = refused(&batch, api("too many records")).to_string();
        assert!(!text.contains("rejected record is"), "{text}");
        assert_eq!(rejected_record("record 12: expected a JSON object"), Some(12));
        assert_eq!(rejected_record("record x"), None);
    }

    #[test]
    fn batches_close_at_the_record_cap_and_before_passing_the_byte_cap() {
        let by_count = batches(2, 1024, &["a", "b", "c"]).expect("fits");
        assert_eq!(by_count, [vec!["a", "b"], vec!["c"]]);
        // each record costs its length plus a newline: "aaaa" + "bbbb" = 10 bytes fit, a third does not
        let by_bytes = batches(100, 10, &["aaaa", "bbbb", "cccc"]).expect("fits");
        assert_eq!(by_bytes, [vec!["aaaa", "bbbb"], vec!["cccc"]]);
        assert!(batches(100, 10, &[]).expect("empty").is_empty());
        let error = batches(100, 10, &["a", "0123456789"]).expect_err("too big");
        assert!(error.to_string().contains("0123456789 is 10 bytes"), "{error}");
    }

    #[tokio::test]
    async fn the_first_non_blank_byte_decides_array_or_ndjson() {
        for (text, array) in [
            ("  \n [1]", true),
            ("{\"a\": 1}\n", false),
            ("", false),
            ("\n\n", false),
            ("\u{feff}[1]", true),
            ("\u{feff}{\"a\": 1}", false),
        ] {
            let mut input = BufReader::with_capacity(4, text.as_bytes());
            assert_eq!(starts_with_array(&mut input).await.expect("reads"), array, "{text:?}");
            let mut rest = String::new();
            input.read_to_string(&mut rest).await.expect("reads");
            assert_eq!(rest, text.trim_start_matches('\u{feff}').trim_start(), "only a BOM and blanks were consumed");
        }
    }

    #[test]
    fn ndjson_lines_are_compacted_and_bad_ones_refused() {
        assert_eq!(compact("{ \"a\" : 1 }").expect("json"), "{\"a\":1}");
        assert!(compact("nope").is_err());
    }
}
