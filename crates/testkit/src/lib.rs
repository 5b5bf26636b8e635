//! Dev-only test support for blob-backup-operator (DESIGN.md section 4). The repository's tests,
//! benches and examples use it as a dev-dependency; the operator itself never links it.
//!
//! - [`envtest`]: a real `kube-apiserver` and `etcd` from `KUBEBUILDER_ASSETS`, the envtest
//!   convention of the Kubernetes ecosystem;
//! - [`real_cluster`]: the real controller and the vault emulator against that server;
//! - [`fake_apiserver`]: the in-memory Kubernetes API stand-in, for what a real server cannot
//!   show (injected faults, exact request counts, the quickstart without a cluster);
//! - [`scenario`]: the controller and the emulator against the stand-in, and the waits both
//!   tiers share;
//! - [`checkout`]: the repository's files and the tools in `./.tools/bin`;
//! - [`benchmark`]: the convergence run of `benches/converge.rs` and `tests/fault_run.rs`.
pub mod benchmark;
pub mod checkout;
pub mod envtest;
pub mod fake_apiserver;
pub mod real_cluster;
pub mod scenario;
