//! Addresses of kernel data symbols, from `/proc/kallsyms`.
//!
//! The file is three whitespace-separated fields a line (address, type, name, and a
//! module name in brackets for module symbols); parsing it needs no crate. Read line by
//! line: it is several megabytes, and the agent keeps none of it.

use std::{
    fs::File,
    io::{BufRead, BufReader},
};

/// The sequence lock the kernel moves at every change of the mount tree: part of the
/// open cache's invalidation.
pub const MOUNT_LOCK: &str = "mount_lock";

/// The addresses of the built-in data symbols `names`, in order; 0 for any not listed
/// (kernels built without `CONFIG_KALLSYMS_ALL` list no data symbols) or hidden (listed
/// as 0 to a reader without `CAP_SYSLOG`).
pub fn data_addresses<const N: usize>(names: [&str; N]) -> [u64; N] {
    let Ok(file) = File::open("/proc/kallsyms") else {
        return [0; N];
    };
    find(BufReader::new(file).lines().map_while(Result::ok), names)
}

/// [`data_addresses`] over the lines of a kallsyms listing.
fn find<const N: usize>(lines: impl Iterator<Item = String>, names: [&str; N]) -> [u64; N] {
    let mut found = [0; N];
    for line in lines {
        let mut fields = line.split_ascii_whitespace();
        let (Some(address), Some(kind), Some(name), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !matches!(kind, "D" | "d" | "B" | "b") {
            continue;
        }
        if let Some(at) = names.iter().position(|n| *n == name)
            && let Ok(address) = u64::from_str_radix(address, 16)
        {
            found[at] = address;
        }
        if found.iter().all(|a| *a != 0) {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> impl Iterator<Item = String> + '_ {
        text.lines().map(str::to_owned)
    }

    #[test]
    fn finds_data_symbols_of_the_kernel_itself() {
        let listing = "ffffffff81000000 T _text\n\
                       ffffffff82a4c0c0 B rename_lock\n\
                       ffffffffc0a01000 d mount_lock\t[some_module]\n\
                       ffffffff82a4d100 D mount_lock\n";
        assert_eq!(
            find(lines(listing), ["rename_lock", MOUNT_LOCK]),
            [0xffff_ffff_82a4_c0c0, 0xffff_ffff_82a4_d100]
        );
    }

    #[test]
    fn missing_functions_and_hidden_symbols_read_zero() {
        let listing = "ffffffff81234560 T rename_lock\n0000000000000000 D mount_lock\ngarbage\n";
        assert_eq!(find(lines(listing), ["rename_lock", MOUNT_LOCK]), [0, 0]);
    }
}
