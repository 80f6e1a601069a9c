//! Differential test: random policies and random queries, decided by `evaluate` (what
//! `enforcer check` answers) and by the model of the kernel lookups over the compiled map
//! contents. Any disagreement is a bug in one of the two.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use proptest::prelude::*;

use super::{
    compile::compile,
    evaluate::{Request, evaluate},
    kernel_model,
    model::{Access, Protocol},
    validate::{parse, validate_set},
};

const COMPONENTS: [&str; 3] = ["a", "b", "ab"];
const ACTIONS: [&str; 3] = ["allow", "deny", "approve"];
const CIDRS: [&str; 10] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "::/0",
    "fd00::/8",
    "fd00:1::/32",
    "::ffff:10.1.0.0/112",
    "2001:db8::/32",
];
const ADDRESSES: [&str; 10] = [
    "10.1.2.3",
    "10.1.2.4",
    "10.1.3.1",
    "10.2.0.1",
    "11.0.0.1",
    "fd00:1::1",
    "fd00:2::1",
    "2001:db8::5",
    "2001:db9::5",
    "::ffff:10.1.2.3",
];
const PORTS: [&str; 4] = ["", "443", "80", "1000-2000"];
const QUERY_PORTS: [u16; 5] = [443, 80, 1500, 22, 2000];

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&COMPONENTS[..]), 1..=4).prop_map(|parts| {
        let mut p = String::new();
        for part in parts {
            p.push('/');
            p.push_str(part);
        }
        p
    })
}

/// (path, dir, read, write, action index)
type PathRuleGen = (String, bool, bool, bool, usize);
/// (cidr, ports, protocol 0 any / 1 tcp / 2 udp, action index)
type NetRuleGen = (usize, usize, usize, usize);

fn path_rules() -> impl Strategy<Value = Vec<PathRuleGen>> {
    prop::collection::vec((path(), any::<bool>(), any::<bool>(), any::<bool>(), 0..3usize), 0..8)
}

fn net_rules() -> impl Strategy<Value = Vec<NetRuleGen>> {
    prop::collection::vec((0..CIDRS.len(), 0..PORTS.len(), 0..3usize, 0..3usize), 0..10)
}

fn policy_yaml(
    audit: bool,
    defaults: (usize, usize, usize),
    exec: &[PathRuleGen],
    file: &[PathRuleGen],
    network: &[NetRuleGen],
) -> String {
    let default = |i: usize| if i == 0 { "allow" } else { "deny" };
    let mut y = format!(
        "apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  selector: {{cgroupPath: /p}}\n  mode: {}\n  defaults: {{exec: {}, file: {}, network: {}}}\n",
        if audit { "audit" } else { "enforce" },
        default(defaults.0),
        default(defaults.1),
        default(defaults.2),
    );
    // One rule per (path, kind): the validator refuses a second decision for the same access.
    let mut seen = BTreeSet::new();
    y.push_str("  exec:\n");
    for (path, dir, _, _, action) in exec {
        if seen.insert(("exec", path.clone(), *dir)) {
            let key = if *dir { "dir" } else { "path" };
            let _ = writeln!(y, "    - {{{key}: {path}, action: {}}}", ACTIONS[*action]);
        }
    }
    y.push_str("  file:\n");
    for (path, dir, read, write, action) in file {
        if seen.insert(("file", path.clone(), *dir)) {
            let key = if *dir { "dir" } else { "path" };
            let access = match (read, write) {
                (true, false) => "[read]",
                (false, true) => "[write]",
                _ => "[read, write]",
            };
            let _ = writeln!(y, "    - {{{key}: {path}, access: {access}, action: {}}}", ACTIONS[*action]);
        }
    }
    y.push_str("  network:\n");
    for (cidr, ports, protocol, action) in network {
        let _ = write!(y, "    - {{cidr: \"{}\", action: {}", CIDRS[*cidr], ACTIONS[*action]);
        if !PORTS[*ports].is_empty() {
            let _ = write!(y, ", ports: \"{}\"", PORTS[*ports]);
        }
        match protocol {
            1 => y.push_str(", protocol: tcp"),
            2 => y.push_str(", protocol: udp"),
            _ => {}
        }
        y.push_str("}\n");
    }
    y
}

fn queries() -> impl Strategy<Value = Vec<Request>> {
    let exec = path().prop_map(|path| Request::Exec { path });
    let file = (path(), 0..3usize).prop_map(|(path, a)| Request::File {
        path,
        access: [vec![Access::Read], vec![Access::Write], vec![Access::Read, Access::Write]][a].clone(),
    });
    let connect =
        (0..ADDRESSES.len(), 0..QUERY_PORTS.len(), any::<bool>()).prop_map(|(a, p, tcp)| Request::Connect {
            address: ADDRESSES[a].parse().expect("address"),
            port: QUERY_PORTS[p],
            protocol: if tcp { Protocol::Tcp } else { Protocol::Udp },
        });
    prop::collection::vec(prop_oneof![exec, file, connect], 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn evaluate_agrees_with_the_kernel_lookups(
        audit in any::<bool>(),
        defaults in (0..2usize, 0..2usize, 0..2usize),
        exec in path_rules(),
        file in path_rules(),
        network in net_rules(),
        queries in queries(),
    ) {
        let yaml = policy_yaml(audit, defaults, &exec, &file, &network);
        // A set the validator refuses (too many rules on one prefix) judges nothing.
        let Ok(valid) = parse("random.yaml", &yaml).and_then(|p| validate_set(&p)) else {
            return Ok(());
        };
        let ids = BTreeMap::from([(valid[0].identity.clone(), 7)]);
        let set = compile(&valid, &ids, &[], 1).expect("a valid set compiles");
        for request in &queries {
            let told = evaluate(&valid[0], request).expect("well-formed request");
            let kernel = kernel_model::decide(&set, 7, request);
            prop_assert_eq!(
                (told.decision.as_str(), told.rule.as_str()),
                (kernel.0.as_str(), kernel.1.as_str()),
                "request {:?}\npolicy:\n{}", request, yaml
            );
        }
    }
}
