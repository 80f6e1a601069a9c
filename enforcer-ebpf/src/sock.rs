//! cgroup socket programs: outbound `connect` (TCP and UDP), UDP datagrams sent to an
//! explicit address without `connect`, and inbound: `bind` to a port (`listen` rules),
//! for IPv4 and IPv6. Return 1 to allow, 0 to deny (the caller gets EPERM).

use aya_ebpf::{macros::cgroup_sock_addr, maps::lpm_trie::Key, programs::SockAddrContext};
use enforcer_common::{
    MAX_NET_RULES_PER_PREFIX,
    maps::{IdentityKey, NET_KEY_FIXED_BITS, NetKey},
    verdict::{action, hook, proto, reason, restrict},
};

use crate::{
    emit::{self, Target, Verdict},
    maps::{LISTEN_RULES, NET_RULES},
    policy::{self, Caller, Judgement},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    judge(&ctx, hook::CONNECT4, AF_INET)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    judge(&ctx, hook::CONNECT6, AF_INET6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    judge(&ctx, hook::SENDMSG4, AF_INET)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    judge(&ctx, hook::SENDMSG6, AF_INET6)
}

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    judge(&ctx, hook::BIND4, AF_INET)
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    judge(&ctx, hook::BIND6, AF_INET6)
}

/// Whether `hook` is a bind (judged by `listen` rules, on the address as given).
#[inline(always)]
fn binds(hook: u32) -> bool {
    hook == hook::BIND4 || hook == hook::BIND6
}

/// Destination address as 16 bytes; IPv4 (and IPv4-mapped IPv6) as `::ffff:a.b.c.d`, so
/// one rule set judges both families alike. The unspecified addresses `0.0.0.0` and `::`
/// reach the local host when connected to, so they are judged (and reported) as
/// `127.0.0.1` and `::1`: a rule on loopback cannot be side-stepped through them.
#[inline(always)]
fn destination(ctx: &SockAddrContext, family: u16) -> [u8; 16] {
    let mut addr = raw_destination(ctx, family);
    if addr[..10] == [0; 10] && addr[12..] == [0; 4] {
        if addr[10] == 0xff && addr[11] == 0xff {
            addr[12] = 127;
            addr[15] = 1;
        } else if addr[10] == 0 && addr[11] == 0 {
            addr[15] = 1;
        }
    }
    addr
}

#[inline(always)]
fn raw_destination(ctx: &SockAddrContext, family: u16) -> [u8; 16] {
    let sa = ctx.sock_addr;
    let mut addr = [0u8; 16];
    // SAFETY: context fields the verifier rewrites into reads of the socket address;
    // each is loaded as an aligned u32 as it requires.
    unsafe {
        if family == AF_INET {
            addr[10] = 0xff;
            addr[11] = 0xff;
            addr[12..16].copy_from_slice(&(*sa).user_ip4.to_ne_bytes());
        } else {
            let w0 = (*sa).user_ip6[0];
            let w1 = (*sa).user_ip6[1];
            let w2 = (*sa).user_ip6[2];
            let w3 = (*sa).user_ip6[3];
            addr[0..4].copy_from_slice(&w0.to_ne_bytes());
            addr[4..8].copy_from_slice(&w1.to_ne_bytes());
            addr[8..12].copy_from_slice(&w2.to_ne_bytes());
            addr[12..16].copy_from_slice(&w3.to_ne_bytes());
        }
    }
    addr
}

#[inline(always)]
fn judge(ctx: &SockAddrContext, hook: u32, family: u16) -> i32 {
    // An unmanaged caller, known from its CPU's record alone (see `fast_path`).
    if crate::fast_path::unmanaged(|| 0) {
        return ALLOW;
    }
    let subject = match policy::caller(hook) {
        Caller::Unmanaged => return ALLOW,
        Caller::Managed(subject) => subject,
        // Fail-closed: the task is managed but its policy cannot be read.
        Caller::Broken { slot, identity, cgroup_id } => {
            let judgement = Judgement::refuse(reason::INTERNAL_ERROR);
            let config = policy::config_or_enforce(slot, identity);
            let (decision, errno) = policy::decide(&config, &judgement);
            report(ctx, hook, family, slot, identity, cgroup_id, judgement, decision, errno);
            return if errno == 0 { ALLOW } else { DENY };
        }
    };
    let sa = ctx.sock_addr;
    // SAFETY: context field reads, see `destination`.
    let (protocol, port) = unsafe { ((*sa).protocol, (*sa).user_port) };
    #[expect(clippy::cast_possible_truncation, reason = "port lives in the low 16 bits")]
    let port = u16::from_be(port as u16);
    #[expect(clippy::cast_possible_truncation, reason = "IPPROTO values fit in u8")]
    let protocol = protocol as u8;
    if binds(hook) {
        // The address bound (`0.0.0.0` is every local address, not loopback).
        let addr = raw_destination(ctx, family);
        let found = listen_rule_for(subject.slot, subject.identity, port, protocol);
        let judgement = Judgement::from_rule(found, subject.config.listen_default);
        let errno =
            emit::conclude(hook, &subject, judgement, &Target::Net { family, addr, port, proto: protocol });
        return if errno == 0 { ALLOW } else { DENY };
    }
    let addr = destination(ctx, family);
    let judgement = policy::quarantined(subject.identity, restrict::NETWORK).unwrap_or_else(|| {
        let found = rule_for(subject.slot, subject.identity, addr, port, protocol);
        let judged = Judgement::from_rule(found, subject.config.net_default);
        policy::granted_net(judged, subject.identity, addr, port, protocol)
    });
    let errno =
        emit::conclude(hook, &subject, judgement, &Target::Net { family, addr, port, proto: protocol });
    if errno == 0 { ALLOW } else { DENY }
}

/// First rule of the longest matching prefix entry that matches port and protocol.
#[inline(always)]
fn rule_for(slot: u32, identity: u32, addr: [u8; 16], port: u16, protocol: u8) -> (u8, u32) {
    let key = Key::new(NET_KEY_FIXED_BITS + 128, NetKey { slot, identity, addr });
    let Some(entry) = NET_RULES.get(&key) else {
        return (action::NONE, 0);
    };
    first_match(entry, port, protocol)
}

/// First `listen` rule of the identity that matches port and protocol.
#[inline(always)]
fn listen_rule_for(slot: u32, identity: u32, port: u16, protocol: u8) -> (u8, u32) {
    // SAFETY: plain value read once.
    let Some(entry) = (unsafe { LISTEN_RULES.get(&IdentityKey { identity, slot }) }) else {
        return (action::NONE, 0);
    };
    first_match(entry, port, protocol)
}

/// The first of `entry`'s rules that matches port and protocol.
#[inline(always)]
fn first_match(entry: &enforcer_common::maps::NetEntry, port: u16, protocol: u8) -> (u8, u32) {
    let count = entry.count as usize;
    for i in 0..MAX_NET_RULES_PER_PREFIX {
        if i >= count {
            break;
        }
        let rule = entry.rules[i];
        if (rule.proto == proto::ANY || rule.proto == protocol)
            && port >= rule.port_lo
            && port <= rule.port_hi
        {
            return (rule.action, rule.rule);
        }
    }
    (action::NONE, 0)
}

#[expect(clippy::too_many_arguments, reason = "flat for the verifier; all scalars")]
#[inline(always)]
fn report(
    ctx: &SockAddrContext,
    hook: u32,
    family: u16,
    slot: u32,
    identity: u32,
    cgroup_id: u64,
    judgement: Judgement,
    decision: u32,
    errno: i32,
) {
    let sa = ctx.sock_addr;
    // SAFETY: context field reads, see `destination`.
    let (protocol, port) = unsafe { ((*sa).protocol, (*sa).user_port) };
    #[expect(clippy::cast_possible_truncation, reason = "see judge")]
    let (port, protocol) = (u16::from_be(port as u16), protocol as u8);
    emit::verdict(
        &Verdict { hook, slot, identity, cgroup_id, judgement, decision, errno },
        &Target::Net {
            family,
            addr: if binds(hook) { raw_destination(ctx, family) } else { destination(ctx, family) },
            port,
            proto: protocol,
        },
    );
}
