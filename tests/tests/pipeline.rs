//! End-to-end proof of the pipeline: the real programs, loaded in the guest, deny a file
//! open inside a selected cgroup and allow the same open outside it.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};

use enforcer_agent::{
    kernel::{
        events, loader,
        maps::{self, KernelMaps},
        slot::SlotContents,
    },
    policy::compiled::{CompiledSet, PathRuleKey},
};
use enforcer_common::{
    maps::{BINDING_SUBTREE, Binding, IdentityConfig, PathRule, path_kind},
    path_hash,
    verdict::{access, action, decision, hook, mode, reason},
};
use enforcer_tests::{TestCgroup, cgroup2_root, open_errno, run_in, wait_for_event, write_file};

type Loaded = (aya::Ebpf, Vec<(&'static str, aya::programs::links::FdLink)>, KernelMaps, RingBuf<MapData>);

/// The programs loaded and attached, their maps and event ring.
fn loaded() -> Loaded {
    let options = loader::Options {
        cgroup_root: cgroup2_root(),
        network_only: false,
        kernel_log: enforcer_agent::kernel::log::Level::Off,
    };
    let mut ebpf = loader::load(&options).expect("loading the enforcer programs");
    let links = loader::attach(&mut ebpf, &options).expect("attaching the enforcer programs");
    let kernel = KernelMaps::take(&mut ebpf).expect("taking maps");
    let ring = maps::take_events(&mut ebpf).expect("taking the event ring");
    (ebpf, links, kernel, ring)
}

/// An enforcing identity that allows by default except files (`file_default`).
fn enforcing(file_default: u8) -> IdentityConfig {
    IdentityConfig {
        mode: mode::ENFORCE,
        exec_default: action::ALLOW,
        file_default,
        net_default: action::ALLOW,
        listen_default: action::ALLOW,
        pad: [0; 3],
        flags: 0,
    }
}

#[test]
fn file_open_denied_in_selected_cgroup_only() {
    let secret = "/tmp/pipeline/secret.key";
    write_file(secret, "s3cr3t");
    let (_ebpf, _links, mut kernel, mut ring) = loaded();

    let cgroup = TestCgroup::new("pipeline");
    let key = PathRuleKey {
        identity: 1,
        kind: path_kind::FILE_EXACT,
        hash: path_hash(secret.as_bytes()),
        len: u16::try_from(secret.len()).unwrap(),
    };
    let set = CompiledSet {
        generation: 7,
        identities: vec![(1, enforcing(action::ALLOW))],
        bindings: vec![(cgroup.id(), Binding { identity: 1, flags: BINDING_SUBTREE })],
        path_rules: vec![(
            key,
            PathRule { read_action: action::DENY, write_action: action::DENY, ..PathRule::empty() },
        )],
        // The path of each rule: the kernel checks its keyed proof on a hit.
        path_names: vec![(key, secret.to_owned())],
        net_rules: vec![],
        ..CompiledSet::default()
    };
    kernel
        .install(set.generation, SlotContents::of(&set, enforcer_agent::kernel::path_key::check))
        .expect("installing the policy set");

    let inside = run_in(Some(&cgroup), || open_errno(secret, libc::O_RDONLY));
    assert_eq!(inside, libc::EPERM, "open inside the selected cgroup should fail with EPERM");
    let outside = run_in(None, || open_errno(secret, libc::O_RDONLY));
    assert_eq!(outside, 0, "open outside the selected cgroup should succeed");

    let event = wait_for_event(&mut ring, Duration::from_secs(5), |e| e.hook == hook::FILE_OPEN)
        .expect("a deny verdict for the open inside the cgroup");
    assert_eq!(event.decision, decision::DENY);
    assert_eq!(event.reason, reason::RULE);
    assert_eq!(event.errno, libc::EPERM);
    assert_eq!(event.identity, 1);
    assert_eq!(event.generation, 7);
    assert_eq!(event.cgroup_id, cgroup.id());
    assert_eq!(event.access, access::READ);
    assert_eq!(events::path(&event), secret);
}

/// A path whose FNV-1a index hits a rule it does not name (what a path forged offline to
/// collide would do): the keyed proof fails and the open is refused as `forged-path`,
/// even where the rule would allow. Simulated by installing an allow rule whose proof is
/// that of another path, at the index of the opened one.
#[test]
fn a_path_that_only_collides_with_a_rule_is_refused_as_forged() {
    let opened = "/tmp/pipeline/collides";
    write_file(opened, "x");
    let (_ebpf, _links, mut kernel, mut ring) = loaded();
    let cgroup = TestCgroup::new("pipeline-forged");
    let key = PathRuleKey {
        identity: 1,
        kind: path_kind::FILE_EXACT,
        hash: path_hash(opened.as_bytes()),
        len: u16::try_from(opened.len()).unwrap(),
    };
    let set = CompiledSet {
        generation: 3,
        identities: vec![(1, enforcing(action::DENY))],
        bindings: vec![(cgroup.id(), Binding { identity: 1, flags: BINDING_SUBTREE })],
        path_rules: vec![(
            key,
            PathRule { read_action: action::ALLOW, write_action: action::ALLOW, ..PathRule::empty() },
        )],
        path_names: vec![(key, "/tmp/pipeline/another".to_owned())],
        ..CompiledSet::default()
    };
    kernel
        .install(set.generation, SlotContents::of(&set, enforcer_agent::kernel::path_key::check))
        .expect("installing the policy set");
    let inside = run_in(Some(&cgroup), || open_errno(opened, libc::O_RDONLY));
    assert_eq!(inside, libc::EPERM, "an index hit without the proof must not allow");
    let event = wait_for_event(&mut ring, Duration::from_secs(5), |e| e.hook == hook::FILE_OPEN)
        .expect("a verdict for the refused open");
    assert_eq!(event.reason, reason::FORGED_PATH);
    assert_eq!(event.decision, decision::DENY);
}
