//! What `duckmesh dev` shows while a job runs and when it ends: live per-task state (progress
//! bars on a terminal, one line per change otherwise) and summary tables. Everything shown is
//! read from the catalog, so it is exactly what the operator would project into CR status.

use chrono::{DateTime, Utc};
use comfy_table::{Cell, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use duckmesh_catalog::{Catalog, DatasetRecord, TaskRecord};
use duckmesh_core::{JobId, JobPhase, TaskPhase};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

/// One job's state, as read from the catalog.
#[derive(Debug, Clone)]
pub struct JobView {
    /// Catalog id.
    pub id: JobId,
    /// Name.
    pub name: String,
    /// Phase.
    pub phase: JobPhase,
    /// Its tasks, in catalog order.
    pub tasks: Vec<TaskRecord>,
    /// Catalog time of the read.
    pub now: DateTime<Utc>,
}

impl JobView {
    /// Reads a job and its tasks.
    pub async fn read(catalog: &Catalog, id: JobId) -> Result<Self, duckmesh_catalog::Error> {
        let job = catalog.job(id).await?;
        let tasks = catalog.tasks_of_job(id).await?;
        Ok(Self { id, name: job.name, phase: job.phase, tasks, now: catalog.now().await? })
    }

    /// Tasks in a terminal phase.
    pub fn finished(&self) -> usize {
        self.tasks.iter().filter(|t| t.phase.is_terminal()).count()
    }
}

/// Seconds a task has run (or ran), from its first start to its end or `now`.
fn elapsed(task: &TaskRecord, now: DateTime<Utc>) -> Option<f64> {
    let start = task.started_at?;
    let end = task.finished_at.unwrap_or(now);
    Some((end - start).num_milliseconds().max(0) as f64 / 1000.0)
}

fn describe(task: &TaskRecord, now: DateTime<Utc>) -> String {
    let mut text = format!("{:<10}", task.phase.as_str());
    if task.attempts > 0 {
        text.push_str(&format!(" attempt {}/{}", task.attempts, task.max_attempts));
    }
    if let Some(seconds) = elapsed(task, now) {
        text.push_str(&format!("  {seconds:.1}s"));
    }
    if matches!(task.phase, TaskPhase::Retrying | TaskPhase::Failed)
        && let Some(code) = &task.last_error_code
    {
        text.push_str(&format!("  [{code}]"));
    }
    text
}

/// Live display of running jobs.
pub struct Progress {
    terminal: Option<Terminal>,
    last: HashMap<(JobId, String), (TaskPhase, u32)>,
    started: std::time::Instant,
}

struct Terminal {
    multi: MultiProgress,
    jobs: HashMap<JobId, ProgressBar>,
    tasks: HashMap<(JobId, String), ProgressBar>,
}

impl Progress {
    /// Bars when stderr is a terminal, plain lines otherwise (logs, CI, pipes).
    pub fn new() -> Self {
        let terminal = std::io::stderr().is_terminal().then(|| Terminal {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)),
            jobs: HashMap::new(),
            tasks: HashMap::new(),
        });
        Self { terminal, last: HashMap::new(), started: std::time::Instant::now() }
    }

    /// Prints a message without tearing the bars.
    pub fn println(&self, message: &str) {
        match &self.terminal {
            Some(terminal) => {
                let _ = terminal.multi.println(message);
            }
            None => eprintln!("{message}"),
        }
    }

    /// Shows the current state of `job`.
    pub fn update(&mut self, job: &JobView) {
        for task in &job.tasks {
            let key = (job.id, task.name.clone());
            let state = (task.phase, task.attempts);
            let changed = self.last.insert(key.clone(), state) != Some(state);
            if self.terminal.is_none() && changed {
                eprintln!(
                    "[{:>6.1}s] {}/{:<20} {}",
                    self.started.elapsed().as_secs_f64(),
                    job.name,
                    task.name,
                    describe(task, job.now)
                );
            }
        }
        let Some(terminal) = &mut self.terminal else { return };
        let bar = terminal.jobs.entry(job.id).or_insert_with(|| {
            let bar = terminal.multi.add(ProgressBar::new(job.tasks.len() as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30.green/white}] {pos}/{len} tasks  {elapsed}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(format!("job {}", job.name));
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        bar.set_position(job.finished() as u64);
        bar.set_message(job.phase.as_str().to_owned());
        let width = job.tasks.iter().map(|t| t.name.len()).max().unwrap_or(8);
        for task in &job.tasks {
            let line = terminal.tasks.entry((job.id, task.name.clone())).or_insert_with(|| {
                let line = terminal.multi.add(ProgressBar::new_spinner());
                line.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                line.set_prefix(format!("{:<width$}", task.name));
                line
            });
            line.set_message(describe(task, job.now));
            if task.phase.is_active() {
                line.tick();
            }
        }
        if job.phase.is_terminal() {
            bar.finish_with_message(job.phase.as_str().to_owned());
        }
    }

    /// Removes the bars (before the summary is printed).
    pub fn clear(&mut self) {
        if let Some(terminal) = &self.terminal {
            let _ = terminal.multi.clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// A table of a job's tasks: phase, attempts, duration, output snapshot and rows, last error.
pub fn tasks_table(job: &JobView, outputs: &HashMap<String, (String, Option<i64>)>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(["task", "phase", "attempts", "duration", "output", "snapshot", "rows", "error"]);
    for task in &job.tasks {
        let (output, rows) = outputs.get(&task.name).cloned().unwrap_or_default();
        table.add_row([
            Cell::new(&task.name),
            Cell::new(task.phase.as_str()),
            Cell::new(format!("{}/{}", task.attempts, task.max_attempts)),
            Cell::new(elapsed(task, job.now).map(|s| format!("{s:.1}s")).unwrap_or_default()),
            Cell::new(output),
            Cell::new(task.output_snapshot.map(|s| s.to_string()).unwrap_or_default()),
            Cell::new(rows.map(|r| r.to_string()).unwrap_or_default()),
            Cell::new(match (&task.last_error_code, &task.last_error_message) {
                (Some(code), Some(message)) if task.phase != TaskPhase::Succeeded => format!("[{code}] {message}"),
                _ => String::new(),
            }),
        ]);
    }
    table
}

/// A table of datasets and their current snapshots.
pub fn datasets_table(datasets: &[DatasetRecord]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(["dataset", "tenant", "snapshot", "token", "rows", "files", "size", "last commit"]);
    for dataset in datasets {
        table.add_row([
            Cell::new(format!("{}/{}", dataset.namespace, dataset.name)),
            Cell::new(&dataset.tenant),
            Cell::new(dataset.current_snapshot.map(|s| s.to_string()).unwrap_or_else(|| "-".into())),
            Cell::new(dataset.visibility_token),
            Cell::new(dataset.row_count),
            Cell::new(dataset.file_count),
            Cell::new(human_bytes(dataset.byte_count)),
            Cell::new(dataset.last_commit_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()),
        ]);
    }
    table
}

/// `1.50 MiB`-style sizes (binary units, [`HumanBytes`]); a negative count, which the catalog
/// never records, shows as `0 B`.
pub fn human_bytes(bytes: i64) -> String {
    HumanBytes(u64::try_from(bytes).unwrap_or(0)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.00 GiB");
        assert_eq!(human_bytes(-3), "0 B");
    }
}
