//! Kernel stack ids from the `STACKS` map, turned into symbolized stacks.

use std::sync::Arc;

use aya::maps::{MapData, StackTraceMap};
use blazesym::MaybeDefault;
use blazesym::symbolize::source::{Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

use super::symbols::{ModuleRange, module_of, parse_modules};
use crate::event::{Addr, Frame, Stack, StackId, StackTable};

/// Resolves and caches stacks. Ids are stable for a session (the programs do
/// not reuse stack ids), so each id is read and symbolized once.
pub struct StackResolver {
    map: StackTraceMap<MapData>,
    symbolizer: Symbolizer,
    modules: Vec<ModuleRange>,
    table: StackTable,
}

impl StackResolver {
    pub fn new(map: StackTraceMap<MapData>) -> Self {
        let mut resolver = Self {
            map,
            symbolizer: Symbolizer::new(),
            modules: Vec::new(),
            table: StackTable::new(),
        };
        resolver.refresh_modules();
        resolver
    }

    /// Re-reads the module list (a module was loaded or unloaded). The
    /// symbolizer caches kallsyms, so it is rebuilt too.
    pub fn refresh_modules(&mut self) {
        let text = std::fs::read_to_string("/proc/modules").unwrap_or_default();
        self.modules = parse_modules(&text);
        self.symbolizer = Symbolizer::new();
    }

    /// The stack for `id`, reading and symbolizing it on first use. `None`
    /// if the kernel no longer has it.
    pub fn resolve(&mut self, id: StackId) -> Option<Arc<Stack>> {
        if let Some(stack) = self.table.get(id) {
            return Some(stack.clone());
        }
        let trace = self.map.get(&id.0, 0).ok()?;
        let addrs: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
        let stack = symbolize(&self.symbolizer, &self.modules, &addrs);
        Some(self.table.insert(id, stack))
    }

    /// What code lives at `addr`, symbolized once and remembered.
    pub fn symbol(&mut self, addr: Addr) -> Option<String> {
        if let Some(symbol) = self.table.symbol(addr) {
            return Some(symbol.to_owned());
        }
        let stack = symbolize(&self.symbolizer, &self.modules, &[addr.0]);
        let frame = stack.frames.first()?;
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

/// Symbolizes kernel addresses through kallsyms; unknown addresses keep
/// their raw value.
pub fn symbolize(symbolizer: &Symbolizer, modules: &[ModuleRange], addrs: &[u64]) -> Stack {
    let src = Source::Kernel(Kernel {
        vmlinux: MaybeDefault::None,
        debug_syms: false,
        ..Kernel::default()
    });
    let symbolized = symbolizer
        .symbolize(&src, Input::AbsAddr(addrs))
        .unwrap_or_default();
    let frames = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let (symbol, offset) = match symbolized.get(i) {
                Some(Symbolized::Sym(sym)) => (Some(sym.name.to_string()), sym.offset as u64),
                _ => (None, 0),
            };
            Frame {
                addr: Addr(addr),
                symbol,
                offset,
                module: module_of(modules, addr).map(str::to_owned),
            }
        })
        .collect();
    Stack { frames }
}
