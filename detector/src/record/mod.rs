//! Record files: a session's decoded event stream, for `detector replay`.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! "DETREC\r\n"                       8-byte magic (the \r\n catches text-mode mangling)
//! u32 header length, u32 CRC-32 of the header, header (JSON, see RecordHeader)
//! chunks:   "CHNK" u32 payload length, u32 record count, u32 CRC-32, payload
//!           payload = records, each a CBOR value (see Record)
//! end mark: "DONE" u64 total records, u32 CRC-32 of the previous 8 bytes
//! ```
//!
//! The JSON header makes the file self-describing (format version, kernel,
//! clocks, which hooks were active); CBOR keeps each record self-describing
//! while compact. Checksummed chunks let a reader say exactly where a file
//! is truncated or corrupted, and the end mark tells a cleanly finished
//! session from one that was cut off.

mod reader;
mod writer;

use std::collections::BTreeMap;

pub use reader::{RecordError, RecordReader};
use serde::{Deserialize, Serialize};
pub use writer::RecordWriter;

use crate::event::{Addr, Event, Stack, StackId};

pub const MAGIC: &[u8; 8] = b"DETREC\r\n";
pub const CHUNK_MAGIC: &[u8; 4] = b"CHNK";
pub const END_MAGIC: &[u8; 4] = b"DONE";
/// The format this build writes; readers accept exactly this version.
pub const FORMAT_VERSION: u32 = 1;
/// Upper bound on one chunk's payload, so a corrupted length cannot make a
/// reader allocate gigabytes.
pub const MAX_CHUNK: u32 = 64 << 20;
/// Upper bound on the header.
pub const MAX_HEADER: u32 = 1 << 20;

/// What the file is and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordHeader {
    pub format_version: u32,
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
            format_version: FORMAT_VERSION,
            detector_version: env!("CARGO_PKG_VERSION").into(),
            kernel_release: "test".into(),
            machine: "x86_64".into(),
            hostname: "test".into(),
            boot_time_offset_ns: 0,
            started_ns: 0,
            thread_size: 16384,
            hooks: BTreeMap::new(),
            filters: vec![],
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
                },
            );
            w.event(&ev).expect("writing to memory");
        }
        w.finish().expect("writing to memory");
        out
    }
}
