//! The `BlobBackupInstance` custom resource: spec, status, conditions and their schema.
