//! The only module that touches `aya::maps`: installs compiled policy sets, binds cgroups,
//! reads counters and hands out the event ring buffer.

use std::{borrow::BorrowMut, os::fd::AsFd as _};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, IterableMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key,
    },
    programs::{RawTracePoint, RawTracePointRunOptions, TestRun as _},
};
use enforcer_common::{
    SLOTS,
    maps::{
        self as names, AggEntry, AggKey, Binding, CgroupKey, CpuRecords, Grant, GrantKey, IdentityConfig,
        IdentityKey, InodeKey, InodeRuleKey as KernelInodeRuleKey, NET_GRANT_FIXED_BITS, NET_KEY_FIXED_BITS,
        NetEntry, NetGrant, NetGrantKey, NetKey, PathKey, PathRule, Quarantine, Revoked, RevokedKey, word,
    },
    rule_filter::{self, RuleFilter},
    verdict::stat,
};

use crate::{
    kernel::{
        batch,
        loader::PUBLISH,
        slot::{SlotContents, SlotDelta},
    },
    policy::compiled::{InodeRuleKey, NetPrefix, PathRuleKey},
};

/// A path grant as the kernel holds it.
pub type PathGrant = (GrantKey, Grant);
/// A network grant as the kernel holds it: prefix bits after the identity, key, value.
pub type NetGrantEntry = (u32, NetGrantKey, NetGrant);

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {0} missing from the eBPF object")]
    Missing(&'static str),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {map}: {source}")]
    Batch {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "kernel programs still read policy slot {0} after {READER_WAIT:?}; nothing was changed, try again"
    )]
    SlotBusy(u32),
    #[error("program {PUBLISH}: {0}")]
    Publish(String),
}

/// How long an install waits for the path-judging programs to stop reading the slot it
/// rewrites.
const READER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn err(map: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { map, source }
}

/// Typed handles on the policy maps.
pub struct KernelMaps {
    /// The single words the hooks read (`names::word`).
    words: Array<MapData, u64>,
    /// The writer of the slot in force and the binding epoch ([`Self::publish`]).
    publish: RawTracePoint,
    bindings: HashMap<MapData, CgroupKey, Binding>,
    protected_inodes: HashMap<MapData, InodeKey, u32>,
    protected_pids: HashMap<MapData, u32, u32>,
    readers: PerCpuArray<MapData, u64>,
    identities: HashMap<MapData, IdentityKey, IdentityConfig>,
    path_rules: HashMap<MapData, PathKey, PathRule>,
    inode_rules: HashMap<MapData, KernelInodeRuleKey, PathRule>,
    net_rules: LpmTrie<MapData, NetKey, NetEntry>,
    listen_rules: HashMap<MapData, IdentityKey, NetEntry>,
    stats: PerCpuArray<MapData, u64>,
    /// The programs' `.bss` (`CpuRecords`), for the allows counted in the CPUs' records.
    records: Array<MapData, CpuRecords>,
    quarantine: HashMap<MapData, u32, Quarantine>,
    revoked: HashMap<MapData, RevokedKey, Revoked>,
    /// Per slot, the filters of its path rule and file identity rule keys.
    rule_filters: Array<MapData, RuleFilter>,
    grants: HashMap<MapData, GrantKey, Grant>,
    net_grants: LpmTrie<MapData, NetGrantKey, NetGrant>,
    setup_tasks: HashMap<MapData, u32, u64>,
    runtime_tasks: HashMap<MapData, u32, u32>,
    /// What the agent wrote into each slot; `None` once unknown (a write failed part-way).
    /// The maps are created empty at load, so both start known and empty.
    held: [Option<SlotContents>; SLOTS as usize],
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, MapsError> {
    ebpf.take_map(name).ok_or(MapsError::Missing(name))
}

impl KernelMaps {
    /// Takes the maps out of a loaded object (the programs keep their own references).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let publish = ebpf
            .program(PUBLISH)
            .ok_or(MapsError::Missing(PUBLISH))?
            .info()
            .and_then(|info| RawTracePoint::from_program_info(info, PUBLISH.into()))
            .map_err(|e| MapsError::Publish(e.to_string()))?;
        let mut maps = Self {
            words: Array::try_from(take(ebpf, names::WORDS)?).map_err(err(names::WORDS))?,
            publish,
            bindings: HashMap::try_from(take(ebpf, names::CGROUP_BINDINGS)?)
                .map_err(err(names::CGROUP_BINDINGS))?,
            protected_inodes: HashMap::try_from(take(ebpf, names::PROTECTED_INODES)?)
                .map_err(err(names::PROTECTED_INODES))?,
            protected_pids: HashMap::try_from(take(ebpf, names::PROTECTED_PIDS)?)
                .map_err(err(names::PROTECTED_PIDS))?,
            readers: PerCpuArray::try_from(take(ebpf, names::READERS)?).map_err(err(names::READERS))?,
            identities: HashMap::try_from(take(ebpf, names::IDENTITIES)?).map_err(err(names::IDENTITIES))?,
            path_rules: HashMap::try_from(take(ebpf, names::PATH_RULES)?).map_err(err(names::PATH_RULES))?,
            inode_rules: HashMap::try_from(take(ebpf, names::INODE_RULES)?)
                .map_err(err(names::INODE_RULES))?,
            net_rules: LpmTrie::try_from(take(ebpf, names::NET_RULES)?).map_err(err(names::NET_RULES))?,
            listen_rules: HashMap::try_from(take(ebpf, names::LISTEN_RULES)?)
                .map_err(err(names::LISTEN_RULES))?,
            stats: PerCpuArray::try_from(take(ebpf, names::STATS)?).map_err(err(names::STATS))?,
            records: Array::try_from(take(ebpf, names::RECORDS_SECTION)?)
                .map_err(err(names::RECORDS_SECTION))?,
            quarantine: HashMap::try_from(take(ebpf, names::QUARANTINE)?).map_err(err(names::QUARANTINE))?,
            revoked: HashMap::try_from(take(ebpf, names::REVOKED)?).map_err(err(names::REVOKED))?,
            rule_filters: Array::try_from(take(ebpf, names::RULE_FILTERS)?)
                .map_err(err(names::RULE_FILTERS))?,
            grants: HashMap::try_from(take(ebpf, names::GRANTS)?).map_err(err(names::GRANTS))?,
            net_grants: LpmTrie::try_from(take(ebpf, names::NET_GRANTS)?).map_err(err(names::NET_GRANTS))?,
            setup_tasks: HashMap::try_from(take(ebpf, names::SETUP_TASKS)?)
                .map_err(err(names::SETUP_TASKS))?,
            runtime_tasks: HashMap::try_from(take(ebpf, names::RUNTIME_TASKS)?)
                .map_err(err(names::RUNTIME_TASKS))?,
            held: [Some(SlotContents::default()), Some(SlotContents::default())],
        };
        // Maps handed over by an agent that did not keep the flag: raised while entries
        // are left (the next prune lowers it once they are gone).
        if maps.setup_tasks.keys().next().is_some() {
            maps.set_flag(word::SETUP_ANY, 1)?;
        }
        // The records' stamp starts unpublished, which no record matches: published once
        // here, the hooks use the records from the first context switch on.
        let (epoch, slot) = (maps.word(word::BIND_EPOCH)?, maps.active_slot()?);
        maps.publish(epoch, slot)?;
        Ok(maps)
    }

    /// Makes `epoch` the binding epoch and `slot` the slot in force, in the words and in
    /// the stamp the CPUs' task records are checked against, with one run of the `publish`
    /// program: the only way either changes. Nothing is written if it fails.
    fn publish(&mut self, epoch: u64, slot: u32) -> Result<(), MapsError> {
        let mut options = RawTracePointRunOptions::new();
        options.args[0] = epoch;
        options.args[1] = u64::from(slot);
        match self.publish.test_run(options) {
            Ok(run) if run.return_value == 0 => Ok(()),
            Ok(run) => {
                Err(MapsError::Publish(format!("returned {}: a word was unreachable", run.return_value)))
            }
            Err(e) => Err(MapsError::Publish(e.to_string())),
        }
    }

    /// Element `index` of the hooks' words (`names::word`).
    fn word(&self, index: u32) -> Result<u64, MapsError> {
        self.words.get(&index, 0).map_err(err(names::WORDS))
    }

    /// Writes element `index` of the hooks' words, and no other.
    fn set_word(&mut self, index: u32, value: u64) -> Result<(), MapsError> {
        self.words.set(index, &value, 0).map_err(err(names::WORDS))
    }

    /// Writes flag `index` of the hooks' words ("any entry" flags) and publishes the
    /// slot and epoch in force again, unchanged, which refreshes the programs' copy of
    /// the words: the fast paths see the flag from when this returns.
    fn set_flag(&mut self, index: u32, value: u64) -> Result<(), MapsError> {
        self.set_word(index, value)?;
        let (epoch, slot) = (self.word(word::BIND_EPOCH)?, self.active_slot()?);
        self.publish(epoch, slot)
    }

    /// Slot of the set in force.
    pub fn active_slot(&self) -> Result<u32, MapsError> {
        // Only this agent writes the word, and only with a slot number.
        Ok(u32::try_from(self.word(word::ACTIVE)? % u64::from(SLOTS)).expect("a slot number"))
    }

    /// Generation of the set in force.
    pub fn active_generation(&self) -> Result<u64, MapsError> {
        let slot = self.active_slot()?;
        self.word(word::SLOT_GENERATION + slot)
    }

    /// Writes `wanted` (the set of `generation`) into the inactive slot, then switches to it with one store, so every
    /// hook invocation sees either the old set or the new one in full.
    ///
    /// Only what differs from what the slot held is written: the entries the new set lacks
    /// are removed, those it adds or changes written (in batches where the map allows).
    /// On error the slot in force is untouched (the inactive slot may be half-written; it
    /// is then cleared in full before its next use).
    pub fn install(&mut self, generation: u64, wanted: SlotContents) -> Result<u32, MapsError> {
        let slot = (self.active_slot()? + 1) % SLOTS;
        // A path-judging program that read the active slot before the last flip may still be judging
        // with this slot: it is rewritten only once none is.
        self.wait_for_readers(slot)?;
        let held = if let Some(held) = self.held[slot as usize].take() {
            held
        } else {
            self.clear_slot(slot)?;
            SlotContents::default()
        };
        self.rewrite_slot(slot, &held, &wanted)?;
        self.held[slot as usize] = Some(wanted);
        self.set_word(word::SLOT_GENERATION + slot, generation)?;
        // The epoch moves with the flip, written first: resolutions cached while this slot
        // held an older set carry an older epoch, and every entry written for it from
        // now on is about the new set.
        let epoch = self.word(word::BIND_EPOCH)?.wrapping_add(1);
        self.publish(epoch, slot)?;
        Ok(slot)
    }

    /// Turns `slot` from holding `held` into holding `wanted`: removals first, then writes,
    /// bindings last (a binding is what makes a cgroup managed in this slot).
    fn rewrite_slot(
        &mut self,
        slot: u32,
        held: &SlotContents,
        wanted: &SlotContents,
    ) -> Result<(), MapsError> {
        let slot8 = u8::try_from(slot).expect("slot < SLOTS");
        let identity_key = |identity: u32| IdentityKey { identity, slot };
        let binding_key = |cgroup_id: u64| CgroupKey { cgroup_id, slot, pad: 0 };
        let path_key = |k: &PathRuleKey| PathKey {
            hash: k.hash,
            identity: k.identity,
            len: k.len,
            kind: k.kind,
            slot: slot8,
        };
        let inode_key = |k: &InodeRuleKey| KernelInodeRuleKey {
            ino: k.ino,
            dev: k.dev,
            identity: k.identity,
            kind: k.kind,
            slot: slot8,
            pad: [0; 6],
        };
        let net_key = |p: &NetPrefix| {
            Key::new(
                NET_KEY_FIXED_BITS + u32::from(p.prefix_len),
                NetKey { slot, identity: p.identity, addr: p.addr },
            )
        };
        let SlotDelta {
            bindings,
            identities,
            path_rules: paths,
            inode_rules: inodes,
            net_rules: nets,
            listen_rules: listen,
        } = SlotDelta::between(held, wanted);

        remove_batch(
            &self.bindings,
            names::CGROUP_BINDINGS,
            bindings.removed.iter().map(|c| binding_key(*c)),
        )?;
        remove_batch(
            &self.identities,
            names::IDENTITIES,
            identities.removed.iter().map(|i| identity_key(*i)),
        )?;
        remove_batch(
            &self.listen_rules,
            names::LISTEN_RULES,
            listen.removed.iter().map(|i| identity_key(*i)),
        )?;
        remove_batch(&self.path_rules, names::PATH_RULES, paths.removed.iter().map(path_key))?;
        remove_batch(&self.inode_rules, names::INODE_RULES, inodes.removed.iter().map(inode_key))?;
        remove_batch(&self.net_rules, names::NET_RULES, nets.removed.iter().map(net_key))?;

        write_batch(
            &self.identities,
            names::IDENTITIES,
            identities.written.iter().map(|(i, v)| (identity_key(*i), *v)),
        )?;
        write_batch(
            &self.path_rules,
            names::PATH_RULES,
            paths.written.iter().map(|(k, v)| (path_key(k), *v)),
        )?;
        write_batch(
            &self.inode_rules,
            names::INODE_RULES,
            inodes.written.iter().map(|(k, v)| (inode_key(k), *v)),
        )?;
        write_batch(&self.net_rules, names::NET_RULES, nets.written.iter().map(|(p, v)| (net_key(p), *v)))?;
        // Whole, from what the slot now holds: a bit left over from a removed key would
        // only cost lookups, but none may be missing.
        let (path_filter, inode_filter) = wanted.rule_filters();
        for (which, filter) in
            [(rule_filter::which::PATH, path_filter), (rule_filter::which::INODE, inode_filter)]
        {
            self.rule_filters
                .set(rule_filter::index(slot, which), &*filter, 0)
                .map_err(err(names::RULE_FILTERS))?;
        }
        write_batch(
            &self.listen_rules,
            names::LISTEN_RULES,
            listen.written.iter().map(|(i, v)| (identity_key(*i), *v)),
        )?;
        write_batch(
            &self.bindings,
            names::CGROUP_BINDINGS,
            bindings.written.iter().map(|(c, v)| (binding_key(*c), *v)),
        )
    }

    /// Adds or replaces a cgroup binding in the set in force (a cgroup discovered after
    /// the set was installed). When this returns, no hook trusts a resolution made
    /// before the binding existed: the epoch every cache entry is checked against moved.
    pub fn bind_live(&mut self, cgroup_id: u64, binding: Binding) -> Result<(), MapsError> {
        let slot = self.active_slot()?;
        self.bindings
            .insert(&CgroupKey { cgroup_id, slot, pad: 0 }, &binding, 0)
            .map_err(err(names::CGROUP_BINDINGS))?;
        if let Some(held) = &mut self.held[slot as usize] {
            held.bind(cgroup_id, binding);
        }
        self.bump_epoch()
    }

    /// Removes bindings of the set in force whose cgroups are gone.
    pub fn unbind_live(&mut self, cgroup_ids: &[u64]) -> Result<(), MapsError> {
        let slot = self.active_slot()?;
        for cgroup_id in cgroup_ids {
            ignore_missing(self.bindings.remove(&CgroupKey { cgroup_id: *cgroup_id, slot, pad: 0 }))
                .map_err(err(names::CGROUP_BINDINGS))?;
        }
        if let Some(held) = &mut self.held[slot as usize] {
            held.unbind(cgroup_ids);
        }
        self.bump_epoch()
    }

    /// Bindings in the set in force.
    pub fn live_bindings(&self) -> usize {
        let Ok(slot) = self.active_slot() else { return 0 };
        self.bindings.keys().filter_map(Result::ok).filter(|k| k.slot == slot).count()
    }

    /// Waits until no kernel program reads `slot` (per-CPU counts summed, wrapping: a count
    /// is raised and lowered on one CPU, so only the total is meaningful).
    fn wait_for_readers(&self, slot: u32) -> Result<(), MapsError> {
        let deadline = std::time::Instant::now() + READER_WAIT;
        loop {
            let values = self.readers.get(&slot, 0).map_err(err(names::READERS))?;
            if values.iter().fold(0u64, |sum, v| sum.wrapping_add(*v)) == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(MapsError::SlotBusy(slot));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The agent is the only writer of the epoch, so read-then-write cannot lose a bump.
    fn bump_epoch(&mut self) -> Result<(), MapsError> {
        let epoch = self.word(word::BIND_EPOCH)?;
        let slot = self.active_slot()?;
        self.publish(epoch.wrapping_add(1), slot)
    }

    /// Makes the protected-file table exactly `wanted` ((kernel device, inode) pairs).
    pub fn set_protected_inodes(&mut self, wanted: &[(u32, u64)]) -> Result<(), MapsError> {
        for (dev, ino) in wanted {
            self.protected_inodes
                .insert(&InodeKey { ino: *ino, dev: *dev, pad: 0 }, &1, 0)
                .map_err(err(names::PROTECTED_INODES))?;
        }
        remove_where(&mut self.protected_inodes, names::PROTECTED_INODES, |k| {
            !wanted.contains(&(k.dev, k.ino))
        })
    }

    /// Exempts container init process `pid` in cgroup `cgroup_id` from the mount
    /// restrictions until it executes its entrypoint (the kernel removes the entry then).
    /// The "set-up under way" flag is raised first, so no hook skips the entry.
    pub fn begin_setup(&mut self, pid: u32, cgroup_id: u64) -> Result<(), MapsError> {
        self.set_flag(word::SETUP_ANY, 1)?;
        self.setup_tasks.insert(&pid, &cgroup_id, 0).map_err(err(names::SETUP_TASKS))
    }

    /// Removes the set-up and runtime entries `keep` refuses (processes that died before
    /// their exec; the kernel removes a runtime's entry at its exit too), and lowers the
    /// "set-up under way" flag once no entry is left. Only this agent adds entries, and
    /// not meanwhile (it runs on the main loop, as `begin_setup` does).
    pub fn prune_setup(&mut self, keep: impl Fn(u32) -> bool) -> Result<(), MapsError> {
        remove_where(&mut self.setup_tasks, names::SETUP_TASKS, |pid| !keep(*pid))?;
        if self.setup_tasks.keys().next().is_none() {
            self.set_flag(word::SETUP_ANY, 0)?;
        }
        remove_where(&mut self.runtime_tasks, names::RUNTIME_TASKS, |pid| !keep(*pid))
    }

    /// Makes the protected-process table exactly `pids`.
    pub fn set_protected_pids(&mut self, pids: &[u32]) -> Result<(), MapsError> {
        for pid in pids {
            self.protected_pids.insert(pid, &1, 0).map_err(err(names::PROTECTED_PIDS))?;
        }
        remove_where(&mut self.protected_pids, names::PROTECTED_PIDS, |p| !pids.contains(p))
    }

    /// Removes every entry of `slot` by walking the maps: used only when what the slot holds
    /// is not known (an earlier write of it failed part-way).
    fn clear_slot(&mut self, slot: u32) -> Result<(), MapsError> {
        remove_where(&mut self.bindings, names::CGROUP_BINDINGS, |k| k.slot == slot)?;
        remove_where(&mut self.identities, names::IDENTITIES, |k| k.slot == slot)?;
        remove_where(&mut self.listen_rules, names::LISTEN_RULES, |k| k.slot == slot)?;
        remove_where(&mut self.path_rules, names::PATH_RULES, |k| u32::from(k.slot) == slot)?;
        remove_where(&mut self.inode_rules, names::INODE_RULES, |k| u32::from(k.slot) == slot)?;
        let stale: Vec<Key<NetKey>> =
            self.net_rules.keys().filter_map(Result::ok).filter(|k| k.data().slot == slot).collect();
        for key in stale {
            ignore_missing(self.net_rules.remove(&key)).map_err(err(names::NET_RULES))?;
        }
        Ok(())
    }

    /// Makes the live quarantine table exactly `wanted` (identity number → restrict bits):
    /// entries are added or updated first, stale ones removed after. The hooks' "any
    /// quarantine" flag is raised before the first entry is added and lowered only once
    /// the table is empty, so a hook that skips the lookup never misses an entry.
    pub fn set_quarantines(
        &mut self,
        wanted: &std::collections::BTreeMap<u32, u32>,
    ) -> Result<(), MapsError> {
        if !wanted.is_empty() {
            self.set_flag(word::QUARANTINE_ANY, 1)?;
        }
        for (identity, restricts) in wanted {
            self.quarantine
                .insert(identity, &Quarantine { restricts: *restricts, pad: 0 }, 0)
                .map_err(err(names::QUARANTINE))?;
        }
        remove_where(&mut self.quarantine, names::QUARANTINE, |id| !wanted.contains_key(id))?;
        if wanted.is_empty() {
            self.set_flag(word::QUARANTINE_ANY, 0)?;
        }
        Ok(())
    }

    /// Makes the revoked-credential table exactly `wanted` ((path hash, length) → entry),
    /// with its "any" flag kept like the quarantine's (see `set_quarantines`).
    pub fn set_revoked(
        &mut self,
        wanted: &std::collections::BTreeMap<(u64, u32), Revoked>,
    ) -> Result<(), MapsError> {
        if !wanted.is_empty() {
            self.set_flag(word::REVOKED_ANY, 1)?;
        }
        for ((hash, len), entry) in wanted {
            self.revoked
                .insert(&RevokedKey { hash: *hash, len: *len, pad: 0 }, entry, 0)
                .map_err(err(names::REVOKED))?;
        }
        remove_where(&mut self.revoked, names::REVOKED, |k| !wanted.contains_key(&(k.hash, k.len)))?;
        if wanted.is_empty() {
            self.set_flag(word::REVOKED_ANY, 0)?;
        }
        Ok(())
    }

    /// Makes the grant tables exactly these entries (added first, stale ones removed).
    pub fn set_grants(&mut self, paths: &[PathGrant], nets: &[NetGrantEntry]) -> Result<(), MapsError> {
        for (key, grant) in paths {
            self.grants.insert(key, grant, 0).map_err(err(names::GRANTS))?;
        }
        let wanted: std::collections::HashSet<GrantKey> = paths.iter().map(|(k, _)| *k).collect();
        remove_where(&mut self.grants, names::GRANTS, |k| !wanted.contains(k))?;
        for (bits, key, grant) in nets {
            self.net_grants
                .insert(&Key::new(NET_GRANT_FIXED_BITS + bits, *key), grant, 0)
                .map_err(err(names::NET_GRANTS))?;
        }
        let wanted: std::collections::HashSet<(u32, NetGrantKey)> =
            nets.iter().map(|(bits, key, _)| (NET_GRANT_FIXED_BITS + bits, *key)).collect();
        let stale: Vec<Key<NetGrantKey>> = self
            .net_grants
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale {
            ignore_missing(self.net_grants.remove(&key)).map_err(err(names::NET_GRANTS))?;
        }
        Ok(())
    }

    /// Kernel counters summed over CPUs, in [`stat`] order, with the allows the CPUs'
    /// records counted (`CpuTask::hits`).
    pub fn stats(&self) -> Result<[u64; stat::COUNT as usize], MapsError> {
        let mut totals = [0u64; stat::COUNT as usize];
        for (index, total) in (0..stat::COUNT).zip(totals.iter_mut()) {
            let values = self.stats.get(&index, 0).map_err(err(names::STATS))?;
            *total = values.iter().sum();
        }
        self.records.get(&0, 0).map_err(err(names::RECORDS_SECTION))?.add_hits(&mut totals);
        Ok(totals)
    }

    /// Entries in use in the rule maps (both slots): (name, used, capacity).
    pub fn usage(&self) -> Vec<(&'static str, usize, u32)> {
        use enforcer_common::capacity;
        vec![
            (names::IDENTITIES, self.identities.keys().count(), capacity::IDENTITIES),
            (names::CGROUP_BINDINGS, self.bindings.keys().count(), capacity::CGROUP_BINDINGS),
            (names::PATH_RULES, self.path_rules.keys().count(), capacity::PATH_RULES),
            (names::INODE_RULES, self.inode_rules.keys().count(), capacity::INODE_RULES),
            (names::NET_RULES, self.net_rules.keys().count(), capacity::NET_PREFIXES),
        ]
    }
}

/// The event ring buffer of a loaded object.
pub fn take_events(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, MapsError> {
    RingBuf::try_from(take(ebpf, names::EVENTS)?).map_err(err(names::EVENTS))
}

/// Read-only handle on the kernel's counts of repeated verdicts (`VERDICT_AGG`).
pub struct Aggregates(HashMap<MapData, AggKey, AggEntry>);

impl Aggregates {
    /// The kernel's entry for `key`, or `None` if it has none (never created, or evicted).
    pub fn get(&self, key: &AggKey) -> Option<AggEntry> {
        self.0.get(key, 0).ok()
    }
}

/// The repeated-verdict counts of a loaded object.
pub fn take_aggregates(ebpf: &mut Ebpf) -> Result<Aggregates, MapsError> {
    HashMap::try_from(take(ebpf, names::VERDICT_AGG)?).map(Aggregates).map_err(err(names::VERDICT_AGG))
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// Writes `entries` to a hash map or LPM trie in one batch.
fn write_batch<K: aya::Pod, V: aya::Pod>(
    map: &impl IterableMap<K, V>,
    name: &'static str,
    entries: impl Iterator<Item = (K, V)>,
) -> Result<(), MapsError> {
    let entries: Vec<(K, V)> = entries.collect();
    if entries.is_empty() {
        return Ok(());
    }
    batch::update(map.map().fd().as_fd(), &entries).map_err(|source| MapsError::Batch { map: name, source })
}

/// Removes `keys` from a hash map or LPM trie in one batch (keys it does not hold are skipped).
fn remove_batch<K: aya::Pod, V: aya::Pod>(
    map: &impl IterableMap<K, V>,
    name: &'static str,
    keys: impl Iterator<Item = K>,
) -> Result<(), MapsError> {
    let keys: Vec<K> = keys.collect();
    if keys.is_empty() {
        return Ok(());
    }
    batch::delete(map.map().fd().as_fd(), &keys).map_err(|source| MapsError::Batch { map: name, source })
}

fn remove_where<T: BorrowMut<MapData>, K: aya::Pod + Copy, V: aya::Pod>(
    map: &mut HashMap<T, K, V>,
    name: &'static str,
    pred: impl Fn(&K) -> bool,
) -> Result<(), MapsError> {
    let stale: Vec<K> = map.keys().filter_map(Result::ok).filter(|k| pred(k)).collect();
    for key in stale {
        ignore_missing(map.remove(&key)).map_err(err(name))?;
    }
    Ok(())
}
