//! Record files from untrusted bytes: the reader must report, never panic.
//!
//! A quarter of the inputs are used as-is; the rest become the payload of a
//! well-framed file (valid magic, header and checksums), either version 1
//! (raw records), version 2 with the payload compressed (so that fuzzing
//! reaches the record decoding behind checksums and zstd), or version 2
//! with the payload as the stored bytes (reaching the decompressor).
#![no_main]

use detector::record::{
    CHUNK_MAGIC, END_MAGIC, MAGIC, RecordHeader, RecordReader, ZSTD_CHUNK_MAGIC,
};
use libfuzzer_sys::fuzz_target;

#[derive(Clone, Copy)]
enum Framing {
    Raw,
    Compressed,
    Stored,
}

fn framed(payload: &[u8], count: u32, framing: Framing) -> Vec<u8> {
    let mut header = RecordHeader::current();
    if let Framing::Raw = framing {
        header.format_version = 1;
        header.chunk_encoding = "cbor".into();
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    out.extend_from_slice(&header);
    let (stored, raw_len) = match framing {
        Framing::Raw => (payload.to_vec(), None),
        Framing::Compressed => (
            zstd::bulk::compress(payload, 1).unwrap(),
            Some(payload.len() as u32),
        ),
        // Claims a raw length the stored bytes may or may not give.
        Framing::Stored => (payload.to_vec(), Some(payload.len() as u32 * 4)),
    };
    out.extend_from_slice(if raw_len.is_some() {
        ZSTD_CHUNK_MAGIC
    } else {
        CHUNK_MAGIC
    });
    out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&stored).to_le_bytes());
    if let Some(raw_len) = raw_len {
        out.extend_from_slice(&raw_len.to_le_bytes());
    }
    out.extend_from_slice(&stored);
    let total = (count as u64).to_le_bytes();
    out.extend_from_slice(END_MAGIC);
    out.extend_from_slice(&total);
    out.extend_from_slice(&crc32fast::hash(&total).to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    let owned;
    let bytes = match data.split_first() {
        Some((&mode, rest)) if mode & 3 != 0 => {
            let framing = match mode & 3 {
                1 => Framing::Raw,
                2 => Framing::Compressed,
                _ => Framing::Stored,
            };
            owned = framed(rest, (mode >> 2) as u32 % 8 + 1, framing);
            owned.as_slice()
        }
        _ => data,
    };
    if let Ok(reader) = RecordReader::new(bytes) {
        for record in reader {
            if record.is_err() {
                break;
            }
        }
    }
});
