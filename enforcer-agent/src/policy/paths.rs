//! Paths as policies name them: absolute and normalised, so one file has one spelling.

use enforcer_common::MAX_PATH;

/// Longest rule path in bytes.
pub const MAX_RULE_PATH: usize = MAX_PATH - 1;

/// Absolute, no `.` or `..` components; repeated and trailing slashes removed.
pub fn normalise(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not absolute"));
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    let mut out = String::with_capacity(path.len());
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(format!("{path:?} contains {part:?}; write the path without it"));
        }
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    if out.len() > MAX_RULE_PATH {
        return Err(format!("{} bytes exceed the limit of {MAX_RULE_PATH}", out.len()));
    }
    Ok(out)
}
