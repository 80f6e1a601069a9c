//! The policy engine: validates, resolves identities to cgroups, compiles and installs
//! policy sets, and keeps the directory that names identities in verdicts.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::{Arc, RwLock},
};

use crate::{
    daemon::identity,
    daemon::identity::kubepods::Pods,
    daemon::record::directory::Directory,
    kernel::maps::{KernelMaps, MapsError},
    kernel::slot::{Part, SlotContents},
    policy::{
        compile::{self, ResolvedBinding},
        model::Policy,
        validate::{PolicyError, Valid, check_set, validate, validate_set_reusing},
    },
};
use enforcer_common::maps::{BINDING_SUBTREE, Binding};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("installing the policy set: {0}; the running policy is unchanged")]
    Install(#[source] MapsError),
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// How many past generations stay decodable (events may lag an apply).
const GENERATIONS_KEPT: usize = 8;

/// Outcome of an apply.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub generation: u64,
    pub policies: usize,
    pub cgroups_bound: usize,
}

pub struct Engine {
    maps: KernelMaps,
    cgroup_root: PathBuf,
    ids: BTreeMap<String, u32>,
    policies: Vec<Arc<Valid>>,
    /// The slot entries of each policy in force (by name), with the validated policy and
    /// identity number they were compiled from: reused while both stay the same.
    parts: HashMap<String, (Arc<Valid>, u32, Arc<Part>)>,
    generation: u64,
    bound: BTreeSet<(u64, u32)>,
    /// Cgroups a selector picks that could not be bound at the last rescan, and why;
    /// retried on every rescan.
    failed: Vec<FailedBinding>,
    /// Protected (device, inode) pairs and pids last written to the kernel.
    protected: (Vec<(u32, u64)>, Vec<u32>),
    /// Pods on this node, for pod selectors (empty unless run with `--kubernetes`).
    pods: Pods,
    directory: Arc<RwLock<Directory>>,
}

/// A set ready to install: identity numbers, the cgroups seen, the bindings, and the
/// slot entries of each identity.
struct Prepared {
    ids: BTreeMap<String, u32>,
    cgroups: Vec<identity::Cgroup>,
    bindings: Vec<(u64, Binding)>,
    parts: BTreeMap<u32, Arc<Part>>,
}

/// A cgroup that should be bound and is not.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FailedBinding {
    pub identity: String,
    pub cgroup: String,
    pub error: String,
}

/// What one rescan changed.
#[derive(Debug, Default)]
pub struct Rescan {
    pub added: Vec<ResolvedBinding>,
    /// Cgroup ids whose bindings were removed because the cgroups are gone.
    pub pruned: Vec<u64>,
}

impl Engine {
    /// `generation` is the last generation applied before (0 on a fresh install), so
    /// numbers keep increasing across agent restarts.
    pub fn new(maps: KernelMaps, cgroup_root: PathBuf, generation: u64) -> Self {
        Self {
            maps,
            cgroup_root,
            ids: BTreeMap::new(),
            policies: Vec::new(),
            parts: HashMap::new(),
            generation,
            bound: BTreeSet::new(),
            failed: Vec::new(),
            protected: (Vec::new(), Vec::new()),
            pods: Pods::default(),
            directory: Arc::default(),
        }
    }

    pub fn directory(&self) -> Arc<RwLock<Directory>> {
        Arc::clone(&self.directory)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn policies(&self) -> &[Arc<Valid>] {
        &self.policies
    }

    pub fn maps(&self) -> &KernelMaps {
        &self.maps
    }

    /// Checks that `policies` would apply (valid, and the compiled set fits) without
    /// changing anything.
    pub fn plan(&self, policies: &[Policy]) -> Result<(), EngineError> {
        self.plan_valid(&self.validated(policies)?)
    }

    /// [`Self::plan`] for a set already validated.
    pub fn plan_valid(&self, valid: &[Arc<Valid>]) -> Result<(), EngineError> {
        self.prepare(valid, false)?;
        Ok(())
    }

    /// `policies` validated, taking the validated form of each one the set in force
    /// holds unchanged instead of checking it again.
    pub fn validated(&self, policies: &[Policy]) -> Result<Vec<Arc<Valid>>, PolicyError> {
        let in_force: HashMap<&str, &Arc<Valid>> =
            self.policies.iter().map(|p| (p.name.as_str(), p)).collect();
        validate_set_reusing(policies, |policy| {
            in_force.get(policy.metadata.name.as_str()).filter(|v| v.source == *policy).map(|v| Arc::clone(v))
        })
    }

    /// The set in force with `docs` added or put in place of the policies of the same
    /// name (in force order, new ones at the end), validated.
    pub fn merged(&self, docs: &[Policy]) -> Result<Vec<Arc<Valid>>, PolicyError> {
        let mut set: Vec<Arc<Valid>> = self.policies.clone();
        for doc in docs {
            let at = set.iter().position(|p| p.name == doc.metadata.name);
            let valid = match at.map(|i| &set[i]) {
                Some(current) if current.source == *doc => continue,
                _ => Arc::new(validate(doc)?),
            };
            match at {
                Some(i) => set[i] = valid,
                None => set.push(valid),
            }
        }
        check_set(&set)?;
        Ok(set)
    }

    /// Numbers, bindings and slot contents of `valid`, checked to fit; compiles only the
    /// policies that changed since the last apply. With `report`, cgroups selected more
    /// than once are logged.
    fn prepare(&self, valid: &[Arc<Valid>], report: bool) -> Result<Prepared, EngineError> {
        let ids = self.numbered(valid);
        let cgroups = identity::scan(&self.cgroup_root);
        let bindings = compile::kernel_bindings(
            &self.settle(identity::resolve(valid, &cgroups, &self.pods), &ids, report),
            &ids,
        );
        let mut parts = BTreeMap::new();
        let mut totals =
            compile::Totals { identities: valid.len(), bindings: bindings.len(), ..Default::default() };
        for policy in valid {
            let id = ids[&policy.identity];
            let part = match self.parts.get(&policy.name) {
                Some((from, number, part)) if Arc::ptr_eq(from, policy) && *number == id => Arc::clone(part),
                _ => {
                    let set =
                        compile::compile(std::slice::from_ref(&**policy), &ids, &[], self.generation + 1)?;
                    Arc::new(Part::of(&set, crate::kernel::path_key::check))
                }
            };
            totals.path_rules += part.path_rules.len();
            totals.net_prefixes += part.net_rules.len();
            parts.insert(id, part);
        }
        compile::check_totals(&totals)?;
        Ok(Prepared { ids, cgroups, bindings, parts })
    }
    /// Identity numbers for `valid`: existing ones kept, new ones allocated.
    fn numbered(&self, valid: &[Arc<Valid>]) -> BTreeMap<String, u32> {
        let mut ids = self.ids.clone();
        let mut next = ids.values().max().copied().unwrap_or(0) + 1;
        for policy in valid {
            ids.entry(policy.identity.clone()).or_insert_with(|| {
                next += 1;
                next - 1
            });
        }
        ids
    }

    /// One binding per cgroup where several policies select it: the identity it is bound
    /// to now if that one still selects it (sticky), else the first policy of the set.
    /// With `report`, each cgroup selected more than once is logged.
    fn settle(
        &self,
        candidates: Vec<ResolvedBinding>,
        ids: &BTreeMap<String, u32>,
        report: bool,
    ) -> Vec<ResolvedBinding> {
        let mut chosen: BTreeMap<u64, ResolvedBinding> = BTreeMap::new();
        let mut order = Vec::new();
        for binding in candidates {
            let sticky =
                ids.get(&binding.identity).is_some_and(|id| self.bound.contains(&(binding.cgroup_id, *id)));
            match chosen.get(&binding.cgroup_id) {
                None => {
                    order.push(binding.cgroup_id);
                    chosen.insert(binding.cgroup_id, binding);
                }
                Some(first) if report => {
                    tracing::warn!(
                        cgroup_id = binding.cgroup_id,
                        kept = %if sticky { &binding.identity } else { &first.identity },
                        also = %if sticky { &first.identity } else { &binding.identity },
                        "a cgroup is selected by more than one policy; it has one identity"
                    );
                    if sticky {
                        chosen.insert(binding.cgroup_id, binding);
                    }
                }
                Some(_) if sticky => {
                    chosen.insert(binding.cgroup_id, binding);
                }
                Some(_) => {}
            }
        }
        order.into_iter().filter_map(|cgroup| chosen.remove(&cgroup)).collect()
    }

    /// The kernel number of an identity (if any policy ever governed it).
    pub fn identity_number(&self, identity: &str) -> Option<u32> {
        self.ids.get(identity).copied()
    }

    /// Mirrors live state into the kernel maps; takes effect on the next syscall.
    pub fn sync_live(&mut self, live: &crate::daemon::live::LiveState) -> Result<(), MapsError> {
        let quarantines = live.quarantine_table(&self.policies, |name| self.ids.get(name).copied());
        self.maps.set_quarantines(&quarantines)?;
        self.maps.set_revoked(&live.revoked_table())?;
        let clock = crate::daemon::record::clock::Clock::now();
        let (paths, nets) = live.grant_tables(
            |name| self.ids.get(name).copied(),
            &crate::daemon::record::clock::boot_id(),
            |unix| clock.boot_ns_at(unix),
        );
        self.maps.set_grants(&paths, &nets)
    }

    /// The documents of the set in force.
    pub fn sources(&self) -> Vec<Policy> {
        self.policies.iter().map(|p| p.source.clone()).collect()
    }

    /// Whether `policies` are exactly the documents of the set in force, in order.
    pub fn holds(&self, policies: &[Policy]) -> bool {
        policies.len() == self.policies.len()
            && policies.iter().zip(&self.policies).all(|(a, b)| *a == b.source)
    }

    pub fn cgroup_root(&self) -> &std::path::Path {
        &self.cgroup_root
    }

    /// Replaces the whole policy set. Nothing changes unless every document is valid and
    /// the compiled set fits; the switch itself is one map store.
    pub fn apply(&mut self, policies: &[Policy]) -> Result<Applied, EngineError> {
        let valid = self.validated(policies)?;
        self.apply_valid(valid)
    }

    /// [`Self::apply`] for a set already validated (see [`Self::merged`]).
    pub fn apply_valid(&mut self, valid: Vec<Arc<Valid>>) -> Result<Applied, EngineError> {
        let started = std::time::Instant::now();
        let Prepared { ids, cgroups, bindings, parts } = self.prepare(&valid, true)?;
        let generation = self.generation + 1;
        let compiled = started.elapsed();
        // Rules by file identity follow the disk, so they are looked up again on every apply.
        let inode_rules = crate::daemon::file_identity::rules(
            parts.values().flat_map(|part| part.named_path_rules()),
            crate::daemon::file_identity::on_disk,
        );
        let wanted = SlotContents::new(bindings.clone(), inode_rules, parts);
        self.maps.install(generation, wanted.clone()).map_err(EngineError::Install)?;
        tracing::debug!(
            generation,
            prepare = ?compiled,
            install = ?started.elapsed().saturating_sub(compiled),
            "policy set installed"
        );

        self.bound = bindings.iter().map(|(cgroup, b)| (*cgroup, b.identity)).collect();
        self.failed.clear();
        self.parts = valid
            .iter()
            .map(|p| {
                let id = ids[&p.identity];
                (p.name.clone(), (Arc::clone(p), id, Arc::clone(&wanted.parts[&id])))
            })
            .collect();
        self.ids = ids;
        self.generation = generation;
        self.policies = valid;
        let names: BTreeMap<u32, (String, String)> = self
            .policies
            .iter()
            .map(|p| (self.ids[&p.identity], (p.identity.clone(), p.name.clone())))
            .collect();
        let mut directory = self.directory.write().expect("directory lock");
        directory.generations.insert(generation, names);
        while directory.generations.len() > GENERATIONS_KEPT {
            directory.generations.pop_first();
        }
        directory.cgroups = identity::paths_by_id(&cgroups);
        directory.bindings =
            bindings.iter().map(|(cgroup, b)| (*cgroup, b.flags & BINDING_SUBTREE != 0)).collect();
        Ok(Applied { generation, policies: self.policies.len(), cgroups_bound: self.bound.len() })
    }

    /// Binds cgroups that appeared since the last apply (e.g. a new container selected by
    /// id), retries bindings that failed, and removes bindings of cgroups that are gone.
    /// Cgroups created under an already bound subtree need no binding: the kernel
    /// programs find their bound ancestor on their first syscall.
    pub fn rescan(&mut self) -> Result<Rescan, EngineError> {
        let cgroups = identity::scan(&self.cgroup_root);
        let mut result = Rescan::default();
        let seen: BTreeSet<u64> = cgroups.iter().map(|c| c.id).collect();
        let previous = self.directory.read().expect("directory lock").cgroups.clone();
        // Gone means: not seen now, and its last known path no longer names it (a scan
        // that missed a cgroup must never unbind it).
        let gone: BTreeSet<u64> = self
            .bound
            .iter()
            .map(|(cgroup, _)| *cgroup)
            .filter(|cgroup| !seen.contains(cgroup))
            .filter(|cgroup| {
                previous.get(cgroup).is_none_or(|path| {
                    identity::id_of(&self.cgroup_root, path).is_none_or(|id| id != *cgroup)
                })
            })
            .collect();
        if !gone.is_empty() {
            let gone: Vec<u64> = gone.into_iter().collect();
            self.maps.unbind_live(&gone)?;
            self.bound.retain(|(cgroup, _)| !gone.contains(cgroup));
            result.pruned = gone;
        }
        let limit = (enforcer_common::capacity::CGROUP_BINDINGS / enforcer_common::SLOTS) as usize;
        let paths = identity::paths_by_id(&cgroups);
        let mut failed = Vec::new();
        let bound_cgroups: BTreeSet<u64> = self.bound.iter().map(|(cgroup, _)| *cgroup).collect();
        let candidates = identity::resolve(&self.policies, &cgroups, &self.pods);
        for binding in self.settle(candidates, &self.ids, false) {
            // A cgroup keeps the identity it has: a label change cannot move a running
            // workload to another identity.
            if bound_cgroups.contains(&binding.cgroup_id) {
                continue;
            }
            let id = self.ids[&binding.identity];
            let cgroup = paths.get(&binding.cgroup_id).cloned().unwrap_or_default();
            if self.bound.len() >= limit {
                let error = format!("the limit of {limit} bound cgroups is reached");
                failed.push(FailedBinding { identity: binding.identity.clone(), cgroup, error });
                continue;
            }
            let flags = if binding.subtree { BINDING_SUBTREE } else { 0 };
            // Recorded as bound only once the kernel has it; a failure is retried next time.
            match self.maps.bind_live(binding.cgroup_id, Binding { identity: id, flags }) {
                Ok(()) => {
                    self.bound.insert((binding.cgroup_id, id));
                    result.added.push(binding);
                }
                Err(e) => {
                    failed.push(FailedBinding {
                        identity: binding.identity.clone(),
                        cgroup,
                        error: e.to_string(),
                    });
                }
            }
        }
        self.failed = failed;
        let mut directory = self.directory.write().expect("directory lock");
        directory.cgroups = paths;
        for cgroup in &result.pruned {
            directory.bindings.remove(cgroup);
        }
        for binding in &result.added {
            directory.bindings.insert(binding.cgroup_id, binding.subtree);
        }
        Ok(result)
    }

    /// Binds a cgroup just created, if a selector picks it. `path` is relative to the root
    /// of its hierarchy (as the `cgroup_mkdir` tracepoint reports it); cgroups outside
    /// `--cgroup-root`, of another hierarchy, or already gone are left to the rescan.
    pub fn bind_created(&mut self, cgroup_id: u64, path: &str) -> Result<Vec<ResolvedBinding>, MapsError> {
        let Some(relative) = identity::relative_to_root(&self.cgroup_root, path) else {
            return Ok(Vec::new());
        };
        // The id check also drops cgroup v1 hierarchies, whose paths look alike.
        if identity::id_of(&self.cgroup_root, &relative) != Some(cgroup_id) {
            return Ok(Vec::new());
        }
        self.bind_cgroup(identity::Cgroup { path: relative, id: cgroup_id })
    }

    /// Binds one cgroup (relative to `--cgroup-root`) to every identity whose selector
    /// picks it now.
    pub fn bind_cgroup(&mut self, cgroup: identity::Cgroup) -> Result<Vec<ResolvedBinding>, MapsError> {
        let mut added = Vec::new();
        let candidates = identity::resolve(&self.policies, std::slice::from_ref(&cgroup), &self.pods);
        for binding in self.settle(candidates, &self.ids, false) {
            // A cgroup keeps the identity it has (see `rescan`).
            if self.bound.iter().any(|(bound, _)| *bound == binding.cgroup_id) {
                continue;
            }
            let id = self.ids[&binding.identity];
            let flags = if binding.subtree { BINDING_SUBTREE } else { 0 };
            self.maps.bind_live(binding.cgroup_id, Binding { identity: id, flags })?;
            self.bound.insert((binding.cgroup_id, id));
            added.push(binding);
        }
        let mut directory = self.directory.write().expect("directory lock");
        directory.cgroups.insert(cgroup.id, cgroup.path);
        for binding in &added {
            directory.bindings.insert(binding.cgroup_id, binding.subtree);
        }
        Ok(added)
    }

    /// Lets a container's init process finish the container's root (see
    /// `enforcer_common::maps::SETUP_TASKS`).
    pub fn begin_setup(&mut self, pid: u32, cgroup_id: u64) -> Result<(), MapsError> {
        self.maps.begin_setup(pid, cgroup_id)
    }

    /// Forgets set-up entries of processes that are gone.
    pub fn prune_setup(&mut self) -> Result<(), MapsError> {
        self.maps.prune_setup(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    }

    /// The identities bound to a cgroup.
    pub fn identities_of(&self, cgroup_id: u64) -> Vec<String> {
        let by_id: BTreeMap<u32, &String> = self.ids.iter().map(|(name, id)| (*id, name)).collect();
        self.bound
            .iter()
            .filter(|(cgroup, _)| *cgroup == cgroup_id)
            .filter_map(|(_, id)| by_id.get(id).map(|n| (*n).clone()))
            .collect()
    }

    /// Changes what is known of the pods on this node; the next rescan (or
    /// [`Self::bind_cgroup`]) binds what pod selectors now pick.
    pub fn update_pods(&mut self, change: impl FnOnce(&mut Pods)) {
        change(&mut self.pods);
        self.directory.write().expect("directory lock").pods = self.pods.clone();
    }

    pub fn pods(&self) -> &Pods {
        &self.pods
    }

    /// Cgroups that should be bound and are not (retried on every rescan).
    pub fn failed_bindings(&self) -> &[FailedBinding] {
        &self.failed
    }

    /// Makes the kernel's protected files exactly `inodes` and its protected processes
    /// `pids` (written only when they changed, e.g. after a log rotation).
    pub fn protect(&mut self, inodes: Vec<(u32, u64)>, pids: &[u32]) -> Result<(), MapsError> {
        if inodes != self.protected.0 {
            self.maps.set_protected_inodes(&inodes)?;
            self.protected.0 = inodes;
        }
        if pids != self.protected.1.as_slice() {
            self.maps.set_protected_pids(pids)?;
            self.protected.1 = pids.to_vec();
        }
        Ok(())
    }

    /// Identity → cgroup paths currently bound.
    pub fn identities(&self) -> BTreeMap<String, Vec<String>> {
        let directory = self.directory.read().expect("directory lock");
        let by_id: BTreeMap<u32, &String> = self.ids.iter().map(|(name, id)| (*id, name)).collect();
        let mut out: BTreeMap<String, Vec<String>> =
            self.policies.iter().map(|p| (p.identity.clone(), Vec::new())).collect();
        for (cgroup, id) in &self.bound {
            if let (Some(name), Some(path)) = (by_id.get(id), directory.cgroups.get(cgroup)) {
                out.entry((*name).clone()).or_default().push(path.clone());
            }
        }
        out
    }
}
