//! The oldest Kubernetes the operator runs on, checked against the API server at startup.
//!
//! The Helm chart refuses older clusters through its `kubeVersion`; plain manifests have no such
//! check, so the binary asks the API server (`GET /version`) before it starts and refuses to run
//! on a cluster too old for what it relies on: the CRD's CEL validation rules with `reason`
//! (GA in 1.30), `coordination.k8s.io/v1` Leases, `events.k8s.io/v1` Events and
//! `apiextensions.k8s.io/v1`. The floor is the oldest minor Azure Kubernetes Service still
//! supports (1.32, under long-term support until March 2027); keep it equal to the chart's
//! `kubeVersion`.

use std::fmt;

use k8s_openapi::apimachinery::pkg::version::Info;

/// A Kubernetes `major.minor` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MinorVersion {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for MinorVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest Kubernetes the operator supports.
pub const MINIMUM: MinorVersion = MinorVersion {
    major: 1,
    minor: 32,
};

/// Why the API server's version does not do.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(
        "the Kubernetes API server is version {found}, older than {MINIMUM}, the oldest this operator supports (its CRD's validation rules and the APIs it uses need {MINIMUM} or newer); upgrade the cluster to Kubernetes {MINIMUM} or newer"
    )]
    TooOld { found: String },
    #[error(
        "cannot read the Kubernetes API server's version from GET /version (major {major:?}, minor {minor:?}, gitVersion {git_version:?})"
    )]
    Unreadable {
        major: String,
        minor: String,
        git_version: String,
    },
    #[error("cannot ask the Kubernetes API server its version (GET /version)")]
    Request(#[source] kube::Error),
}

/// The `major.minor` of an API server's version answer. Managed clusters decorate it
/// (`"minor": "32+"`, `"gitVersion": "v1.32.3-eks-..."`), so leading digits count, and
/// `gitVersion` stands in when `major`/`minor` are empty.
pub fn minor_version(info: &Info) -> Option<MinorVersion> {
    fn number(text: &str) -> Option<u32> {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }
    if let (Some(major), Some(minor)) = (number(&info.major), number(&info.minor)) {
        return Some(MinorVersion { major, minor });
    }
    let mut parts = info.git_version.trim_start_matches('v').split('.');
    Some(MinorVersion {
        major: number(parts.next()?)?,
        minor: number(parts.next()?)?,
    })
}

/// Refuses an API server older than [`MINIMUM`], or one whose version cannot be read.
pub fn check(info: &Info) -> Result<MinorVersion, VersionError> {
    let version = minor_version(info).ok_or_else(|| VersionError::Unreadable {
        major: info.major.clone(),
        minor: info.minor.clone(),
        git_version: info.git_version.clone(),
    })?;
    if version < MINIMUM {
        let found = if info.git_version.is_empty() {
            version.to_string()
        } else {
            info.git_version.clone()
        };
        return Err(VersionError::TooOld { found });
    }
    Ok(version)
}

/// Asks the API server its version and [`check`]s it.
pub async fn ensure_supported(client: &kube::Client) -> Result<MinorVersion, VersionError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(VersionError::Request)?;
    check(&info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: &str, minor: &str, git_version: &str) -> Info {
        Info {
            major: major.to_owned(),
            minor: minor.to_owned(),
            git_version: git_version.to_owned(),
            ..Info::default()
        }
    }

    #[test]
    fn versions_at_or_above_the_floor_pass() {
        for (major, minor, git) in [
            ("1", "32", "v1.32.0"),
            ("1", "32+", "v1.32.3-eks-1234"),
            ("1", "37", "v1.37.1"),
            ("", "", "v1.33.2-aks.1"),
            ("2", "0", "v2.0.0"),
        ] {
            assert!(check(&info(major, minor, git)).is_ok(), "{git}");
        }
    }

    #[test]
    fn older_versions_are_refused_naming_found_and_required() {
        let message = check(&info("1", "31", "v1.31.9")).unwrap_err().to_string();
        assert!(message.contains("v1.31.9"), "{message}");
        assert!(message.contains("older than 1.32"), "{message}");
        let message = check(&info("1", "19+", "")).unwrap_err().to_string();
        assert!(message.contains("version 1.19,"), "{message}");
    }

    #[test]
    fn an_unreadable_version_is_refused() {
        let error = check(&info("", "", "weird")).unwrap_err();
        assert!(matches!(error, VersionError::Unreadable { .. }), "{error}");
    }
}
