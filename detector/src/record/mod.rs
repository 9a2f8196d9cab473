//! Record files: a session's decoded event stream, for `detector replay`.
//!
//! Layout of version 2, the one written (all integers little-endian):
//!
//! ```text
//! "DETREC\r\n"                       8-byte magic (the \r\n catches text-mode mangling)
//! u32 header length, u32 CRC-32 of the header, header (JSON, see RecordHeader)
//! chunks:   "ZCHK" u32 stored length, u32 record count, u32 CRC-32 of the
//!           stored bytes, u32 raw length, stored bytes
//!           stored = one zstd frame of the raw bytes
//!           raw    = records, each a CBOR value (see Record)
//! end mark: "DONE" u64 total records, u32 CRC-32 of the previous 8 bytes
//! ```
//!
//! Version 1 (still read) had no compression: its chunks are
//! `"CHNK" u32 length, u32 record count, u32 CRC-32, raw records`.
//!
//! The JSON header makes the file self-describing (format version, chunk
//! encoding, kernel, clocks, which hooks were active); CBOR keeps each
//! record self-describing. CBOR repeats every field name, which zstd folds
//! away: a busy host's events take 15-30 bytes each on disk instead of
//! about 200. Stacks and symbols are written once, before the first event
//! that quotes them. Checksummed chunks let a reader say exactly where a
//! file is truncated or corrupted, and the end mark tells a cleanly
//! finished session from one that was cut off.

mod flat;
mod reader;
mod writer;

use std::collections::BTreeMap;

pub use reader::{RecordError, RecordReader};
use serde::{Deserialize, Serialize};
pub use writer::RecordWriter;

use crate::event::{Addr, Event, Stack, StackId};

pub const MAGIC: &[u8; 8] = b"DETREC\r\n";
/// A version 1 chunk: raw CBOR records.
pub const CHUNK_MAGIC: &[u8; 4] = b"CHNK";
/// A version 2 chunk: CBOR records in a zstd frame.
pub const ZSTD_CHUNK_MAGIC: &[u8; 4] = b"ZCHK";
pub const END_MAGIC: &[u8; 4] = b"DONE";
/// The format this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this build still reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// What version 2 chunks hold, as the header says it.
pub const CHUNK_ENCODING: &str = "cbor+zstd";
/// Upper bound on one chunk's stored and raw sizes, so a corrupted length
/// cannot make a reader allocate gigabytes.
pub const MAX_CHUNK: u32 = 64 << 20;
/// Upper bound on the header.
pub const MAX_HEADER: u32 = 1 << 20;

/// What the file is and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordHeader {
    pub format_version: u32,
    /// How chunks are encoded (`cbor+zstd`); absent in version 1 (`cbor`).
    #[serde(default = "v1_chunk_encoding")]
    pub chunk_encoding: String,
    /// detector's version that wrote the file.
    pub detector_version: String,
    /// `uname -r` of the traced kernel.
    pub kernel_release: String,
    pub machine: String,
    pub hostname: String,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC at the start, in ns: add it to
    /// an event's `ts` for wall-clock time.
    pub boot_time_offset_ns: u64,
    /// CLOCK_MONOTONIC at the start of the session.
    pub started_ns: u64,
    /// Kernel stack size of the traced kernel.
    pub thread_size: u32,
    /// Hook name -> mechanism (or status) during the session.
    #[serde(default)]
    pub hooks: BTreeMap<String, String>,
    /// Filters that limited what was recorded (empty: everything).
    #[serde(default)]
    pub filters: Vec<String>,
}

fn v1_chunk_encoding() -> String {
    "cbor".into()
}

impl RecordHeader {
    /// A header for a file this build writes; the caller fills in where it
    /// comes from.
    pub fn current() -> Self {
        Self {
            format_version: FORMAT_VERSION,
            chunk_encoding: CHUNK_ENCODING.into(),
            detector_version: env!("CARGO_PKG_VERSION").into(),
            kernel_release: String::new(),
            machine: String::new(),
            hostname: String::new(),
            boot_time_offset_ns: 0,
            started_ns: 0,
            thread_size: 16384,
            hooks: BTreeMap::new(),
            filters: vec![],
        }
    }
}

/// One entry of a chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Event(Event),
    /// A symbolized stack, written before the first event quoting its id.
    Stack {
        id: StackId,
        stack: Stack,
    },
    /// What code lives at `addr` (a bio's end_io), written before the first
    /// event naming it.
    Symbol {
        addr: Addr,
        name: String,
    },
}

#[cfg(test)]
mod tests;

/// Record files for tests outside this crate's unit tests.
#[doc(hidden)]
pub mod tests_support {
    use super::*;
    use crate::event::{Addr, Dev, EventKind};

    /// A cleanly finished file with `n` bio_queue events.
    pub fn sample_file(n: u64) -> Vec<u8> {
        let header = RecordHeader {
            kernel_release: "test".into(),
            machine: "x86_64".into(),
            hostname: "test".into(),
            ..RecordHeader::current()
        };
        let mut out = Vec::new();
        let mut w = RecordWriter::new(&mut out, &header).expect("writing to memory");
        for i in 0..n {
            let ev = crate::event::samples::event(
                1_000 + i,
                EventKind::BioQueue {
                    bio: Addr(0x1000 + i),
                    dev: Dev::new(8, 0),
                    disk: Dev::new(8, 0),
                    sector: i * 8,
                    size: 4096,
                    opf: 1,
                    end_io: Addr(0),
                    private: Addr(0),
                    disk_relative: true,
                    episode_start: false,
                    episode_unbounded: false,
                },
            );
            w.event(&ev).expect("writing to memory");
        }
        w.finish().expect("writing to memory");
        out
    }
}
