//! `duckmesh dev`: the whole pipeline on one machine from the same YAML a cluster takes, with
//! no Kubernetes. The scheduler is the operator's ([`duckmesh_scheduler::Scheduler`]); only the
//! adapters differ: resources come from files ([`source`]) and attempts run as `duckmesh worker`
//! child processes ([`process`]).

pub mod api;
pub mod config;
pub mod instance;
pub mod orphans;
pub mod process;
pub mod progress;
pub mod run;
pub mod source;

pub use config::DevArgs;
pub use instance::{Instance, InstanceInfo};
pub use run::{DEV_DEFAULTS, DevError, DevOptions, DevOutcome, private_postgres, run};
