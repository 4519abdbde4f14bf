//! Kubernetes resource quantities for task resources: memory (`512Mi`, `2Gi`, `1G`, `1e9`,
//! plain bytes) and CPU (`500m`, `2`, `1.5`).

/// Parses a memory quantity into bytes.
pub fn parse_memory_bytes(quantity: &str) -> Option<u64> {
    let text = quantity.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => {
            // Scientific notation such as 1e9 splits at the "e".
            let value: f64 = text.parse().ok()?;
            return (value.is_finite() && value >= 0.0).then_some(value as u64);
        }
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((value * multiplier) as u64)
}

/// Parses a CPU quantity into millicores.
pub fn parse_cpu_millis(quantity: &str) -> Option<u64> {
    let text = quantity.trim();
    let (number, scale) = match text.strip_suffix('m') {
        Some(millis) => (millis, 1.0),
        None => (text, 1000.0),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value > 0.0).then_some((value * scale).round() as u64)
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
            ("1.5Gi", Some(1_610_612_736)),
            ("1048576", Some(1_048_576)),
            ("1e9", Some(1_000_000_000)),
            (" 64Ki ", Some(65_536)),
            ("lots", None),
            ("-1Gi", None),
            ("12Qi", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_memory_bytes(input), expected, "{input:?}");
        }
    }

    #[test]
    fn cpu_table() {
        let cases = [
            ("500m", Some(500)),
            ("2", Some(2000)),
            ("1.5", Some(1500)),
            ("0", None),
            ("-1", None),
            ("fast", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_cpu_millis(input), expected, "{input:?}");
        }
    }
}
