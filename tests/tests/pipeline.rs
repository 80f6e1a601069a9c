//! End-to-end proof of the pipeline: the real programs, loaded in the guest, deny a file
//! open inside a selected cgroup and allow the same open outside it.

use std::time::Duration;

use enforcer_agent::{
    events, loader,
    maps::{self, KernelMaps},
    policy::compiled::{CompiledSet, PathRuleKey},
};
use enforcer_common::{
    maps::{BINDING_SUBTREE, Binding, IdentityConfig, PathRule, path_kind},
    path_hash,
    verdict::{access, action, decision, hook, mode, reason},
};
use enforcer_tests::{TestCgroup, cgroup2_root, open_errno, run_in, wait_for_event, write_file};

#[test]
fn file_open_denied_in_selected_cgroup_only() {
    let secret = "/tmp/pipeline/secret.key";
    write_file(secret, "s3cr3t");
    let options = loader::Options { cgroup_root: cgroup2_root(), network_only: false };
    let mut ebpf = loader::load(&options).expect("loading the enforcer programs");
    let _links = loader::attach(&mut ebpf, &options).expect("attaching the enforcer programs");
    let mut kernel = KernelMaps::take(&mut ebpf).expect("taking maps");
    let mut ring = maps::take_events(&mut ebpf).expect("taking the event ring");

    let cgroup = TestCgroup::new("pipeline");
    let set = CompiledSet {
        generation: 7,
        identities: vec![(
            1,
            IdentityConfig {
                mode: mode::ENFORCE,
                exec_default: action::ALLOW,
                file_default: action::ALLOW,
                net_default: action::ALLOW,
                flags: 0,
            },
        )],
        bindings: vec![(cgroup.id(), Binding { identity: 1, flags: BINDING_SUBTREE })],
        path_rules: vec![(
            PathRuleKey {
                identity: 1,
                kind: path_kind::FILE_EXACT,
                hash: path_hash(secret.as_bytes()),
                len: u16::try_from(secret.len()).unwrap(),
            },
            PathRule {
                read_action: action::DENY,
                write_action: action::DENY,
                pad: 0,
                read_rule: 0,
                write_rule: 0,
            },
        )],
        net_rules: vec![],
        ..CompiledSet::default()
    };
    kernel.install(&set).expect("installing the policy set");

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
