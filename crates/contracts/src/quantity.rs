//! Kubernetes resource quantities, read one way everywhere: the resource validation that
//! refuses a Job, the scheduler's pod resources and the worker's DuckDB limits.
//!
//! Memory: a number with an optional binary (`Ki Mi Gi Ti Pi Ei`) or decimal (`k M G T P E`)
//! suffix, or in exponent form (`1e9`): `512Mi`, `2Gi`, `1G`, `1.5Gi`, `134217728`. CPU: cores
//! (`2`, `1.5`) or millicores (`500m`).

const MEMORY_SUFFIXES: [(&str, f64); 12] = [
    ("Ki", 1024.0),
    ("Mi", 1024.0 * 1024.0),
    ("Gi", 1024.0 * 1024.0 * 1024.0),
    ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// A memory quantity in bytes (at least 1); `None` when `text` is not one.
pub fn memory_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, multiplier) = split_suffix(text)?;
    let bytes = number.parse::<f64>().ok()? * multiplier;
    (bytes.is_finite() && bytes >= 1.0 && bytes <= u64::MAX as f64).then_some(bytes as u64)
}

/// A CPU quantity in millicores (more than 0, rounded); `None` when `text` is not one.
pub fn cpu_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix('m') {
        Some(millis) => (millis, 1.0),
        None => (text, 1000.0),
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) {
        return None;
    }
    let millis = number.parse::<f64>().ok()? * scale;
    (millis.is_finite() && millis > 0.0 && millis <= u64::MAX as f64).then_some((millis.round() as u64).max(1))
}

/// Splits `text` into its number and the multiplier of its suffix (1 without one).
fn split_suffix(text: &str) -> Option<(&str, f64)> {
    if text.is_empty() {
        return None;
    }
    for (suffix, multiplier) in MEMORY_SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return Some((number, multiplier));
        }
    }
    // A bare number, possibly in exponent form (`1e9`): only digits, '.', 'e', '+', '-'.
    text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')).then_some((text, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_table() {
        let cases = [
            ("512Mi", Some(512 * 1024 * 1024)),
            ("2Gi", Some(2 * 1024 * 1024 * 1024)),
            ("1G", Some(1_000_000_000)),
            ("64M", Some(64_000_000)),
            ("1.5Gi", Some(1_610_612_736)),
            ("1048576", Some(1_048_576)),
            ("1e9", Some(1_000_000_000)),
            (" 64Ki ", Some(65_536)),
            ("1Pi", Some(1 << 50)),
            ("lots", None),
            ("-1Gi", None),
            ("0", None),
            ("12Qi", None),
            ("2GB", None),
            ("Gi", None),
            ("1..2G", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(memory_bytes(input), expected, "{input:?}");
        }
    }

    #[test]
    fn cpu_table() {
        let cases = [
            ("500m", Some(500)),
            ("2", Some(2000)),
            ("1.5", Some(1500)),
            ("0.0001", Some(1)),
            ("0", None),
            ("0m", None),
            ("-1", None),
            ("m", None),
            ("fast", None),
            ("2 cores", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(cpu_millis(input), expected, "{input:?}");
        }
    }
}
