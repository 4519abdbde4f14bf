//! Dev mode's own knobs as a clap `Args` struct. The components dev mode runs read theirs
//! through their own structs (catalog, store, coordinator, worker), over dev mode's overlay of
//! the environment.

use duckmesh_config::knob;

/// Dev mode's knobs.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Dev mode")]
pub struct DevArgs {
    /// Size bound in MiB of the worker cache in <state dir>/cache, trimmed at start, least
    /// recently used first (the query service's cache bound); 0 removes every file not used in the
    /// last 10 minutes
    #[arg(long, env = "DUCKMESH_DEV_CACHE_MAX_MB", default_value = "2048", value_parser = knob::number(0, u64::MAX >> 20))]
    pub dev_cache_max_mb: u64,
}
