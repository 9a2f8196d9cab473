//! Record files from untrusted bytes: the reader must report, never panic.
//!
//! Half the inputs are used as-is; the other half become the payload of a
//! well-framed file (valid magic, header and checksums), so that fuzzing
//! reaches the record decoding behind the checksums.
#![no_main]

use detector::record::{
    CHUNK_MAGIC, END_MAGIC, FORMAT_VERSION, MAGIC, RecordHeader, RecordReader,
};
use libfuzzer_sys::fuzz_target;

fn framed(payload: &[u8], count: u32) -> Vec<u8> {
    let header = serde_json::to_vec(&RecordHeader {
        format_version: FORMAT_VERSION,
        detector_version: "fuzz".into(),
        kernel_release: String::new(),
        machine: String::new(),
        hostname: String::new(),
        boot_time_offset_ns: 0,
        started_ns: 0,
        thread_size: 16384,
        hooks: Default::default(),
        filters: vec![],
    })
    .unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(CHUNK_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    let total = (count as u64).to_le_bytes();
    out.extend_from_slice(END_MAGIC);
    out.extend_from_slice(&total);
    out.extend_from_slice(&crc32fast::hash(&total).to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    let owned;
    let bytes = match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => {
            owned = framed(rest, (mode >> 1) as u32 % 8 + 1);
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
