//! Redaction of secrets, credentials and presigned URLs before anything is written to a log
//! line or exported as a span attribute.
//!
//! Two checks run on everything the log layer and the span exporter see:
//! - by field name: a field called like a secret (`password`, `db_token`, `api_key`,
//!   `authorization`, `credentials`, …) has its value replaced whatever it is; fencing and
//!   visibility tokens and data keys (`dedupe_key`, …) are not secrets and stay readable;
//! - by value: inside any string, URL userinfo passwords (`postgres://user:pass@host`),
//!   presigned query strings (`X-Amz-Signature`, `X-Amz-Credential`, …), `key=value` /
//!   `"key": "value"` pairs whose key is secret-like, `Bearer`/`Basic` credentials and AWS
//!   access key ids (`AKIA…`, `ASIA…`) are replaced.
//!
//! Over-redaction is accepted; a leaked credential is not.

use std::borrow::Cow;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Field names that look secret-like but are not secrets.
const NOT_SECRET: &[&str] = &[
    "fence",
    "fence_token",
    "fencing_token",
    "visibility_token",
    "min_visibility_token",
    "latest_visibility_token",
    "dedupe_key",
    "partition_key",
    "sort_key",
    "object_key",
    "cache_key",
    "idempotency_key",
    "token_count",
    "tokens",
];

/// Substrings that make a field name secret.
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "credential",
    "cookie",
    "signature",
    "apikey",
    "api_key",
    "access_key",
    "private_key",
    "session_key",
    "connection_string",
    "dsn",
];

/// Query parameters that mark a URL as presigned; the whole query string then goes.
const PRESIGNED_MARKERS: &[&str] =
    &["x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential", "sig="];

/// Four-letter prefixes of AWS access key ids (long-term, temporary, role, user, …).
const AWS_KEY_PREFIXES: &[&str] = &["AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"];

/// Whether a field called `name` holds a secret and must never be shown.
pub fn is_sensitive_field(name: &str) -> bool {
    let normalized: String = name
        .chars()
        .map(|c| match c {
            '-' | '.' | ' ' => '_',
            other => other.to_ascii_lowercase(),
        })
        .collect();
    if NOT_SECRET.contains(&normalized.as_str()) {
        return false;
    }
    if SECRET_PARTS.iter().any(|part| normalized.contains(part)) {
        return true;
    }
    normalized == "key"
        || normalized.ends_with("_key")
        || normalized == "pwd"
        || normalized.ends_with("_pwd")
        || normalized == "auth"
}

/// Returns `text` with every secret-looking value replaced by [`REDACTED`].
pub fn scrub_text(text: &str) -> Cow<'_, str> {
    if !might_hold_secret(text) {
        return Cow::Borrowed(text);
    }
    let text = redact_presigned_queries(text);
    let text = redact_url_userinfo(&text);
    let text = redact_auth_schemes(&text);
    let text = redact_key_value_pairs(&text);
    let text = redact_aws_key_ids(&text);
    Cow::Owned(text)
}

/// Cheap pre-check so ordinary messages are not copied.
fn might_hold_secret(text: &str) -> bool {
    text.contains('=')
        || text.contains(':')
        || text.contains("://")
        || AWS_KEY_PREFIXES.iter().any(|prefix| text.contains(prefix))
        || text.to_ascii_lowercase().contains("bearer")
        || text.to_ascii_lowercase().contains("basic")
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' || byte == b'.'
}

/// Bytes that end a URL or an unquoted value inside free text.
fn ends_token(byte: u8) -> bool {
    byte.is_ascii_whitespace() || matches!(byte, b'"' | b'\'' | b'<' | b'>' | b'`')
}

/// Replaces the query string of any URL that carries presigning parameters.
fn redact_presigned_queries(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    while index < bytes.len() {
        if ends_token(bytes[index]) {
            let start = index;
            while index < bytes.len() && ends_token(bytes[index]) {
                index += 1;
            }
            out.push_str(&text[start..index]);
            continue;
        }
        let start = index;
        while index < bytes.len() && !ends_token(bytes[index]) {
            index += 1;
        }
        let token = &text[start..index];
        match token.find('?') {
            Some(question)
                if PRESIGNED_MARKERS.iter().any(|marker| token[question..].to_ascii_lowercase().contains(marker)) =>
            {
                out.push_str(&token[..=question]);
                out.push_str(REDACTED);
            }
            _ => out.push_str(token),
        }
    }
    out
}

/// `scheme://user:password@host` → `scheme://user:[REDACTED]@host`.
fn redact_url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find("://") {
        let (head, tail) = rest.split_at(position + 3);
        out.push_str(head);
        let token_end = tail.bytes().position(ends_token).unwrap_or(tail.len());
        let token = &tail[..token_end];
        let before_query = token.find(['?', '#']).unwrap_or(token.len());
        match token[..before_query].find('@') {
            Some(at) => {
                let userinfo = &token[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&token[at..]);
            }
            None => out.push_str(token),
        }
        rest = &tail[token_end..];
    }
    out.push_str(rest);
    out
}

/// `Bearer abc…` / `Basic dXNl…` → `Bearer [REDACTED]`.
fn redact_auth_schemes(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while search < bytes.len() {
        let next = ["bearer ", "basic "]
            .iter()
            .filter_map(|scheme| lower[search..].find(scheme).map(|found| (search + found, scheme.len())))
            .min();
        let Some((start, length)) = next else { break };
        let word_boundary = start == 0 || !is_word_byte(bytes[start - 1]);
        let mut value_start = start + length;
        while value_start < bytes.len() && bytes[value_start] == b' ' {
            value_start += 1;
        }
        let mut value_end = value_start;
        while value_end < bytes.len() && !ends_token(bytes[value_end]) && bytes[value_end] != b',' {
            value_end += 1;
        }
        let value = &text[value_start..value_end];
        // "basic" is an English word; only a base64-looking credential counts.
        let plausible = length == "bearer ".len() || looks_like_basic_credential(value);
        if word_boundary && value_end > value_start && plausible {
            out.push_str(&text[copied..value_start]);
            out.push_str(REDACTED);
            copied = value_end;
        }
        search = value_end.max(start + length);
    }
    out.push_str(&text[copied..]);
    out
}

/// A `Basic` credential is base64 of `user:password`: at least 8 characters from the base64
/// alphabet with an upper-case letter, a digit or padding somewhere.
fn looks_like_basic_credential(value: &str) -> bool {
    value.len() >= 8
        && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'='))
        && value.bytes().any(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'=')
}

/// `password=x`, `token: x`, `"secret":"x"`, `?X-Amz-Signature=x&…` → value redacted.
fn redact_key_value_pairs(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut index = 0;
    while index < bytes.len() {
        let at_word_start = is_word_byte(bytes[index]) && (index == 0 || !is_word_byte(bytes[index - 1]));
        if !at_word_start {
            index += 1;
            continue;
        }
        let word_start = index;
        while index < bytes.len() && is_word_byte(bytes[index]) {
            index += 1;
        }
        let word = &text[word_start..index];
        if !is_sensitive_field(word) {
            continue;
        }
        // Optional closing quote of a quoted key, then spaces, then `=` or `:`.
        let mut cursor = index;
        if cursor < bytes.len() && matches!(bytes[cursor], b'"' | b'\'') {
            cursor += 1;
        }
        while cursor < bytes.len() && bytes[cursor] == b' ' {
            cursor += 1;
        }
        if cursor >= bytes.len() || !matches!(bytes[cursor], b'=' | b':') {
            continue;
        }
        // `scheme://` is a URL, handled elsewhere, not a key/value separator.
        if text[cursor..].starts_with("://") {
            continue;
        }
        cursor += 1;
        while cursor < bytes.len() && bytes[cursor] == b' ' {
            cursor += 1;
        }
        let value_start;
        let value_end;
        if cursor < bytes.len() && matches!(bytes[cursor], b'"' | b'\'') {
            let quote = bytes[cursor];
            value_start = cursor + 1;
            let mut end = value_start;
            while end < bytes.len() && bytes[end] != quote {
                if bytes[end] == b'\\' {
                    end += 1;
                }
                end += 1;
            }
            value_end = end.min(bytes.len());
        } else {
            value_start = cursor;
            let mut end = value_start;
            while end < bytes.len()
                && !ends_token(bytes[end])
                && !matches!(bytes[end], b'&' | b';' | b',' | b'}' | b')' | b']')
            {
                end += 1;
            }
            value_end = end;
        }
        if value_end > value_start {
            out.push_str(&text[copied..value_start]);
            out.push_str(REDACTED);
            copied = value_end;
        }
        index = value_end.max(index);
    }
    out.push_str(&text[copied..]);
    out
}

/// AWS access key ids: a known prefix plus 16 upper-case letters or digits.
fn redact_aws_key_ids(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut index = 0;
    while index + 20 <= bytes.len() {
        let boundary_before = index == 0 || !bytes[index - 1].is_ascii_alphanumeric();
        let boundary_after = index + 20 == bytes.len() || !bytes[index + 20].is_ascii_alphanumeric();
        let candidate = &bytes[index..index + 20];
        let is_key = boundary_before
            && boundary_after
            && AWS_KEY_PREFIXES.iter().any(|prefix| candidate.starts_with(prefix.as_bytes()))
            && candidate[4..].iter().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit());
        if is_key {
            out.push_str(&text[copied..index]);
            out.push_str(REDACTED);
            index += 20;
            copied = index;
        } else {
            index += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_field_names_are_recognised() {
        for name in [
            "password",
            "db_password",
            "PGPASSWORD",
            "secret",
            "client_secret",
            "aws_secret_access_key",
            "token",
            "access_token",
            "refresh-token",
            "session.token",
            "key",
            "api_key",
            "apiKey",
            "access_key_id",
            "authorization",
            "Authorization",
            "credentials",
            "aws_credentials",
            "cookie",
            "x-amz-signature",
            "database_dsn",
        ] {
            assert!(is_sensitive_field(name), "{name} should be secret");
        }
    }

    #[test]
    fn fencing_and_visibility_tokens_and_data_keys_are_not_secrets() {
        for name in [
            "fencing_token",
            "fence",
            "visibility_token",
            "min_visibility_token",
            "dedupe_key",
            "partition_key",
            "object_key",
            "tenant_id",
            "task",
            "attempt",
            "error_code",
            "trace_id",
            "message",
            "monkey",
        ] {
            assert!(!is_sensitive_field(name), "{name} should stay readable");
        }
    }

    #[test]
    fn url_userinfo_passwords_are_redacted() {
        assert_eq!(
            scrub_text("connecting to postgres://duck:hunter2@db:5432/catalog"),
            "connecting to postgres://duck:[REDACTED]@db:5432/catalog"
        );
        assert_eq!(
            scrub_text("url=\"postgresql://u:p%40ss/w@h/db\" next"),
            "url=\"postgresql://u:[REDACTED]@h/db\" next"
        );
        // No password: nothing to hide, and ordinary URLs survive untouched.
        assert_eq!(scrub_text("postgres://duck@db/catalog"), "postgres://duck@db/catalog");
        assert_eq!(scrub_text("GET http://api:8080/v1/query?limit=5"), "GET http://api:8080/v1/query?limit=5");
    }

    #[test]
    fn presigned_urls_lose_their_query_string() {
        let url = "https://bucket.s3.amazonaws.com/exports/q1/part-0.parquet?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=0123456789abcdef";
        let line = format!("result exported to {url} for 1h");
        let scrubbed = scrub_text(&line);
        assert_eq!(
            scrubbed,
            "result exported to https://bucket.s3.amazonaws.com/exports/q1/part-0.parquet?[REDACTED] for 1h"
        );
    }

    #[test]
    fn secret_key_value_pairs_are_redacted() {
        assert_eq!(
            scrub_text("host=db user=duck password=hunter2 dbname=catalog"),
            "host=db user=duck password=[REDACTED] dbname=catalog"
        );
        assert_eq!(
            scrub_text(r#"{"user":"duck","secret": "s3cr3t \"x\"","n":1}"#),
            r#"{"user":"duck","secret": "[REDACTED]","n":1}"#
        );
        assert_eq!(scrub_text("api_key: abc123, ok"), "api_key: [REDACTED], ok");
        assert_eq!(
            scrub_text("fencing_token=42 visibility_token=7 dedupe_key=k1"),
            "fencing_token=42 visibility_token=7 dedupe_key=k1"
        );
    }

    #[test]
    fn authorization_schemes_are_redacted() {
        assert_eq!(scrub_text("Authorization: Bearer eyJhbGciOi.payload.sig"), "Authorization: [REDACTED] [REDACTED]");
        assert_eq!(scrub_text("sent header bearer abc.def"), "sent header bearer [REDACTED]");
        assert_eq!(
            scrub_text("Authorization=Basic dXNlcjpwYXNzd29yZA== sent"),
            "Authorization=[REDACTED] [REDACTED] sent"
        );
        assert_eq!(scrub_text("upstream said Basic dXNlcjpwYXNzd29yZA=="), "upstream said Basic [REDACTED]");
        assert_eq!(scrub_text("basic checks passed"), "basic checks passed");
    }

    #[test]
    fn aws_access_key_ids_are_redacted() {
        assert_eq!(scrub_text("using key AKIAIOSFODNN7EXAMPLE for s3"), "using key [REDACTED] for s3");
        assert_eq!(scrub_text("ASIAY34FZKBOKMUTVV7A"), "[REDACTED]");
        // Too short or embedded in a longer word: not a key id.
        assert_eq!(scrub_text("AKIA1234"), "AKIA1234");
        assert_eq!(scrub_text("XAKIAIOSFODNN7EXAMPLE"), "XAKIAIOSFODNN7EXAMPLE");
    }

    #[test]
    fn ordinary_text_is_not_copied() {
        assert!(matches!(scrub_text("task finished in 3 s"), Cow::Borrowed(_)));
    }

    #[test]
    fn multibyte_text_survives() {
        assert_eq!(scrub_text("größe=3 passwort ok password=äöü end"), "größe=3 passwort ok password=[REDACTED] end");
    }
}
