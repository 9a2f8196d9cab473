//! Scale figures for `cargo xtask bench`, from the synthetic busy host
//! (`detector::synth`). Each subcommand prints one JSON object.
//!
//! - `write FILE EVENTS`: records the busy host to FILE (as `trace -o`
//!   would, stacks once each).
//! - `engine FILE`: replays FILE into the engine alone, timing only the
//!   engine (events are decoded in batches first): the engine's events/s
//!   on the one core this runs on. Fails if the engine finds anything.
//! - `v1 IN OUT`: IN re-framed as record format 1 (raw chunks), to
//!   compare replay with builds from before format 2.
//! - `memory`: the engine's heap per tracked bio, from an allocator that
//!   counts bytes: a busy phase, then a ramp of bios that stay in flight;
//!   the heap's growth over the ramp divided by the bios it added.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use detector::engine::{Engine, EngineConfig, Finding};
use detector::event::{Addr, Dev, Event, EventKind, Frame, Hook, Stack, StackId};
use detector::record::{Record, RecordHeader, RecordReader, RecordWriter};
use detector::synth::{BusyHost, STACK_IDS, distribution_hooks};
use serde_json::json;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn engine_config() -> EngineConfig {
    EngineConfig {
        bio_endio_hooked: true,
        ..EngineConfig::default()
    }
}

/// A stack as a kernel would give it: a dozen symbolized frames.
fn synthetic_stack(id: u32) -> Stack {
    let frames = (0..12)
        .map(|i| Frame {
            addr: Addr(0xffff_ffff_8100_0000 + (id as u64 * 97 + i * 13) * 0x40),
            symbol: Some(format!("kernel_function_{}", (id as u64 * 7 + i) % 300)),
            offset: (i * 0x1d) % 0x200,
            module: None,
        })
        .collect();
    Stack { frames }
}

fn write(path: &str, events: u64) -> Result<()> {
    let header = RecordHeader {
        kernel_release: "synthetic".into(),
        machine: "x86_64".into(),
        hostname: "busy-host".into(),
        hooks: distribution_hooks(),
        ..RecordHeader::current()
    };
    let file = File::create(path).with_context(|| format!("cannot create {path}"))?;
    let mut w = RecordWriter::new(BufWriter::new(file), &header)?;
    let mut written = vec![false; STACK_IDS as usize + 2];
    let mut n = 0u64;
    let started = Instant::now();
    for ev in (BusyHost {
        events,
        ..BusyHost::default()
    })
    .events()
    {
        if let Some(StackId(id)) = ev.stack
            && !std::mem::replace(&mut written[id as usize], true)
        {
            w.stack(StackId(id), &synthetic_stack(id))?;
        }
        w.event(&ev)?;
        n += 1;
    }
    w.finish()?;
    let bytes = std::fs::metadata(path)?.len();
    println!(
        "{}",
        json!({
            "events": n,
            "bytes": bytes,
            "bytes_per_event": bytes as f64 / n as f64,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

fn engine(path: &str) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {path}"))?;
    let mut reader = RecordReader::new(BufReader::new(file))?;
    let mut engine = Engine::new(engine_config());
    let mut findings: Vec<Finding> = Vec::new();
    let mut batch: Vec<Event> = Vec::with_capacity(1 << 16);
    let (mut events, mut engine_ns, mut decode_ns) = (0u64, 0u128, 0u128);
    let mut most_in_flight = 0;
    loop {
        let t = Instant::now();
        for record in reader.by_ref() {
            if let Record::Event(ev) = record? {
                batch.push(ev);
                if batch.len() == batch.capacity() {
                    break;
                }
            }
        }
        decode_ns += t.elapsed().as_nanos();
        if batch.is_empty() {
            break;
        }
        events += batch.len() as u64;
        let t = Instant::now();
        for ev in batch.drain(..) {
            engine.push_into(ev, &mut findings);
        }
        engine_ns += t.elapsed().as_nanos();
        most_in_flight = most_in_flight.max(engine.stats().live.bios_in_flight);
    }
    let t = Instant::now();
    findings.extend(engine.finish());
    engine_ns += t.elapsed().as_nanos();
    if !findings.is_empty() {
        bail!(
            "the synthetic busy host gave {} findings, the first: {:#?}",
            findings.len(),
            findings[0]
        );
    }
    let stats = engine.stats();
    println!(
        "{}",
        json!({
            "events": events,
            "engine_seconds": engine_ns as f64 / 1e9,
            "engine_events_per_s": events as f64 / (engine_ns as f64 / 1e9),
            "engine_ns_per_event": engine_ns as f64 / events as f64,
            "decode_ns_per_event": decode_ns as f64 / events as f64,
            "findings": findings.len(),
            "indeterminate": stats.indeterminate.values().sum::<u64>(),
            "most_bios_in_flight": most_in_flight,
        })
    );
    Ok(())
}

/// Bios submitted during the ramp: far more than the busy phase keeps in
/// flight, well under the engine's table limit.
const RAMP_BIOS: u64 = 100_000;

fn ramp_queue(i: u64, ts: u64) -> Event {
    let tid = 50_000 + (i % 64) as u32;
    let base = 0xffff_c900_4000_0000 + tid as u64 * 0x10000;
    Event {
        ts,
        cpu: (i % 32) as u32,
        pid: tid,
        tid,
        comm: "ramp".into(),
        hook: Hook::Fentry,
        stack_base: Addr(base),
        sp: Addr(base + 0x3100),
        stack: None,
        kind: EventKind::BioQueue {
            bio: Addr(0xffff_8890_0000_0000 + i * 0x100),
            dev: Dev::new(8, 16),
            disk: Dev::new(8, 16),
            sector: i * 8,
            size: 4096,
            opf: 0,
            end_io: Addr(0xffff_ffff_8160_4a10),
            private: Addr(0),
            disk_relative: true,
            episode_start: false,
            episode_unbounded: false,
        },
    }
}

fn ramp_endio(i: u64, ts: u64, exit: bool) -> Event {
    let bio = Addr(0xffff_8890_0000_0000 + i * 0x100);
    let kind = if exit {
        EventKind::BioEndioExit { bio: Some(bio) }
    } else {
        EventKind::BioEndio {
            bio,
            end_io: Addr(0xffff_ffff_8160_4a10),
            private: Addr(0),
            dev: Dev::new(8, 16),
            disk: Dev::new(8, 16),
            sector: i * 8,
            size: 0,
            status: 0,
            flags: 0,
            remaining: 1,
            is_final: true,
            chain_depth: 0,
            opf: 1,
            has_blkg: true,
            integrity: false,
        }
    };
    Event {
        ts,
        cpu: 3,
        pid: 0,
        tid: 0,
        comm: "swapper/3".into(),
        hook: if exit { Hook::Fexit } else { Hook::Fentry },
        stack_base: Addr(0xffff_ffff_82a0_c000),
        sp: Addr(0xffff_c900_0100_fe00),
        stack: None,
        kind,
    }
}

fn memory(busy_events: u64) -> Result<()> {
    let cfg = engine_config();
    let window = cfg.reorder_window_ns;
    let mut engine = Engine::new(cfg);
    let mut findings = Vec::new();
    let mut ts = 0;
    for ev in (BusyHost {
        events: busy_events,
        ..BusyHost::default()
    })
    .events()
    {
        ts = ev.ts;
        engine.push_into(ev, &mut findings);
    }
    // Everything held in the reorder window is processed at both points.
    ts += 2 * window;
    findings.extend(engine.advance(ts));
    let (heap_before, before) = (LIVE.load(Ordering::Relaxed), engine.stats().live);
    for i in 0..RAMP_BIOS {
        ts += 10_000;
        engine.push_into(ramp_queue(i, ts), &mut findings);
    }
    ts += 2 * window;
    findings.extend(engine.advance(ts));
    let (heap_after, after) = (LIVE.load(Ordering::Relaxed), engine.stats().live);
    for i in 0..RAMP_BIOS {
        ts += 1_000;
        engine.push_into(ramp_endio(i, ts, false), &mut findings);
        engine.push_into(ramp_endio(i, ts + 100, true), &mut findings);
    }
    findings.extend(engine.finish());
    if !findings.is_empty() {
        bail!(
            "the memory ramp gave {} findings: {:#?}",
            findings.len(),
            findings[0]
        );
    }
    let added = after.bios.saturating_sub(before.bios);
    if added == 0 {
        bail!("the ramp added no tracked bio: {before:?} -> {after:?}");
    }
    let grown = heap_after.saturating_sub(heap_before);
    println!(
        "{}",
        json!({
            "bios_added": added,
            "bios_in_flight": after.bios_in_flight,
            "heap_grown_bytes": grown,
            "bytes_per_bio": grown as f64 / added as f64,
            "process_heap_bytes_after_busy_phase": heap_before,
        })
    );
    Ok(())
}

/// IN's records, re-framed as format 1: raw CBOR chunks, no compression.
fn to_v1(input: &str, out: &str) -> Result<()> {
    use detector::record::{CHUNK_MAGIC, END_MAGIC, MAGIC};
    use std::io::Write as _;
    let file = File::open(input).with_context(|| format!("cannot open {input}"))?;
    let reader = RecordReader::new(BufReader::new(file))?;
    let mut header = serde_json::to_value(reader.header())?;
    header["format_version"] = json!(1);
    header.as_object_mut().map(|h| h.remove("chunk_encoding"));
    let header = serde_json::to_vec(&header)?;
    let mut w = BufWriter::new(File::create(out)?);
    w.write_all(MAGIC)?;
    w.write_all(&(header.len() as u32).to_le_bytes())?;
    w.write_all(&crc32fast::hash(&header).to_le_bytes())?;
    w.write_all(&header)?;
    let (mut chunk, mut in_chunk, mut total) = (Vec::new(), 0u32, 0u64);
    let mut flush = |chunk: &mut Vec<u8>, n: &mut u32| -> Result<()> {
        if *n > 0 {
            w.write_all(CHUNK_MAGIC)?;
            w.write_all(&(chunk.len() as u32).to_le_bytes())?;
            w.write_all(&n.to_le_bytes())?;
            w.write_all(&crc32fast::hash(chunk).to_le_bytes())?;
            w.write_all(chunk)?;
        }
        chunk.clear();
        *n = 0;
        Ok(())
    };
    for record in reader {
        ciborium::into_writer(&record?, &mut chunk)?;
        in_chunk += 1;
        total += 1;
        if in_chunk == 4096 {
            flush(&mut chunk, &mut in_chunk)?;
        }
    }
    flush(&mut chunk, &mut in_chunk)?;
    let total = total.to_le_bytes();
    w.write_all(END_MAGIC)?;
    w.write_all(&total)?;
    w.write_all(&crc32fast::hash(&total).to_le_bytes())?;
    w.flush()?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(0), arg(1), arg(2)) {
        (Some("write"), Some(path), Some(n)) => write(path, n.parse()?),
        (Some("engine"), Some(path), None) => engine(path),
        (Some("v1"), Some(input), Some(out)) => to_v1(input, out),
        (Some("memory"), n, None) => memory(n.map_or(Ok(1_000_000), str::parse)?),
        _ => {
            bail!("usage: scale write FILE EVENTS | engine FILE | v1 IN OUT | memory [BUSY_EVENTS]")
        }
    }
}
