//! Writing record files.

use std::io::{self, Write};

use super::{END_MAGIC, MAGIC, RecordHeader, ZSTD_CHUNK_MAGIC};
use crate::event::{Addr, Event, Stack, StackId};

/// Records buffered before a chunk is written: large enough for zstd to
/// find the repetition across records (field names, comms, addresses).
const CHUNK_RECORDS: usize = 16384;
/// Raw bytes past which a chunk is written whatever its record count
/// (stacks are large records), well below the reader's [`super::MAX_CHUNK`].
const CHUNK_BYTES: usize = 8 << 20;
/// zstd's level: 1 keeps compression at a few percent of a session's
/// CPU; higher levels gained under 10 % in size on busy-host recordings
/// for twice the time.
const ZSTD_LEVEL: i32 = 1;

pub struct RecordWriter<W: Write> {
    out: W,
    compressor: zstd::bulk::Compressor<'static>,
    chunk: Vec<u8>,
    stored: Vec<u8>,
    records_in_chunk: u32,
    total: u64,
    finished: bool,
}

impl<W: Write> RecordWriter<W> {
    /// Writes the magic and header (which must be of this build's format:
    /// [`RecordHeader::current`]).
    pub fn new(mut out: W, header: &RecordHeader) -> io::Result<Self> {
        let header = serde_json::to_vec(header).map_err(io::Error::other)?;
        out.write_all(MAGIC)?;
        out.write_all(&(header.len() as u32).to_le_bytes())?;
        out.write_all(&crc32fast::hash(&header).to_le_bytes())?;
        out.write_all(&header)?;
        Ok(Self {
            out,
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            chunk: Vec::with_capacity(1 << 20),
            stored: Vec::new(),
            records_in_chunk: 0,
            total: 0,
            finished: false,
        })
    }

    pub fn event(&mut self, event: &Event) -> io::Result<()> {
        self.record(&RecordRef::Event(event))
    }

    pub fn stack(&mut self, id: StackId, stack: &Stack) -> io::Result<()> {
        self.record(&RecordRef::Stack { id, stack })
    }

    pub fn symbol(&mut self, addr: Addr, name: &str) -> io::Result<()> {
        self.record(&RecordRef::Symbol { addr, name })
    }

    fn record(&mut self, record: &RecordRef<'_>) -> io::Result<()> {
        ciborium::into_writer(record, &mut self.chunk).map_err(io::Error::other)?;
        self.records_in_chunk += 1;
        self.total += 1;
        if self.records_in_chunk as usize >= CHUNK_RECORDS || self.chunk.len() >= CHUNK_BYTES {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Writes the buffered records as a chunk (so that a crash loses at most
    /// what came after).
    pub fn flush_chunk(&mut self) -> io::Result<()> {
        if self.records_in_chunk == 0 {
            return self.out.flush();
        }
        self.stored.clear();
        self.stored
            .reserve(zstd::zstd_safe::compress_bound(self.chunk.len()));
        self.compressor
            .compress_to_buffer(&self.chunk, &mut self.stored)?;
        self.out.write_all(ZSTD_CHUNK_MAGIC)?;
        self.out
            .write_all(&(self.stored.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.records_in_chunk.to_le_bytes())?;
        self.out
            .write_all(&crc32fast::hash(&self.stored).to_le_bytes())?;
        self.out
            .write_all(&(self.chunk.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.stored)?;
        self.chunk.clear();
        self.records_in_chunk = 0;
        self.out.flush()
    }

    /// Writes the last chunk and the end mark.
    pub fn finish(&mut self) -> io::Result<u64> {
        if !self.finished {
            self.flush_chunk()?;
            let total = self.total.to_le_bytes();
            self.out.write_all(END_MAGIC)?;
            self.out.write_all(&total)?;
            self.out.write_all(&crc32fast::hash(&total).to_le_bytes())?;
            self.out.flush()?;
            self.finished = true;
        }
        Ok(self.total)
    }

    pub fn records(&self) -> u64 {
        self.total
    }
}

/// [`super::Record`] by reference, serialized identically, so that writing does
/// not clone events.
#[derive(serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum RecordRef<'a> {
    Event(&'a Event),
    Stack { id: StackId, stack: &'a Stack },
    Symbol { addr: Addr, name: &'a str },
}
