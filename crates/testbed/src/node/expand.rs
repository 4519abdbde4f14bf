//! The pure rules a kubelet applies before it starts a container: `$(VAR)` expansion, resource
//! quantities, the image table and the entrypoint (`command`/`args`) rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Expands `$(VAR)` references the way Kubernetes does (`third_party/forked/golang/expansion`):
/// a defined variable is replaced by its value, an undefined one is left as it is, `$$` is an
/// escaped `$` (so `$$(VAR)` yields `$(VAR)`), and any other `$` is kept.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `$x`: kept; the next character is copied from the checkpoint.
                    out.push('$');
                    0
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

/// Parses a Kubernetes quantity (`100m`, `1.5`, `64Gi`, `2e3`, `500M`) into a number of base units.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * multiplier)
}

/// The value of a `resourceFieldRef`: the quantity divided by the divisor, rounded up (the
/// kubelet's `convertResourceCPUToString`/`convertResourceMemoryToString`), as an integer string.
pub fn resource_value(resource: &str, quantity: f64, divisor: Option<&str>) -> Option<String> {
    let divisor = match divisor {
        Some(text) => parse_quantity(text)?,
        None => 1.0,
    };
    // The kubelet reads an unset (zero) divisor as 1.
    let divisor = if divisor == 0.0 { 1.0 } else { divisor };
    if divisor < 0.0 {
        return None;
    }
    let value = if resource.ends_with("cpu") {
        // Millicores, like the kubelet, so 250m / 1 → 1 and 250m / 1m → 250.
        ((quantity * 1000.0).round() / (divisor * 1000.0).round()).ceil()
    } else {
        (quantity / divisor).ceil()
    };
    Some(format!("{value:.0}"))
}

/// The image table's executable for `image`: the full reference first, then the reference
/// without its digest (`@sha256:…`), then without its tag (`:tag` after the last `/`).
pub fn lookup_image<'a>(images: &'a BTreeMap<String, PathBuf>, image: &str) -> Option<&'a PathBuf> {
    if let Some(path) = images.get(image) {
        return Some(path);
    }
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    if let Some(path) = images.get(without_digest) {
        return Some(path);
    }
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let without_tag = match without_digest[last_slash..].rfind(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    };
    images.get(without_tag)
}

/// The repository's last path component without tag or digest: `ghcr.io/x/duckmesh:1` → `duckmesh`.
pub fn image_name(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    let base = without_digest.rsplit('/').next().unwrap_or(without_digest);
    base.split_once(':').map_or(base, |(name, _)| name)
}

/// Why a container's command line could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

/// The program and arguments a container runs, per the Docker/Kubernetes entrypoint rules,
/// where an image is one executable (its ENTRYPOINT) and has no CMD:
///
/// - no `command`: the image's executable, with `args`;
/// - `command` set: it replaces the entrypoint, and `command[0]` names the program:
///   - an absolute path that exists on this machine runs as it is;
///   - a name (or path) whose file name is the executable's file name or the image's name
///     (`duckmesh` for `ghcr.io/duckmesh/duckmesh:1.0`, `sh` for an image `sh` → `/bin/sh`)
///     means the image's executable;
///   - anything else is not in the "image": a start error like the runtime's
///     `executable file not found in $PATH`.
///
/// `args` follow `command[1..]`.
pub fn entrypoint(
    image: &str,
    executable: &Path,
    command: &[String],
    args: &[String],
) -> Result<(PathBuf, Vec<String>), StartError> {
    let Some((first, rest)) = command.split_first() else {
        return Ok((executable.to_owned(), args.to_vec()));
    };
    let mut argv: Vec<String> = rest.to_vec();
    argv.extend(args.iter().cloned());
    let first_path = Path::new(first);
    if first_path.is_absolute() && first_path.is_file() {
        return Ok((first_path.to_owned(), argv));
    }
    let file_name = first_path.file_name().and_then(|n| n.to_str()).unwrap_or(first);
    let executable_name = executable.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if file_name == executable_name || file_name == image_name(image) {
        return Ok((executable.to_owned(), argv));
    }
    Err(StartError(format!(
        "exec: \"{first}\": executable file not found in $PATH (the test node's image {image} is {}; \
         command[0] must be an absolute path that exists, or name {executable_name} or {})",
        executable.display(),
        image_name(image)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("1".into()),
            "B" => Some("two".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_the_kubernetes_rules() {
        let cases = [
            ("$(A)", "1"),
            ("x$(A)y$(B)z", "x1ytwoz"),
            ("$(C)", "$(C)"),
            ("$$(A)", "$(A)"),
            ("$$", "$"),
            ("$A", "$A"),
            ("a$", "a$"),
            ("$(A", "$(A"),
            ("$()", "$()"),
            ("plain", "plain"),
            ("$$$(A)", "$1"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, vars), want, "{input}");
        }
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("64Gi"), Some(64.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1k"), Some(1000.0));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn resource_values_round_up() {
        assert_eq!(resource_value("limits.cpu", 0.25, None).as_deref(), Some("1"));
        assert_eq!(resource_value("limits.cpu", 0.25, Some("1m")).as_deref(), Some("250"));
        assert_eq!(resource_value("limits.memory", 64.0 * 1024.0 * 1024.0, Some("1Mi")).as_deref(), Some("64"));
        assert_eq!(resource_value("requests.memory", 1000.0, None).as_deref(), Some("1000"));
        assert_eq!(resource_value("requests.cpu", 0.0, None).as_deref(), Some("0"));
    }

    #[test]
    fn images_match_full_reference_then_without_tag_or_digest() {
        let images: BTreeMap<String, PathBuf> =
            [("sh".to_owned(), PathBuf::from("/bin/sh")), ("ghcr.io/x/duckmesh".to_owned(), PathBuf::from("/d"))]
                .into_iter()
                .collect();
        assert_eq!(lookup_image(&images, "sh"), Some(&PathBuf::from("/bin/sh")));
        assert_eq!(lookup_image(&images, "sh:1.36"), Some(&PathBuf::from("/bin/sh")));
        assert_eq!(lookup_image(&images, "ghcr.io/x/duckmesh:dev"), Some(&PathBuf::from("/d")));
        assert_eq!(lookup_image(&images, "ghcr.io/x/duckmesh@sha256:ab"), Some(&PathBuf::from("/d")));
        assert_eq!(lookup_image(&images, "localhost:5000/sh"), None);
        assert_eq!(lookup_image(&images, "busybox"), None);
        assert_eq!(image_name("localhost:5000/x/duckmesh:1@sha256:ab"), "duckmesh");
    }

    #[test]
    fn entrypoints_follow_the_docker_rules() {
        let sh = Path::new("/bin/sh");
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(entrypoint("sh", sh, &[], &s(&["-c", "true"])), Ok((sh.to_owned(), s(&["-c", "true"]))));
        assert_eq!(entrypoint("sh", sh, &s(&["sh", "-c"]), &s(&["true"])), Ok((sh.to_owned(), s(&["-c", "true"]))));
        assert_eq!(
            entrypoint("sh", sh, &s(&["/usr/local/bin/sh", "-c", "x"]), &[]),
            Ok((sh.to_owned(), s(&["-c", "x"])))
        );
        let d = Path::new("/target/duckmesh-bin");
        assert_eq!(
            entrypoint("ghcr.io/x/duckmesh:1", d, &s(&["duckmesh", "worker"]), &[]),
            Ok((d.to_owned(), s(&["worker"])))
        );
        assert_eq!(entrypoint("sh", sh, &s(&["/bin/true"]), &[]), Ok((PathBuf::from("/bin/true"), vec![])));
        assert!(entrypoint("sh", sh, &s(&["python"]), &[]).is_err());
    }
}
