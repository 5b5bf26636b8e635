//! blob-backup-operator: Azure Blob backup, declared as Kubernetes resources.
//!
//! The library holds everything; the binary in `main.rs` is only the command line, so tests
//! and benchmarks drive the same code the operator runs.

pub mod api;
pub mod controller;
pub mod telemetry;
