//! CIDR parsing and prefix matching, in one place for validation, compilation, `check`,
//! grants and the kernel model. Prefix arithmetic is ipnet's; addresses are kept in the
//! kernel's form, IPv6 with IPv4 mapped into `::ffff:0:0/96`.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A CIDR as (IPv6-form address, prefix bits); a bare address is one host.
pub fn cidr(text: &str) -> Result<([u8; 16], u8), String> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text.trim().parse().map_err(|_| format!("{addr_text:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len_text {
        None => max,
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("prefix length {l:?} is not between 0 and {max}"))?,
    };
    let net = match addr {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, len).map_err(|e| e.to_string())?),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new(v6, len).map_err(|e| e.to_string())?),
    };
    // Host bits must be zero: 10.0.0.1/8 is almost always a typo.
    if net.trunc() != net {
        return Err(format!("{text:?} has host bits set; did you mean the network address?"));
    }
    Ok(match net {
        IpNet::V4(v4) => (v4.addr().to_ipv6_mapped().octets(), 96 + v4.prefix_len()),
        IpNet::V6(v6) => (v6.addr().octets(), v6.prefix_len()),
    })
}

/// Whether the prefix `bits` of `prefix` covers `addr` (both in IPv6 form).
pub fn contains(prefix: &[u8; 16], bits: u8, addr: &[u8; 16]) -> bool {
    Ipv6Net::new(Ipv6Addr::from(*prefix), bits).is_ok_and(|net| net.contains(&Ipv6Addr::from(*addr)))
}

/// `addr` with every bit after the first `bits` cleared: the network address of the prefix
/// of that length holding it.
pub fn masked(addr: &[u8; 16], bits: u8) -> [u8; 16] {
    let mask = u128::MAX.checked_shl(128 - u32::from(bits.min(128))).unwrap_or(0);
    (u128::from_be_bytes(*addr) & mask).to_be_bytes()
}

/// An address in IPv6 form (IPv4 mapped), as the kernel programs see destinations.
pub fn v6_form(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches_both_families() {
        let (addr, bits) = cidr("10.1.0.0/16").unwrap();
        assert_eq!(bits, 96 + 16);
        assert!(contains(&addr, bits, &v6_form("10.1.2.3".parse().unwrap())));
        assert!(!contains(&addr, bits, &v6_form("10.2.0.1".parse().unwrap())));
        assert!(contains(&addr, bits, &v6_form("::ffff:10.1.9.9".parse().unwrap())));
        let (all, zero) = cidr("::/0").unwrap();
        assert!(contains(&all, zero, &v6_form("192.0.2.1".parse().unwrap())));
        assert_eq!(cidr("192.0.2.7").unwrap().1, 128);
        assert!(cidr("10.0.0.1/8").unwrap_err().contains("host bits"));
        assert!(cidr("10.0.0.0/33").unwrap_err().contains("prefix length"));
        assert!(cidr("300.1.1.1").unwrap_err().contains("not an IP address"));
    }

    #[test]
    fn masks_to_the_network_address() {
        let addr = v6_form("10.1.2.3".parse().unwrap());
        assert_eq!(masked(&addr, 96 + 16), cidr("10.1.0.0/16").unwrap().0);
        assert_eq!(masked(&addr, 128), addr);
        assert_eq!(masked(&addr, 0), [0; 16]);
        assert_eq!(masked(&addr, 1), [0; 16]);
    }
}
