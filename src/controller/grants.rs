//! Vault grants (DESIGN.md section 9): which namespaces may use which Backup vault.
//!
//! - [`access`]: the pure verdict for one BlobBackupInstance, from the grants and its
//!   namespace's labels ([`decide`](super::decide) reads it as [`Access`]).
//! - [`authorise_source`]: whether a BlobBackupInstance may be acted on through (a restore's
//!   source: it owns its instance, and a grant serves it).
//! - [`VaultGrants`]: the watched grants and namespaces behind [`VaultGrants::access_for`],
//!   and the BlobBackupInstance resources to reconcile again when a grant or a namespace's
//!   labels change ([`VaultGrants::watch`]).
//! - the grants' own status (`Ready`, `matchedNamespaces`), written by a small controller of
//!   their own ([`run_grant_status`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action as ReconcileAction, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, warn};

use crate::api::{
    BackupVaultGrant, BackupVaultGrantStatus, BlobBackupInstance, BlobBackupInstanceSpec,
    Condition, ConditionStatus, DeletionPolicy, condition_type,
};
use dataprotection::ids::{PolicyId, VaultId};

use super::FIELD_MANAGER;
use super::decide::{Access, whole_second};

/// Which vaults a namespace may use (`run --vault-access`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VaultAccess {
    /// Only the vaults a BackupVaultGrant grants the namespace (multi-team clusters).
    #[default]
    Grants,
    /// Every namespace may use every vault, and adopt untagged instances (one-team clusters,
    /// the emulator).
    Open,
}

/// The verdict of `grants` for a BlobBackupInstance in namespace `namespace` (with `labels`)
/// with `spec` (DESIGN.md section 9): served when a valid grant matches the namespace and the
/// vault (case-insensitive ARM id) and allows the policy and the deletion policy.
pub fn access<'g>(
    grants: impl IntoIterator<Item = &'g BackupVaultGrant>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    spec: &BlobBackupInstanceSpec,
) -> Access {
    let Ok(vault) = VaultId::parse(&spec.vault.id) else {
        return Access::NotGranted {
            message: format!("spec.vault.id {:?} is not a vault's ARM id", spec.vault.id),
            deletion_allowed: false,
        };
    };
    let policy = policy_name(spec);
    let matching: Vec<_> = grants
        .into_iter()
        .filter_map(|grant| grant.validate().ok())
        .filter(|grant| grant.vault == vault && grant.matches_namespace(namespace, labels))
        .collect();
    let deletion = spec.deletion_policy;
    let covering: Vec<_> = matching
        .iter()
        .filter(|g| g.allows_policy(&policy) && g.allows_deletion_policy(deletion))
        .collect();
    if !covering.is_empty() {
        return Access::Granted {
            allow_adoption: covering.iter().any(|g| g.allow_adoption),
        };
    }
    let deletion_allowed = matching.iter().any(|g| g.allows_deletion_policy(deletion));
    let message = if matching.is_empty() {
        format!(
            "No BackupVaultGrant lets namespace {namespace} use Backup vault {} ({vault}): ask a cluster administrator for one (spec.vaultId: {vault}, with {namespace} in spec.namespaces or matched by spec.namespaceSelector)",
            vault.name()
        )
    } else {
        let names: Vec<&str> = matching.iter().map(|g| g.name.as_str()).collect();
        format!(
            "BackupVaultGrant {} lets namespace {namespace} use Backup vault {} but not with policy {policy} and deletionPolicy {deletion:?}: use a policy and deletion policy the grant lists (spec.policies, spec.deletionPolicies), or ask a cluster administrator to allow them",
            names.join(", "),
            vault.name()
        )
    };
    Access::NotGranted {
        message,
        deletion_allowed,
    }
}

/// The policy's name, from `spec.policy.name` or the last segment of `spec.policy.id`.
fn policy_name(spec: &BlobBackupInstanceSpec) -> String {
    match (&spec.policy.name, &spec.policy.id) {
        (Some(name), _) => name.clone(),
        (None, Some(id)) => PolicyId::parse(id)
            .map(|p| p.name().to_owned())
            .unwrap_or_default(),
        (None, None) => String::new(),
    }
}

/// The uid of the `kube-system` namespace: the cluster's identity in owner tags when
/// `--cluster-id` is not given. Retried with backoff until it is read (a missing permission is
/// logged, with what to grant).
pub async fn cluster_uid(client: &Client) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        match api.get("kube-system").await {
            Ok(ns) => match ns.metadata.uid {
                Some(uid) => return uid,
                None => warn!("namespace kube-system has no uid; retrying"),
            },
            Err(error) => warn!(
                %error,
                "cannot read namespace kube-system, whose uid names this cluster in owner tags: grant the operator get on namespaces, or give --cluster-id; retrying"
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(60));
    }
}

/// Why a BlobBackupInstance may not be acted through: a message for its user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAuthorised(pub String);

/// Whether `source` may be acted on through, as a restore acts on its source (DESIGN.md
/// section 10: a restore is authorised like its source): it owns its backup instance
/// (`status.ownership`), and `access` (its [`VaultGrants::access_for`]) serves it.
pub fn authorise_source(source: &BlobBackupInstance, access: &Access) -> Result<(), NotAuthorised> {
    let name = source.name_any();
    if let Access::NotGranted { message, .. } = access {
        return Err(NotAuthorised(format!(
            "BlobBackupInstance {name} may not use its vault: {message}"
        )));
    }
    match source.status.as_ref().and_then(|s| s.ownership) {
        Some(_) => Ok(()),
        None => Err(NotAuthorised(format!(
            "BlobBackupInstance {name} owns no backup instance (status.ownership is not set): wait until it is Ready"
        ))),
    }
}

/// The grants and namespaces the verdicts are made of, as watched; or `--vault-access open`.
#[derive(Clone)]
pub struct VaultGrants {
    stores: Option<(Store<BackupVaultGrant>, Store<PartialObjectMeta<Namespace>>)>,
}

impl std::fmt::Debug for VaultGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultGrants")
            .field("open", &self.stores.is_none())
            .finish()
    }
}

/// Re-queues of BlobBackupInstance resources a grant or namespace change calls for.
pub type Triggers = futures::stream::BoxStream<'static, ObjectRef<BlobBackupInstance>>;

impl VaultGrants {
    /// `--vault-access open`: every resource is served.
    pub fn open() -> Self {
        Self { stores: None }
    }

    /// Returns once the grants and namespaces have been listed (at once when every vault is
    /// open), or never if their watches have ended.
    pub async fn listed(&self) {
        if let Some((grants, namespaces)) = &self.stores
            && grants.wait_until_ready().await.is_ok()
        {
            let _ = namespaces.wait_until_ready().await;
        }
    }

    /// The verdict for `obj` (see [`access`]); `None` until the grants and namespaces have been
    /// listed once: judging before would call every resource not granted for a moment after
    /// each start, with a status write and an Event each.
    pub fn access_for(&self, obj: &BlobBackupInstance) -> Option<Access> {
        let Some((grants, namespaces)) = &self.stores else {
            return Some(Access::OPEN);
        };
        let listed = |ready: Option<Result<(), _>>| matches!(ready, Some(Ok(())));
        if !listed(grants.wait_until_ready().now_or_never())
            || !listed(namespaces.wait_until_ready().now_or_never())
        {
            return None;
        }
        let namespace = obj.namespace().unwrap_or_default();
        let labels = namespaces
            .get(&ObjectRef::new(&namespace))
            .map(|ns| ns.labels().clone())
            .unwrap_or_default();
        Some(access(
            grants.state().iter().map(AsRef::as_ref),
            &namespace,
            &labels,
            &obj.spec,
        ))
    }

    /// `--vault-access grants`: watches the grants and the namespaces' labels (only
    /// `namespace`'s when the controller watches one), through `client`. Returns the verdicts'
    /// source, the streams that keep it current, and the resources of `resources` to reconcile
    /// again when a grant changes (those naming its vault, now or before) or a namespace's
    /// labels change (those in it). The streams must be polled (the controller does).
    pub fn watch(
        client: Client,
        namespace: Option<&str>,
        resources: Store<BlobBackupInstance>,
    ) -> (Self, Triggers, GrantChanges) {
        let (grant_reader, grant_writer) = reflector::store();
        let (ns_reader, ns_writer) = reflector::store();
        let grant_api: Api<BackupVaultGrant> = Api::all(client.clone());
        // Metadata only: the labels are all a verdict reads.
        let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let ns_config = match namespace {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        let (changed_tx, changed_rx) = futures::channel::mpsc::unbounded::<()>();

        // Vault each grant named when last seen, so a grant moved to another vault (or deleted)
        // also re-queues the resources of the vault it no longer grants.
        let seen: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let by_vault = resources.clone();
        let grant_tx = changed_tx.clone();
        let grant_triggers = watcher(grant_api, watcher::Config::default())
            .default_backoff()
            .reflect(grant_writer)
            .touched_objects()
            .filter_map(logged("BackupVaultGrant resources"))
            .flat_map(move |grant: BackupVaultGrant| {
                let _ = grant_tx.unbounded_send(());
                let mut vaults = vec![grant.spec.vault_id.clone()];
                let mut seen = super::lock(&seen);
                if let Some(before) = seen.insert(grant.name_any(), grant.spec.vault_id.clone()) {
                    vaults.push(before);
                }
                // ARM ids compare case-insensitively: as parsed ids.
                let vaults: Vec<VaultId> = vaults
                    .iter()
                    .filter_map(|v| VaultId::parse(v).ok())
                    .collect();
                let hits = refs_where(&by_vault, |obj| {
                    VaultId::parse(&obj.spec.vault.id).is_ok_and(|v| vaults.contains(&v))
                });
                debug!(grant = %grant.name_any(), resources = hits.len(), "a grant changed");
                stream::iter(hits)
            });

        let in_namespace = resources;
        let ns_triggers = watcher(ns_api, ns_config)
            .default_backoff()
            .reflect(ns_writer)
            .touched_objects()
            .predicate_filter(predicates::labels, Default::default())
            .filter_map(logged("namespaces"))
            .flat_map(move |ns: PartialObjectMeta<Namespace>| {
                let _ = changed_tx.unbounded_send(());
                let name = ns.name_any();
                stream::iter(refs_where(&in_namespace, |obj| {
                    obj.namespace().as_deref() == Some(name.as_str())
                }))
            });

        let grants = Self {
            stores: Some((grant_reader.clone(), ns_reader)),
        };
        let triggers = stream::select(grant_triggers, ns_triggers).boxed();
        let changes = GrantChanges {
            grants: grant_reader,
            changed: changed_rx.boxed(),
        };
        (grants, triggers, changes)
    }

    /// The namespaces `grant` matches now, of those watched.
    fn matched_namespaces(&self, grant: &crate::api::ValidatedGrant) -> usize {
        let Some((_, namespaces)) = &self.stores else {
            return 0;
        };
        namespaces
            .state()
            .iter()
            .filter(|ns| grant.matches_namespace(&ns.name_any(), ns.labels()))
            .count()
    }
}

/// A watch's objects, its failures logged (the watcher retries them with backoff).
fn logged<K>(
    what: &'static str,
) -> impl FnMut(Result<K, watcher::Error>) -> std::future::Ready<Option<K>> {
    move |item| {
        std::future::ready(
            item.inspect_err(|error| warn!(%error, "watching {what} failed; retrying"))
                .ok(),
        )
    }
}

/// The resources of `store` that `keep`, as references to reconcile.
fn refs_where(
    store: &Store<BlobBackupInstance>,
    keep: impl Fn(&BlobBackupInstance) -> bool,
) -> Vec<ObjectRef<BlobBackupInstance>> {
    store
        .state()
        .iter()
        .filter(|obj| keep(obj))
        .map(|obj| ObjectRef::from_obj(obj.as_ref()))
        .collect()
}

/// What the grants' status controller runs on: the grants (from [`VaultGrants::watch`]'s own
/// watch) and a tick on every grant or namespace change.
pub struct GrantChanges {
    grants: Store<BackupVaultGrant>,
    changed: futures::stream::BoxStream<'static, ()>,
}

/// The status a grant should have: `Ready` True with the namespaces it matches, or False with
/// the field at fault.
pub fn grant_status(
    grant: &BackupVaultGrant,
    matched: impl FnOnce(&crate::api::ValidatedGrant) -> usize,
    now: Timestamp,
) -> BackupVaultGrantStatus {
    let old = grant.status.clone().unwrap_or_default();
    let (status, reason, message, vault_name, count) = match grant.validate() {
        Ok(valid) => {
            let count = matched(&valid);
            let message = format!(
                "Grants Backup vault {} to {count} namespace{} now{}",
                valid.vault.name(),
                if count == 1 { "" } else { "s" },
                deletion_note(valid.deletion_policies.as_deref())
            );
            let name = valid.vault.name().to_owned();
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            (
                ConditionStatus::True,
                "Granted",
                message,
                Some(name),
                Some(count),
            )
        }
        Err(error) => (
            ConditionStatus::False,
            "InvalidSpec",
            format!("Invalid spec: {error}"),
            None,
            None,
        ),
    };
    let generation = grant.metadata.generation;
    let transition = match old
        .conditions
        .iter()
        .find(|c| c.type_ == condition_type::READY)
    {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(whole_second(now)),
    };
    BackupVaultGrantStatus {
        observed_generation: generation,
        vault_name,
        matched_namespaces: count,
        conditions: vec![Condition {
            type_: condition_type::READY.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: transition,
        }],
    }
}

fn deletion_note(allowed: Option<&[DeletionPolicy]>) -> String {
    match allowed {
        None => String::new(),
        Some(policies) => format!(" (deletion policies {policies:?})"),
    }
}

/// Keeps every grant's status current, through `client` (for as long as it is polled).
pub async fn run_grant_status(client: Client, grants: VaultGrants, changes: GrantChanges) {
    let api: Api<BackupVaultGrant> = Api::all(client.clone());
    let ctx = Arc::new((client, grants));
    let trigger = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    Controller::for_stream(trigger, changes.grants)
        .reconcile_all_on(changes.changed)
        .run(reconcile_grant, grant_error, ctx)
        .for_each(|result| {
            if let Err(error) = result
                && !matches!(error, controller::Error::ObjectNotFound(_))
            {
                debug!(%error, "grant status");
            }
            std::future::ready(())
        })
        .await;
}

async fn reconcile_grant(
    grant: Arc<BackupVaultGrant>,
    ctx: Arc<(Client, VaultGrants)>,
) -> Result<ReconcileAction, kube::Error> {
    let (client, grants) = ctx.as_ref();
    let status = grant_status(&grant, |g| grants.matched_namespaces(g), Timestamp::now());
    if grant.status.as_ref() == Some(&status) {
        return Ok(ReconcileAction::await_change());
    }
    let api: Api<BackupVaultGrant> = Api::all(client.clone());
    let body = json!({
        "apiVersion": BackupVaultGrant::api_version(&()),
        "kind": BackupVaultGrant::kind(&()),
        "status": status,
    });
    api.patch_status(
        &grant.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(ReconcileAction::await_change())
}

fn grant_error(
    grant: Arc<BackupVaultGrant>,
    error: &kube::Error,
    _: Arc<(Client, VaultGrants)>,
) -> ReconcileAction {
    warn!(grant = %grant.name_any(), %error, "cannot write the grant's status; retrying");
    ReconcileAction::requeue(std::time::Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BackupVaultGrantSpec, NamespaceSelector, PolicyRef, StorageAccountRef, VaultRef,
    };

    const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/prod";

    fn grant(name: &str, spec: BackupVaultGrantSpec) -> BackupVaultGrant {
        BackupVaultGrant::new(name, spec)
    }

    fn to(namespaces: &[&str]) -> BackupVaultGrantSpec {
        BackupVaultGrantSpec {
            vault_id: VAULT.into(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            namespace_selector: None,
            policies: Vec::new(),
            allow_adoption: false,
            deletion_policies: None,
        }
    }

    fn spec(vault: &str, policy: &str, deletion: DeletionPolicy) -> BlobBackupInstanceSpec {
        BlobBackupInstanceSpec {
            vault: VaultRef { id: vault.into() },
            policy: PolicyRef {
                name: Some(policy.into()),
                id: None,
            },
            storage_account: StorageAccountRef {
                id: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct".into(),
                location: "westus".into(),
            },
            backup_instance_name: None,
            vaulted_backup: None,
            deletion_policy: deletion,
        }
    }

    /// The message and `deletion_allowed` of a refusal.
    fn refusal(access: Access) -> (String, bool) {
        match access {
            Access::NotGranted {
                message,
                deletion_allowed,
            } => (message, deletion_allowed),
            other => panic!("granted: {other:?}"),
        }
    }

    fn verdict(
        grants: &[BackupVaultGrant],
        ns: &str,
        labels: &[(&str, &str)],
        s: &BlobBackupInstanceSpec,
    ) -> Access {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        access(grants, ns, &labels, s)
    }

    #[test]
    fn a_grant_serves_its_namespaces_and_vault_case_insensitively() {
        let grants = [grant("a", to(&["team-a"]))];
        let ours = spec(
            &VAULT
                .to_uppercase()
                .replace("SUBSCRIPTIONS", "subscriptions"),
            "P",
            DeletionPolicy::Delete,
        );
        assert_eq!(
            verdict(&grants, "team-a", &[], &ours),
            Access::Granted {
                allow_adoption: false
            }
        );
        let (message, deletion_allowed) = refusal(verdict(&grants, "team-b", &[], &ours));
        assert!(
            message.contains("No BackupVaultGrant lets namespace team-b"),
            "{message}"
        );
        assert!(!deletion_allowed);
        let other_vault = spec(
            &VAULT.replace("/prod", "/other"),
            "P",
            DeletionPolicy::Delete,
        );
        assert!(matches!(
            verdict(&grants, "team-a", &[], &other_vault),
            Access::NotGranted { .. }
        ));
    }

    #[test]
    fn selectors_policies_deletion_policies_and_adoption() {
        let mut by_label = to(&[]);
        by_label.namespace_selector = Some(NamespaceSelector {
            match_labels: [("backup".to_string(), "prod".to_string())].into(),
            match_expressions: Vec::new(),
        });
        by_label.policies = vec!["Gold".into()];
        by_label.deletion_policies = Some(vec![DeletionPolicy::Retain, DeletionPolicy::Orphan]);
        by_label.allow_adoption = true;
        let grants = [grant("labelled", by_label)];
        let gold_orphan = spec(VAULT, "gold", DeletionPolicy::Orphan);
        assert_eq!(
            verdict(&grants, "x", &[("backup", "prod")], &gold_orphan),
            Access::Granted {
                allow_adoption: true
            }
        );
        assert!(matches!(
            verdict(&grants, "x", &[("backup", "dev")], &gold_orphan),
            Access::NotGranted { .. }
        ));
        // The vault is granted, the deletion policy not: served never, deleted as Orphan only.
        let labels = [("backup", "prod")];
        let delete = spec(VAULT, "gold", DeletionPolicy::Delete);
        let (message, deletion_allowed) = refusal(verdict(&grants, "x", &labels, &delete));
        assert!(message.contains("BackupVaultGrant labelled"), "{message}");
        assert!(!deletion_allowed);
        let other_policy = spec(VAULT, "silver", DeletionPolicy::Retain);
        assert!(refusal(verdict(&grants, "x", &labels, &other_policy)).1);
    }

    #[test]
    fn an_invalid_grant_grants_nothing_and_says_which_field() {
        let mut bad = to(&["team-a"]);
        bad.vault_id = "/subscriptions/nope".into();
        let bad = grant("bad", bad);
        let s = spec(VAULT, "P", DeletionPolicy::Delete);
        assert!(matches!(
            verdict(std::slice::from_ref(&bad), "team-a", &[], &s),
            Access::NotGranted { .. }
        ));
        let status = grant_status(&bad, |_| 0, Timestamp::UNIX_EPOCH);
        assert_eq!(status.conditions[0].status, ConditionStatus::False);
        assert!(
            status.conditions[0].message.contains("spec.vaultId"),
            "{:?}",
            status.conditions
        );

        let none = grant("none", to(&[]));
        let status = grant_status(&none, |_| 0, Timestamp::UNIX_EPOCH);
        assert!(
            status.conditions[0].message.contains("spec.namespaces"),
            "{:?}",
            status.conditions
        );

        let mut empty = to(&["a"]);
        empty.deletion_policies = Some(Vec::new());
        let status = grant_status(&grant("e", empty), |_| 0, Timestamp::UNIX_EPOCH);
        assert!(
            status.conditions[0]
                .message
                .contains("spec.deletionPolicies")
        );
    }

    #[test]
    fn a_selector_matching_nothing_is_ready_with_zero_namespaces() {
        let mut spec = to(&[]);
        spec.namespace_selector = Some(NamespaceSelector::default());
        let status = grant_status(&grant("g", spec), |_| 0, Timestamp::UNIX_EPOCH);
        assert_eq!(status.conditions[0].status, ConditionStatus::True);
        assert_eq!(status.matched_namespaces, Some(0));
        assert_eq!(status.vault_name.as_deref(), Some("prod"));
    }

    #[test]
    fn no_verdict_until_grants_and_namespaces_are_listed() {
        let (grant_reader, mut grant_writer) = reflector::store::<BackupVaultGrant>();
        let (ns_reader, mut ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        let grants = VaultGrants {
            stores: Some((grant_reader, ns_reader)),
        };
        let mut obj = BlobBackupInstance::new("x", spec(VAULT, "P", DeletionPolicy::Delete));
        obj.metadata.namespace = Some("team-a".into());
        assert_eq!(
            grants.access_for(&obj),
            None,
            "judged before the grants were listed"
        );
        grant_writer.apply_watcher_event(&watcher::Event::InitDone);
        assert_eq!(
            grants.access_for(&obj),
            None,
            "judged before the namespaces were listed"
        );
        ns_writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(matches!(
            grants.access_for(&obj),
            Some(Access::NotGranted { .. })
        ));
        assert_eq!(VaultGrants::open().access_for(&obj), Some(Access::OPEN));
    }

    #[test]
    fn a_restore_source_must_own_its_instance_and_be_granted() {
        let mut source = BlobBackupInstance::new("src", spec(VAULT, "P", DeletionPolicy::Delete));
        assert!(authorise_source(&source, &Access::OPEN).is_err());
        source.status = Some(crate::api::BlobBackupInstanceStatus {
            ownership: Some(crate::api::Ownership::Created),
            ..Default::default()
        });
        assert!(authorise_source(&source, &Access::OPEN).is_ok());
        let refused = Access::NotGranted {
            message: "no grant".into(),
            deletion_allowed: false,
        };
        assert!(
            authorise_source(&source, &refused)
                .unwrap_err()
                .0
                .contains("no grant")
        );
    }
}
