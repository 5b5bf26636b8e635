//! The Kubernetes controller: reconciles `BlobBackupInstance` resources against Azure.

pub mod decide;
pub mod leader;
