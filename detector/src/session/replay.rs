//! Events from a file: a record file (`trace -o`) or JSON lines of events
//! (`trace --json`). `detector replay` reads one as fast as it can;
//! `detector run --replay` plays it back at the pace it was recorded.

use std::fs::File;
use std::io::{BufRead, BufReader, Lines, Read};
use std::path::{Path, PathBuf};

use crate::event::{Addr, Event, Stack, StackId};
use crate::record::{MAGIC, Record, RecordError, RecordHeader, RecordReader};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable record file: {source}")]
    Header { path: PathBuf, source: RecordError },
    #[error("{path}: {source}")]
    Record { path: PathBuf, source: RecordError },
    #[error("{path} line {line}: not a record file and not JSON lines: {source}")]
    NotJson {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error("{path} line {line}: not an event: {source}")]
    NotEvent {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// One thing a file holds.
pub enum Item {
    Event(Event),
    Stack(StackId, Stack),
    Symbol(Addr, String),
}

enum Input {
    Record(Box<RecordReader<BufReader<File>>>),
    /// JSON lines and the number of the last line read.
    Lines(Lines<BufReader<File>>, usize),
}

pub struct ReplayFile {
    path: PathBuf,
    input: Input,
    /// Set after the first error: the rest of the file is not read.
    failed: bool,
}

impl ReplayFile {
    /// Opens `path`, telling a record file from JSON lines by its magic.
    pub fn open(path: &Path) -> Result<Self, ReplayError> {
        let open = || {
            File::open(path).map_err(|source| ReplayError::Open {
                path: path.to_owned(),
                source,
            })
        };
        let mut magic = [0u8; 8];
        let n = open()?
            .read(&mut magic)
            .map_err(|source| ReplayError::Read {
                path: path.to_owned(),
                source,
            })?;
        let file = BufReader::new(open()?);
        let input = if n == 8 && &magic == MAGIC {
            let reader = RecordReader::new(file).map_err(|source| ReplayError::Header {
                path: path.to_owned(),
                source,
            })?;
            Input::Record(Box::new(reader))
        } else {
            Input::Lines(file.lines(), 0)
        };
        Ok(Self {
            path: path.to_owned(),
            input,
            failed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record file's header; JSON lines have none.
    pub fn header(&self) -> Option<&RecordHeader> {
        match &self.input {
            Input::Record(reader) => Some(reader.header()),
            Input::Lines(..) => None,
        }
    }

    /// The next item; `None` at the end or after an error.
    pub fn next_item(&mut self) -> Option<Result<Item, ReplayError>> {
        if self.failed {
            return None;
        }
        let item = match &mut self.input {
            Input::Record(reader) => reader.next_record().map(|r| {
                r.map(|record| match record {
                    Record::Event(ev) => Item::Event(ev),
                    Record::Stack { id, stack } => Item::Stack(id, stack),
                    Record::Symbol { addr, name } => Item::Symbol(addr, name),
                })
                .map_err(|source| ReplayError::Record {
                    path: self.path.clone(),
                    source,
                })
            }),
            Input::Lines(lines, number) => next_json_event(&self.path, lines, number),
        };
        if matches!(item, Some(Err(_))) {
            self.failed = true;
        }
        item
    }
}

/// The next event of a JSON-lines file, as `trace --json` prints them:
/// finding lines, blank lines and `#` comments are skipped.
fn next_json_event(
    path: &Path,
    lines: &mut Lines<BufReader<File>>,
    number: &mut usize,
) -> Option<Result<Item, ReplayError>> {
    for line in lines {
        *number += 1;
        let line = match line {
            Ok(line) => line,
            Err(source) => {
                return Some(Err(ReplayError::Read {
                    path: path.to_owned(),
                    source,
                }));
            }
        };
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(source) => {
                return Some(Err(ReplayError::NotJson {
                    path: path.to_owned(),
                    line: *number,
                    source,
                }));
            }
        };
        if value.get("finding").is_some() {
            continue;
        }
        return Some(
            serde_json::from_value::<Event>(value)
                .map(Item::Event)
                .map_err(|source| ReplayError::NotEvent {
                    path: path.to_owned(),
                    line: *number,
                    source,
                }),
        );
    }
    None
}

/// Plays a file back at the pace it was recorded: each event is handed
/// over once as much time has passed since the start as separated it from
/// the first event. The engine then sees the same clock it saw live, and a
/// finding appears as long after the start as it did in the recording.
pub struct Paced {
    file: ReplayFile,
    /// The first event's time and the moment the playback started.
    origin: Option<(u64, tokio::time::Instant)>,
    /// An event read ahead of its time.
    pending: Option<Event>,
    done: bool,
}

/// What one step of a paced playback produced.
pub struct PacedBatch {
    pub items: Vec<Item>,
    /// The recording's clock now (for the engine's deadlines).
    pub now: u64,
    /// The file's last item was handed over.
    pub end: bool,
    pub error: Option<ReplayError>,
}

impl Paced {
    pub fn new(file: ReplayFile) -> Self {
        Self {
            file,
            origin: None,
            pending: None,
            done: false,
        }
    }

    pub fn file(&self) -> &ReplayFile {
        &self.file
    }

    /// Whether the whole file was handed over.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Waits until the next event is due, then hands over everything due
    /// (with the stacks and symbols read on the way). Cancel-safe: the
    /// event read ahead is kept, and only sleeping is awaited.
    pub async fn next(&mut self) -> PacedBatch {
        if let (Some(ev), Some((first, started))) = (&self.pending, self.origin) {
            let due = started + std::time::Duration::from_nanos(ev.ts.saturating_sub(first));
            tokio::time::sleep_until(due).await;
        }
        let mut batch = PacedBatch {
            items: Vec::new(),
            now: 0,
            end: false,
            error: None,
        };
        if let Some(ev) = self.pending.take() {
            batch.items.push(Item::Event(ev));
        }
        loop {
            let item = match self.file.next_item() {
                None => {
                    self.done = true;
                    batch.end = true;
                    break;
                }
                Some(Err(e)) => {
                    self.done = true;
                    batch.end = true;
                    batch.error = Some(e);
                    break;
                }
                Some(Ok(item)) => item,
            };
            let Item::Event(ev) = item else {
                batch.items.push(item);
                continue;
            };
            let (first, started) = *self
                .origin
                .get_or_insert((ev.ts, tokio::time::Instant::now()));
            let elapsed = started.elapsed().as_nanos() as u64;
            if ev.ts.saturating_sub(first) > elapsed {
                self.pending = Some(ev);
                break;
            }
            batch.items.push(Item::Event(ev));
        }
        batch.now = match self.origin {
            Some((first, started)) => first + started.elapsed().as_nanos() as u64,
            None => 0,
        };
        batch
    }
}
