//! Shared helpers for integration tests.
pub mod fake_apiserver;
pub mod harness;
pub mod real_cluster;
