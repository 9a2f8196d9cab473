//! Reading record files. Never panics: every problem is a [`RecordError`]
//! that says where in the file it is.

use std::io::{self, Read};

use super::flat::FlatRecord;
use super::{
    CHUNK_MAGIC, END_MAGIC, FORMAT_VERSION, MAGIC, MAX_CHUNK, MAX_HEADER, OLDEST_FORMAT_VERSION,
    Record, RecordHeader, ZSTD_CHUNK_MAGIC,
};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a detector record file (bad magic at byte 0)")]
    BadMagic,
    #[error(
        "record format version {found} is not supported (this detector reads versions {oldest} to {newest})"
    )]
    UnsupportedVersion {
        found: u32,
        oldest: u32,
        newest: u32,
    },
    #[error("header at byte {offset} is corrupted: {reason}")]
    BadHeader { offset: u64, reason: String },
    #[error("chunk at byte {offset} is corrupted: {reason}")]
    BadChunk { offset: u64, reason: String },
    #[error(
        "file is truncated at byte {offset} (inside {what}); {records} records before it are intact"
    )]
    Truncated {
        offset: u64,
        what: &'static str,
        records: u64,
    },
    #[error(
        "file ends at byte {offset} without an end mark: the session did not finish cleanly; {records} records read"
    )]
    Unfinished { offset: u64, records: u64 },
    #[error("end mark at byte {offset} says {expected} records, but the file holds {found}")]
    CountMismatch {
        offset: u64,
        expected: u64,
        found: u64,
    },
    #[error("cannot read the record file: {0}")]
    Io(#[from] io::Error),
}

/// Longest text a record may hold (a symbol name): what ciborium's
/// `from_reader` allows too.
const SCRATCH: usize = 4096;

/// Reads records one at a time from any `Read`.
pub struct RecordReader<R: Read> {
    input: R,
    header: RecordHeader,
    /// Version 2 and later: chunks are zstd frames (else raw CBOR).
    compressed: bool,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    offset: u64,
    /// The current chunk's records, decompressed.
    chunk: Vec<u8>,
    /// The current chunk's bytes as stored (compressed chunks only).
    stored: Vec<u8>,
    /// ciborium's buffer for strings, reused: a fresh one per record
    /// (`from_reader`) costs a 4 KiB memset each.
    scratch: Box<[u8; SCRATCH]>,
    chunk_pos: usize,
    chunk_left: u32,
    chunk_offset: u64,
    records: u64,
    done: bool,
}

/// Fills `buf` completely, or reports how many bytes there were.
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<R: Read> RecordReader<R> {
    /// Reads and checks the magic and header.
    pub fn new(mut input: R) -> Result<Self, RecordError> {
        let mut start = [0u8; 16];
        let n = read_full(&mut input, &mut start)?;
        if n < MAGIC.len() || &start[..8] != MAGIC {
            return Err(RecordError::BadMagic);
        }
        if n < start.len() {
            return Err(RecordError::Truncated {
                offset: n as u64,
                what: "the header",
                records: 0,
            });
        }
        let len = u32_at(&start, 8);
        let crc = u32_at(&start, 12);
        if len > MAX_HEADER {
            return Err(RecordError::BadHeader {
                offset: 8,
                reason: format!("length {len} exceeds the {MAX_HEADER}-byte limit"),
            });
        }
        let mut header = vec![0u8; len as usize];
        let got = read_full(&mut input, &mut header)?;
        if got < header.len() {
            return Err(RecordError::Truncated {
                offset: 16 + got as u64,
                what: "the header",
                records: 0,
            });
        }
        if crc32fast::hash(&header) != crc {
            return Err(RecordError::BadHeader {
                offset: 16,
                reason: "checksum mismatch".into(),
            });
        }
        // Check the version before the shape, so a newer file says so.
        let version = serde_json::from_slice::<serde_json::Value>(&header)
            .ok()
            .and_then(|v| v.get("format_version")?.as_u64());
        let version = match version {
            Some(v) if (OLDEST_FORMAT_VERSION as u64..=FORMAT_VERSION as u64).contains(&v) => {
                v as u32
            }
            Some(v) => {
                return Err(RecordError::UnsupportedVersion {
                    found: v.min(u32::MAX as u64) as u32,
                    oldest: OLDEST_FORMAT_VERSION,
                    newest: FORMAT_VERSION,
                });
            }
            None => {
                return Err(RecordError::BadHeader {
                    offset: 16,
                    reason: "no format_version".into(),
                });
            }
        };
        let header: RecordHeader =
            serde_json::from_slice(&header).map_err(|e| RecordError::BadHeader {
                offset: 16,
                reason: e.to_string(),
            })?;
        let compressed = version >= 2;
        if compressed && header.chunk_encoding != super::CHUNK_ENCODING {
            return Err(RecordError::BadHeader {
                offset: 16,
                reason: format!(
                    "chunk encoding {:?} is not {:?}",
                    header.chunk_encoding,
                    super::CHUNK_ENCODING
                ),
            });
        }
        Ok(Self {
            input,
            header,
            compressed,
            decompressor: None,
            offset: 16 + len as u64,
            chunk: Vec::new(),
            stored: Vec::new(),
            scratch: Box::new([0; SCRATCH]),
            chunk_pos: 0,
            chunk_left: 0,
            chunk_offset: 0,
            records: 0,
            done: false,
        })
    }

    pub fn header(&self) -> &RecordHeader {
        &self.header
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Loads the next chunk; `Ok(false)` at a valid end mark.
    fn next_chunk(&mut self) -> Result<bool, RecordError> {
        let at = self.offset;
        let mut tag = [0u8; 4];
        let n = read_full(&mut self.input, &mut tag)?;
        if n == 0 {
            return Err(RecordError::Unfinished {
                offset: at,
                records: self.records,
            });
        }
        if n < 4 {
            return Err(RecordError::Truncated {
                offset: at + n as u64,
                what: "a chunk tag",
                records: self.records,
            });
        }
        if &tag == END_MAGIC {
            let mut end = [0u8; 12];
            let n = read_full(&mut self.input, &mut end)?;
            if n < end.len() {
                return Err(RecordError::Truncated {
                    offset: at + 4 + n as u64,
                    what: "the end mark",
                    records: self.records,
                });
            }
            if crc32fast::hash(&end[..8]) != u32_at(&end, 8) {
                return Err(RecordError::BadChunk {
                    offset: at,
                    reason: "end mark checksum mismatch".into(),
                });
            }
            let expected = u64::from_le_bytes(end[..8].try_into().expect("8 bytes"));
            if expected != self.records {
                return Err(RecordError::CountMismatch {
                    offset: at,
                    expected,
                    found: self.records,
                });
            }
            self.offset += 16;
            return Ok(false);
        }
        let (magic, head_len) = if self.compressed {
            (ZSTD_CHUNK_MAGIC, 16)
        } else {
            (CHUNK_MAGIC, 12)
        };
        if &tag != magic {
            return Err(RecordError::BadChunk {
                offset: at,
                reason: format!("expected a chunk tag, found {tag:02x?}"),
            });
        }
        let mut head = [0u8; 16];
        let n = read_full(&mut self.input, &mut head[..head_len])?;
        if n < head_len {
            return Err(RecordError::Truncated {
                offset: at + 4 + n as u64,
                what: "a chunk header",
                records: self.records,
            });
        }
        let (len, count, crc) = (u32_at(&head, 0), u32_at(&head, 4), u32_at(&head, 8));
        if len > MAX_CHUNK {
            return Err(RecordError::BadChunk {
                offset: at,
                reason: format!("length {len} exceeds the {MAX_CHUNK}-byte limit"),
            });
        }
        let body_at = at + 4 + head_len as u64;
        let buf = if self.compressed {
            &mut self.stored
        } else {
            &mut self.chunk
        };
        buf.resize(len as usize, 0);
        let n = read_full(&mut self.input, buf)?;
        if n < len as usize {
            return Err(RecordError::Truncated {
                offset: body_at + n as u64,
                what: "a chunk",
                records: self.records,
            });
        }
        if crc32fast::hash(buf) != crc {
            return Err(RecordError::BadChunk {
                offset: at,
                reason: "checksum mismatch".into(),
            });
        }
        if self.compressed {
            self.decompress(at, u32_at(&head, 12))?;
        }
        self.chunk_offset = at;
        self.offset = body_at + len as u64;
        self.chunk_pos = 0;
        self.chunk_left = count;
        Ok(true)
    }

    /// Turns the stored chunk at `at` into its `raw_len` bytes of records.
    fn decompress(&mut self, at: u64, raw_len: u32) -> Result<(), RecordError> {
        let bad = |reason: String| RecordError::BadChunk { offset: at, reason };
        if raw_len > MAX_CHUNK {
            return Err(bad(format!(
                "raw length {raw_len} exceeds the {MAX_CHUNK}-byte limit"
            )));
        }
        let decompressor = match &mut self.decompressor {
            Some(d) => d,
            None => self
                .decompressor
                .insert(zstd::bulk::Decompressor::new().map_err(RecordError::Io)?),
        };
        self.chunk.clear();
        self.chunk.reserve(raw_len as usize);
        let n = decompressor
            .decompress_to_buffer(&self.stored, &mut self.chunk)
            .map_err(|e| bad(format!("does not decompress: {e}")))?;
        if n != raw_len as usize {
            return Err(bad(format!(
                "decompresses to {n} bytes, its header says {raw_len}"
            )));
        }
        Ok(())
    }

    /// The next record, `None` after the end mark.
    pub fn next_record(&mut self) -> Option<Result<Record, RecordError>> {
        if self.done {
            return None;
        }
        let result = self.next_inner();
        match result {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn next_inner(&mut self) -> Result<Option<Record>, RecordError> {
        while self.chunk_left == 0 {
            if self.chunk_pos != self.chunk.len() {
                return Err(RecordError::BadChunk {
                    offset: self.chunk_offset,
                    reason: "bytes left over after its last record".into(),
                });
            }
            if !self.next_chunk()? {
                return Ok(None);
            }
        }
        let mut rest = &self.chunk[self.chunk_pos..];
        let before = rest.len();
        let bad = |reason: String| RecordError::BadChunk {
            offset: self.chunk_offset,
            reason,
        };
        let flat: FlatRecord =
            ciborium::de::from_reader_with_buffer(&mut rest, &mut self.scratch[..])
                .map_err(|e| bad(format!("record {} does not decode: {e}", self.records)))?;
        let record = flat.into_record().map_err(|field| {
            bad(format!(
                "record {} is an event without its `{field}`",
                self.records
            ))
        })?;
        self.chunk_pos += before - rest.len();
        self.chunk_left -= 1;
        self.records += 1;
        Ok(Some(record))
    }
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = Result<Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}
