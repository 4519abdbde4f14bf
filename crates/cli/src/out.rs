//! Printing to stdout that treats a closed pipe (`duckmesh status | head`) as the reader being
//! done, not as a failure.

use std::io::Write;

/// Writes `text` and a newline to stdout; a closed pipe ends the output quietly.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}
