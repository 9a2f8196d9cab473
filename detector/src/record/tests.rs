//! Round trips, and every way a file can be damaged.

use super::*;
use crate::event::{Addr, Dev, EventKind, Frame, Hook};

fn header() -> RecordHeader {
    RecordHeader {
        detector_version: "test".into(),
        kernel_release: "6.1.0-test".into(),
        machine: "x86_64".into(),
        hostname: "host".into(),
        boot_time_offset_ns: 1_700_000_000_000_000_000,
        started_ns: 5,
        thread_size: 16384,
        hooks: [("bio_endio".to_owned(), "fentry".to_owned())].into(),
        ..RecordHeader::current()
    }
}

fn event(i: u64) -> Event {
    Event {
        ts: 1000 + i,
        cpu: (i % 2) as u32,
        pid: 10,
        tid: 11,
        comm: "dd".into(),
        hook: Hook::TpBtf,
        stack_base: Addr(0xffffc90000100000),
        sp: Addr(0xffffc90000103f00),
        stack: i.is_multiple_of(3).then_some(StackId(7)),
        kind: EventKind::BioQueue {
            bio: Addr(0xffff888000000000 + i * 0x100),
            dev: Dev::new(259, 1),
            disk: Dev::new(259, 0),
            sector: i * 8,
            size: 4096,
            opf: 1,
            end_io: Addr(0xffffffff81234567),
            private: Addr(0),
            disk_relative: true,
            episode_start: false,
            episode_unbounded: false,
        },
    }
}

fn stack() -> Stack {
    Stack {
        frames: vec![Frame {
            addr: Addr(0xffffffff81000010),
            symbol: Some("submit_bio".into()),
            offset: 0x10,
            module: None,
        }],
    }
}

/// A file with a stack, `n` events, finished cleanly.
fn file(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = RecordWriter::new(&mut out, &header()).unwrap();
    w.stack(StackId(7), &stack()).unwrap();
    w.symbol(Addr(0xffff_ffff_8123_4567), "blkdev_bio_end_io+0x0")
        .unwrap();
    for i in 0..n {
        w.event(&event(i)).unwrap();
    }
    assert_eq!(w.finish().unwrap(), n + 2);
    out
}

fn read_all(bytes: &[u8]) -> (Vec<Record>, Option<RecordError>) {
    let mut reader = match RecordReader::new(bytes) {
        Ok(r) => r,
        Err(e) => return (vec![], Some(e)),
    };
    let mut out = vec![];
    for r in reader.by_ref() {
        match r {
            Ok(r) => out.push(r),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

#[test]
fn round_trip_across_several_chunks() {
    let n = 40_000; // more than two chunks
    let bytes = file(n);
    let reader = RecordReader::new(bytes.as_slice()).unwrap();
    assert_eq!(reader.header(), &header());
    let (records, err) = read_all(&bytes);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(records.len() as u64, n + 2);
    assert_eq!(
        records[0],
        Record::Stack {
            id: StackId(7),
            stack: stack()
        }
    );
    assert_eq!(
        records[1],
        Record::Symbol {
            addr: Addr(0xffff_ffff_8123_4567),
            name: "blkdev_bio_end_io+0x0".into()
        }
    );
    for (i, r) in records[2..].iter().enumerate() {
        assert_eq!(r, &Record::Event(event(i as u64)));
    }
}

#[test]
fn every_truncation_is_detected_with_its_position() {
    let bytes = file(20);
    for cut in 0..bytes.len() {
        let (records, err) = read_all(&bytes[..cut]);
        let err = err.unwrap_or_else(|| panic!("cut at {cut} not detected"));
        match err {
            RecordError::BadMagic => assert!(cut < MAGIC.len()),
            RecordError::Truncated { offset, .. } => assert!(offset <= cut as u64),
            RecordError::Unfinished { offset, records: n } => {
                assert_eq!(offset, cut as u64);
                assert_eq!(n as usize, records.len());
            }
            other => panic!("cut at {cut}: unexpected {other}"),
        }
    }
}

#[test]
fn every_flipped_byte_after_the_magic_is_detected() {
    let bytes = file(20);
    for at in MAGIC.len()..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        let (_, err) = read_all(&bad);
        assert!(err.is_some(), "flip at byte {at} not detected");
    }
}

#[test]
fn chunk_corruption_names_the_chunk_offset() {
    let bytes = file(5);
    let header_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let chunk_at = 16 + header_len;
    let mut bad = bytes.clone();
    bad[chunk_at + 20] ^= 1; // inside the first chunk's payload
    match read_all(&bad).1 {
        Some(RecordError::BadChunk { offset, .. }) => assert_eq!(offset, chunk_at as u64),
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_files_and_versions_are_refused() {
    assert!(matches!(
        read_all(b"not a record file").1,
        Some(RecordError::BadMagic)
    ));
    assert!(matches!(read_all(b"").1, Some(RecordError::BadMagic)));
    let mut newer = header();
    newer.format_version = FORMAT_VERSION + 1;
    let mut out = Vec::new();
    RecordWriter::new(&mut out, &newer)
        .unwrap()
        .finish()
        .unwrap();
    match read_all(&out).1 {
        Some(
            e @ RecordError::UnsupportedVersion {
                found,
                oldest,
                newest,
            },
        ) => {
            assert_eq!(
                (found, oldest, newest),
                (FORMAT_VERSION + 1, 1, FORMAT_VERSION)
            );
            assert!(
                e.to_string()
                    .contains(&format!("version {} is not supported", FORMAT_VERSION + 1)),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A version 1 file, framed by hand as version 1 writers did: raw CBOR
/// records in `CHNK` chunks of `per_chunk` records.
fn v1_file(records: &[Record], per_chunk: usize) -> Vec<u8> {
    let mut header = header();
    header.format_version = 1;
    let mut json = serde_json::to_value(&header).unwrap();
    json.as_object_mut().unwrap().remove("chunk_encoding");
    let json = serde_json::to_vec(&json).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    for chunk in records.chunks(per_chunk) {
        let mut payload = Vec::new();
        for r in chunk {
            ciborium::into_writer(r, &mut payload).unwrap();
        }
        out.extend_from_slice(CHUNK_MAGIC);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
    }
    let total = (records.len() as u64).to_le_bytes();
    out.extend_from_slice(END_MAGIC);
    out.extend_from_slice(&total);
    out.extend_from_slice(&crc32fast::hash(&total).to_le_bytes());
    out
}

#[test]
fn version_1_files_still_read() {
    let mut records = vec![Record::Stack {
        id: StackId(7),
        stack: stack(),
    }];
    records.extend((0..100).map(|i| Record::Event(event(i))));
    let bytes = v1_file(&records, 30);
    let reader = RecordReader::new(bytes.as_slice()).unwrap();
    assert_eq!(reader.header().format_version, 1);
    assert_eq!(reader.header().chunk_encoding, "cbor");
    let (read, err) = read_all(&bytes);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(read, records);
    // Damage in a version 1 chunk is still found and placed.
    let mut bad = bytes.clone();
    let last = bad.len() - 30;
    bad[last] ^= 1;
    assert!(matches!(
        read_all(&bad).1,
        Some(RecordError::BadChunk { .. })
    ));
}

#[test]
fn a_chunk_whose_raw_length_lies_is_refused() {
    let mut bytes = file(10);
    let header_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let raw_len_at = 16 + header_len + 16;
    let raw = u32::from_le_bytes(bytes[raw_len_at..raw_len_at + 4].try_into().unwrap());
    for lie in [raw - 1, raw + 1, MAX_CHUNK + 1] {
        bytes[raw_len_at..raw_len_at + 4].copy_from_slice(&lie.to_le_bytes());
        match read_all(&bytes).1 {
            Some(RecordError::BadChunk { offset, .. }) => {
                assert_eq!(offset, (16 + header_len) as u64)
            }
            other => panic!("raw length {lie}: {other:?}"),
        }
    }
}

#[test]
fn an_unknown_chunk_encoding_is_named() {
    let mut h = header();
    h.chunk_encoding = "cbor+lz4".into();
    let mut out = Vec::new();
    RecordWriter::new(&mut out, &h).unwrap().finish().unwrap();
    let err = read_all(&out).1.unwrap();
    assert!(err.to_string().contains("cbor+lz4"), "{err}");
}
