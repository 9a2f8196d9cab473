//! What a session does with each event, live or replayed: count it, filter
//! it, print it, record it. `detector trace` and `detector replay` both feed
//! a [`Session`], so a replay prints exactly what the live session did.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use crate::engine::{Engine, EngineStats, Finding};
use crate::event::display::line;
use crate::event::{Addr, Event, EventKind, Stack, StackId, StackTable};
use crate::filter::EventFilter;
use crate::kernel::stacks::StackResolver;
use crate::record::{RecordHeader, RecordWriter};
use crate::report;
use crate::summary::Summary;

/// Where stacks and symbols come from: the kernel (live) or a file.
pub trait Stacks {
    fn stack(&mut self, id: StackId) -> Option<Arc<Stack>>;
    fn symbol(&mut self, addr: Addr) -> Option<String>;
    fn table(&self) -> &StackTable;
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
}

/// The completion handler an event names, if any.
fn end_io_of(ev: &Event) -> Option<Addr> {
    match &ev.kind {
        EventKind::BioQueue { end_io, .. } | EventKind::BioEndio { end_io, .. } => {
            (!end_io.is_null()).then_some(*end_io)
        }
        _ => None,
    }
}

/// How events are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutput {
    /// Not at all (findings and the summary only).
    None,
    /// One human line per event.
    Lines,
    /// One JSON object per line.
    Json,
}

pub struct SessionOptions {
    pub events: EventOutput,
    /// With JSON output, include each event's symbolized stack.
    pub inline_stacks: bool,
    pub filter: EventFilter,
    /// When the session starts (every hook attached): earlier events are
    /// left out. Times in human lines are relative to this.
    pub start_ns: u64,
}

pub struct Session<S: Stacks> {
    out: BufWriter<io::Stdout>,
    opts: SessionOptions,
    pub stacks: S,
    pub summary: Summary,
    engine: Engine,
    findings: Vec<Finding>,
    /// Findings shown (after filters).
    pub findings_shown: u64,
    /// Events from before every hook was attached, left out.
    pub before_start: u64,
    recorder: Option<RecordWriter<BufWriter<File>>>,
    recorded_stacks: HashSet<StackId>,
    recorded_symbols: HashSet<Addr>,
    /// Set when stdout was closed (e.g. piped into `head`): stop printing.
    output_closed: bool,
}

impl<S: Stacks> Session<S> {
    pub fn new(opts: SessionOptions, stacks: S, engine: Engine) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
            opts,
            stacks,
            summary: Summary::new(),
            engine,
            findings: Vec::new(),
            findings_shown: 0,
            before_start: 0,
            recorder: None,
            recorded_stacks: HashSet::new(),
            recorded_symbols: HashSet::new(),
            output_closed: false,
        }
    }

    /// Starts writing a record file at `path`.
    pub fn record_to(&mut self, path: &Path, mut header: RecordHeader) -> io::Result<()> {
        header.filters = self.opts.filter.describe();
        let file = File::create(path)?;
        self.recorder = Some(RecordWriter::new(BufWriter::new(file), &header)?);
        Ok(())
    }

    pub fn output_closed(&self) -> bool {
        self.output_closed
    }

    fn write_out(&mut self, text: &str) {
        if self.output_closed {
            return;
        }
        if let Err(e) = self.out.write_all(text.as_bytes())
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.output_closed = true;
        }
    }

    /// Handles one event; errors are the record file's.
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
            // Bookkeeping for the engine and the record file, not news.
            if let Some(rec) = &mut self.recorder {
                rec.event(&ev)?;
            }
            self.engine.push_into(ev, &mut self.findings);
            self.report_findings();
            return Ok(());
        }
        if !matches!(ev.kind, EventKind::Lost { .. }) {
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
            let _ = self.stacks.symbol(end_io);
        }
        if self.opts.filter.keep(&ev) {
            self.show(&ev, stack)?;
        }
        self.engine.push_into(ev, &mut self.findings);
        self.report_findings();
        Ok(())
    }

    /// The clock moved to `now` (live sessions, every drain): deadlines
    /// that passed fire now, while the condition still holds.
    pub fn tick(&mut self, now: u64) {
        let found = self.engine.advance(now);
        self.findings.extend(found);
        self.report_findings();
    }

    fn report_findings(&mut self) {
        if self.findings.is_empty() {
            return;
        }
        let mut findings = std::mem::take(&mut self.findings);
        for finding in &findings {
            if !self.opts.filter.selects_finding(finding) {
                continue;
            }
            self.findings_shown += 1;
            let text = match self.opts.events {
                EventOutput::Json => {
                    format!("{}\n", report::json::to_line(finding, self.stacks.table()))
                }
                _ => {
                    format!(
                        "{}\n",
                        report::human::render(finding, self.stacks.table()).trim_end()
                    ) + "\n"
                }
            };
            self.write_out(&text);
        }
        findings.clear();
        self.findings = findings;
    }

    /// The engine's counters so far.
    pub fn engine_stats(&self) -> EngineStats {
        self.engine.stats()
    }

    fn show(&mut self, ev: &Event, stack: Option<(StackId, Arc<Stack>)>) -> io::Result<()> {
        self.summary.observe(ev);
        if let Some(rec) = &mut self.recorder {
            if let Some((id, stack)) = &stack
                && self.recorded_stacks.insert(*id)
            {
                rec.stack(*id, stack)?;
            }
            if let Some(end_io) = end_io_of(ev)
                && let Some(symbol) = self.stacks.table().symbol(end_io)
                && self.recorded_symbols.insert(end_io)
            {
                rec.symbol(end_io, symbol)?;
            }
            rec.event(ev)?;
        }
        match self.opts.events {
            EventOutput::None => {}
            EventOutput::Lines => {
                let mut text = line(ev, self.opts.start_ns);
                text.push('\n');
                self.write_out(&text);
            }
            EventOutput::Json => {
                let mut value = serde_json::to_value(ev).map_err(io::Error::other)?;
                if self.opts.inline_stacks
                    && let Some((_, stack)) = &stack
                {
                    let frames: Vec<String> = stack
                        .frames_without_hooks()
                        .map(|f| f.to_string())
                        .collect();
                    value["frames"] = serde_json::json!(frames);
                }
                let mut text = value.to_string();
                text.push('\n');
                self.write_out(&text);
            }
        }
        Ok(())
    }

    /// Pushes buffered output out (called after every drain, so live
    /// output is prompt).
    pub fn flush(&mut self) {
        if !self.output_closed
            && let Err(e) = self.out.flush()
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.output_closed = true;
        }
    }

    /// Writes buffered records to the record file as a chunk, so that a
    /// crash loses little (called about once a second).
    pub fn sync_record(&mut self) -> io::Result<()> {
        match &mut self.recorder {
            Some(rec) => rec.flush_chunk(),
            None => Ok(()),
        }
    }

    /// Ends the analysis (everything still held in the engine's window is
    /// judged), then finishes the record file; returns how many records it
    /// holds.
    pub fn finish(&mut self) -> io::Result<Option<u64>> {
        let found = self.engine.finish();
        self.findings.extend(found);
        self.report_findings();
        self.flush();
        match &mut self.recorder {
            Some(rec) => rec.finish().map(Some),
            None => Ok(None),
        }
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
