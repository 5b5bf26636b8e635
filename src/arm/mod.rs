//! Azure Resource Manager client for `Microsoft.DataProtection` backup instances.

pub mod ids;
