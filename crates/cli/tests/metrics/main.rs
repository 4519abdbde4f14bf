//! What the `/metrics` of a `duckmesh` process exports once every component has registered
//! its metrics (through the binary's own `every_component`, included from
//! `src/metrics.rs`): the names SPEC §6 and the control plane promise, bounded labels, and
//! every name the operations kit references.

mod artefacts;
mod exported;
mod exposition;
#[allow(dead_code)] // the binary's module; the tests use part of it
#[path = "../../src/metrics.rs"]
mod process_metrics;
