//! What a session does with each event, live or replayed: count it, filter
//! it, print it, record it. `detector trace` and `detector replay` both feed
//! a [`Session`], so a replay prints exactly what the live session did.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use crate::event::display::line;
use crate::event::{Event, Stack, StackId, StackTable};
use crate::filter::EventFilter;
use crate::kernel::stacks::StackResolver;
use crate::record::{RecordHeader, RecordWriter};
use crate::summary::Summary;

/// Where stacks come from: the kernel's map (live) or a file's table.
pub trait Stacks {
    fn stack(&mut self, id: StackId) -> Option<Arc<Stack>>;
    fn table(&self) -> &StackTable;
}

impl Stacks for StackResolver {
    fn stack(&mut self, id: StackId) -> Option<Arc<Stack>> {
        self.resolve(id)
    }
    fn table(&self) -> &StackTable {
        StackResolver::table(self)
    }
}

impl Stacks for StackTable {
    fn stack(&mut self, id: StackId) -> Option<Arc<Stack>> {
        self.get(id).cloned()
    }
    fn table(&self) -> &StackTable {
        self
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
    /// Times in human lines are relative to this.
    pub start_ns: u64,
}

pub struct Session<S: Stacks> {
    out: BufWriter<io::Stdout>,
    opts: SessionOptions,
    pub stacks: S,
    pub summary: Summary,
    recorder: Option<RecordWriter<BufWriter<File>>>,
    recorded_stacks: HashSet<StackId>,
    /// Set when stdout was closed (e.g. piped into `head`): stop printing.
    output_closed: bool,
}

impl<S: Stacks> Session<S> {
    pub fn new(opts: SessionOptions, stacks: S) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
            opts,
            stacks,
            summary: Summary::new(),
            recorder: None,
            recorded_stacks: HashSet::new(),
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
    pub fn event(&mut self, ev: Event) -> io::Result<()> {
        if !self.opts.filter.keep(&ev) {
            return Ok(());
        }
        self.summary.observe(&ev);
        let stack = ev
            .stack
            .and_then(|id| self.stacks.stack(id).map(|s| (id, s)));
        if let Some(rec) = &mut self.recorder {
            if let Some((id, stack)) = &stack
                && self.recorded_stacks.insert(*id)
            {
                rec.stack(*id, stack)?;
            }
            rec.event(&ev)?;
        }
        match self.opts.events {
            EventOutput::None => {}
            EventOutput::Lines => {
                let mut text = line(&ev, self.opts.start_ns);
                text.push('\n');
                self.write_out(&text);
            }
            EventOutput::Json => {
                let mut value = serde_json::to_value(&ev).map_err(io::Error::other)?;
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

    /// Writes a finished block of text (a finding) to the output.
    pub fn print(&mut self, text: &str) {
        self.write_out(text);
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

    /// Finishes the record file; returns how many records it holds.
    pub fn finish(&mut self) -> io::Result<Option<u64>> {
        self.flush();
        match &mut self.recorder {
            Some(rec) => rec.finish().map(Some),
            None => Ok(None),
        }
    }
}
