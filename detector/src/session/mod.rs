//! The one pipeline every front end shares: events in (from the kernel or
//! a file), counted, filtered, analysed by the engine, and handed with the
//! findings to the session's sinks: the terminal, a record file, the
//! findings store, metrics, the log. `detector trace`, `detector replay`
//! and `detector run` differ only in where events come from ([`live`],
//! [`replay`]) and which sinks they attach.

pub mod live;
pub mod recorder;
pub mod replay;
pub mod terminal;

use std::io;
use std::sync::Arc;

use crate::clock::monotonic_ns;
use crate::engine::{Engine, EngineConfig, EngineStats, Finding};
use crate::event::{Addr, Event, EventKind, Stack, StackId, StackTable};
use crate::filter::EventFilter;
use crate::kernel::stacks::StackResolver;
use crate::report::stats::Latency;
use crate::summary::Summary;

/// Where stacks and symbols come from: the kernel (live) or a file.
pub trait Stacks {
    fn stack(&mut self, id: StackId) -> Option<Arc<Stack>>;
    fn symbol(&mut self, addr: Addr) -> Option<String>;
    fn table(&self) -> &StackTable;
    /// A stack a file carries (record files store each stack once).
    fn add_stack(&mut self, id: StackId, stack: Stack);
    /// A symbol a file carries.
    fn add_symbol(&mut self, addr: Addr, name: String);

    /// Makes sure `addr`'s symbol is in the table (without copying it out:
    /// this runs for every bio event).
    fn learn_symbol(&mut self, addr: Addr) {
        if self.table().symbol(addr).is_none() {
            let _ = self.symbol(addr);
        }
    }
    /// Kernel modules were loaded or unloaded: addresses may mean new
    /// symbols.
    fn modules_changed(&mut self) {}
}

impl Stacks for StackResolver {
    fn stack(&mut self, id: StackId) -> Option<Arc<Stack>> {
        self.resolve(id)
    }
    fn symbol(&mut self, addr: Addr) -> Option<String> {
        StackResolver::symbol(self, addr)
    }
    fn table(&self) -> &StackTable {
        StackResolver::table(self)
    }
    fn add_stack(&mut self, _id: StackId, _stack: Stack) {
        // Live stacks come from the kernel's map, never from a file.
    }
    fn add_symbol(&mut self, _addr: Addr, _name: String) {}
    fn modules_changed(&mut self) {
        self.refresh_modules();
    }
}

impl Stacks for StackTable {
    fn stack(&mut self, id: StackId) -> Option<Arc<Stack>> {
        self.get(id).cloned()
    }
    fn symbol(&mut self, addr: Addr) -> Option<String> {
        StackTable::symbol(self, addr).map(str::to_owned)
    }
    fn table(&self) -> &StackTable {
        self
    }
    fn add_stack(&mut self, id: StackId, stack: Stack) {
        self.insert(id, stack);
    }
    fn add_symbol(&mut self, addr: Addr, name: String) {
        self.insert_symbol(addr, name);
    }
}

impl Stacks for Box<dyn Stacks> {
    fn stack(&mut self, id: StackId) -> Option<Arc<Stack>> {
        (**self).stack(id)
    }
    fn symbol(&mut self, addr: Addr) -> Option<String> {
        (**self).symbol(addr)
    }
    fn table(&self) -> &StackTable {
        (**self).table()
    }
    fn add_stack(&mut self, id: StackId, stack: Stack) {
        (**self).add_stack(id, stack)
    }
    fn add_symbol(&mut self, addr: Addr, name: String) {
        (**self).add_symbol(addr, name)
    }
    fn learn_symbol(&mut self, addr: Addr) {
        (**self).learn_symbol(addr)
    }
    fn modules_changed(&mut self) {
        (**self).modules_changed()
    }
}

/// The completion handler an event names, if any.
pub fn end_io_of(ev: &Event) -> Option<Addr> {
    match &ev.kind {
        EventKind::BioQueue { end_io, .. } | EventKind::BioEndio { end_io, .. } => {
            (!end_io.is_null()).then_some(*end_io)
        }
        _ => None,
    }
}

/// One event as the sinks see it.
pub struct SessionEvent<'a> {
    pub ev: &'a Event,
    /// The filters keep it: it is shown and recorded. Sinks that count
    /// (metrics) see every event; sinks that show, only kept ones.
    pub kept: bool,
    /// Bookkeeping for the engine and the record file (a loss check), not
    /// news: only a record file takes it.
    pub bookkeeping: bool,
    /// Its stack, when it has one and the kernel still had it.
    pub stack: Option<(StackId, &'a Arc<Stack>)>,
    pub stacks: &'a StackTable,
}

/// One finding as the sinks see it: it passed the filters.
pub struct Emitted<'a> {
    pub finding: &'a Finding,
    /// Its stable id ([`Finding::id`]).
    pub id: &'a str,
    /// The stacks and symbols it quotes.
    pub stacks: &'a StackTable,
}

/// Something that takes the session's output. Sinks run in the order they
/// were attached; for a finding that order is a promise (the findings store
/// comes first, so a finding is on disk before it is logged or counted).
pub trait Sink {
    fn event(&mut self, _ev: &SessionEvent<'_>) -> io::Result<()> {
        Ok(())
    }
    fn finding(&mut self, _found: &Emitted<'_>) -> io::Result<()> {
        Ok(())
    }
    /// After each batch of events: push buffered output out.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// About once a second: make what was written durable.
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The end; returns a line for the session summary, if any.
    fn finish(&mut self) -> io::Result<Option<String>> {
        Ok(None)
    }
    /// The sink's reader went away (stdout closed): nothing more is wanted.
    fn closed(&self) -> bool {
        false
    }
}

pub struct SessionOptions {
    pub filter: EventFilter,
    /// When the session starts (every hook attached): earlier events are
    /// left out.
    pub start_ns: u64,
    /// Keep the end-of-session summary (per device, bios in flight). A
    /// daemon leaves it off: it is for a session that ends, and its table
    /// of bios in flight would grow for weeks on devices whose completions
    /// cannot be seen. The per-CPU heartbeat is kept either way.
    pub summary: bool,
    /// Live sessions: record how long after the event that broke an
    /// invariant each finding was emitted (event times are this host's
    /// CLOCK_MONOTONIC, so "now" minus the finding's time).
    pub measure_latency: bool,
}

/// Findings whose detection latency is kept: enough for percentiles,
/// bounded for a session that finds something forever.
const MAX_LATENCY_SAMPLES: usize = 1 << 16;

pub struct Session<S: Stacks> {
    opts: SessionOptions,
    pub stacks: S,
    pub summary: Summary,
    engine: Engine,
    findings: Vec<Finding>,
    sinks: Vec<Box<dyn Sink>>,
    /// Findings that passed the filters.
    pub findings_shown: u64,
    /// Events from before every hook was attached, left out.
    pub before_start: u64,
    finished: bool,
    /// Detection latency of each finding shown, in ns (live sessions).
    latencies: Vec<u64>,
}

impl<S: Stacks> Session<S> {
    pub fn new(opts: SessionOptions, stacks: S, engine: Engine) -> Self {
        Self {
            opts,
            stacks,
            summary: Summary::new(),
            engine,
            findings: Vec::new(),
            sinks: Vec::new(),
            findings_shown: 0,
            before_start: 0,
            finished: false,
            latencies: Vec::new(),
        }
    }

    /// Attaches a sink after those already attached.
    pub fn attach(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    pub fn filter(&self) -> &EventFilter {
        &self.opts.filter
    }

    /// Whether a sink's reader went away (e.g. stdout piped into `head`).
    pub fn output_closed(&self) -> bool {
        self.sinks.iter().any(|s| s.closed())
    }

    /// Handles one event; errors are the sinks' (a record file that cannot
    /// be written).
    pub fn event(&mut self, mut ev: Event) -> io::Result<()> {
        // The session starts once every hook is attached: before, some
        // hooks saw what others missed (an entry without its exit), which
        // would read as a broken lifecycle. Losses still count.
        if ev.ts < self.opts.start_ns {
            match ev.kind {
                EventKind::Lost { .. } | EventKind::LossChecked { .. } => {
                    ev.ts = self.opts.start_ns
                }
                _ => {
                    self.before_start += 1;
                    return Ok(());
                }
            }
        }
        if let EventKind::LossChecked { .. } = ev.kind {
            let view = SessionEvent {
                ev: &ev,
                kept: false,
                bookkeeping: true,
                stack: None,
                stacks: self.stacks.table(),
            };
            for sink in &mut self.sinks {
                sink.event(&view)?;
            }
            self.engine.push_into(ev, &mut self.findings);
            return self.report_findings();
        }
        if !matches!(
            ev.kind,
            EventKind::Lost { .. } | EventKind::SyscallHooks { .. }
        ) {
            self.summary.heartbeat.observe(ev.cpu, ev.ts);
        }
        // Every stack and handler is resolved, shown or not: a finding may
        // quote it.
        let stack = ev
            .stack
            .and_then(|id| self.stacks.stack(id).map(|s| (id, s)));
        if let Some((id, stack)) = &stack {
            self.engine.learn_stack(*id, stack);
        }
        if let Some(end_io) = end_io_of(&ev) {
            self.stacks.learn_symbol(end_io);
        }
        let kept = self.opts.filter.keep(&ev);
        if kept && self.opts.summary {
            self.summary.observe(&ev);
        }
        let view = SessionEvent {
            ev: &ev,
            kept,
            bookkeeping: false,
            stack: stack.as_ref().map(|(id, s)| (*id, s)),
            stacks: self.stacks.table(),
        };
        for sink in &mut self.sinks {
            sink.event(&view)?;
        }
        self.engine.push_into(ev, &mut self.findings);
        self.report_findings()
    }

    /// The clock moved to `now` (every drain): deadlines that passed fire
    /// now, while the condition still holds. 0 says nothing about the
    /// clock (a partial drain).
    pub fn tick(&mut self, now: u64) -> io::Result<()> {
        if now == 0 {
            return Ok(());
        }
        let found = self.engine.advance(now);
        self.findings.extend(found);
        self.report_findings()
    }

    fn report_findings(&mut self) -> io::Result<()> {
        if self.findings.is_empty() {
            return Ok(());
        }
        let mut findings = std::mem::take(&mut self.findings);
        let mut result = Ok(());
        let now = self.opts.measure_latency.then(monotonic_ns);
        for finding in &findings {
            if !self.opts.filter.selects_finding(finding) {
                continue;
            }
            self.findings_shown += 1;
            if let Some(now) = now
                && self.latencies.len() < MAX_LATENCY_SAMPLES
            {
                self.latencies.push(now.saturating_sub(finding.ts));
            }
            let id = finding.id();
            let found = Emitted {
                finding,
                id: &id,
                stacks: self.stacks.table(),
            };
            for sink in &mut self.sinks {
                if let Err(e) = sink.finding(&found) {
                    result = Err(e);
                }
            }
        }
        findings.clear();
        self.findings = findings;
        result
    }

    /// New engine thresholds and rules, and new filters, while running.
    pub fn reconfigure(&mut self, engine: &EngineConfig, filter: EventFilter) {
        self.engine.reconfigure(engine);
        self.opts.filter = filter;
    }

    /// The engine's counters so far.
    pub fn engine_stats(&self) -> EngineStats {
        self.engine.stats()
    }

    /// Detection latency of the findings shown so far (live sessions).
    pub fn latency(&self) -> Option<Latency> {
        self.opts
            .measure_latency
            .then(|| Latency::of(&self.latencies))
    }

    /// The engine's configuration as it stands.
    pub fn engine_config(&self) -> &EngineConfig {
        self.engine.config()
    }

    /// Pushes buffered output out (after every drain, so live output is
    /// prompt).
    pub fn flush(&mut self) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.flush())
    }

    /// Makes what the sinks wrote durable (about once a second).
    pub fn sync(&mut self) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.sync())
    }

    /// Ends the analysis (everything still held in the engine's window is
    /// judged) and finishes every sink; returns their closing lines. Only
    /// the first call does anything.
    pub fn finish(&mut self) -> io::Result<Vec<String>> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(Vec::new());
        }
        let found = self.engine.finish();
        self.findings.extend(found);
        let reported = self.report_findings();
        let mut notes = Vec::new();
        for sink in &mut self.sinks {
            sink.flush()?;
            notes.extend(sink.finish()?);
        }
        reported.map(|()| notes)
    }

    /// Whether [`Session::finish`] ran.
    pub fn finished(&self) -> bool {
        self.finished
    }
}

/// Findings by kind and indeterminate verdicts by rule, for the summary.
pub fn findings_summary(stats: &EngineStats) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let total: u64 = stats.findings.values().sum();
    let _ = writeln!(out, "\n  findings: {total}");
    for (kind, n) in &stats.findings {
        let _ = writeln!(out, "    {:<34} {n:>6}", kind.name());
    }
    let undecided: u64 = stats.indeterminate.values().sum();
    if undecided > 0 {
        let _ = writeln!(
            out,
            "  indeterminate verdicts (evidence possibly lost): {undecided}"
        );
        for (rule, n) in &stats.indeterminate {
            let _ = writeln!(out, "    {:<34} {n:>6}", rule.name());
        }
    }
    out
}
