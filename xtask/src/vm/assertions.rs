//! What each scenario's recorded event stream must show: the events of the
//! race, in the racy order, with stacks (and for a twin, the safe order).
//!
//! The scenario's own objects are found through the test module's verdict
//! line (its bios' end_io function, the on-stack completion's address, the
//! mddev), so the checks never pick up whatever else the guest did
//! meanwhile.
//!
//! Stacks: detector's stack map drops a stack whose hash bucket is taken
//! (no BPF_F_REUSE_STACKID), so any one event may come without one, even
//! the only bio_queue of a short session. So each hook that quotes stacks
//! must have them on some events of the whole run (`StackCoverage`, checked
//! across all scenarios), and where a key event has one, it must show the
//! scenario's code (`stack_shows`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::vm::events::{Event, Trace, parse_addr};

pub mod disks;
pub mod hooks;
pub mod late_irq;
mod lives;
pub mod lookalikes;

use lives::{Life, bio_lives, life_of};

pub struct Ctx<'a> {
    pub trace: &'a Trace,
    /// The test module's verdict lines for this scenario.
    pub module: &'a str,
}

pub type Check = fn(&Ctx) -> Result<()>;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// `TASK_UNINTERRUPTIBLE`
const TASK_UNINTERRUPTIBLE: i64 = 0x2;
/// x86_64's kernel stack size (THREAD_SIZE, without KASAN).
const THREAD_SIZE: u64 = 16 << 10;

/// The word after `label` in the module's verdict (or what the scenario's
/// steps noted beside it), without trailing punctuation: "disk 8:0," gives
/// "8:0".
fn module_word<'a>(ctx: &Ctx<'a>, label: &str) -> Result<&'a str> {
    let at = ctx.module.find(label).with_context(|| {
        format!(
            "no '{label}' in the module's verdict: {}",
            ctx.module.trim()
        )
    })?;
    let word = ctx.module[at + label.len()..]
        .split_whitespace()
        .next()
        .unwrap_or("");
    Ok(word.trim_end_matches([',', ':', ')']))
}

/// The number after `label` in the module's verdict.
fn module_number(ctx: &Ctx, label: &str) -> Result<u64> {
    let word = module_word(ctx, label)?;
    word.parse()
        .with_context(|| format!("not a number after '{label}': {word}"))
}

/// The hex number after `label` in the module's verdict, e.g. "at 0x...".
fn module_addr(ctx: &Ctx, label: &str) -> Result<u64> {
    let word = module_word(ctx, label)?;
    let hex = if word.starts_with("0x") {
        word.to_owned()
    } else {
        format!("0x{word}")
    };
    parse_addr(&Value::String(hex)).with_context(|| format!("bad address after '{label}': {word}"))
}

/// If `e` quotes a stack, it goes through `symbol`.
fn stack_shows(e: &Event, symbol: &str) -> Result<()> {
    ensure!(
        !e.has_stack() || e.called_from(symbol),
        "{symbol} is not on the stack of {}: {:?}",
        e.describe(),
        e.frames().collect::<Vec<_>>()
    );
    Ok(())
}

/// Which event kinds were seen, and which with a stack, over all traces.
#[derive(Default)]
pub struct StackCoverage {
    seen: std::collections::BTreeSet<String>,
    with_stack: std::collections::BTreeSet<String>,
}

impl StackCoverage {
    pub fn add(&mut self, trace: &Trace) {
        for e in &trace.events {
            if STACK_KINDS.contains(&e.kind.as_str()) {
                self.seen.insert(e.kind.clone());
                if e.has_stack() {
                    self.with_stack.insert(e.kind.clone());
                }
            }
        }
    }

    /// Every kind whose hook takes stacks quoted one somewhere.
    pub fn check(&self) -> Result<()> {
        let missing: Vec<&String> = self.seen.difference(&self.with_stack).collect();
        ensure!(
            missing.is_empty(),
            "no event quotes a stack among: {missing:?}"
        );
        Ok(())
    }
}

/// The kinds whose hooks take a stack.
const STACK_KINDS: &[&str] = &[
    "bio_queue",
    "bio_endio",
    "complete",
    "wait_enter",
    "md_super_write",
    "md_super_written",
    "md_teardown",
    "del_gendisk",
];

fn is_final_endio(e: &Event) -> bool {
    e.kind == "bio_endio" && e.flag("is_final").unwrap_or(false)
}

/// The bios the scenario submitted: those with the end_io function the
/// module names in its verdict. Checks stack capture on the way.
fn queued<'a>(ctx: &Ctx<'a>) -> Result<Vec<&'a Event>> {
    let end_io = module_addr(ctx, "end_io ")?;
    let queued: Vec<&Event> = ctx
        .trace
        .of_kind("bio_queue")
        .filter(|e| e.addr("end_io") == Some(end_io))
        .collect();
    ensure!(!queued.is_empty(), "no bio_queue with end_io {end_io:#x}");
    Ok(queued)
}

/// The final completions of `queued`'s bio until it is submitted again.
fn finals_of<'a>(ctx: &Ctx<'a>, queued: &Event) -> Vec<&'a Event> {
    let bio = queued.addr("bio");
    let mut finals = Vec::new();
    for e in ctx
        .trace
        .events
        .iter()
        .filter(|e| e.ts > queued.ts && e.addr("bio") == bio)
    {
        if e.kind == "bio_queue" {
            break;
        }
        if is_final_endio(e) {
            finals.push(e);
        }
    }
    finals
}

fn final_of<'a>(ctx: &Ctx<'a>, queued: &Event) -> Result<&'a Event> {
    finals_of(ctx, queued)
        .first()
        .copied()
        .with_context(|| format!("no final bio_endio for {}", queued.describe()))
}

/// Whether `e` shows its task's stack above `x` (the frame holding `x` was
/// left): a switch-out, or any hook, with the stack pointer past it.
fn sp_above(e: &Event, x: u64) -> bool {
    let sp = if e.kind == "sched_switch" {
        e.addr("prev_sp").or_else(|| e.addr("sp"))
    } else {
        e.addr("sp")
    };
    sp.is_some_and(|sp| sp > x)
}

/// The owner of the on-stack completion at `x`: the task that submitted
/// the batch's bios, with `x` inside its kernel stack.
fn onstack_owner<'a>(ctx: &Ctx<'a>, x: u64) -> Result<&'a Event> {
    let queued = queued(ctx)?;
    ensure!(
        queued.len() == 4,
        "expected the batch's 4 bios, saw {}",
        queued.len()
    );
    let first = queued[0];
    let base = first.addr("stack_base").context("no stack_base")?;
    ensure!(
        (base..base + THREAD_SIZE).contains(&x),
        "the completion {x:#x} is not in the owner's stack at {base:#x}"
    );
    // DECLARE_COMPLETION_ONSTACK only calls init_completion() on lockdep
    // kernels: on a stock kernel there is no completion_init to see.
    if let Some(init) = ctx
        .trace
        .of_kind("completion_init")
        .find(|e| e.addr("x") == Some(x))
    {
        ensure!(
            init.tid == first.tid && init.flag("on_own_stack") == Some(true),
            "completion_init not by the owner on its own stack: {}",
            init.describe()
        );
    }
    Ok(first)
}

fn last_complete<'a>(ctx: &Ctx<'a>, x: u64, owner: u32) -> Result<&'a Event> {
    let last = ctx
        .trace
        .of_kind("complete")
        .filter(|e| e.addr("x") == Some(x) && e.tid != owner)
        .last()
        .with_context(|| format!("no complete({x:#x}) by another task"))?;
    stack_shows(last, "zo_end_io")?;
    ensure!(
        last.flag("on_own_stack") == Some(false),
        "complete() flagged as on its caller's own stack: {}",
        last.describe()
    );
    Ok(last)
}

/// onstack: the owner submits the batch, its frame is left (its stack
/// pointer seen above x) without a wait on x, then another task's
/// complete(x) from the batch's end_io.
pub fn onstack(ctx: &Ctx) -> Result<()> {
    let x = module_addr(ctx, "completion at ")?;
    let first = onstack_owner(ctx, x)?;
    let owner = first.tid;
    let late = last_complete(ctx, x, owner)?;
    let left = ctx
        .trace
        .events
        .iter()
        .find(|e| e.tid == owner && e.ts > first.ts && sp_above(e, x))
        .with_context(|| format!("the owner (tid {owner}) is never seen above {x:#x}"))?;
    ensure!(
        left.ts < late.ts,
        "the owner left the frame ({}) only after the late complete ({})",
        left.describe(),
        late.describe()
    );
    if let Some(w) = ctx
        .trace
        .events
        .iter()
        .find(|e| e.tid == owner && e.kind.starts_with("wait_") && e.addr("x") == Some(x))
    {
        bail!("the owner waited on the completion: {}", w.describe());
    }
    Ok(())
}

/// onstack_fixed: the owner's wait on x returns after the last complete(x)
/// and before its frame is left.
pub fn onstack_fixed(ctx: &Ctx) -> Result<()> {
    let x = module_addr(ctx, "completion at ")?;
    let first = onstack_owner(ctx, x)?;
    let owner = first.tid;
    let last = last_complete(ctx, x, owner)?;
    let waited = ctx
        .trace
        .of_kind("wait_exit")
        .find(|e| e.tid == owner && e.addr("x") == Some(x) && e.ts > last.ts)
        .with_context(|| format!("no wait_exit({x:#x}) by the owner after the last complete"))?;
    if let Some(left) = ctx
        .trace
        .events
        .iter()
        .find(|e| e.tid == owner && e.ts > first.ts && e.ts < waited.ts && sp_above(e, x))
    {
        bail!(
            "the owner left the frame before its wait returned: {}",
            left.describe()
        );
    }
    Ok(())
}

/// The lost_wakeup waiter: its bios' last final completion, its sleep in
/// io_schedule, and the first wakeup aimed at it after that.
struct Sleep<'a> {
    last_completion: &'a Event,
    sleep: &'a Event,
    wakeup: Option<&'a Event>,
}

fn io_sleep<'a>(ctx: &Ctx<'a>) -> Result<Sleep<'a>> {
    let queued = queued(ctx)?;
    ensure!(
        queued.len() == 3,
        "expected the waiter's 3 bios, saw {}",
        queued.len()
    );
    let waiter = queued[0].tid;
    let mut completions = Vec::new();
    for q in &queued {
        completions.push(final_of(ctx, q)?);
    }
    let last_completion = *completions.iter().max_by_key(|e| e.ts).expect("3 bios");
    let last_queued = queued.iter().map(|e| e.ts).max().expect("3 bios");
    let sleep = ctx
        .trace
        .of_kind("sched_switch")
        .find(|e| {
            e.tid == waiter
                && e.ts > last_queued
                && e.int("prev_state")
                    .is_some_and(|s| s & TASK_UNINTERRUPTIBLE != 0)
                && e.flag("prev_in_iowait") == Some(true)
        })
        .with_context(|| format!("the waiter (tid {waiter}) never slept in io_schedule"))?;
    let wakeup = ctx.trace.events.iter().find(|e| {
        e.ts > sleep.ts
            && (e.kind == "sched_waking" || e.kind == "sched_wakeup")
            && e.int("target_tid") == Some(i64::from(waiter))
    });
    Ok(Sleep {
        last_completion,
        sleep,
        wakeup,
    })
}

/// lost_wakeup: every bio of the waiter completed, then it slept in D state
/// in iowait, and nothing woke it until the rescue ~8 s later.
pub fn lost_wakeup(ctx: &Ctx) -> Result<()> {
    let s = io_sleep(ctx)?;
    ensure!(
        s.last_completion.ts < s.sleep.ts,
        "the waiter slept ({}) before its last bio completed ({})",
        s.sleep.describe(),
        s.last_completion.describe()
    );
    let wakeup = s
        .wakeup
        .context("the waiter was never woken (not even by the rescue)")?;
    ensure!(
        wakeup.ts - s.sleep.ts >= 7 * SEC,
        "the waiter was woken after {} ms; the rescue comes after ~8 s: {}",
        (wakeup.ts - s.sleep.ts) / MS,
        wakeup.describe()
    );
    Ok(())
}

/// lost_wakeup_fixed: the waiter sleeps, and the last completion's handler
/// wakes it. (bio_endio is entered before the waiter sleeps in both
/// scenarios: the handler's injected window waits for the sleeper.)
pub fn lost_wakeup_fixed(ctx: &Ctx) -> Result<()> {
    let s = io_sleep(ctx)?;
    let wakeup = s.wakeup.context("the waiter was never woken")?;
    ensure!(
        wakeup.tid == s.last_completion.tid && wakeup.ts - s.sleep.ts < SEC,
        "the wakeup ({}) is not the last completion's ({})",
        wakeup.describe(),
        s.last_completion.describe()
    );
    Ok(())
}

/// Final completions of one bio with no submission in between, anywhere.
fn double_completions<'a>(ctx: &Ctx<'a>) -> Vec<(&'a Event, &'a Event)> {
    let mut last_final: HashMap<u64, &Event> = HashMap::new();
    let mut doubles = Vec::new();
    for e in &ctx.trace.events {
        let Some(bio) = e.addr("bio") else { continue };
        if e.kind == "bio_queue" {
            last_final.remove(&bio);
        } else if is_final_endio(e)
            && let Some(first) = last_final.insert(bio, e)
        {
            doubles.push((first, e));
        }
    }
    doubles
}

/// double_complete: two final bio_endio of the scenario's bio without a
/// bio_queue between, the second with an error status (the timeout path).
pub fn double_complete(ctx: &Ctx) -> Result<()> {
    let queued = queued(ctx)?[0];
    let finals = finals_of(ctx, queued);
    ensure!(
        finals.len() == 2,
        "expected 2 final completions, saw {}",
        finals.len()
    );
    stack_shows(finals[1], "rb_cmd_timeout")?;
    ensure!(
        finals[1].int("status").unwrap_or(0) != 0,
        "the second completion has no error status: {}",
        finals[1].describe()
    );
    Ok(())
}

/// double_complete_fixed: the scenario's bio completes once, and no bio
/// completes twice.
pub fn double_complete_fixed(ctx: &Ctx) -> Result<()> {
    let queued = queued(ctx)?[0];
    let finals = finals_of(ctx, queued);
    ensure!(
        finals.len() == 1,
        "expected 1 final completion, saw {}",
        finals.len()
    );
    if let Some((first, second)) = double_completions(ctx).first() {
        bail!(
            "a bio completed twice:\n  {}\n  {}",
            first.describe(),
            second.describe()
        );
    }
    Ok(())
}

/// The scenario's bio_endio and the return from it (same task, next exit).
fn handler_run<'a>(ctx: &Ctx<'a>) -> Result<(&'a Event, &'a Event)> {
    let queued = queued(ctx)?[0];
    let entry = final_of(ctx, queued)?;
    let exit = ctx
        .trace
        .of_kind("bio_endio_exit")
        .find(|e| e.tid == entry.tid && e.ts > entry.ts)
        .with_context(|| format!("no bio_endio_exit after {}", entry.describe()))?;
    if let Some(bio) = exit.addr("bio") {
        ensure!(
            Some(bio) == entry.addr("bio"),
            "the next exit is another bio's: {}",
            exit.describe()
        );
    }
    Ok((entry, exit))
}

/// stuck_handler: the end_io returns ~3 s after bio_endio was entered.
pub fn stuck_handler(ctx: &Ctx) -> Result<()> {
    let (entry, exit) = handler_run(ctx)?;
    let ms = (exit.ts - entry.ts) / MS;
    ensure!(ms >= 2500, "bio_endio took {ms} ms; the handler spins ~3 s");
    Ok(())
}

/// stuck_handler_fixed: the end_io returns quickly.
pub fn stuck_handler_fixed(ctx: &Ctx) -> Result<()> {
    let (entry, exit) = handler_run(ctx)?;
    let ms = (exit.ts - entry.ts) / MS;
    ensure!(ms < 500, "bio_endio took {ms} ms");
    Ok(())
}

/// dd's bio: its submission and its final completion.
fn dd_bio<'a>(ctx: &Ctx<'a>) -> Result<(&'a Event, &'a Event)> {
    let queued = ctx
        .trace
        .of_kind("bio_queue")
        .find(|e| e.comm == "dd")
        .context("no bio submitted by dd")?;
    Ok((queued, final_of(ctx, queued)?))
}

/// lost_io: dd's bio completes only ~5 s after it was submitted.
pub fn lost_io(ctx: &Ctx) -> Result<()> {
    let (queued, done) = dd_bio(ctx)?;
    let ms = (done.ts - queued.ts) / MS;
    ensure!(
        ms >= 4500,
        "dd's bio completed after {ms} ms; the disk holds it 5 s"
    );
    Ok(())
}

/// lost_io_fixed: dd's bio completes within a couple of seconds.
pub fn lost_io_fixed(ctx: &Ctx) -> Result<()> {
    let (queued, done) = dd_bio(ctx)?;
    let ms = (done.ts - queued.ts) / MS;
    ensure!(ms < 2000, "dd's bio took {ms} ms");
    Ok(())
}

/// The scenario's disk removal and its bio's completion.
fn teardown_bio<'a>(ctx: &Ctx<'a>) -> Result<(&'a Event, &'a Event)> {
    let queued = queued(ctx)?[0];
    let disk = queued.text("disk").context("bio_queue without disk")?;
    let del = ctx
        .trace
        .of_kind("del_gendisk")
        .find(|e| e.text("dev") == Some(disk))
        .with_context(|| format!("no del_gendisk of {disk}"))?;
    stack_shows(del, "rb_complete_after_teardown")?;
    let done = final_of(ctx, queued)?;
    Ok((del, done))
}

/// complete_after_teardown: the bio completes after del_gendisk of its disk.
pub fn complete_after_teardown(ctx: &Ctx) -> Result<()> {
    let (del, done) = teardown_bio(ctx)?;
    ensure!(
        done.ts > del.ts,
        "the bio completed before del_gendisk: {}",
        done.describe()
    );
    Ok(())
}

/// complete_after_teardown_fixed: the bio completes before del_gendisk.
pub fn complete_after_teardown_fixed(ctx: &Ctx) -> Result<()> {
    let (del, done) = teardown_bio(ctx)?;
    ensure!(
        done.ts < del.ts,
        "the bio completed after del_gendisk: {}",
        done.describe()
    );
    Ok(())
}

/// The first teardown step of each array, by mddev.
fn teardowns<'a>(ctx: &Ctx<'a>) -> HashMap<u64, &'a Event> {
    let mut first = HashMap::new();
    for e in ctx.trace.of_kind("md_teardown") {
        if let Some(mddev) = e.addr("mddev") {
            first.entry(mddev).or_insert(e);
        }
    }
    first
}

/// md_clean: superblock writes while the array lives, teardown with none
/// pending, no superblock completion after the teardown began.
pub fn md_clean(ctx: &Ctx) -> Result<()> {
    let write = ctx
        .trace
        .of_kind("md_super_write")
        .next()
        .context("no md_super_write (the writes mark the array dirty, then clean)")?;
    stack_shows(write, "md_update_sb")?;
    let first = teardowns(ctx);
    ensure!(
        first.len() == 1,
        "expected one array torn down, saw {}",
        first.len()
    );
    for e in ctx.trace.of_kind("md_teardown") {
        if let Some(p) = e.int("pending_writes") {
            ensure!(
                p == 0,
                "superblock writes pending at teardown: {}",
                e.describe()
            );
        }
    }
    for e in ctx.trace.of_kind("md_super_written") {
        if let Some(t) = e.addr("mddev").and_then(|m| first.get(&m)) {
            ensure!(
                e.ts < t.ts,
                "a superblock write completed after the teardown began: {}",
                e.describe()
            );
        }
    }
    Ok(())
}

/// md_teardown: the injected md_super_write, still pending when the array
/// is detached (mddev_detach), and its md_super_written after that, before
/// the mddev is freed.
pub fn md_teardown(ctx: &Ctx) -> Result<()> {
    let mddev = module_addr(ctx, "mddev ")?;
    let first = teardowns(ctx);
    let began = first
        .get(&mddev)
        .with_context(|| format!("no md_teardown of mddev {mddev:#x}"))?;
    // md's own superblock writes come from its thread (md0_raid1) or from
    // mdadm; the injected one from the shell writing to debugfs
    let injected = ctx
        .trace
        .of_kind("md_super_write")
        .filter(|e| e.addr("mddev") == Some(mddev) && e.comm == "init")
        .last()
        .context("no md_super_write from the injecting shell")?;
    stack_shows(injected, "rb_md_inject")?;
    ensure!(
        injected.ts < began.ts,
        "the injected write came after the teardown began"
    );
    // the point of no return: mddev_detach() inside __md_stop()
    let stage = |name: &'static str| {
        ctx.trace
            .of_kind("md_teardown")
            .find(move |e| e.addr("mddev") == Some(mddev) && e.text("stage") == Some(name))
            .with_context(|| format!("no md_teardown stage {name}"))
    };
    let detach = stage("detach")?;
    ensure!(
        detach.int("pending_writes").unwrap_or(0) > 0,
        "no superblock write pending at {}",
        detach.describe()
    );
    let written = ctx
        .trace
        .of_kind("md_super_written")
        .find(|e| e.addr("mddev") == Some(mddev) && e.ts > began.ts)
        .context("no md_super_written after the teardown began")?;
    stack_shows(written, "bio_endio")?;
    ensure!(
        written.ts > detach.ts,
        "the held superblock write completed before the array was detached: {}",
        written.describe()
    );
    if let Ok(freed) = stage("kobj_release") {
        ensure!(
            written.ts < freed.ts,
            "the superblock write completed after the mddev was freed"
        );
    }
    Ok(())
}

/// Hooks that only exist as tracepoints (everything else hooks a kernel
/// function and must get fentry/fexit or a kprobe on a stock kernel).
const TRACEPOINT_HOOKS: &[&str] = &[
    "block_rq_complete",
    "block_bio_complete",
    "sched_switch",
    "sched_waking",
    "sched_wakeup",
    "sys_exit",
    "sys_enter",
    "sched_process_exit",
    "task_rename",
];

/// `detector check --json` of phase `base` (md_mod not loaded) or `md`:
/// exit 0; every function hook attached with fentry/fexit or a kprobe (or
/// absent from this kernel, or redundant); md's hooks waiting for md_mod
/// before it loads and attached after; no program the verifier rejected
/// (on this kernel each verifies with its first mechanism: a rejection is
/// a program grown too complex, which falls back to a kprobe and takes
/// tens of seconds of verification to get there). Returns one line per
/// hook.
pub fn check_output(share: &Path, phase: &str) -> Result<String> {
    let rc = std::fs::read_to_string(share.join(format!("check-{phase}.rc")))
        .context("no exit status (the guest did not run it)")?;
    ensure!(rc.trim() == "0", "exited with {}", rc.trim());
    let text = std::fs::read_to_string(share.join(format!("check-{phase}.json")))?;
    let json: Value = serde_json::from_str(&text).context("not one JSON object")?;
    let hooks = crate::vm::events::hooks_of_check(&json)?;
    let mut bad = Vec::new();
    let mut md = 0;
    let mut table = String::new();
    for h in &hooks {
        let mechanism = h.mechanism.as_deref().unwrap_or("-");
        table.push_str(&format!(
            "  {:<44} {:<20} {}\n",
            h.name, h.status, mechanism
        ));
        let function_hook = !TRACEPOINT_HOOKS.contains(&h.name.as_str());
        let ok = match (h.module.as_deref(), phase, h.status.as_str()) {
            (Some("md_mod"), "base", status) => status == "waiting_for_module",
            (_, _, "attached") => {
                !function_hook || matches!(mechanism, "fentry" | "fexit" | "kprobe" | "kretprobe")
            }
            (Some("md_mod"), _, _) => false,
            (_, _, status) => status == "absent" || status == "redundant",
        };
        if h.module.as_deref() == Some("md_mod") {
            md += 1;
        }
        if !ok {
            bad.push(format!("{} ({} {mechanism})", h.name, h.status));
        }
        for rejected in &h.verifier_rejected {
            bad.push(format!(
                "{} (its {rejected} program rejected by the verifier)",
                h.name
            ));
        }
    }
    ensure!(md > 0, "no md hooks listed");
    ensure!(
        bad.is_empty(),
        "hooks not attached as expected: {}\n{table}",
        bad.join(", ")
    );
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with(module: &str) -> (Trace, String) {
        (Trace::parse("").unwrap(), module.to_owned())
    }

    #[test]
    fn reads_addresses_from_the_module_verdict() {
        let (trace, module) = ctx_with(
            "ok onstack: end_io 0xffffffffc02cc1d0, completion at 0xffffc90000705d58 (8120 bytes)\n\
             ok md_inject: superblock write to rb0 sector 8 (512 bytes) held, mddev ffff88800634f000 rdev ffff88800531b600",
        );
        let ctx = Ctx {
            trace: &trace,
            module: &module,
        };
        assert_eq!(module_addr(&ctx, "end_io ").unwrap(), 0xffffffffc02cc1d0);
        assert_eq!(
            module_addr(&ctx, "completion at ").unwrap(),
            0xffffc90000705d58
        );
        assert_eq!(module_addr(&ctx, "mddev ").unwrap(), 0xffff88800634f000);
        assert!(module_addr(&ctx, "absent ").is_err());
    }

    #[test]
    fn reads_words_and_numbers_from_the_steps_notes() {
        let (trace, module) = ctx_with(
            "ok integrity_reads: disk 8:0 reads 32 format T10-DIF-TYPE1-CRC read_verify 1 \
             bio_integrity_verify_fn 0xffffffff8e6f2a10\n\
             ok late_complete_irq: completion at 0xffffc9000061bd58 of rb_late_owner (pid 231, cpu 1)",
        );
        let ctx = Ctx {
            trace: &trace,
            module: &module,
        };
        assert_eq!(module_word(&ctx, "disk ").unwrap(), "8:0");
        assert_eq!(module_number(&ctx, "reads ").unwrap(), 32);
        assert_eq!(module_number(&ctx, "(pid ").unwrap(), 231);
        assert_eq!(module_number(&ctx, "cpu ").unwrap(), 1);
        assert_eq!(
            module_addr(&ctx, "bio_integrity_verify_fn ").unwrap(),
            0xffffffff8e6f2a10
        );
        assert!(module_number(&ctx, "format ").is_err());
    }

    #[test]
    fn finds_a_double_completion_without_resubmission() {
        let lines = [
            r#"{"ts":1,"tid":1,"event":"bio_queue","bio":"0x10"}"#,
            r#"{"ts":2,"tid":2,"event":"bio_endio","bio":"0x10","is_final":true}"#,
            r#"{"ts":3,"tid":1,"event":"bio_queue","bio":"0x10"}"#,
            r#"{"ts":4,"tid":2,"event":"bio_endio","bio":"0x10","is_final":true}"#,
            r#"{"ts":5,"tid":3,"event":"bio_endio","bio":"0x10","is_final":true,"status":10}"#,
        ];
        let trace = Trace::parse(&lines.join("\n")).unwrap();
        let ctx = Ctx {
            trace: &trace,
            module: "",
        };
        let doubles = double_completions(&ctx);
        assert_eq!(doubles.len(), 1);
        assert_eq!((doubles[0].0.ts, doubles[0].1.ts), (4, 5));
    }
}
