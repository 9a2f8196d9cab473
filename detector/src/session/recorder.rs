//! The record-file sink (`trace -o FILE`): the kept events, each stack and
//! handler symbol once, before the first event quoting it.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use rustc_hash::FxHashSet;

use super::{SessionEvent, Sink, end_io_of};
use crate::event::{Addr, StackId};
use crate::record::{RecordHeader, RecordWriter};

pub struct Recorder {
    path: PathBuf,
    writer: RecordWriter<BufWriter<File>>,
    stacks: FxHashSet<StackId>,
    symbols: FxHashSet<Addr>,
}

impl Recorder {
    /// Creates `path` and writes `header`.
    pub fn create(path: &Path, header: &RecordHeader) -> io::Result<Self> {
        let file = File::create(path)?;
        Ok(Self {
            path: path.to_owned(),
            writer: RecordWriter::new(BufWriter::new(file), header)?,
            stacks: FxHashSet::default(),
            symbols: FxHashSet::default(),
        })
    }

    fn context(&self, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("writing the record file {}: {e}", self.path.display()),
        )
    }

    fn write(&mut self, seen: &SessionEvent<'_>) -> io::Result<()> {
        if let Some((id, stack)) = &seen.stack
            && self.stacks.insert(*id)
        {
            self.writer.stack(*id, stack)?;
        }
        if let Some(end_io) = end_io_of(seen.ev)
            && let Some(symbol) = seen.stacks.symbol(end_io)
            && self.symbols.insert(end_io)
        {
            self.writer.symbol(end_io, symbol)?;
        }
        self.writer.event(seen.ev)
    }
}

impl Sink for Recorder {
    fn event(&mut self, seen: &SessionEvent<'_>) -> io::Result<()> {
        // Loss checks go to the file whatever the filters: a replay's
        // engine needs them to judge as the live one did.
        if !seen.kept && !seen.bookkeeping {
            return Ok(());
        }
        self.write(seen).map_err(|e| self.context(e))
    }

    /// Writes buffered records as a chunk, so that a crash loses little.
    fn sync(&mut self) -> io::Result<()> {
        self.writer.flush_chunk().map_err(|e| self.context(e))
    }

    fn finish(&mut self) -> io::Result<Option<String>> {
        let records = self.writer.finish().map_err(|e| self.context(e))?;
        Ok(Some(format!(
            "recorded {records} records to {}",
            self.path.display()
        )))
    }
}
