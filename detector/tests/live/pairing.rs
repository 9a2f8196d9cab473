//! Bios paired in the kernel (detector-ebpf's `pairing`): asynchronous I/O
//! that completes after its syscall returned is resolved there, and
//! whatever is shipped is shipped whole.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;

/// CLOCK_MONOTONIC, the events' clock.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The kernel-side counter `name` from a `--stats-json` file.
fn kernel_counter(stats: &Path, name: &str) -> u64 {
    let stats: Value = serde_json::from_slice(&std::fs::read(stats).unwrap()).unwrap();
    stats["reader"]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

/// Where each bio of `disk` stands, replayed in time order: a completion
/// must follow a submission, and a submission must be completed unless it
/// came in the last moments. Returns (submissions, completions) checked.
fn check_whole_pairs(evs: &[Event], disk: Dev, judged_from: u64) -> (u64, u64) {
    // bio -> (submitted at, sector)
    let mut open: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let (mut submitted, mut completed) = (0, 0);
    let end = evs.iter().map(|e| e.ts).max().unwrap_or(0);
    for ev in evs {
        match &ev.kind {
            EventKind::BioQueue {
                bio,
                disk: d,
                sector,
                ..
            } if *d == disk => {
                open.insert(bio.0, (ev.ts, *sector));
                submitted += 1;
            }
            EventKind::RqComplete {
                bios,
                disk: d,
                sector,
                nr_bytes,
                truncated,
                ..
            } if *d == disk => {
                if *truncated {
                    // Past the bios named, by sector range.
                    let range = *sector..*sector + u64::from(*nr_bytes).div_ceil(512);
                    open.retain(|_, q| !range.contains(&q.1));
                }
                for bio in bios.iter() {
                    let queued = open.remove(&bio.0);
                    if ev.ts > judged_from {
                        assert!(
                            queued.is_some(),
                            "completion of {bio} at {} shipped without its submission",
                            ev.ts
                        );
                        completed += 1;
                    }
                }
            }
            _ => {}
        }
    }
    let unfinished: Vec<_> = open
        .iter()
        .filter(|&(_, &(at, _))| at > judged_from && at + 200_000_000 < end)
        .collect();
    if let Some(&(&bio, _)) = unfinished.first() {
        let about: Vec<&Event> = evs
            .iter()
            .filter(|e| match &e.kind {
                EventKind::BioQueue { bio: b, .. } | EventKind::BioComplete { bio: b, .. } => {
                    b.0 == bio
                }
                EventKind::RqComplete { bios, .. } => bios.iter().any(|b| b.0 == bio),
                _ => false,
            })
            .collect();
        panic!("submissions shipped without their completion: {unfinished:x?}; {about:#?}");
    }
    (submitted, completed)
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn async_io_is_paired_in_the_kernel_and_the_rest_shipped_whole() {
    let fs = LoopFs::new(256);
    let dir = fs.mnt.path().display().to_string();
    sh(&format!(
        "dd if=/dev/zero of={dir}/data bs=1M count=64 oflag=direct 2>/dev/null"
    ));
    let disk = fs.rdev();
    let stats = tempfile::NamedTempFile::new().unwrap();
    let dev = disk.to_string();
    // Tens of thousands of lines: into a file, or the full pipe would
    // hold the session back until its rings overflow.
    let output = tempfile::NamedTempFile::new().unwrap();
    let trace = Trace::start_with(
        &[
            "--json",
            "--dev",
            &dev,
            "--stats-json",
            stats.path().to_str().unwrap(),
        ],
        Stdio::from(output.reopen().unwrap()),
    );
    let start = monotonic_ns();
    // Asynchronous reads: each io_submit returns before its bio completes.
    sh(&format!(
        "fio --name=aio --filename={dir}/data --rw=randread --bs=4k --direct=1 \
         --ioengine=libaio --iodepth=16 --runtime=3 --time_based > /dev/null"
    ));
    // Synchronous writes: dd sleeps in I/O wait for each, so lost-wakeup
    // needs every one of them.
    let dd = direct_io(&fs.mnt.path().join("sync"), 200);
    std::thread::sleep(Duration::from_millis(300));
    trace.stop();
    let lines = json_lines(&std::fs::read(output.path()).unwrap());
    let evs = events(&lines);
    assert!(
        !lines.iter().any(|l| l.get("finding").is_some()),
        "findings on a healthy disk"
    );
    assert_eq!(
        kernel_counter(stats.path(), "ring_buffer_full"),
        0,
        "events lost: the pairs cannot be checked"
    );
    let paired = kernel_counter(stats.path(), "bios_paired");
    assert!(paired > 10_000, "only {paired} bios paired in the kernel");
    // When a bio completes, fio is often in its next io_submit: a new
    // episode, which its episode mark tells apart from the bio's. Taken
    // for the bio's own, that shipped 39k submissions to this disk other
    // than dd's against 664k paired (151 since, the file system's own
    // threads' among them: those are always shipped), and a fifth of
    // fio's I/O on a loop device over tmpfs. Counted by disk, not by
    // fio's name, so that a renamed fio cannot pass unchecked.
    let others_shipped = evs
        .iter()
        .filter(|e| {
            e.pid != dd && matches!(e.kind, EventKind::BioQueue { disk: d, .. } if d == disk)
        })
        .count() as u64;
    assert!(
        others_shipped * 200 < paired,
        "{others_shipped} submissions other than dd's shipped, {paired} bios paired"
    );
    let (submitted, completed) = check_whole_pairs(&evs, disk, start + 300_000_000);
    assert!(
        submitted > 200 && completed > 200,
        "{submitted} submissions, {completed} completions shipped"
    );
    let dd_writes = evs
        .iter()
        .filter(|e| e.pid == dd && matches!(e.kind, EventKind::BioQueue { .. }))
        .count();
    assert!(dd_writes >= 200, "dd's 200 writes: {dd_writes} shipped");
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn full_pairs_nothing() {
    let fs = LoopFs::new(64);
    let dir = fs.mnt.path().display().to_string();
    let stats = tempfile::NamedTempFile::new().unwrap();
    let trace = Trace::start(&["--full", "--stats-json", stats.path().to_str().unwrap()]);
    sh(&format!(
        "fio --name=aio --filename={dir}/data --size=16M --rw=randread --bs=4k --direct=1 \
         --ioengine=libaio --iodepth=16 --runtime=1 --time_based > /dev/null"
    ));
    trace.stop();
    assert_eq!(kernel_counter(stats.path(), "bios_paired"), 0);
}

/// A loop device over a file on `fs`, with buffered I/O: while `fs` is
/// frozen its writes wait in the loop worker, and none completes.
struct LoopOnFile {
    dev: String,
}

impl LoopOnFile {
    fn new(fs: &LoopFs, size_mb: u32) -> Self {
        let file = fs.mnt.path().join("inner.img");
        sh(&format!("truncate -s {size_mb}M {}", file.display()));
        let dev = sh(&format!("losetup --find --show {}", file.display()));
        Self { dev }
    }
}

impl Drop for LoopOnFile {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Thaws on drop, so that a failing test leaves no frozen filesystem.
struct Frozen<'a>(&'a Path);

impl<'a> Frozen<'a> {
    fn new(mnt: &'a Path) -> Self {
        sh(&format!("fsfreeze -f {}", mnt.display()));
        Self(mnt)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(self.0).status();
    }
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn a_stalled_async_write_is_shipped_and_judged() {
    let fs = LoopFs::new(128);
    let inner = LoopOnFile::new(&fs, 32);
    let trace = Trace::start(&["--json", "--lost-io-after", "1s"]);
    // Completions seen on the inner device first: lost-io judges only
    // disks that showed one.
    sh(&format!(
        "dd if=/dev/zero of={} bs=4k count=64 oflag=direct 2>/dev/null",
        inner.dev
    ));
    let writer = Command::new("fio")
        .args([
            "--name=stall",
            &format!("--filename={}", inner.dev),
            "--rw=randwrite",
            "--bs=4k",
            "--direct=1",
            "--ioengine=libaio",
            "--iodepth=4",
            "--number_ios=64",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut writer = writer.unwrap();
    {
        let _frozen = Frozen::new(fs.mnt.path());
        // fio's asynchronous writes wait in the loop worker: their
        // submissions were held in the kernel, and must be shipped.
        std::thread::sleep(Duration::from_millis(2500));
    }
    writer.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = trace.stop();
    let lines = json_lines(&out.stdout);
    let kinds: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.get("finding")?.as_str())
        .collect();
    assert!(
        kinds.contains(&"lost-io-completion") && kinds.contains(&"late-io-completion"),
        "expected the stall and its end: {kinds:?}"
    );
}
