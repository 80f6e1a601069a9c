//! Just enough of a BTF reader to find struct member offsets in the running kernel's
//! `/sys/kernel/btf/vmlinux`, so one eBPF object works across kernel versions.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF struct {0} has no member {1}")]
    NoMember(String, String),
}

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// A parsed BTF blob: every type's header and the offset of its extra data.
pub struct Btf {
    data: Vec<u8>,
    types: Vec<TypeEntry>,
    strings_at: usize,
    strings_len: usize,
}

#[derive(Clone, Copy)]
struct TypeEntry {
    name_off: u32,
    info: u32,
    /// Byte offset of the entry's trailing data (members etc.) in `data`.
    extra_at: usize,
}

impl TypeEntry {
    fn kind(self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(self) -> bool {
        self.info >> 31 == 1
    }
}

impl Btf {
    pub fn from_sys() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path)
            .map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if u16_at(0) != Some(MAGIC) {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(4).ok_or(BtfError::Malformed("short header"))? as usize;
        let field =
            |i: usize| u32_at(8 + 4 * i).map(|v| v as usize).ok_or(BtfError::Malformed("short header"));
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let types_at = hdr_len + type_off;
        let strings_at = hdr_len + str_off;
        if types_at + type_len > data.len() || strings_at + str_len > data.len() {
            return Err(BtfError::Malformed("sections out of bounds"));
        }
        // Type id 0 is void; ids start at 1.
        let mut types = vec![TypeEntry { name_off: 0, info: 0, extra_at: 0 }];
        let mut at = types_at;
        while at < types_at + type_len {
            let name_off = u32_at(at).ok_or(BtfError::Malformed("truncated type"))?;
            let info = u32_at(at + 4).ok_or(BtfError::Malformed("truncated type"))?;
            let entry = TypeEntry { name_off, info, extra_at: at + 12 };
            let vlen = entry.vlen();
            let extra = match entry.kind() {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            types.push(entry);
            at += 12 + extra;
        }
        Ok(Self { data, types, strings_at, strings_len: str_len })
    }

    fn u32_at(&self, offset: usize) -> u32 {
        let b = &self.data[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn name(&self, offset: u32) -> &[u8] {
        let start = self.strings_at + offset as usize;
        let end = self.strings_at + self.strings_len;
        let bytes = &self.data[start.min(end)..end];
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        &bytes[..len]
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous unions and
    /// structs.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u64, BtfError> {
        let id = self
            .types
            .iter()
            .position(|t| t.kind() == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
        self.find_member(id, member.as_bytes(), 0)
            .ok_or_else(|| BtfError::NoMember(name.to_owned(), member.to_owned()))
    }

    fn find_member(&self, id: usize, member: &[u8], depth: u32) -> Option<u64> {
        let t = *self.types.get(id)?;
        if depth > 8 || !matches!(t.kind(), KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for i in 0..t.vlen() {
            let at = t.extra_at + 12 * i;
            let name_off = self.u32_at(at);
            let type_id = self.u32_at(at + 4) as usize;
            let raw = self.u32_at(at + 8);
            let bits = if t.kind_flag() { raw & 0x00ff_ffff } else { raw };
            let name = self.name(name_off);
            if name == member {
                return Some(u64::from(bits / 8));
            }
            if name.is_empty()
                && let Some(inner) = self.find_member(self.resolve(type_id), member, depth + 1)
            {
                return Some(u64::from(bits / 8) + inner);
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: usize) -> usize {
        for _ in 0..16 {
            let Some(t) = self.types.get(id) else { return id };
            // typedef, volatile, const, restrict, type_tag
            if matches!(t.kind(), 8 | 9 | 10 | 11 | 18) {
                id = self.u32_at(t.extra_at - 4) as usize;
            } else {
                break;
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built BTF blob: struct inner { int a; int b; }; struct outer { int x; union { int y; struct inner z; }; }
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0a\0b\0inner\0x\0y\0z\0outer\0";
        let s = |name: &str| -> u32 {
            let pos = strings
                .windows(name.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=name.len()] == name.as_bytes() && w[name.len() + 1] == 0)
                .unwrap();
            u32::try_from(pos + 1).unwrap()
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: struct inner { a @0, b @32 }
        push(&[s("inner"), (KIND_STRUCT << 24) | 2, 8, s("a"), 1, 0, s("b"), 1, 32]);
        // 3: anonymous union { y: int, z: inner }
        push(&[0, (KIND_UNION << 24) | 2, 8, s("y"), 1, 0, s("z"), 2, 0]);
        // 4: struct outer { x @0, <anon union> @64 }
        push(&[s("outer"), (KIND_STRUCT << 24) | 2, 16, s("x"), 1, 0, 0, 3, 64]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            u32::try_from(types.len()).unwrap(),
            u32::try_from(types.len()).unwrap(),
            u32::try_from(strings.len()).unwrap(),
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(sample()).unwrap();
        assert_eq!(btf.member_offset("inner", "b").unwrap(), 4);
        assert_eq!(btf.member_offset("outer", "x").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "y").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "z").unwrap(), 8);
    }

    #[test]
    fn names_what_is_missing() {
        let btf = Btf::parse(sample()).unwrap();
        assert!(matches!(btf.member_offset("nope", "x"), Err(BtfError::NoStruct(s)) if s == "nope"));
        assert!(matches!(btf.member_offset("outer", "q"), Err(BtfError::NoMember(_, m)) if m == "q"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(Btf::parse(vec![1, 2, 3]), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn reads_the_running_kernel() {
        let btf = Btf::from_sys().expect("the build host must expose /sys/kernel/btf/vmlinux");
        assert!(btf.member_offset("file", "f_path").is_ok());
        assert!(btf.member_offset("linux_binprm", "file").is_ok());
    }
}
