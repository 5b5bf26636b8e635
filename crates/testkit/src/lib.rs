//! Dev-only test support for blob-backup-operator (DESIGN.md section 4): [`envtest`] starts a
//! real `kube-apiserver` and `etcd` from `KUBEBUILDER_ASSETS`, the envtest convention of the
//! Kubernetes ecosystem. The repository's tests, benches and examples use it as a
//! dev-dependency; the operator itself never links it.
pub mod envtest;
