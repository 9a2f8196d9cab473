//! Privileged tests against this host's kernel: real programs, real I/O.
//!
//! They need root and share kernel state (probes, the disk), so they are
//! `#[ignore]`d in a plain `cargo test` and run one at a time by
//! `cargo xtask test` (`--ignored --test-threads=1`). They filter host noise
//! by pid and device.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use detector::event::{Dev, Event, EventKind, LossCause};
use serde_json::Value;

#[path = "live/pairing.rs"]
mod pairing;

const BIN: &str = env!("CARGO_BIN_EXE_detector");

/// A `detector trace` running in the background.
struct Trace {
    child: Child,
    /// Holds the ready file.
    _dir: tempfile::TempDir,
}

impl Trace {
    /// Starts tracing and waits until every hook is attached.
    fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, Stdio::piped())
    }

    /// [`Trace::start`] with its output sent to `stdout` (a file, for a
    /// session whose output outgrows a pipe nobody reads until the end).
    fn start_with(extra: &[&str], stdout: Stdio) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let child = Command::new(BIN)
            .args(["trace", "--quiet", "--duration", "120s", "--ready-file"])
            .arg(&ready)
            .args(extra)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "detector did not get ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, _dir: dir }
    }

    /// Ends the session with SIGINT, as Ctrl-C would.
    fn stop(self) -> Output {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "detector trace failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Writes `blocks` 4 KiB blocks with O_DIRECT into `file`; returns dd's pid.
fn direct_io(file: &Path, blocks: u32) -> u32 {
    let mut dd = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=4k", &format!("count={blocks}"), "oflag=direct"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = dd.id();
    assert!(dd.wait().unwrap().success());
    pid
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn events(lines: &[Value]) -> Vec<Event> {
    lines
        .iter()
        .filter(|l| l.get("event").is_some())
        .map(|l| serde_json::from_value(l.clone()).unwrap())
        .collect()
}

/// A scratch directory on a real disk (tmpfs has no block I/O).
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn online_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn direct_io_is_seen_submitted_and_completed() {
    let scratch = scratch_dir();
    let file = scratch.path().join("data");
    let dev = Dev::from_user(std::fs::metadata(scratch.path()).unwrap().dev());
    let trace = Trace::start(&["--json"]);
    let dd = direct_io(&file, 256);
    std::thread::sleep(Duration::from_millis(500));
    let out = trace.stop();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let evs = events(&json_lines(&out.stdout));

    // dd's writes. (Its process also reads its own binary while exec()
    // still runs under the parent's name: those are not its I/O.)
    let submitted: Vec<&Event> = evs
        .iter()
        .filter(|e| {
            e.pid == dd && matches!(e.kind, EventKind::BioQueue { opf, .. } if opf & 0xff == 1)
        })
        .collect();
    assert!(
        submitted.len() >= 256,
        "expected dd's 256 direct writes, saw {} submissions",
        submitted.len()
    );
    // dd sleeps in I/O wait for its writes; the wakeups name it (their
    // pid is loaded straight from the woken task on tp_btf kernels).
    // Before its first write it may still run under the parent's name.
    let first_write = submitted.iter().map(|e| e.ts).min().unwrap();
    let after_exec: Vec<&Event> = evs.iter().filter(|e| e.ts > first_write).collect();
    let dd_sleeps = after_exec
        .iter()
        .filter(|e| e.tid == dd)
        .filter(
            |e| matches!(e.kind, EventKind::SchedSwitch { prev_state, .. } if prev_state & 2 != 0),
        )
        .count();
    let dd_wakeups: Vec<&Event> = after_exec
        .iter()
        .copied()
        .filter(
            |e| matches!(&e.kind, EventKind::SchedWakeup { target_tid, .. } if *target_tid == dd),
        )
        .collect();
    assert!(dd_sleeps > 0, "dd never seen asleep in D");
    assert!(
        dd_wakeups.len() >= dd_sleeps / 2,
        "{} wakeups of dd for {dd_sleeps} sleeps",
        dd_wakeups.len()
    );
    assert!(
        dd_wakeups.iter().all(
            |e| matches!(&e.kind, EventKind::SchedWakeup { target_comm, .. } if target_comm == "dd")
        ),
        "a wakeup named dd's tid but not its name"
    );
    // Before matching completions: a lost one would look unmatched.
    assert!(
        !evs.iter().any(|e| matches!(e.kind, EventKind::Lost { .. })),
        "events were lost at this rate"
    );
    assert!(stderr.contains(" 0 lost"), "{stderr}");
    let cpus = online_cpus();
    let completions: Vec<&Event> = evs
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::RqComplete { .. } | EventKind::BioEndio { .. }
            )
        })
        .collect();
    let mut sizes = BTreeMap::new();
    for sub in &submitted {
        let EventKind::BioQueue {
            bio,
            dev: bio_dev,
            disk,
            sector,
            size,
            ..
        } = &sub.kind
        else {
            unreachable!()
        };
        assert!(sub.cpu < cpus, "cpu {} of {cpus}", sub.cpu);
        assert_eq!(sub.comm, "dd");
        assert!(
            *bio_dev == dev || *disk == dev,
            "bio on {bio_dev} (disk {disk}), file on {dev}"
        );
        *sizes.entry(*size).or_insert(0) += 1;
        // Its completion: the request naming it, or (for long merged
        // requests) covering its sector on its disk, after the submission.
        let done = completions.iter().find(|c| {
            c.ts >= sub.ts
                && match &c.kind {
                    EventKind::RqComplete {
                        bios,
                        disk: d,
                        sector: s,
                        nr_bytes,
                        truncated,
                        ..
                    } => {
                        bios.contains(bio)
                            || (*truncated
                                && d == disk
                                && (*s..*s + (*nr_bytes as u64).div_ceil(512)).contains(sector))
                    }
                    EventKind::BioEndio {
                        bio: b, is_final, ..
                    } => b == bio && *is_final,
                    _ => false,
                }
        });
        let done = done.unwrap_or_else(|| panic!("no completion for {sub:?}"));
        if let EventKind::RqComplete {
            sector: s,
            nr_bytes,
            ..
        } = &done.kind
        {
            assert!(
                (*s..*s + (*nr_bytes as u64).div_ceil(512)).contains(sector),
                "request {s}+{nr_bytes}B does not cover bio sector {sector}"
            );
        }
    }
    assert!(
        sizes.get(&4096).copied().unwrap_or(0) >= 256,
        "dd wrote 4 KiB blocks: {sizes:?}"
    );
}

/// Writes `blocks` 4 KiB direct blocks into `file` from a dd pinned to
/// `cpu`; returns its pid.
fn direct_io_on_cpu(file: &Path, blocks: u32, cpu: u32) -> u32 {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "taskset -c {cpu} dd if=/dev/zero of={} bs=4k count={blocks} oflag=direct \
             2>/dev/null & echo $!; wait $!",
            file.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "dd on CPU {cpu} failed");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Each CPU writes its records into a ring of its own: two writers
/// pinned to two CPUs are both seen in full (a ring left unread would
/// lose one of them), each CPU's submissions in time order, and the
/// announcement says how the buffer was shared out.
#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn every_cpus_ring_is_read() {
    if online_cpus() < 2 {
        eprintln!("skipped: one CPU");
        return;
    }
    let scratch = scratch_dir();
    let trace = Trace::start(&["--json"]);
    let writers: Vec<_> = (0..2)
        .map(|cpu| {
            let file = scratch.path().join(format!("data{cpu}"));
            std::thread::spawn(move || (cpu, direct_io_on_cpu(&file, 256, cpu)))
        })
        .collect();
    let pids: Vec<(u32, u32)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let out = trace.stop();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let evs = events(&json_lines(&out.stdout));
    for (cpu, pid) in pids {
        let writes: Vec<&Event> = evs
            .iter()
            .filter(|e| {
                e.pid == pid
                    && matches!(e.kind, EventKind::BioQueue { opf, size, .. }
                        if opf & 0xff == 1 && size == 4096)
            })
            .collect();
        assert!(
            writes.len() >= 256,
            "dd on CPU {cpu}: {} writes seen\n{stderr}",
            writes.len()
        );
        assert!(
            writes.iter().all(|e| e.cpu == cpu),
            "dd pinned to CPU {cpu} submitted elsewhere"
        );
        assert!(
            writes.windows(2).all(|w| w[0].ts <= w[1].ts),
            "CPU {cpu}'s submissions out of order"
        );
    }
    assert!(stderr.contains(" 0 lost"), "{stderr}");
    let rings: u32 = stderr
        .split("a ring buffer per CPU, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ring layout announced: {stderr}"));
    assert!(
        rings >= online_cpus(),
        "{rings} rings for {} CPUs",
        online_cpus()
    );
}

/// Loss the programs notice becomes loss markers with their cause, counted
/// per cause in the summary: a one-page ring buffer overflows under direct
/// I/O from four writers. Following the four writers' episodes needs no
/// map entry (per-task flags are an array indexed by thread id), so
/// one-entry per-task maps lose nothing here.
#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn losses_become_markers_counted_by_cause() {
    let scratch = scratch_dir();
    let trace = Trace::start(&["--json", "--buffer-size", "4K", "--task-map-entries", "1"]);
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let file = scratch.path().join(format!("data{i}"));
            std::thread::spawn(move || direct_io(&file, 512))
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let out = trace.stop();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut by_cause: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events(&json_lines(&out.stdout)) {
        if let EventKind::Lost { count, cause, .. } = e.kind {
            if cause == LossCause::RingStalled {
                // A span a stuck ring left unread: no count to give.
                continue;
            }
            assert!(count > 0, "a marker for no loss: {e:?}");
            *by_cause.entry(cause.name()).or_default() += count;
        }
    }
    assert!(
        by_cause.get("ring_buffer_full").is_some_and(|&n| n > 0),
        "no ring-buffer loss with a 4K buffer: {by_cause:?}\n{stderr}"
    );
    assert!(
        by_cause
            .keys()
            .all(|c| ["ring_buffer_full", "recursion_misses"].contains(c)),
        "following four writers lost events to a map: {by_cause:?}\n{stderr}"
    );
    for (cause, n) in &by_cause {
        assert!(
            stderr.contains(&format!("lost ({cause}): {n}")),
            "summary does not count {cause}: {stderr}"
        );
    }
    assert!(stderr.contains("kernel-side counters: "), "{stderr}");
}

/// `dd` copying /dev/zero to /dev/null in 512-byte blocks: two syscalls a
/// block, no block I/O, no sleep worth a rule's while. Returns its pid.
fn syscalls_only(blocks: u32) -> u32 {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dd if=/dev/zero of=/dev/null bs=512 count={blocks} 2>/dev/null & echo $!; wait"
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Events of `pid` by kind.
fn kinds_of(evs: &[Event], pid: u32) -> BTreeMap<String, u64> {
    let mine: Vec<Event> = evs.iter().filter(|e| e.pid == pid).cloned().collect();
    counts_by_kind(&mine)
}

/// The programs decide in the kernel whether a rule needs an event: a
/// process that only makes syscalls gets none of its syscall returns,
/// switches or wakeups reported, and a process that submits I/O gets none
/// of its returns either: the first submission of each syscall says that
/// its episode starts there. `--full` reports everything.
#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn tasks_no_rule_follows_are_left_out_unless_full() {
    let scratch = scratch_dir();
    // dd's binary in the page cache: reading it at exec would be I/O.
    syscalls_only(1);
    let trace = Trace::start(&["--json"]);
    let idle = syscalls_only(20_000);
    let writer = direct_io(&scratch.path().join("data"), 64);
    let out = trace.stop();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let evs = events(&json_lines(&out.stdout));
    let idle_kinds = kinds_of(&evs, idle);
    for kind in ["sys_exit", "sys_enter", "sched_switch", "sched_waking"] {
        assert!(
            !idle_kinds.contains_key(kind),
            "{kind} of a task no rule follows: {idle_kinds:?}"
        );
    }
    let writer_kinds = kinds_of(&evs, writer);
    assert!(
        !writer_kinds.contains_key("sys_exit"),
        "the returns of a task that only submits I/O: {writer_kinds:?}"
    );
    let episode_starts = evs
        .iter()
        .filter(|e| e.pid == writer)
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::BioQueue {
                    episode_start: true,
                    ..
                }
            )
        })
        .count();
    assert!(
        episode_starts >= 64,
        "{episode_starts} of the writer's 64 write(2)s start an episode: {writer_kinds:?}"
    );
    assert!(stderr.contains(" 0 lost"), "{stderr}");

    let trace = Trace::start(&["--json", "--full"]);
    let idle = syscalls_only(20_000);
    let out = trace.stop();
    let idle_kinds = kinds_of(&events(&json_lines(&out.stdout)), idle);
    assert!(
        idle_kinds.get("sys_exit").copied().unwrap_or(0) >= 40_000,
        "--full left out syscall returns: {idle_kinds:?}"
    );
}

/// Buffered writes of `mib` MiB to `file`, then `sync(2)`: the page cache's
/// writeback is submitted by a kworker (the flusher), not by this process.
fn write_back(file: &Path, mib: usize) {
    let chunk = vec![0x5a_u8; 1 << 20];
    let mut f = std::fs::File::create(file).unwrap();
    for _ in 0..mib {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    drop(f);
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
}

/// A kernel thread never returns to user space: its episode ends at an
/// idle sleep (`TASK_IDLE`, a worker out of work), or every idle sleep of
/// a kworker that once submitted a bio would be reported. With `--full`
/// every switch is reported, so each such sleep can be checked: the
/// flusher's idle sleeps after its writeback say its episode is over.
/// (The owner of an on-stack completion keeps its sleeps watched.)
#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn a_kernel_threads_idle_sleep_ends_its_episode() {
    const TASK_IDLE: u64 = 0x402;
    let scratch = scratch_dir();
    let trace = Trace::start(&["--json", "--full"]);
    for round in 0..3 {
        write_back(&scratch.path().join(format!("data{round}")), 4);
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = trace.stop();
    let lines = json_lines(&out.stdout);
    let text = |l: &Value, k: &str| l.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let num = |l: &Value, k: &str| l.get(k).and_then(Value::as_u64).unwrap_or(0);
    let flag = |l: &Value, k: &str| l.get(k).and_then(Value::as_bool).unwrap_or(false);
    let addr = |l: &Value, k: &str| u64::from_str_radix(text(l, k).trim_start_matches("0x"), 16);
    // Whether the address `k` lies on (or near) the stack the event ran on.
    let on_stack = |l: &Value, k: &str| match (addr(l, k), addr(l, "stack_base")) {
        (Ok(at), Ok(base)) => at >= base && at - base < 64 << 10,
        _ => false,
    };
    // Each kworker that submitted in task context (not an interrupt over
    // it), from its first submission on.
    let mut submitted: BTreeMap<u64, u64> = BTreeMap::new();
    // Owners of an on-stack completion (a bio's `bi_private` or a
    // completion on their stack), whose sleeps stay watched.
    let mut onstack_owners = std::collections::BTreeSet::new();
    let mut idle_sleeps = Vec::new();
    for l in &lines {
        let (tid, ts) = (num(l, "tid"), num(l, "ts"));
        if flag(l, "on_own_stack") || text(l, "event") == "bio_queue" && on_stack(l, "private") {
            onstack_owners.insert(tid);
        }
        match text(l, "event").as_str() {
            "bio_queue" if text(l, "comm").starts_with("kworker") && on_stack(l, "sp") => {
                submitted.entry(tid).or_insert(ts);
            }
            "sched_switch"
                if submitted.get(&tid).is_some_and(|&first| ts > first)
                    && !onstack_owners.contains(&tid)
                    && num(l, "prev_state") & TASK_IDLE == TASK_IDLE
                    && !flag(l, "preempt")
                    && !flag(l, "prev_in_iowait") =>
            {
                idle_sleeps.push((tid, flag(l, "prev_episode_over")));
            }
            _ => {}
        }
    }
    assert!(
        !submitted.is_empty(),
        "no kworker submitted the writeback: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !idle_sleeps.is_empty(),
        "kworkers {submitted:?} submitted writeback but never went idle \
         (on-stack owners, not checked: {onstack_owners:?})"
    );
    let still_in_episode: Vec<_> = idle_sleeps.iter().filter(|(_, over)| !over).collect();
    assert!(
        still_in_episode.is_empty(),
        "idle sleeps of kworkers left in their episode: {still_in_episode:?} of {idle_sleeps:?}"
    );
}

/// Tracepoints the process `pid` holds a BPF link on, from its fds'
/// `fdinfo` (what the kernel has attached, not what detector says).
fn linked_tracepoints(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("tp_name:"))
                .map(|tp| tp.trim().to_owned())
        })
        .collect()
}

/// Waits until `pid` holds (or no longer holds) a link on `sys_exit`.
fn wait_for_sys_exit_link(pid: u32, linked: bool, within: Duration) {
    let start = Instant::now();
    while linked_tracepoints(pid).iter().any(|t| t == "sys_exit") != linked {
        assert!(
            start.elapsed() < within,
            "sys_exit still {} after {within:?}: {:?}",
            if linked { "detached" } else { "attached" },
            linked_tracepoints(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bio_flags(evs: &[Event], pid: u32) -> Vec<(bool, bool)> {
    let mut mine: Vec<&Event> = evs.iter().filter(|e| e.pid == pid).collect();
    mine.sort_by_key(|e| e.ts);
    mine.iter()
        .filter_map(|e| match e.kind {
            EventKind::BioQueue {
                episode_start,
                episode_unbounded,
                ..
            } => Some((episode_start, episode_unbounded)),
            _ => None,
        })
        .collect()
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn syscall_hooks_leave_while_unneeded_and_come_back_for_io() {
    let scratch = scratch_dir();
    syscalls_only(1);
    let trace = Trace::start(&["--json", "--syscall-hooks-idle", "3s"]);
    let pid = trace.child.id();
    assert!(linked_tracepoints(pid).iter().any(|t| t == "sys_exit"));
    // Host noise (a kworker's first submission) may hold them a while.
    wait_for_sys_exit_link(pid, false, Duration::from_secs(60));
    assert!(!linked_tracepoints(pid).iter().any(|t| t == "sys_enter"));
    assert!(linked_tracepoints(pid).iter().any(|t| t == "sched_switch"));
    // A user task's submission while they are away is flagged, and
    // brings them back.
    let unwatched = direct_io(&scratch.path().join("a"), 16);
    wait_for_sys_exit_link(pid, true, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let watched = direct_io(&scratch.path().join("b"), 16);
    let out = trace.stop();
    let evs = events(&json_lines(&out.stdout));
    let first = bio_flags(&evs, unwatched);
    assert!(!first.is_empty(), "no bios of the first writer");
    assert_eq!(
        first[0],
        (true, true),
        "the first writer's first bio starts an unbounded episode: {first:?}"
    );
    let second = bio_flags(&evs, watched);
    assert!(second.len() >= 16, "{second:?}");
    assert!(
        second.iter().all(|(_, unbounded)| !unbounded),
        "with the hooks back, episodes are bounded: {second:?}"
    );
    assert!(
        second.iter().filter(|(start, _)| *start).count() >= 16,
        "{second:?}"
    );
    let markers: Vec<bool> = evs
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::SyscallHooks { attached } => Some(attached),
            _ => None,
        })
        .collect();
    let detached_at = markers.iter().position(|a| !a);
    assert!(
        detached_at.is_some_and(|i| markers[i + 1..].contains(&true)),
        "a detach, then an attach: {markers:?}"
    );
}

/// Direct 4 KiB writes from this thread, after naming it `name`
/// (`/proc/self/task/TID/comm`, which renames through `__set_task_comm`,
/// as exec and `prctl(PR_SET_NAME)` do).
fn write_as(file: &std::fs::File, tid: i32, name: &str, blocks: u64) {
    use std::os::unix::fs::FileExt as _;
    std::fs::write(format!("/proc/self/task/{tid}/comm"), name).unwrap();
    let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
    // SAFETY: a non-zero size; freed below with the same layout.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!buf.is_null());
    // SAFETY: 4096 initialised bytes, owned here.
    let block = unsafe { std::slice::from_raw_parts(buf, 4096) };
    for i in 0..blocks {
        file.write_all_at(block, i * 4096).unwrap();
    }
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
}

/// A task's name goes out in its first record only, and again after a
/// rename: the reader gives every later record the name it had then.
#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn task_names_are_sent_once_and_again_after_a_rename() {
    use std::os::unix::fs::OpenOptionsExt as _;
    let scratch = scratch_dir();
    let stats = scratch.path().join("stats.json");
    let stats_arg = stats.to_str().unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(scratch.path().join("data"))
        .unwrap();
    let trace = Trace::start(&["--json", "--stats-json", stats_arg]);
    let tid = std::thread::spawn(move || {
        // SAFETY: gettid(2) has no preconditions.
        let tid = unsafe { libc::gettid() };
        write_as(&file, tid, "writer-before", 32);
        write_as(&file, tid, "writer-after", 32);
        tid as u32
    })
    .join()
    .unwrap();
    let out = trace.stop();
    let mut mine: Vec<Event> = events(&json_lines(&out.stdout))
        .into_iter()
        .filter(|e| e.tid == tid && matches!(e.kind, EventKind::BioQueue { .. }))
        .collect();
    mine.sort_by_key(|e| e.ts);
    let names: Vec<&str> = mine.iter().map(|e| e.comm.as_str()).collect();
    assert!(names.len() >= 64, "the thread's 64 writes: {names:?}");
    let renamed_at = names
        .iter()
        .position(|n| *n != "writer-before")
        .unwrap_or_else(|| panic!("never renamed: {names:?}"));
    assert!(renamed_at >= 32, "{names:?}");
    assert!(
        names[renamed_at..].iter().all(|n| *n == "writer-after"),
        "{names:?}"
    );
    // The reader filled the names in: the records left them out.
    let stats: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    let filled = stats["reader"]["names_filled"].as_u64().unwrap();
    assert!(filled >= 60, "names filled in by the reader: {filled}");
    // The reader read the rings' positions after its drains, and they
    // agreed with what it had taken (a consumer position at or past the
    // records taken, and never past the producer).
    let rings = &stats["reader"]["ring_stalls"];
    assert!(rings["looks"].as_u64().unwrap() > 0, "{rings}");
    assert_eq!(rings["position_errors"].as_u64(), Some(0), "{rings}");
    assert_eq!(rings["given_up"].as_u64(), Some(0), "{rings}");
}

fn counts_by_kind(evs: &[Event]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for e in evs {
        *counts.entry(e.kind.name().to_owned()).or_insert(0) += 1;
    }
    counts
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn record_then_replay_gives_the_same_events() {
    let scratch = scratch_dir();
    let record = scratch.path().join("session.rec");
    let trace = Trace::start(&["--json", "--record", record.to_str().unwrap()]);
    direct_io(&scratch.path().join("data"), 64);
    let live_out = trace.stop();
    let live = events(&json_lines(&live_out.stdout));
    let replay = Command::new(BIN)
        .args(["replay", "--json"])
        .arg(&record)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed = events(&json_lines(&replay.stdout));
    assert!(!live.is_empty());
    assert_eq!(counts_by_kind(&live), counts_by_kind(&replayed));
    assert_eq!(
        live, replayed,
        "the replay is the live stream, event for event"
    );
    // The summaries agree too.
    let summary = |out: &[u8]| {
        String::from_utf8_lossy(out)
            .lines()
            .find(|l| l.contains(" events in "))
            .map(|l| l.split(" events in ").next().unwrap().trim().to_owned())
    };
    assert_eq!(summary(&live_out.stderr), summary(&replay.stderr));
}

/// Whether bpftrace (an independent loader) can attach a kfunc (fentry)
/// probe on this kernel.
fn bpftrace_fentry_works() -> Option<bool> {
    let out = Command::new("timeout")
        .args([
            "30",
            "bpftrace",
            "-e",
            "kfunc:vmlinux:bio_endio { exit(); } interval:s:1 { exit(); }",
        ])
        .output()
        .ok()?;
    if String::from_utf8_lossy(&out.stderr).contains("command not found") {
        return None;
    }
    Some(out.status.success())
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn check_tells_the_truth_about_this_kernel() {
    let out = Command::new(BIN)
        .args(["check", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.success(), report["can_trace"].as_bool().unwrap());

    let release =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    assert_eq!(report["kernel"]["release"], release.trim());

    // kprobes: the kprobe PMU is the kernel's own statement.
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    assert_eq!(report["kernel"]["kprobes"], kprobe_pmu);
    if !kprobe_pmu {
        assert_eq!(report["mechanisms"]["kprobe"]["available"], false);
    }
    // fentry: ask another loader.
    if let Some(works) = bpftrace_fentry_works() {
        assert_eq!(
            report["mechanisms"]["fentry"]["available"],
            works,
            "bpftrace says fentry {}",
            if works { "works" } else { "does not work" }
        );
    }
    // Tracepoints work wherever BTF does.
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    assert_eq!(report["kernel"]["btf"], btf);
    assert_eq!(report["mechanisms"]["tracepoint"]["available"], btf);

    let hooks: BTreeMap<String, Value> = report["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap().to_owned(), h.clone()))
        .collect();
    assert_eq!(hooks["sched_switch"]["status"], "attached");
    assert_eq!(hooks["bio_submit"]["status"], "attached");
    let fentry = report["mechanisms"]["fentry"]["available"] == true;
    let expected = if fentry {
        "fentry"
    } else if kprobe_pmu {
        "kprobe"
    } else {
        "raw_tracepoint"
    };
    assert_eq!(hooks["bio_submit"]["mechanism"], expected);
    // Where function hooks work, the submission is taken after blk-throttle
    // (a function of 5.19 and later: this is a newer kernel).
    if fentry || kprobe_pmu {
        assert_eq!(hooks["bio_submit"]["target"], "submit_bio_noacct_nocheck");
    }
    // Without function hooks, completion rules cannot run: check says so.
    let rules: BTreeMap<String, Value> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rule"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    if !fentry && !kprobe_pmu {
        assert_eq!(hooks["bio_endio"]["status"], "failed");
        assert_eq!(rules["onstack-completion"]["state"], "inactive");
        assert_eq!(rules["stuck-completion-handler"]["state"], "inactive");
        assert_eq!(rules["lost-io-completion"]["state"], "degraded");
    }
    // md: waits for the module where modules exist; cannot exist without.
    if !Path::new("/proc/modules").exists() {
        assert_eq!(hooks["md_super_write"]["status"], "absent");
        assert_eq!(rules["md-teardown"]["state"], "inactive");
    } else if !Path::new("/sys/module/md_mod").exists() {
        assert_eq!(rules["md-teardown"]["state"], "waiting_for_module");
    }
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn without_privileges_it_says_so() {
    // A copy nobody can execute from a world-readable place.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("detector");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for cmd in [&["trace", "-d", "1"][..], &["check"][..]] {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&bin)
            .args(cmd)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {text}");
        assert!(text.contains("needs root"), "{cmd:?}: {text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn a_kernel_without_btf_is_a_clear_error() {
    use detector::kernel::attach::{LoadError, LoadOptions, Probes};
    let opts = LoadOptions {
        btf_dir: "/nonexistent/btf".into(),
        ..LoadOptions::default()
    };
    let err = Probes::load(opts).err().expect("loading without BTF fails");
    assert!(matches!(err, LoadError::NoBtf), "{err}");
    assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
}

/// Runs `cmd`, panicking with its output if it fails.
fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loop device over a scratch file, with a fresh ext4 mounted on it.
struct LoopFs {
    dev: String,
    mnt: tempfile::TempDir,
    _backing: tempfile::TempDir,
}

impl LoopFs {
    fn new(size_mb: u32) -> Self {
        let backing = scratch_dir();
        let img = backing.path().join("disk.img");
        sh(&format!("truncate -s {size_mb}M {}", img.display()));
        let dev = sh(&format!("losetup --find --show {}", img.display()));
        sh(&format!("mkfs.ext4 -q -F {dev}"));
        let mnt = tempfile::tempdir().unwrap();
        sh(&format!("mount {dev} {}", mnt.path().display()));
        Self {
            dev,
            mnt,
            _backing: backing,
        }
    }

    fn rdev(&self) -> Dev {
        use std::os::unix::fs::MetadataExt as _;
        Dev::from_user(std::fs::metadata(&self.dev).unwrap().rdev())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
#[ignore = "needs root and a live kernel; run by cargo xtask test"]
fn a_benign_storage_workload_gives_no_findings() {
    let trace = Trace::start(&["--json"]);
    let fs = LoopFs::new(256);
    let dir = fs.mnt.path().display().to_string();
    // Direct random writes, buffered writes with fsync, async reads, a dd
    // stream, then sync and dropped caches: the everyday I/O mix.
    sh(&format!(
        "fio --directory={dir} --size=32M --runtime=6 --time_based --group_reporting \
         --name=direct --rw=randwrite --bs=4k --direct=1 --ioengine=psync \
         --name=buffered --rw=write --bs=64k --fsync=8 --ioengine=psync \
         --name=aio --rw=randread --bs=16k --direct=1 --ioengine=libaio --iodepth=8 \
         > /dev/null"
    ));
    sh(&format!(
        "dd if=/dev/zero of={dir}/stream bs=1M count=64 conv=fsync 2>/dev/null"
    ));
    sh("sync; echo 3 > /proc/sys/vm/drop_caches");
    sh(&format!("cat {dir}/stream > /dev/null"));
    let dev = fs.rdev();
    drop(fs);
    std::thread::sleep(Duration::from_millis(300));
    let out = trace.stop();
    let lines = json_lines(&out.stdout);
    let findings: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("finding").is_some())
        .collect();
    assert!(
        findings.is_empty(),
        "benign workload gave findings: {findings:#?}"
    );
    // Not vacuous: the loop device's I/O was seen submitted and completed,
    // and the rules that this kernel supports were running.
    let evs = events(&lines);
    let on_dev = |e: &&Event| match &e.kind {
        EventKind::BioQueue { disk, .. } => *disk == dev,
        EventKind::RqComplete { disk, .. } => *disk == dev,
        _ => false,
    };
    let submitted = evs
        .iter()
        .filter(on_dev)
        .filter(|e| matches!(e.kind, EventKind::BioQueue { .. }))
        .count();
    let completed = evs
        .iter()
        .filter(on_dev)
        .filter(|e| matches!(e.kind, EventKind::RqComplete { .. }))
        .count();
    assert!(
        submitted > 1000 && completed > 100,
        "{dev}: {submitted} submitted, {completed} completed"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("findings: 0"), "{stderr}");
    assert!(
        stderr.contains("rule lost-io-completion") && stderr.contains("rule lost-wakeup"),
        "{stderr}"
    );
}
