//! The Kubernetes controller: reconciles `BlobBackupInstance` resources against Azure.

pub mod decide;
