//! What the agent does for API commands: runs on the main loop, which owns the engine,
//! so commands are handled one at a time and every apply installs one whole set.

mod kubernetes;
mod live;

use std::{collections::BTreeMap, path::Path};

use crate::{
    daemon::command::{Command, Failure},
    daemon::config::Config,
    daemon::engine::Engine,
    daemon::live::LiveState,
    daemon::log_records::write_policy_record,
    daemon::metrics::{self, Metrics},
    daemon::reports::{
        ApplyResult, CgroupInfo, IdentityInfo, MapUsage, PolicyList, PolicySummary, ProgramStatus,
        RuleCounts, Status,
    },
    daemon::state::State,
    daemon::verdict_log::VerdictLog,
    kernel::loader,
    policy::{
        diff::{self, Change},
        model::Policy,
        validate::SelectorSpec,
    },
};
use enforcer_common::verdict::stat;

const CLUSTER_OWNS_POLICIES: &str = "this agent enforces the cluster's Policy resources (--kubernetes); \
change them with `enforcer policy apply --kubernetes` or kubectl";

pub struct Control<'a> {
    pub state: State,
    pub engine: Engine,
    pub log: VerdictLog,
    pub features: loader::Features,
    pub attached: Vec<(&'static str, &'static str)>,
    pub loaded: Vec<loader::LoadedProgram>,
    pub started: std::time::Instant,
    pub metrics: Metrics,
    pub config: &'a Config,
    pub live: LiveState,
    /// Kubernetes: whether the pod and the policy watches have delivered a listing.
    pub kube_synced: (bool, bool),
    /// YAML of the policies in force, for diffs and the state file (which is put together
    /// on the state writer's thread).
    pub texts: std::sync::Arc<std::sync::Mutex<diff::Texts>>,
    /// What the agent has accounted for of the kernel's repeated-verdict counts.
    pub aggregator: crate::daemon::record::aggregate::Aggregator<crate::daemon::record::VerdictRecord>,
}

impl Control<'_> {
    pub fn handle(&mut self, command: Command) {
        // A requester that went away is not an error: its answer is simply dropped.
        match command {
            Command::Status(reply) => drop(reply.send(self.status())),
            Command::ListPolicies(reply) => drop(reply.send(self.list())),
            Command::GetPolicy(name, reply) => {
                let found = self.engine.policies().iter().find(|p| p.name == name).map(|p| p.source.clone());
                drop(reply.send(found));
            }
            Command::Pods(change) => self.pods_changed(change),
            Command::ClusterPolicies { resources, reply } => {
                drop(reply.send(self.apply_cluster(&resources)));
                crate::daemon::memory::trim_later();
            }
            Command::Container { start, reply } => drop(reply.send(self.container_start(&start))),
            Command::Ready(reply) => drop(reply.send(self.ready())),
            // With `--kubernetes` the cluster's Policy resources are the set: a change made
            // on one node would be undone by the next cluster change and differ between nodes.
            Command::Apply { dry_run: false, reply, .. } if self.config.kubernetes.is_some() => {
                drop(reply.send(Err(CLUSTER_OWNS_POLICIES.to_owned())));
            }
            Command::Delete { dry_run: false, reply, .. } if self.config.kubernetes.is_some() => {
                drop(reply.send(Err(Failure { status: 409, message: CLUSTER_OWNS_POLICIES.to_owned() })));
            }
            Command::Apply { docs, dry_run, diff, uid, reply } => {
                drop(reply.send(self.put(&docs, dry_run, diff, uid).map_err(|f| f.message)));
                // Once quiet: the parse and compile buffers of a large set go back.
                crate::daemon::memory::trim_later();
            }
            Command::Delete { name, dry_run, uid, reply } => {
                let current = self.engine.sources();
                let result = if current.iter().any(|p| p.metadata.name == name) {
                    let rest: Vec<Policy> =
                        current.iter().filter(|p| p.metadata.name != name).cloned().collect();
                    let changes =
                        diff::changes_with(&current, &rest, &mut self.texts.lock().expect("texts lock"));
                    self.replace(
                        &rest,
                        changes.into_iter().filter(|c| c.name == name).collect(),
                        dry_run,
                        uid,
                    )
                } else {
                    Err(Failure { status: 404, message: format!("no policy named {name:?}") })
                };
                drop(reply.send(result));
            }
            Command::Identities(reply) => drop(reply.send(self.identities())),
            Command::Check(check, reply) => {
                let result = match self.engine.policies().iter().find(|p| p.identity == check.identity) {
                    None => Err(Failure {
                        status: 404,
                        message: format!("no policy governs identity {:?}", check.identity),
                    }),
                    Some(policy) => crate::daemon::live_check::explain(
                        &self.live,
                        policy,
                        &check.request,
                        crate::daemon::record::clock::Clock::unix_now_ns(),
                    )
                    .map_err(|message| Failure { status: 400, message }),
                };
                drop(reply.send(result));
            }
            Command::Metrics(reply) => drop(reply.send(self.metrics_text())),
            Command::Live { request, uid, reply } => drop(reply.send(self.live_change(request, uid))),
        }
    }

    /// Installs a whole set: applies it, saves it, mirrors live state into it and records
    /// the change (`source`: api, kubernetes; `uid` of the API caller). A refused set
    /// changes nothing and is counted.
    pub(crate) fn install(
        &mut self,
        policies: &[Policy],
        source: &'static str,
        uid: Option<u32>,
    ) -> Result<crate::daemon::engine::Applied, crate::daemon::engine::EngineError> {
        let applied = self.engine.apply(policies).inspect_err(|_| self.metrics.apply_errors += 1)?;
        self.installed(&applied, source, uid);
        Ok(applied)
    }

    /// What follows every install: the state saved, live state mirrored, the change logged.
    fn installed(
        &mut self,
        applied: &crate::daemon::engine::Applied,
        source: &'static str,
        uid: Option<u32>,
    ) {
        self.state.save_set(self.engine.policies().to_vec(), applied.generation, &self.texts);
        if let Err(e) = self.engine.sync_live(&self.live) {
            tracing::error!(error = %e, "mirroring live state after an apply");
        }
        tracing::info!(generation = applied.generation, source, uid, "policy set changed");
        write_policy_record(&mut self.log, &self.engine, source, uid);
        let _ = self.log.flush();
    }

    /// Adds `docs` to the set or puts them in place of the policies of the same names (or
    /// only checks that on a dry run); only the documents that changed are validated and
    /// compiled again.
    fn put(
        &mut self,
        docs: &[Policy],
        dry_run: bool,
        with_diff: bool,
        uid: u32,
    ) -> Result<ApplyResult, Failure> {
        let refused = |e: &dyn std::fmt::Display| Failure { status: 400, message: e.to_string() };
        let before: Vec<&Policy> = self.engine.policies().iter().map(|p| &p.source).collect();
        let changes = diff::changes_of(
            &before,
            docs,
            &mut self.texts.lock().expect("texts lock"),
            with_diff || dry_run,
        );
        let valid = self.engine.merged(docs).map_err(|e| refused(&e))?;
        if dry_run {
            self.engine.plan_valid(&valid).map_err(|e| refused(&e))?;
            return Ok(ApplyResult { generation: self.engine.generation(), dry_run, changes });
        }
        if changes.iter().all(|c| c.change == "unchanged") {
            return Ok(ApplyResult { generation: self.engine.generation(), dry_run, changes });
        }
        let applied = self.engine.apply_valid(valid).map_err(|e| {
            self.metrics.apply_errors += 1;
            refused(&e)
        })?;
        self.installed(&applied, "api", Some(uid));
        Ok(ApplyResult { generation: applied.generation, dry_run, changes })
    }

    /// Installs `policies` as the whole set (or only checks it on a dry run), saves it and
    /// records who changed it.
    fn replace(
        &mut self,
        policies: &[Policy],
        changes: Vec<Change>,
        dry_run: bool,
        uid: u32,
    ) -> Result<ApplyResult, Failure> {
        let refused = |e: &dyn std::fmt::Display| Failure { status: 400, message: e.to_string() };
        if dry_run {
            self.engine.plan(policies).map_err(|e| refused(&e))?;
            return Ok(ApplyResult { generation: self.engine.generation(), dry_run, changes });
        }
        if changes.iter().all(|c| c.change == "unchanged") {
            return Ok(ApplyResult { generation: self.engine.generation(), dry_run, changes });
        }
        let applied = self.install(policies, "api", Some(uid)).map_err(|e| refused(&e))?;
        Ok(ApplyResult { generation: applied.generation, dry_run, changes })
    }

    fn list(&self) -> PolicyList {
        let policies = self
            .engine
            .policies()
            .iter()
            .map(|p| PolicySummary {
                name: p.name.clone(),
                identity: p.identity.clone(),
                mode: p.mode_name().to_owned(),
                selector: match &p.selector {
                    SelectorSpec::CgroupPath { path, .. } => format!("cgroupPath {path}"),
                    SelectorSpec::SystemdUnit { unit, .. } => format!("systemdUnit {unit}"),
                    SelectorSpec::ContainerId { id, .. } => format!("containerId {id}"),
                    SelectorSpec::Pod { pod, .. } => format!("pod {pod}"),
                },
                rules: RuleCounts { exec: p.exec.len(), file: p.file.len(), network: p.network.len() },
            })
            .collect();
        PolicyList { generation: self.engine.generation(), policies }
    }

    fn identities(&self) -> Vec<IdentityInfo> {
        let by_identity = self.engine.identities();
        self.engine
            .policies()
            .iter()
            .map(|p| {
                let cgroups: Vec<CgroupInfo> = by_identity
                    .get(&p.identity)
                    .into_iter()
                    .flatten()
                    .map(|path| CgroupInfo {
                        path: path.clone(),
                        processes: count_processes(
                            &self.engine.cgroup_root().join(path.trim_start_matches('/')),
                        ),
                    })
                    .collect();
                let processes = cgroups.iter().map(|c| c.processes).sum();
                IdentityInfo { identity: p.identity.clone(), policy: p.name.clone(), cgroups, processes }
            })
            .collect()
    }

    /// The kernel's counters, then the agent's own about aggregation: entries the
    /// kernel evicted before their last repeats were read, and full records that came
    /// after their number had been counted as a repeat.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let values = self.engine.maps().stats().unwrap_or([0; stat::COUNT as usize]);
        let mut counters: Vec<_> = stat::NAMES.iter().copied().zip(values).collect();
        counters.push(("aggregates_evicted", self.aggregator.evicted));
        counters.push(("aggregates_late", self.aggregator.late));
        counters
    }

    fn status(&self) -> Status {
        let attached: Vec<&str> = self.attached.iter().map(|(p, _)| *p).collect();
        let programs = loader::LSM_PROGRAMS
            .iter()
            .map(|(p, h)| (*p, format!("lsm/{h}")))
            .chain(loader::CGROUP_PROGRAMS.iter().map(|p| (*p, format!("cgroup/{p}"))))
            .chain(loader::TRACE_PROGRAMS.iter().map(|(p, _)| (*p, format!("tp_btf/{p}"))))
            .chain(loader::RENAME_PROGRAMS.iter().map(|(p, kind, f)| (*p, format!("{kind}/{f}"))))
            .map(|(name, hook)| ProgramStatus {
                name: name.to_owned(),
                hook,
                attached: attached.contains(&name),
                id: self.loaded.iter().find(|p| p.name == name).map(|p| p.id),
                verified_insns: self.loaded.iter().find(|p| p.name == name).and_then(|p| p.verified_insns),
            })
            .collect();
        let maps = self
            .engine
            .maps()
            .usage()
            .into_iter()
            .map(|(map, used, capacity)| MapUsage { map: map.to_owned(), used, capacity })
            .collect();
        let identities = self.engine.identities();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            kernel: self.features.kernel.clone(),
            bpf_lsm: self.features.bpf_lsm,
            btf: self.features.btf,
            network_only: self.config.network_only,
            generation: self.engine.generation(),
            policies: self.engine.policies().len(),
            identities: identities.len(),
            cgroups: identities.values().map(Vec::len).sum(),
            programs,
            maps,
            counters: self.counters().into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<BTreeMap<_, _>>(),
            log_file: self.log.path().display().to_string(),
            failed_bindings: self.engine.failed_bindings().to_vec(),
        }
    }

    fn metrics_text(&self) -> String {
        let counters = self.counters();
        let maps = self.engine.maps().usage();
        metrics::render(&metrics::Snapshot {
            metrics: &self.metrics,
            generation: self.engine.generation(),
            kernel_counters: &counters,
            maps: &maps,
            uptime_seconds: self.started.elapsed().as_secs(),
            failed_bindings: self.engine.failed_bindings().len(),
        })
    }
}

/// Processes in a cgroup and all its descendants.
fn count_processes(dir: &Path) -> usize {
    let mut total = std::fs::read_to_string(dir.join("cgroup.procs")).map_or(0, |t| t.lines().count());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                total += count_processes(&entry.path());
            }
        }
    }
    total
}
