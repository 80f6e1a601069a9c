//! `enforcer agent`: the daemon. Loads and attaches the programs, applies the policy
//! set, writes verdicts, binds new cgroups, and hands over to its successor on restart.

use std::path::Path;

use anyhow::Context as _;
use std::sync::Arc;

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::{broadcast, mpsc},
};

use crate::{
    daemon::{
        command::{Command, Handles, PodRequest},
        config::{Config, OnExit},
        control::Control,
        engine::Engine,
        identity, kubernetes,
        log_records::{self, write_agent_record, write_policy_record},
        metrics::{self, Metrics},
        protect::Protected,
        record::{self, clock::Clock},
        state::State,
        verdict_log::{self, Rotation, VerdictLog},
    },
    kernel::{
        events, loader,
        maps::{self, KernelMaps},
        pins,
    },
    policy::{files::read_policies, validate},
};
use enforcer_common::verdict::stat;

/// Everything a started agent holds.
struct Running {
    state: State,
    engine: Engine,
    log: VerdictLog,
    instance: pins::Instance,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    /// The kernel's counts of repeated verdicts (read only).
    aggregates: maps::Aggregates,
    features: loader::Features,
    /// (program, hook) attached by this instance.
    attached: Vec<(&'static str, &'static str)>,
    /// Instructions the verifier processed per program (kernel ≥ 5.16).
    loaded: Vec<loader::LoadedProgram>,
    started: std::time::Instant,
    commands: mpsc::Receiver<Command>,
    metrics: Metrics,
    live: crate::daemon::live::LiveState,
    protected: Protected,
}

fn load_options(config: &Config) -> loader::Options {
    loader::Options {
        cgroup_root: config.cgroup_root.clone(),
        network_only: config.network_only,
        kernel_log: config.kernel_log,
    }
}

/// Loads, applies the policy set, attaches, pins, then retires earlier instances.
/// Brings the API up with the daemon's handles: bind its socket and spawn its server.
pub type StartApi = Box<dyn FnOnce(Handles) -> anyhow::Result<()> + Send>;

async fn start(config: &Config, start_api: StartApi) -> anyhow::Result<Running> {
    let features = loader::Features::probe();
    if !config.network_only && !features.bpf_lsm {
        return Err(features.no_bpf_lsm().into());
    }
    let state = State::open(&config.state_dir)?;
    let policies = match &config.policy_dir {
        Some(dir) => read_policies(dir)?,
        None => state.policies()?,
    };
    // Refuse to start on an invalid set rather than enforce something else.
    validate::validate_set(&policies)?;

    let options = load_options(config);
    let mut ebpf = loader::load(&options)?;
    crate::kernel::log::start(&mut ebpf, config.kernel_log)?;
    let mut instance = pins::create(&config.bpffs)?;
    instance.pin_maps(&ebpf)?;
    let kernel = KernelMaps::take(&mut ebpf)?;
    let ring = maps::take_events(&mut ebpf)?;
    let aggregates = maps::take_aggregates(&mut ebpf)?;
    let mut engine = Engine::new(kernel, config.cgroup_root.clone(), state.generation());
    let (followers, _) = broadcast::channel(FOLLOWER_BACKLOG);
    let rotation = Rotation { max_bytes: config.log_rotation.max_bytes, keep: config.log_rotation.keep };
    let mut log = VerdictLog::open(&config.log_file, rotation, config.stdout, followers.clone())
        .with_context(|| format!("opening verdict log {}", config.log_file.display()))?;

    if config.kubernetes.is_some() {
        // The pods last seen: pod containers stay bound across a restart, before the new
        // watch has listed.
        let pods = state.pods();
        engine.update_pods(|known| known.replace_all(pods));
    }
    let applied = engine.apply(&policies)?;
    state.save(&policies, applied.generation)?;
    let live = state.live()?;
    engine.sync_live(&live)?;
    write_policy_record(&mut log, &engine, "startup", None);

    // The API comes up before the programs attach, so the socket is ready once enforcing.
    let (commands_tx, commands) = mpsc::channel(64);
    let pods = watch_cluster(config, &commands_tx).await?;
    start_api(handles(config, &engine, commands_tx.clone(), followers, pods))?;
    // From here on, managed tasks can neither write these files nor signal this process.
    let protected = Protected::new(
        &config.state_dir,
        config.policy_dir.as_deref(),
        &config.socket,
        &config.log_file,
        config.log_rotation.keep,
    );
    engine.protect(protected.inodes(), &[std::process::id()]).context("protecting the agent's files")?;
    if let Some(addr) = config.metrics_addr {
        metrics::serve(addr, commands_tx).await.with_context(|| format!("serving metrics on {addr}"))?;
    }

    // Attach, pin, and only then retire earlier instances: never a moment unenforced.
    let links = loader::attach(&mut ebpf, &options)?;
    let attached = links
        .iter()
        .map(|(name, _)| {
            let hook = loader::LSM_PROGRAMS
                .iter()
                .chain(&loader::TRACE_PROGRAMS)
                .find(|(p, _)| p == name)
                .map(|(_, h)| *h)
                .or_else(|| loader::RENAME_PROGRAMS.iter().find(|(p, _, _)| p == name).map(|(_, _, f)| *f))
                .unwrap_or("cgroup");
            (*name, hook)
        })
        .collect();
    instance.pin_links(links)?;
    let loaded = loader::loaded(&ebpf);
    // The programs stay loaded through their pinned links (`instance`), and the maps the
    // agent uses were taken out of the object: what is left of it is what only loading
    // needed, each program's instructions linked with its subprograms among them.
    drop(ebpf);
    // What only loading needed (the object, kernel BTF, parse buffers, verifier logs).
    loader::release_object_pages();
    super::memory::trim_heap();
    for old in pins::previous(&config.bpffs, &instance.dir) {
        let detached = pins::retire(&old);
        tracing::info!(instance = %old.display(), detached, "took over from a previous agent");
        write_agent_record(&mut log, "takeover", format!("{} ({detached} links detached)", old.display()));
    }
    write_agent_record(&mut log, "start", format!("generation {}", applied.generation));
    let _ = log.flush();
    eprintln!(
        "enforcer agent ready: kernel {}, bpf lsm {}, generation {}, {} policies, {} cgroups bound, verdicts to {}, api on {}",
        features.kernel,
        if features.bpf_lsm && !config.network_only { "enforcing" } else { "off (network only)" },
        applied.generation,
        applied.policies,
        applied.cgroups_bound,
        log.path().display(),
        config.socket.display()
    );
    Ok(Running {
        state,
        engine,
        log,
        instance,
        ring,
        aggregates,
        features,
        attached,
        loaded,
        started: std::time::Instant::now(),
        commands,
        metrics: Metrics::default(),
        live,
        protected,
    })
}

pub async fn run(config: Config, start_api: StartApi) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once the agent says it is ready must not find
    // the default action (SIGHUP would terminate the agent).
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let began = std::time::Instant::now();
    let running = start(&config, start_api).await?;
    tracing::info!(ms = began.elapsed().as_millis(), "started");
    let Running { ring, aggregates, instance, protected, .. } = running;
    let mut ctx = Control {
        state: running.state,
        engine: running.engine,
        log: running.log,
        features: running.features,
        attached: running.attached,
        loaded: running.loaded,
        started: running.started,
        metrics: running.metrics,
        config: &config,
        live: running.live,
        kube_synced: (false, false),
        texts: std::sync::Arc::default(),
        aggregator: record::aggregate::Aggregator::default(),
    };
    let mut commands = running.commands;
    // SAFETY: the ring buffer owns its map descriptor and lives inside the AsyncFd, so the
    // descriptor stays open for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("watching the event ring buffer: {}", e.into_parts().1))?;
    let mut tick = tokio::time::interval(config.rescan_interval);
    // Repeats counted in the kernel are read once per aggregation window.
    let mut flush_tick =
        tokio::time::interval(std::time::Duration::from_nanos(enforcer_common::aggregate::WINDOW_NS));
    let mut processes = record::processes::Processes::default();
    let mut dropped_seen = ctx.engine.maps().stats().map_or(0, |s| s[stat::EVENTS_DROPPED as usize]);
    loop {
        // Biased: operator commands, signals and housekeeping before verdict events, so a
        // flood of events never delays a quarantine or a policy change.
        tokio::select! {
            biased;
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            Some(command) = commands.recv() => ctx.handle(command),
            _ = hangup.recv() => {
                if let Some(dir) = &config.policy_dir {
                    reload(dir, &mut ctx);
                }
            }
            _ = tick.tick() => {
                ctx.expire_grants();
                housekeeping(&mut ctx.engine, &mut ctx.log, &mut dropped_seen, &protected);
            }
            _ = flush_tick.tick() => flush_repeats(&mut ctx, &aggregates, false),
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                // A full batch means more may be waiting: stay ready, but let the API's
                // tasks (same thread) accept and read requests before the next batch.
                if drain(guard.get_inner_mut(), &mut ctx, &mut processes) {
                    drop(guard);
                    tokio::task::yield_now().await;
                } else {
                    guard.clear_ready();
                }
            }
        }
    }
    while drain(ring.get_mut(), &mut ctx, &mut processes) {}
    // Every repeat counted so far gets its record, window over or not.
    flush_repeats(&mut ctx, &aggregates, true);
    // Saves still queued reach the disk before the agent goes.
    ctx.state.flush();
    let _ = std::fs::remove_file(&config.socket);
    let mut log = ctx.log;
    let detail = match config.on_exit {
        OnExit::Keep => "programs stay attached and keep enforcing".to_owned(),
        OnExit::Detach => "programs detached".to_owned(),
    };
    write_agent_record(&mut log, "stop", detail);
    let _ = log.flush();
    if config.on_exit == OnExit::Detach {
        instance.release();
    }
    Ok(())
}

/// With `--kubernetes`: connects to the API server and starts the watches; returns where
/// to ask for single pods.
async fn watch_cluster(
    config: &Config,
    commands: &mpsc::Sender<Command>,
) -> anyhow::Result<Option<mpsc::Sender<PodRequest>>> {
    let Some(k) = &config.kubernetes else { return Ok(None) };
    let client = crate::kube_client::client(k.kubeconfig.as_deref()).await?;
    Ok(Some(kubernetes::spawn(&client, &k.node_name, commands.clone())))
}

/// The API server: it sends commands to the main loop, feeds followers, reads history,
/// and refuses callers inside managed identities.
/// What the API answers from outside the main loop: history from the log files, and
/// whether a caller's process is managed (read from the bindings the engine keeps).
fn handles(
    config: &Config,
    engine: &Engine,
    commands: mpsc::Sender<Command>,
    verdicts: broadcast::Sender<Arc<verdict_log::Line>>,
    pods: Option<mpsc::Sender<PodRequest>>,
) -> Handles {
    let (log_path, keep) = (config.log_file.clone(), config.log_rotation.keep);
    let directory = engine.directory();
    Handles {
        commands,
        verdicts,
        history: Arc::new(move || verdict_log::history(&log_path, keep)),
        managed: Arc::new(move |pid| {
            identity::pid_is_managed(pid, &directory.read().expect("directory lock").bindings)
        }),
        pods,
    }
}

/// Binds new cgroups and reports events the kernel could not deliver.
fn housekeeping(engine: &mut Engine, log: &mut VerdictLog, dropped_seen: &mut u64, protected: &Protected) {
    match engine.rescan() {
        Ok(rescan) => {
            for b in rescan.added {
                tracing::info!(identity = %b.identity, cgroup_id = b.cgroup_id, "bound new cgroup");
            }
            for cgroup_id in rescan.pruned {
                tracing::info!(cgroup_id, "unbound a removed cgroup");
            }
        }
        Err(e) => tracing::warn!(error = %e, "rescanning cgroups"),
    }
    for failed in engine.failed_bindings() {
        tracing::warn!(identity = %failed.identity, cgroup = %failed.cgroup, error = %failed.error, "cgroup not bound; retrying");
    }
    if let Err(e) = engine.prune_setup() {
        tracing::warn!(error = %e, "forgetting finished container set-ups");
    }
    // A rotated log or a re-created socket has a new inode.
    if let Err(e) = engine.protect(protected.inodes(), &[std::process::id()]) {
        tracing::warn!(error = %e, "updating the agent's protected files");
    }
    if let Ok(stats) = engine.maps().stats() {
        let total = stats[stat::EVENTS_DROPPED as usize];
        if total > *dropped_seen {
            log_records::write_dropped(log, total - *dropped_seen, total);
            *dropped_seen = total;
        }
    }
    let _ = log.flush();
    super::memory::trim_if_quiet();
}

/// Re-reads the policy directory; a bad set is refused and the running one stays.
fn reload(dir: &Path, ctx: &mut Control<'_>) {
    let result = read_policies(dir).and_then(|p| {
        let applied = ctx.engine.apply(&p)?;
        ctx.state.save(&p, applied.generation)?;
        Ok(applied)
    });
    match result {
        Ok(applied) => {
            if let Err(e) = ctx.engine.sync_live(&ctx.live) {
                tracing::error!(error = %e, "mirroring live state after a reload");
            }
            tracing::info!(generation = applied.generation, "reloaded policies");
            write_policy_record(&mut ctx.log, &ctx.engine, "reload", None);
        }
        Err(e) => {
            ctx.metrics.apply_errors += 1;
            tracing::error!(error = %format!("{e:#}"), "reload refused; the running policy is unchanged");
        }
    }
    let _ = ctx.log.flush();
}

/// Records a follower may fall behind before it is told it lost some.
const FOLLOWER_BACKLOG: usize = 8192;

/// Most events handled per wake-up, so a busy ring cannot starve signals and timers.
const DRAIN_BATCH: usize = 256;

/// Writes a verdict record standing for `calls` calls and counts them.
fn write_verdict(ctx: &mut Control<'_>, record: &record::VerdictRecord, calls: u64) {
    let key =
        (record.identity.clone().unwrap_or_default(), record.hook.to_owned(), record.decision.to_owned());
    *ctx.metrics.verdicts.entry(key).or_default() += calls;
    if let Err(e) = ctx.log.write(record) {
        tracing::warn!(error = %e, "writing verdict log");
    }
}

/// Writes aggregated records for the repeats the kernel counted in windows that have
/// ended (`all`: in every window, when the agent stops).
fn flush_repeats(ctx: &mut Control<'_>, aggregates: &maps::Aggregates, all: bool) {
    let clock = Clock::now();
    let out = ctx.aggregator.flush(record::clock::boot_ns(), all, |key| aggregates.get(key));
    for (repeated, repeats) in &out {
        write_verdict(ctx, &repeated.repeated(repeats, &clock), repeats.count);
    }
    if !out.is_empty() {
        let _ = ctx.log.flush();
    }
}

/// Writes out pending events (at most one batch). Returns true if the batch was full.
fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    ctx: &mut Control<'_>,
    processes: &mut record::processes::Processes,
) -> bool {
    let clock = Clock::now();
    let directory = ctx.engine.directory();
    let directory = directory.read().expect("directory lock");
    let mut handled = 0;
    let mut created = Vec::new();
    while handled < DRAIN_BATCH
        && let Some(item) = ring.next()
    {
        handled += 1;
        match events::decode_any(&item) {
            Ok(events::Event::CgroupCreated { cgroup_id, path }) => created.push((cgroup_id, path)),
            Ok(events::Event::Verdict(event)) => {
                let record = record::build(&event, &directory, &clock, processes);
                // Repeats the kernel counted between the previous report and this one.
                if let Some((repeated, repeats)) = ctx.aggregator.full(&event, &record) {
                    write_verdict(ctx, &repeated.repeated(&repeats, &clock), repeats.count);
                }
                write_verdict(ctx, &record, 1);
                if record.decision == "pending" {
                    ctx.note_pending(&record);
                }
            }
            Err(e) => tracing::warn!(error = %e, "undecodable event"),
        }
    }
    let _ = ctx.log.flush();
    drop(directory);
    // Bound now rather than at the next rescan: a container is covered within
    // milliseconds of its cgroup appearing.
    for (cgroup_id, path) in created {
        match ctx.engine.bind_created(cgroup_id, &path) {
            Ok(added) => {
                for b in added {
                    tracing::info!(identity = %b.identity, cgroup_id, path = %path, "bound new cgroup on creation");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path, "binding a new cgroup; the next rescan retries");
            }
        }
    }
    handled == DRAIN_BATCH
}
