//! Synthetic BTF blobs for tests: the types of a kernel of another era,
//! encoded as the kernel encodes them (include/uapi/linux/btf.h).

use std::path::Path;

use super::KernelBtf;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;

/// Builds a BTF blob type by type; ids start at 1 (0 is `void`).
pub struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Default for BtfBuilder {
    fn default() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }
}

impl BtfBuilder {
    fn name(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }

    fn push(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32, extra: &[u32]) -> u32 {
        let name = self.name(name);
        for word in [name, (kind << 24) | vlen, size_or_type]
            .iter()
            .chain(extra)
        {
            self.types.extend_from_slice(&word.to_le_bytes());
        }
        self.next_id += 1;
        self.next_id - 1
    }

    pub fn int(&mut self, name: &str, bytes: u32) -> u32 {
        self.push(name, KIND_INT, 0, bytes, &[bytes * 8])
    }

    pub fn ptr(&mut self, to: u32) -> u32 {
        self.push("", KIND_PTR, 0, to, &[])
    }

    /// Members are (name, type, bit offset).
    pub fn strct(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let mut extra = Vec::new();
        for (member, ty, bits) in members {
            extra.extend([self.name(member), *ty, *bits]);
        }
        self.push(name, KIND_STRUCT, members.len() as u32, size, &extra)
    }

    pub fn typedef(&mut self, name: &str, to: u32) -> u32 {
        self.push(name, KIND_TYPEDEF, 0, to, &[])
    }

    /// Unnamed parameters, as in tracepoint prototypes.
    pub fn func_proto(&mut self, ret: u32, params: &[u32]) -> u32 {
        let extra: Vec<u32> = params.iter().flat_map(|&t| [0, t]).collect();
        self.push("", KIND_FUNC_PROTO, params.len() as u32, ret, &extra)
    }

    pub fn build(self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version, flags
        let words = [
            24,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ];
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// Loads `blob` as a kernel's vmlinux BTF (the directory must outlive it
/// only while loading; it is returned to keep paths valid in messages).
pub fn load(blob: &[u8]) -> (tempfile::TempDir, KernelBtf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vmlinux"), blob).unwrap();
    let btf = KernelBtf::load(Path::new(dir.path())).expect("synthetic BTF parses");
    (dir, btf)
}
