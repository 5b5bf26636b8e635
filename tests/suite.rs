//! The integration tests, as one test binary. Each test binary links the whole dependency tree
//! (about 60 MB apiece), so twenty of them took more disk and link time than the tests take to
//! run; as modules they share one link. `cargo test --test suite <module>::` runs one file.
//! `e2e` (a real cluster) and `arm_auth_env` (it changes the process environment) stay
//! binaries of their own.

mod support;

mod argocd_health;
mod arm_auth;
mod arm_client;
mod arm_contract;
mod arm_emulator;
mod arm_ids;
mod chart_render;
mod controller_cli;
mod controller_examples;
mod controller_leader;
mod controller_metrics;
mod controller_scenarios;
mod crd_schema;
mod decide_table;
mod emulator_api;
mod envtest_scenarios;
mod fake_apiserver_selftest;
mod fault_run;
mod fresh_metrics;
mod readme_docs;
mod telemetry_leader;
mod telemetry_metrics;
