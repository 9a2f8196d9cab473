//! Field offsets and symbols from the running kernel's BTF.
//!
//! The eBPF programs are compiled once for every kernel; what differs
//! between kernels (struct layouts, which functions and tracepoints exist) is
//! read here from `/sys/kernel/btf/vmlinux` and, for modules such as md_mod,
//! from their split BTF in `/sys/kernel/btf/<module>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use btf_rs::{Btf, BtfType, Type};
use fallible_iterator::FallibleIterator as _;

/// Where the kernel exposes its BTF.
pub const SYS_BTF_DIR: &str = "/sys/kernel/btf";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    #[error("BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("struct {strct} has no member {member} in this kernel's BTF")]
    NoMember { strct: String, member: String },
    #[error("{strct}.{member} is not a struct or union, cannot look inside it for {rest}")]
    NotAggregate {
        strct: String,
        member: String,
        rest: String,
    },
    #[error("BTF is inconsistent near {what}: {detail}")]
    Broken { what: String, detail: String },
}

/// Where a struct member lives, from the start of the struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberLocation {
    /// Offset of the byte holding the member's first bit.
    pub byte_offset: u32,
    /// For bitfields: the member's first bit within that byte and its width.
    pub bitfield: Option<(u32, u32)>,
}

/// What a tracepoint argument is, as far as the programs care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A pointer to `struct <name>` (`None`: to something else).
    StructPointer(Option<String>),
    /// An integer, `bool` or enum: a plain number in the argument array.
    Integer,
    Other,
}

/// The running kernel's BTF: vmlinux plus whatever module BTF was loaded.
pub struct KernelBtf {
    vmlinux: Btf,
    modules: BTreeMap<String, Btf>,
}

fn broken(what: impl Into<String>, detail: impl ToString) -> BtfError {
    BtfError::Broken {
        what: what.into(),
        detail: detail.to_string(),
    }
}

impl KernelBtf {
    /// Reads vmlinux BTF from `dir` (normally [`SYS_BTF_DIR`]).
    pub fn load(dir: &Path) -> Result<Self, BtfError> {
        let path = dir.join("vmlinux");
        let vmlinux = Btf::from_file(&path).map_err(|e| BtfError::Read {
            path: path.clone(),
            source: e,
        })?;
        Ok(Self {
            vmlinux,
            modules: BTreeMap::new(),
        })
    }

    /// Loads `module`'s split BTF if the module is loaded; returns whether
    /// it is available.
    pub fn load_module(&mut self, dir: &Path, module: &str) -> Result<bool, BtfError> {
        if self.modules.contains_key(module) {
            return Ok(true);
        }
        let path = dir.join(module);
        if !path.exists() {
            return Ok(false);
        }
        let btf = Btf::from_split_file(&path, &self.vmlinux).map_err(|e| BtfError::Read {
            path: path.clone(),
            source: e,
        })?;
        self.modules.insert(module.to_owned(), btf);
        Ok(true)
    }

    /// Forgets a module's BTF (it was unloaded; it may come back different).
    pub fn unload_module(&mut self, module: &str) {
        self.modules.remove(module);
    }

    pub fn has_module(&self, module: &str) -> bool {
        self.modules.contains_key(module)
    }

    /// The BTF to search: a module's (which also sees vmlinux types) or
    /// vmlinux's.
    fn source(&self, module: Option<&str>) -> Option<&Btf> {
        match module {
            None => Some(&self.vmlinux),
            Some(m) => self.modules.get(m),
        }
    }

    /// Whether the kernel (or `module`) has a function `name` in BTF, which
    /// is what fentry/fexit need to attach to it.
    pub fn has_func(&self, module: Option<&str>, name: &str) -> bool {
        self.source(module)
            .and_then(|btf| btf.resolve_types_by_name(name).ok())
            .is_some_and(|types| types.iter().any(|t| matches!(t, Type::Func(_))))
    }

    /// Whether a BTF-typed tracepoint `name` exists (its `btf_trace_<name>`
    /// typedef is what tp_btf programs attach through).
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.vmlinux
            .resolve_types_by_name(&format!("btf_trace_{name}"))
            .is_ok_and(|types| types.iter().any(|t| matches!(t, Type::Typedef(_))))
    }

    /// The arguments a BTF or raw tracepoint program sees for tracepoint
    /// `name`, in order: the prototype of its `btf_trace_<name>` typedef
    /// without the leading `void *__data`. This is where a tracepoint's
    /// signature changes between kernels show (`sched_switch` gained
    /// `prev_state` in 5.18).
    pub fn tracepoint_args(&self, name: &str) -> Result<Vec<ArgKind>, BtfError> {
        let btf = &self.vmlinux;
        let what = format!("btf_trace_{name}");
        let typedef = btf
            .resolve_types_by_name(&what)
            .ok()
            .and_then(|types| {
                types.into_iter().find_map(|t| match t {
                    Type::Typedef(t) => Some(t),
                    _ => None,
                })
            })
            .ok_or_else(|| BtfError::NoStruct { name: what.clone() })?;
        let Type::Ptr(ptr) = strip(btf, &typedef)? else {
            return Err(broken(&what, "not a function pointer"));
        };
        let Type::FuncProto(proto) = strip(btf, &ptr)? else {
            return Err(broken(&what, "not a function pointer"));
        };
        proto
            .parameters
            .iter()
            .skip(1)
            .map(|param| arg_kind(btf, param))
            .collect()
    }

    /// The value of enumerator `name` (e.g. `BIO_CHAIN`).
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        let mut types = self.vmlinux.type_iter();
        while let Ok(Some(ty)) = types.next() {
            match &ty {
                Type::Enum(e) => {
                    for m in &e.members {
                        if self.vmlinux.resolve_name(m).ok().as_deref() == Some(name) {
                            return Some(m.val() as i32 as i64);
                        }
                    }
                }
                Type::Enum64(e) => {
                    for m in &e.members {
                        if self.vmlinux.resolve_name(m).ok().as_deref() == Some(name) {
                            return Some(m.val() as i64);
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Locates `path` (`"thread.sp"`, `"bi_iter.bi_sector"`) inside struct
    /// `strct`, looking through anonymous unions and structs on the way.
    pub fn member(
        &self,
        module: Option<&str>,
        strct: &str,
        path: &str,
    ) -> Result<MemberLocation, BtfError> {
        let btf = self.source(module).ok_or_else(|| BtfError::NoStruct {
            name: format!("{strct} (module {} not loaded)", module.unwrap_or("?")),
        })?;
        let mut current = find_struct(btf, strct)?;
        let mut bits = 0u32;
        let mut bitfield = None;
        let mut walked = strct.to_owned();
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let (member_bits, member, size) =
                find_member(btf, &current, part)?.ok_or_else(|| BtfError::NoMember {
                    strct: walked.clone(),
                    member: (*part).to_owned(),
                })?;
            bits += member_bits;
            bitfield = size;
            if i + 1 < parts.len() {
                current = match strip(btf, &member)? {
                    Type::Struct(s) | Type::Union(s) => s,
                    _ => {
                        return Err(BtfError::NotAggregate {
                            strct: walked,
                            member: (*part).to_owned(),
                            rest: parts[i + 1..].join("."),
                        });
                    }
                };
            }
            walked = format!("{walked}.{part}");
        }
        Ok(MemberLocation {
            byte_offset: bits / 8,
            bitfield: bitfield.map(|size| (bits % 8, size)),
        })
    }
}

fn find_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct, BtfError> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|_| BtfError::NoStruct {
            name: name.to_owned(),
        })?;
    types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if s.size() > 0 => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct {
            name: name.to_owned(),
        })
}

/// Resolves typedefs and qualifiers down to the underlying type.
fn strip(btf: &Btf, ty: &dyn BtfType) -> Result<Type, BtfError> {
    let mut ty = btf
        .resolve_chained_type(ty)
        .map_err(|e| broken("a member's type", e))?;
    for _ in 0..32 {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) => btf.resolve_chained_type(t),
            Type::Volatile(t) => btf.resolve_chained_type(t),
            Type::Restrict(t) => btf.resolve_chained_type(t),
            Type::TypeTag(t) => btf.resolve_chained_type(t),
            _ => return Ok(ty),
        }
        .map_err(|e| broken("a typedef chain", e))?;
    }
    Err(broken("a typedef chain", "more than 32 levels"))
}

fn arg_kind(btf: &Btf, param: &btf_rs::Parameter) -> Result<ArgKind, BtfError> {
    Ok(match strip(btf, param)? {
        Type::Int(_) | Type::Enum(_) | Type::Enum64(_) => ArgKind::Integer,
        Type::Ptr(ptr) => match strip(btf, &ptr)? {
            Type::Struct(s) => ArgKind::StructPointer(btf.resolve_name(&s).ok()),
            _ => ArgKind::StructPointer(None),
        },
        _ => ArgKind::Other,
    })
}

/// Finds member `name` of `strct`, descending into anonymous members.
/// Returns its bit offset, the member, and its bitfield width if any.
fn find_member(
    btf: &Btf,
    strct: &btf_rs::Struct,
    name: &str,
) -> Result<Option<(u32, btf_rs::Member, Option<u32>)>, BtfError> {
    for member in &strct.members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        if member_name == name {
            let size = member.bitfield_size().filter(|&s| s != 0);
            return Ok(Some((member.bit_offset(), member.clone(), size)));
        }
        if member_name.is_empty()
            && let Type::Struct(inner) | Type::Union(inner) = strip(btf, member)?
            && let Some((bits, found, size)) = find_member(btf, &inner, name)?
        {
            return Ok(Some((member.bit_offset() + bits, found, size)));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Option<KernelBtf> {
        let dir = Path::new(SYS_BTF_DIR);
        dir.join("vmlinux")
            .exists()
            .then(|| KernelBtf::load(dir).expect("vmlinux BTF parses"))
    }

    /// Offsets on the running kernel: the values must agree with what the
    /// kernel's own layout implies, not merely exist.
    #[test]
    fn resolves_fields_of_this_kernel() {
        let Some(btf) = host() else {
            eprintln!("no /sys/kernel/btf/vmlinux on this machine; skipping");
            return;
        };
        // struct completion { unsigned int done; struct swait_queue_head wait; }
        let done = btf.member(None, "completion", "done").unwrap();
        let wait = btf.member(None, "completion", "wait").unwrap();
        assert_eq!(done.byte_offset, 0);
        assert_eq!(wait.byte_offset, 8, "swait_queue_head is 8-aligned");
        // bi_iter.bi_sector is the first member of struct bvec_iter.
        let iter = btf.member(None, "bio", "bi_iter").unwrap();
        let sector = btf.member(None, "bio", "bi_iter.bi_sector").unwrap();
        let size = btf.member(None, "bio", "bi_iter.bi_size").unwrap();
        assert_eq!(sector.byte_offset, iter.byte_offset);
        assert_eq!(size.byte_offset, iter.byte_offset + 8);
        // bi_next is the first member of struct bio.
        assert_eq!(btf.member(None, "bio", "bi_next").unwrap().byte_offset, 0);
        // in_iowait is a one-bit bitfield.
        let iowait = btf.member(None, "task_struct", "in_iowait").unwrap();
        assert_eq!(iowait.bitfield.map(|(_, w)| w), Some(1));
        // thread.sp lies inside task_struct, after thread.
        let thread = btf.member(None, "task_struct", "thread").unwrap();
        let sp = btf.member(None, "task_struct", "thread.sp").unwrap();
        assert!(sp.byte_offset >= thread.byte_offset);
        assert!(
            btf.enum_value("BIO_CHAIN")
                .is_some_and(|v| (0..16).contains(&v))
        );
        assert!(btf.has_func(None, "bio_endio"));
        assert!(btf.has_tracepoint("block_bio_queue"));
        assert!(!btf.has_tracepoint("no_such_tracepoint"));
    }

    #[test]
    fn missing_things_are_errors_not_panics() {
        let Some(btf) = host() else {
            return;
        };
        assert!(matches!(
            btf.member(None, "bio", "no_such_member"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member(None, "no_such_struct_xyz", "x"),
            Err(BtfError::NoStruct { .. })
        ));
        assert!(matches!(
            btf.member(None, "bio", "bi_next.x"),
            Err(BtfError::NotAggregate { .. })
        ));
        assert!(matches!(
            btf.member(Some("not_loaded_mod"), "mddev", "pending_writes"),
            Err(BtfError::NoStruct { .. })
        ));
        assert!(KernelBtf::load(Path::new("/nonexistent")).is_err());
    }
}
