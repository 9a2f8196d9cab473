//! Kernel stack ids from the `STACKS` map, turned into symbolized stacks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{MapData, StackTraceMap};

use super::kallsyms::{Kallsyms, UNKNOWN_MODULE, read_modules};
use crate::event::{Addr, Frame, Stack, StackId, StackTable};

/// How long a module list is trusted before a stack is symbolized: module
/// loads and unloads between a stack's capture and its symbolization are
/// what turn frames into wrong names.
const MODULES_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Resolves and caches stacks. Ids are stable for a session (the programs do
/// not reuse stack ids), so each id is read and symbolized once.
pub struct StackResolver {
    map: StackTraceMap<MapData>,
    /// Read on first use: parsing kallsyms takes a while, and the session
    /// starts its reader before it needs a symbol.
    symbols: Option<Kallsyms>,
    modules_checked: Instant,
    table: StackTable,
}

impl StackResolver {
    pub fn new(map: StackTraceMap<MapData>) -> Self {
        Self {
            map,
            symbols: None,
            modules_checked: Instant::now(),
            table: StackTable::new(),
        }
    }

    /// Takes a new kallsyms snapshot if modules were loaded or unloaded.
    pub fn refresh_modules(&mut self) {
        self.modules_checked = Instant::now();
        if self
            .symbols
            .as_ref()
            .is_some_and(|s| s.stale(&read_modules()))
        {
            self.symbols = Some(Kallsyms::read());
        }
    }

    /// The current snapshot, checked against the module list if due.
    fn symbols(&mut self) -> &Kallsyms {
        if self.modules_checked.elapsed() >= MODULES_CHECK_EVERY {
            self.refresh_modules();
        }
        self.symbols.get_or_insert_with(Kallsyms::read)
    }

    /// The stack for `id`, reading and symbolizing it on first use. `None`
    /// if the kernel no longer has it.
    pub fn resolve(&mut self, id: StackId) -> Option<Arc<Stack>> {
        if let Some(stack) = self.table.get(id) {
            return Some(stack.clone());
        }
        let trace = self.map.get(&id.0, 0).ok()?;
        let addrs: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
        let stack = symbolize(self.symbols(), &addrs);
        Some(self.table.insert(id, stack))
    }

    /// What code lives at `addr`, symbolized once and remembered.
    pub fn symbol(&mut self, addr: Addr) -> Option<String> {
        if let Some(symbol) = self.table.symbol(addr) {
            return Some(symbol.to_owned());
        }
        let frame = self.symbols().frame(addr.0);
        frame.symbol.as_ref()?;
        let text = frame.to_string();
        self.table.insert_symbol(addr, text.clone());
        Some(text)
    }

    /// Every stack resolved so far.
    pub fn table(&self) -> &StackTable {
        &self.table
    }
}

/// Symbolizes kernel addresses, without detector's own BPF frames on top.
pub fn symbolize(symbols: &Kallsyms, addrs: &[u64]) -> Stack {
    let frames: Vec<Frame> = addrs.iter().map(|&a| symbols.frame(a)).collect();
    Stack {
        frames: without_own_frames(frames),
    }
}

/// Drops the frames of detector's own programs from the top of a stack: a
/// stack taken from a fentry or tracepoint program starts in the program
/// (`bpf_prog_*`) and its trampoline (`bpf_trampoline_*`), before the
/// hooked function. Unnamed frames among them (a program whose symbol is
/// hidden, `net.core.bpf_jit_kallsyms=0`) go too, up to the last BPF frame.
pub fn without_own_frames(mut frames: Vec<Frame>) -> Vec<Frame> {
    let is_bpf = |f: &Frame| {
        f.module.as_deref() == Some("bpf")
            || f.symbol
                .as_deref()
                .is_some_and(|s| s.starts_with("bpf_prog_") || s.starts_with("bpf_trampoline_"))
    };
    let unnamed = |f: &Frame| f.symbol.is_none() && f.module.as_deref() == Some(UNKNOWN_MODULE);
    let leading = frames
        .iter()
        .take_while(|f| is_bpf(f) || unnamed(f))
        .count();
    let own = frames[..leading]
        .iter()
        .rposition(is_bpf)
        .map_or(0, |last| last + 1);
    frames.drain(..own);
    // Deeper down, a traced function called through its trampoline (fexit
    // runs the function inside the trampoline's frame) shows the
    // trampoline between it and its caller: that is detector's too.
    frames.retain(|f| {
        !f.symbol
            .as_deref()
            .is_some_and(|s| s.starts_with("bpf_trampoline_"))
    });
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81000100 T bio_endio
ffffffff81000300 T blk_update_request
ffffffff81e00000 T _etext
ffffffffc0400000 t bpf_trampoline_6442\t[bpf]
ffffffffc0401000 t bpf_prog_1a2b3c4d5e6f_enter_bio_endio\t[bpf]
";

    fn names(stack: &Stack) -> Vec<String> {
        stack.frames.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn fentry_stacks_start_at_the_hooked_function() {
        let t = Kallsyms::parse(KALLSYMS, "");
        let stack = symbolize(
            &t,
            &[
                0xffffffffc0401010,
                0xffffffffc0400030,
                0xffffffff81000105,
                0xffffffff81000310,
            ],
        );
        assert_eq!(names(&stack), ["bio_endio+0x5", "blk_update_request+0x10"]);
    }

    #[test]
    fn hidden_program_symbols_go_with_their_trampoline() {
        // The program's own symbol is hidden; its trampoline is not.
        let t = Kallsyms::parse(
            &KALLSYMS
                .replace("bpf_prog_1a2b3c4d5e6f_enter_bio_endio", "x")
                .replace("ffffffffc0401000 t x\t[bpf]\n", ""),
            "",
        );
        let stack = symbolize(
            &t,
            &[0xffffffffc0501010, 0xffffffffc0400030, 0xffffffff81000105],
        );
        assert_eq!(names(&stack), ["bio_endio+0x5"]);
    }

    #[test]
    fn trampolines_of_traced_callers_go_too() {
        // bio_endio nested in bio_endio: the outer call runs inside its
        // fexit trampoline, which shows between it and the inner one.
        let t = Kallsyms::parse(KALLSYMS, "");
        let stack = symbolize(
            &t,
            &[
                0xffffffffc0401010,
                0xffffffffc0400030,
                0xffffffff81000105,
                0xffffffff81000310,
                0xffffffffc0400070,
                0xffffffff81000105,
            ],
        );
        assert_eq!(
            names(&stack),
            ["bio_endio+0x5", "blk_update_request+0x10", "bio_endio+0x5"]
        );
    }

    #[test]
    fn unknown_frames_without_bpf_stay() {
        // An unloaded module's frame on top of a kprobe stack is evidence.
        let t = Kallsyms::parse(KALLSYMS, "");
        let stack = symbolize(&t, &[0xffffffffc0601010, 0xffffffff81000105]);
        assert_eq!(
            names(&stack),
            ["0xffffffffc0601010 [unknown module]", "bio_endio+0x5"]
        );
    }
}
