//! Kernel stacks quoted by events, symbolized once and shared.

use rustc_hash::FxHashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Addr;

/// Id of a stack in the kernel's stack-trace map (and in record files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StackId(pub u32);

/// One return address, symbolized when the symbol is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub addr: Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(default)]
    pub offset: u64,
    /// Kernel module holding the symbol; `None` for vmlinux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl fmt::Display for Frame {
    /// `bio_endio+0x1d`, `super_written+0x3c [md_mod]`, or the bare address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.symbol {
            Some(symbol) => write!(f, "{symbol}+{:#x}", self.offset)?,
            None => write!(f, "{}", self.addr)?,
        }
        if let Some(module) = &self.module {
            write!(f, " [{module}]")?;
        }
        Ok(())
    }
}

/// A kernel stack, innermost frame first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    pub frames: Vec<Frame>,
}

impl Stack {
    /// The innermost frame that is not detector's own hook machinery
    /// (trampolines, bpf_trace_run*, kprobe handlers).
    pub fn frames_without_hooks(&self) -> impl Iterator<Item = &Frame> {
        let skip = self
            .frames
            .iter()
            .take_while(|f| f.symbol.as_deref().is_some_and(is_hook_machinery))
            .count();
        self.frames.iter().skip(skip)
    }
}

/// Symbols that belong to the tracing machinery, not to the traced kernel.
fn is_hook_machinery(symbol: &str) -> bool {
    symbol.starts_with("bpf_")
        || symbol.starts_with("__bpf_")
        || symbol.starts_with("__traceiter_")
        || symbol.starts_with("trace_call_bpf")
        || symbol.starts_with("kprobe_")
        || symbol.starts_with("perf_trace_")
        || symbol.starts_with("arch_rethook")
        || symbol.contains("kprobe_ftrace_handler")
        || symbol.contains("kretprobe_trampoline")
        || symbol.starts_with("rethook_")
        || symbol.starts_with("pre_handler_kretprobe")
        || symbol.starts_with("aggr_pre_handler")
        || symbol.starts_with("opt_pre_handler")
        || symbol.starts_with("optimized_callback")
        || symbol.starts_with("ftrace_")
        || symbol == "asm_exc_int3"
        || symbol == "exc_int3"
}

/// Stacks by id, as collected during a session or read from a record, and
/// the symbols of code addresses events carry (a bio's `bi_end_io`).
#[derive(Clone, Debug, Default)]
pub struct StackTable {
    stacks: FxHashMap<StackId, Arc<Stack>>,
    symbols: FxHashMap<Addr, String>,
}

impl StackTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, id: StackId, stack: Stack) -> Arc<Stack> {
        let stack = Arc::new(stack);
        self.stacks.insert(id, stack.clone());
        stack
    }

    pub fn get(&self, id: StackId) -> Option<&Arc<Stack>> {
        self.stacks.get(&id)
    }

    pub fn contains(&self, id: StackId) -> bool {
        self.stacks.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (StackId, &Arc<Stack>)> {
        self.stacks.iter().map(|(id, stack)| (*id, stack))
    }

    /// Remembers what code lives at `addr` (`ext4_end_bio+0x0`).
    pub fn insert_symbol(&mut self, addr: Addr, symbol: String) {
        self.symbols.insert(addr, symbol);
    }

    pub fn symbol(&self, addr: Addr) -> Option<&str> {
        self.symbols.get(&addr).map(String::as_str)
    }

    /// `addr` as its symbol when known, else as hex.
    pub fn describe(&self, addr: Addr) -> String {
        match self.symbol(addr) {
            Some(symbol) => format!("{symbol} ({addr})"),
            None => addr.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(symbol: &str) -> Frame {
        Frame {
            addr: Addr(0xffffffff81000000),
            symbol: Some(symbol.to_owned()),
            offset: 0x10,
            module: None,
        }
    }

    #[test]
    fn hook_frames_are_skipped() {
        let stack = Stack {
            frames: vec![
                frame("bpf_prog_1234_enter_bio_endio"),
                frame("bpf_trampoline_6442"),
                frame("bio_endio"),
                frame("blk_update_request"),
            ],
        };
        let names: Vec<_> = stack
            .frames_without_hooks()
            .map(|f| f.symbol.clone().unwrap())
            .collect();
        assert_eq!(names, ["bio_endio", "blk_update_request"]);
    }

    #[test]
    fn frame_display() {
        let mut f = frame("super_written");
        f.module = Some("md_mod".into());
        assert_eq!(f.to_string(), "super_written+0x10 [md_mod]");
    }
}
