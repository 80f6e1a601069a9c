use std::collections::BTreeMap;
use std::fmt::Write as _;

use enforcer_common::{
    maps::path_kind,
    path_hash,
    verdict::{action, proto},
};

use super::{
    compile::{ResolvedBinding, compile},
    validate::{self, PolicyError, cidr, normalise, parse, validate_set},
};

const GOOD: &str = r"
apiVersion: enforcer.dev/v1
kind: Policy
metadata:
  name: payments-api
spec:
  selector:
    cgroupPath: /demo/payments
  mode: enforce
  defaults:
    file: deny
  exec:
    - path: /usr/bin/curl
      action: deny
  file:
    - dir: /etc/payments
      access: [read]
      action: allow
    - path: /etc/payments/secret.key
      action: deny
  network:
    - cidr: 10.0.0.0/8
      ports: 443
      protocol: tcp
      action: allow
    - cidr: 10.1.0.0/16
      ports: 8000-8100
      action: deny
---
apiVersion: enforcer.dev/v1
kind: Policy
metadata:
  name: ci-runner
spec:
  selector:
    systemdUnit: ci-runner.service
";

fn error_of(yaml: &str) -> PolicyError {
    match parse("t.yaml", yaml).and_then(|p| validate_set(&p)) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e,
    }
}

fn with_spec(spec: &str) -> String {
    format!("apiVersion: enforcer.dev/v1\nkind: Policy\nmetadata:\n  name: p\nspec:\n{spec}")
}

#[test]
fn parses_several_documents() {
    let policies = parse("good.yaml", GOOD).unwrap();
    let valid = validate_set(&policies).unwrap();
    assert_eq!(valid.len(), 2);
    assert_eq!(valid[0].identity, "payments-api");
    assert_eq!(valid[0].file[0].path, "/etc/payments");
    assert!(valid[0].file[0].read && !valid[0].file[0].write);
    assert!(valid[0].file[1].read && valid[0].file[1].write);
    assert_eq!((valid[0].network[1].port_lo, valid[0].network[1].port_hi), (8000, 8100));
}

#[test]
fn unknown_fields_are_named() {
    let e = error_of(&with_spec("  selector:\n    cgroupPath: /a\n  colour: blue\n"));
    assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    assert_eq!(e.field, "spec", "{e}");
    assert!(e.document.contains("t.yaml document 1 (p)"), "{e}");
}

#[test]
fn errors_in_a_later_document_give_its_number_name_field_and_line() {
    let first = with_spec("  selector:\n    cgroupPath: /a\n");
    // Lines 1-7, then the marker on line 8; the second document starts on line 9.
    assert_eq!(first.lines().count(), 7);
    let second = |rule: &str| {
        with_spec(&format!("  selector:\n    cgroupPath: /b\n  file:\n    - path: /b\n{rule}"))
            .replace("name: p", "name: q")
    };
    // `action` is on line 18, its value at column 15.
    let e = error_of(&format!("{first}---\n{}", second("      action: maybe\n")));
    assert_eq!(e.document, "t.yaml document 2 (q)", "{e}");
    assert_eq!(e.field, "spec.file[0].action", "{e}");
    assert!(e.problem.starts_with("unknown variant `maybe`"), "{e}");
    assert!(e.problem.ends_with("at line 18, column 15"), "{e}");

    let e = error_of(&format!("{first}---\n{}", second("      action: deny\n      colour: red\n")));
    assert_eq!(
        e.to_string(),
        "t.yaml document 2 (q): spec.file[0]: unknown field `colour`, expected one of path, dir, access, \
         action at line 19, column 7"
    );

    // A syntax error is reported as such, in a document without a readable name.
    let e = error_of(&format!("{first}---\n{}", second("      action: [deny\n")));
    assert_eq!(e.document, "t.yaml document 2", "{e}");
    assert_eq!(e.field, "(document)", "{e}");
    assert_eq!(e.problem, "unclosed bracket '[' at line 18, column 15", "{e}");

    // Empty documents are counted too.
    let e = error_of(&format!("---\n...\n# none\n---\n{first}---\n{}", second("      action: maybe\n")));
    assert_eq!(e.document, "t.yaml document 3 (q)", "{e}");
    assert!(e.problem.ends_with("at line 22, column 15"), "{e}");
}

#[test]
fn bad_values_name_document_field_and_problem() {
    let cases = [
        ("  selector: {}\n", "spec.selector", "is empty"),
        ("  selector:\n    cgroupPath: /a\n    systemdUnit: a.service\n", "spec.selector", "more than one"),
        ("  selector:\n    cgroupPath: relative\n", "spec.selector.cgroupPath", "not absolute"),
        ("  selector:\n    containerId: xyz\n", "spec.selector.containerId", "not a full container id"),
        (
            "  selector:\n    containerId: 3f2a9c1d0b7e\n",
            "spec.selector.containerId",
            "not a full container id",
        ),
        (
            "  selector:\n    cgroupPath: /a\n  file:\n    - path: etc/passwd\n      action: deny\n",
            "spec.file[0].path",
            "not absolute",
        ),
        (
            "  selector:\n    cgroupPath: /a\n  file:\n    - path: /etc/../passwd\n      action: deny\n",
            "spec.file[0].path",
            "\"..\"",
        ),
        (
            "  selector:\n    cgroupPath: /a\n  exec:\n    - action: deny\n",
            "spec.exec[0]",
            "needs one of path or dir",
        ),
        (
            "  selector:\n    cgroupPath: /a\n  network:\n    - cidr: 10.0.0.0/33\n      action: deny\n",
            "spec.network[0].cidr",
            "prefix length",
        ),
        (
            "  selector:\n    cgroupPath: /a\n  network:\n    - cidr: 10.0.0.1/8\n      action: deny\n",
            "spec.network[0].cidr",
            "host bits",
        ),
        (
            "  selector:\n    cgroupPath: /a\n  network:\n    - cidr: 300.1.1.1\n      action: deny\n",
            "spec.network[0].cidr",
            "not an IP address",
        ),
        (
            "  selector:\n    cgroupPath: /a\n  network:\n    - cidr: 10.0.0.0/8\n      ports: 90-80\n      action: deny\n",
            "spec.network[0].ports",
            "empty",
        ),
        (
            "  selector:\n    cgroupPath: /a\n  network:\n    - cidr: 10.0.0.0/8\n      ports: 70000\n      action: deny\n",
            "spec.network[0].ports",
            "not a port",
        ),
        (
            "  selector:\n    cgroupPath: /a\n  file:\n    - path: /x\n      action: deny\n    - path: /x/\n      access: [write]\n      action: allow\n",
            "spec.file[1]",
            "already decided (write) by spec.file[0]",
        ),
    ];
    for (spec, field, problem) in cases {
        let e = error_of(&with_spec(spec));
        assert_eq!(e.field, field, "{e}");
        assert!(e.problem.contains(problem), "expected {problem:?} in: {e}");
    }
}

#[test]
fn duplicate_names_and_identities_are_rejected() {
    let one = with_spec("  selector:\n    cgroupPath: /a\n");
    let e = error_of(&format!("{one}---\n{one}"));
    assert!(e.problem.contains("duplicate policy name"), "{e}");
    let other = one.replace("name: p", "name: q").replace("cgroupPath: /a", "cgroupPath: /b\n  identity: p");
    let e = error_of(&format!("{one}---\n{other}"));
    assert!(e.problem.contains("already governed by policy \"p\""), "{e}");
}

#[test]
fn wrong_api_version_is_rejected() {
    let e = error_of(&with_spec("  selector:\n    cgroupPath: /a\n").replace("enforcer.dev/v1", "v2"));
    assert_eq!(e.field, "apiVersion");
}

#[test]
fn normalises_paths_and_cidrs() {
    assert_eq!(normalise("//etc///ssl/").unwrap(), "/etc/ssl");
    assert_eq!(normalise("/").unwrap(), "/");
    let (addr, bits) = cidr("192.168.0.0/16").unwrap();
    assert_eq!(bits, 96 + 16);
    assert_eq!(&addr[10..14], &[0xff, 0xff, 192, 168]);
    assert_eq!(cidr("::ffff:192.168.0.0/112").unwrap(), cidr("192.168.0.0/16").unwrap());
    assert_eq!(cidr("2001:db8::/32").unwrap().1, 32);
    assert_eq!(cidr("10.1.2.3").unwrap().1, 128);
}

fn compiled() -> super::compiled::CompiledSet {
    let valid = validate_set(&parse("good.yaml", GOOD).unwrap()).unwrap();
    let ids: BTreeMap<String, u32> = [("payments-api".to_owned(), 1), ("ci-runner".to_owned(), 2)].into();
    let bindings = [ResolvedBinding { identity: "payments-api".into(), cgroup_id: 42, subtree: true }];
    compile(&valid, &ids, &bindings, 9).unwrap()
}

#[test]
fn compiles_identities_bindings_and_path_rules() {
    let set = compiled();
    assert_eq!(set.generation, 9);
    assert_eq!(set.identities.len(), 2);
    assert_eq!(set.identities[0].1.file_default, action::DENY);
    assert_eq!(set.bindings, vec![(42, enforcer_common::maps::Binding { identity: 1, flags: 1 })]);
    let find = |kind: u8, path: &str| {
        set.path_rules
            .iter()
            .find(|(k, _)| {
                k.kind == kind && k.hash == path_hash(path.as_bytes()) && usize::from(k.len) == path.len()
            })
            .map_or_else(|| panic!("no rule for {path}"), |(_, v)| *v)
    };
    let dir = find(path_kind::FILE_DIR, "/etc/payments");
    assert_eq!((dir.read_action, dir.write_action), (action::ALLOW, action::NONE));
    let exact = find(path_kind::FILE_EXACT, "/etc/payments/secret.key");
    assert_eq!((exact.read_action, exact.write_action, exact.read_rule), (action::DENY, action::DENY, 1));
    assert_eq!(find(path_kind::EXEC_EXACT, "/usr/bin/curl").read_action, action::DENY);
}

#[test]
fn network_entries_carry_covering_rules_most_specific_first() {
    let set = compiled();
    assert_eq!(set.net_rules.len(), 2);
    let narrow = set.net_rules.iter().find(|(p, _)| p.prefix_len == 96 + 16).unwrap();
    let rules = &narrow.1.rules[..narrow.1.count as usize];
    assert_eq!(rules.len(), 2);
    assert_eq!(
        (rules[0].rule, rules[0].action, rules[0].port_lo, rules[0].proto),
        (1, action::DENY, 8000, proto::ANY)
    );
    assert_eq!(
        (rules[1].rule, rules[1].action, rules[1].port_lo, rules[1].proto),
        (0, action::ALLOW, 443, proto::TCP)
    );
    let wide = set.net_rules.iter().find(|(p, _)| p.prefix_len == 96 + 8).unwrap();
    assert_eq!(wide.1.count, 1);
}

#[test]
fn too_many_rules_for_one_prefix_is_an_error() {
    let mut spec = String::from("  selector:\n    cgroupPath: /a\n  network:\n");
    for port in 0..17 {
        writeln!(spec, "    - cidr: 10.0.0.0/8\n      ports: {port}\n      action: deny").unwrap();
    }
    let valid = validate_set(&parse("t.yaml", &with_spec(&spec)).unwrap()).unwrap();
    let ids: BTreeMap<String, u32> = [("p".to_owned(), 1)].into();
    let e = compile(&valid, &ids, &[], 1).unwrap_err();
    assert!(e.problem.contains("17 rules apply"), "{e}");
}

#[test]
fn validate_rejects_empty_access_list() {
    let e = error_of(&with_spec(
        "  selector:\n    cgroupPath: /a\n  file:\n    - path: /x\n      access: []\n      action: deny\n",
    ));
    assert_eq!(e.field, "spec.file[0].access");
    let _ = validate::MAX_POLICIES;
}

#[test]
fn listen_rules_compile_in_order_with_their_default() {
    let spec = "  selector:\n    cgroupPath: /a\n  defaults:\n    listen: deny\n  listen:\n    - ports: 8080\n      protocol: tcp\n      action: allow\n    - ports: 8000-9000\n      action: deny\n";
    let valid = validate_set(&parse("t.yaml", &with_spec(spec)).unwrap()).unwrap();
    let ids: BTreeMap<String, u32> = [("p".to_owned(), 1)].into();
    let set = compile(&valid, &ids, &[], 1).unwrap();
    assert_eq!(set.identities[0].1.listen_default, action::DENY);
    let (identity, entry) = &set.listen_rules[0];
    assert_eq!((*identity, entry.count), (1, 2));
    let r = entry.rules[0];
    assert_eq!((r.port_lo, r.port_hi, r.proto, r.action, r.rule), (8080, 8080, proto::TCP, action::ALLOW, 0));
    let r = entry.rules[1];
    assert_eq!((r.port_lo, r.port_hi, r.proto, r.action, r.rule), (8000, 9000, proto::ANY, action::DENY, 1));
}

#[test]
fn listen_rules_reject_approve_and_more_than_the_kernel_holds() {
    let e = error_of(&with_spec(
        "  selector:\n    cgroupPath: /a\n  listen:\n    - ports: 80\n      action: approve\n",
    ));
    assert_eq!(e.field, "spec.listen[0].action");
    let mut spec = String::from("  selector:\n    cgroupPath: /a\n  listen:\n");
    for port in 1..=17 {
        writeln!(spec, "    - ports: {port}\n      action: deny").unwrap();
    }
    let e = error_of(&with_spec(&spec));
    assert_eq!(e.field, "spec.listen");
    assert!(e.problem.contains("17 rules exceed the limit of 16"), "{e}");
    let e = error_of(&with_spec("  selector:\n    cgroupPath: /a\n  defaults:\n    listen: approve\n"));
    assert_eq!(e.field, "spec.defaults.listen");
}

#[test]
fn runtimes_compile_to_entries_by_file_identity_and_a_flag() {
    let spec = "  selector:\n    cgroupPath: /a\n  runtimes: [/usr/sbin//runc]\n";
    let valid = validate_set(&parse("t.yaml", &with_spec(spec)).unwrap()).unwrap();
    assert_eq!(valid[0].runtimes, ["/usr/sbin/runc"]);
    let ids: BTreeMap<String, u32> = [("p".to_owned(), 1)].into();
    let set = compile(&valid, &ids, &[], 1).unwrap();
    assert_ne!(set.identities[0].1.flags & enforcer_common::verdict::IDENTITY_HAS_RUNTIMES, 0);
    let (key, _) =
        set.path_rules.iter().find(|(k, _)| k.kind == path_kind::RUNTIME).expect("a runtime entry");
    assert_eq!((key.identity, key.hash), (1, path_hash(b"/usr/sbin/runc")));
    let none =
        validate_set(&parse("t.yaml", &with_spec("  selector:\n    cgroupPath: /a\n")).unwrap()).unwrap();
    let set = compile(&none, &ids, &[], 1).unwrap();
    assert_eq!(set.identities[0].1.flags & enforcer_common::verdict::IDENTITY_HAS_RUNTIMES, 0);
}

#[test]
fn runtimes_must_be_absolute_distinct_and_few() {
    let e = error_of(&with_spec("  selector:\n    cgroupPath: /a\n  runtimes: [runc]\n"));
    assert_eq!(e.field, "spec.runtimes[0]");
    let e = error_of(&with_spec(
        "  selector:\n    cgroupPath: /a\n  runtimes: [/usr/sbin/runc, /usr/sbin//runc]\n",
    ));
    assert_eq!(e.field, "spec.runtimes[1]");
    assert!(e.problem.contains("named twice"), "{e}");
    let e = error_of(&with_spec("  selector:\n    cgroupPath: /a\n  runtimes: [/a, /b, /c, /d, /e]\n"));
    assert_eq!(e.field, "spec.runtimes");
    assert!(e.problem.contains("5 runtimes exceed the limit of 4"), "{e}");
}

#[test]
fn large_sets_fit_up_to_the_map_limits_and_no_further() {
    let mut policy = parse("t.yaml", &with_spec("  selector:\n    cgroupPath: /a\n")).unwrap().remove(0);
    let rule = |n: usize| super::model::NetworkRule {
        cidr: format!("10.{}.{}.0/24", n >> 8, n & 0xff),
        ports: None,
        protocol: super::model::Protocol::Any,
        action: super::model::Action::Deny,
    };
    let ids: BTreeMap<String, u32> = [("p".to_owned(), 1)].into();

    // 65,536 distinct CIDRs in one policy: the whole of a set's network prefixes.
    policy.spec.network = (0..65_536).map(rule).collect();
    let set = compile(&validate_set(std::slice::from_ref(&policy)).unwrap(), &ids, &[], 1).unwrap();
    assert_eq!(set.net_rules.len(), 65_536);
    policy.spec.network.push(super::model::NetworkRule { cidr: "10.255.255.255".into(), ..rule(0) });
    let e = compile(&validate_set(std::slice::from_ref(&policy)).unwrap(), &ids, &[], 1).unwrap_err();
    assert!(e.problem.contains("65537 network prefixes exceed the limit of 65536"), "{e}");

    // More rules of one resource than a set can hold are refused before compiling.
    policy.spec.network = vec![rule(0); validate::MAX_RULES_PER_RESOURCE + 1];
    let e = validate_set(&[policy]).unwrap_err();
    assert_eq!(e.field, "spec.network");
    assert!(e.problem.contains("131073 rules exceed the limit of 131072"), "{e}");
}
