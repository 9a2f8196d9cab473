//! What each scenario's recorded event stream must show: the events of the
//! race, in the racy order, with stacks (and for a twin, the safe order).
//!
//! The ground truth comes from the test module's verdict line (e.g. the
//! on-stack completion's address), so the checks look for the scenario's
//! own objects, not for whatever else the guest did meanwhile.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::vm::events::{Event, Trace, parse_addr};

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

/// The hex number after `label` in the module's verdict, e.g. "at 0x...".
fn module_addr(ctx: &Ctx, label: &str) -> Result<u64> {
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
    parse_addr(&Value::String(word.trim_end_matches(',').to_owned()))
        .with_context(|| format!("bad address after '{label}': {word}"))
}

fn need_stack(e: &Event) -> Result<()> {
    ensure!(e.has_stack(), "no stack on {}", e.describe());
    Ok(())
}

fn is_final_endio(e: &Event) -> bool {
    e.kind == "bio_endio" && e.flag("is_final").unwrap_or(false)
}

/// Whether `e`, an event of `tid`, shows that task's stack above `x`
/// (the frame holding `x` was left).
fn sp_above(e: &Event, x: u64) -> bool {
    let sp = if e.kind == "sched_switch" {
        e.addr("prev_sp").or_else(|| e.addr("sp"))
    } else {
        e.addr("sp")
    };
    sp.is_some_and(|sp| sp > x)
}

/// The owner's `completion_init` of the on-stack completion at `x`.
fn onstack_init<'a>(ctx: &Ctx<'a>, x: u64) -> Result<&'a Event> {
    let init = ctx
        .trace
        .of_kind("completion_init")
        .find(|e| e.addr("x") == Some(x))
        .with_context(|| format!("no completion_init of {x:#x}"))?;
    ensure!(
        init.flag("on_own_stack") == Some(true),
        "completion_init not on the owner's own stack: {}",
        init.describe()
    );
    Ok(init)
}

/// onstack: completion_init(x) on the owner's stack; the owner's frame is
/// left (its sp seen above x) without a wait on x; then another task's
/// complete(x).
pub fn onstack(ctx: &Ctx) -> Result<()> {
    let x = module_addr(ctx, "completion at ")?;
    let init = onstack_init(ctx, x)?;
    let owner = init.tid;
    let late = ctx
        .trace
        .of_kind("complete")
        .filter(|e| e.addr("x") == Some(x) && e.tid != owner)
        .last()
        .with_context(|| format!("no complete({x:#x}) by another task"))?;
    need_stack(late)?;
    ensure!(late.ts > init.ts, "the late complete precedes the init");
    let left = ctx
        .trace
        .events
        .iter()
        .find(|e| e.tid == owner && e.ts > init.ts && sp_above(e, x))
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
    let init = onstack_init(ctx, x)?;
    let owner = init.tid;
    let last = ctx
        .trace
        .of_kind("complete")
        .filter(|e| e.addr("x") == Some(x) && e.tid != owner)
        .last()
        .with_context(|| format!("no complete({x:#x}) by another task"))?;
    need_stack(last)?;
    let waited = ctx
        .trace
        .of_kind("wait_exit")
        .find(|e| e.tid == owner && e.addr("x") == Some(x) && e.ts > last.ts)
        .with_context(|| format!("no wait_exit({x:#x}) by the owner after the last complete"))?;
    if let Some(left) = ctx
        .trace
        .events
        .iter()
        .find(|e| e.tid == owner && e.ts > init.ts && e.ts < waited.ts && sp_above(e, x))
    {
        bail!(
            "the owner left the frame before its wait returned: {}",
            left.describe()
        );
    }
    Ok(())
}

/// The waiter of the lost_wakeup scenarios: the task that submitted the
/// scenario's bios and then slept uninterruptibly in io_schedule; returns
/// (its bios' last final completion, its sleep, the next wakeup of it).
struct Sleep<'a> {
    last_completion: &'a Event,
    sleep: &'a Event,
    wakeup: Option<&'a Event>,
}

fn io_sleep<'a>(ctx: &Ctx<'a>) -> Result<Sleep<'a>> {
    let events = &ctx.trace.events;
    // lost_wakeup submits its bios from the shell's write into debugfs
    let mut bios: HashMap<u64, (u32, u64)> = HashMap::new();
    for e in ctx.trace.of_kind("bio_queue") {
        if e.comm == "sh"
            && let Some(bio) = e.addr("bio")
        {
            bios.insert(bio, (e.tid, e.ts));
        }
    }
    let (&_, &(waiter, _)) = bios
        .iter()
        .next()
        .context("no bio submitted by the scenario's shell")?;
    let completions: Vec<&Event> = events
        .iter()
        .filter(|e| {
            is_final_endio(e)
                && e.addr("bio")
                    .and_then(|b| bios.get(&b))
                    .is_some_and(|&(tid, ts)| tid == waiter && e.ts > ts)
        })
        .collect();
    ensure!(
        completions.len() >= 3,
        "expected the waiter's 3 bios to complete, saw {}",
        completions.len()
    );
    let last_completion = *completions.last().expect("checked");
    need_stack(last_completion)?;
    let sleep = events
        .iter()
        .rev()
        .find(|e| {
            e.kind == "sched_switch"
                && e.tid == waiter
                && e.int("prev_state")
                    .is_some_and(|s| s & TASK_UNINTERRUPTIBLE != 0)
                && e.flag("prev_in_iowait") == Some(true)
        })
        .with_context(|| format!("the waiter (tid {waiter}) never slept in io_schedule"))?;
    let wakeup = events.iter().find(|e| {
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

/// lost_wakeup_fixed: the waiter sleeps, and the last completion wakes it.
pub fn lost_wakeup_fixed(ctx: &Ctx) -> Result<()> {
    let s = io_sleep(ctx)?;
    ensure!(
        s.sleep.ts < s.last_completion.ts,
        "the waiter's last bio completed ({}) before it slept ({})",
        s.last_completion.describe(),
        s.sleep.describe()
    );
    let wakeup = s.wakeup.context("the waiter was never woken")?;
    ensure!(
        wakeup.ts >= s.last_completion.ts && wakeup.ts - s.sleep.ts < SEC,
        "the wakeup ({}) is not the last completion's ({})",
        wakeup.describe(),
        s.last_completion.describe()
    );
    Ok(())
}

/// Final completions of one bio with no submission in between.
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

/// double_complete: two final bio_endio of one bio without a bio_queue
/// between, the second with an error status (the timeout path).
pub fn double_complete(ctx: &Ctx) -> Result<()> {
    let doubles = double_completions(ctx);
    let (first, second) = doubles
        .first()
        .context("no bio completed twice without a submission in between")?;
    need_stack(first)?;
    need_stack(second)?;
    ensure!(
        second.int("status").unwrap_or(0) != 0,
        "the second completion has no error status: {}",
        second.describe()
    );
    Ok(())
}

/// double_complete_fixed: no bio completes twice.
pub fn double_complete_fixed(ctx: &Ctx) -> Result<()> {
    if let Some((first, second)) = double_completions(ctx).first() {
        bail!(
            "a bio completed twice:\n  {}\n  {}",
            first.describe(),
            second.describe()
        );
    }
    let ours = ctx
        .trace
        .of_kind("bio_queue")
        .filter(|e| e.comm == "sh")
        .count();
    ensure!(ours >= 1, "the scenario's bio was not seen submitted");
    Ok(())
}

/// bio_endio entry/exit pairs of one task: (entry, exit, nanoseconds).
fn handler_runs<'a>(ctx: &Ctx<'a>) -> Vec<(&'a Event, &'a Event, u64)> {
    let mut open: HashMap<u32, Vec<&Event>> = HashMap::new();
    let mut runs = Vec::new();
    for e in &ctx.trace.events {
        match e.kind.as_str() {
            "bio_endio" => open.entry(e.tid).or_default().push(e),
            "bio_endio_exit" => {
                if let Some(entry) = open.get_mut(&e.tid).and_then(Vec::pop) {
                    runs.push((entry, e, e.ts - entry.ts));
                }
            }
            _ => {}
        }
    }
    runs
}

/// stuck_handler: a bio_endio whose exit comes ~3 s after its entry.
pub fn stuck_handler(ctx: &Ctx) -> Result<()> {
    let runs = handler_runs(ctx);
    let (entry, exit, ns) = runs
        .iter()
        .max_by_key(|r| r.2)
        .context("no bio_endio with its exit")?;
    ensure!(
        *ns >= 2500 * MS,
        "the longest bio_endio took {} ms; the handler spins ~3 s",
        ns / MS
    );
    need_stack(entry)?;
    ensure!(exit.ts > entry.ts, "exit before entry");
    Ok(())
}

/// stuck_handler_fixed: every bio_endio returns quickly.
pub fn stuck_handler_fixed(ctx: &Ctx) -> Result<()> {
    let runs = handler_runs(ctx);
    ensure!(!runs.is_empty(), "no bio_endio with its exit");
    if let Some((entry, _, ns)) = runs.iter().find(|r| r.2 >= 500 * MS) {
        bail!("a bio_endio took {} ms: {}", ns / MS, entry.describe());
    }
    Ok(())
}

/// dd's bio: its submission and its final completion.
fn dd_bio<'a>(ctx: &Ctx<'a>) -> Result<(&'a Event, &'a Event)> {
    let queued = ctx
        .trace
        .of_kind("bio_queue")
        .find(|e| e.comm == "dd")
        .context("no bio submitted by dd")?;
    need_stack(queued)?;
    let bio = queued.addr("bio").context("bio_queue without bio")?;
    let done = ctx
        .trace
        .events
        .iter()
        .find(|e| e.ts > queued.ts && is_final_endio(e) && e.addr("bio") == Some(bio))
        .with_context(|| format!("dd's bio {bio:#x} never completed"))?;
    Ok((queued, done))
}

/// lost_io: dd's bio completes only ~5 s after it was submitted.
pub fn lost_io(ctx: &Ctx) -> Result<()> {
    let (queued, done) = dd_bio(ctx)?;
    ensure!(
        done.ts - queued.ts >= 4500 * MS,
        "dd's bio completed after {} ms; the disk holds it 5 s",
        (done.ts - queued.ts) / MS
    );
    Ok(())
}

/// lost_io_fixed: dd's bio completes within a couple of seconds.
pub fn lost_io_fixed(ctx: &Ctx) -> Result<()> {
    let (queued, done) = dd_bio(ctx)?;
    ensure!(
        done.ts - queued.ts < 2 * SEC,
        "dd's bio took {} ms",
        (done.ts - queued.ts) / MS
    );
    Ok(())
}

/// The test disk's del_gendisk and the final completions on that disk.
fn teardown_bio<'a>(ctx: &Ctx<'a>) -> Result<(&'a Event, &'a Event)> {
    let del = ctx
        .trace
        .of_kind("del_gendisk")
        .next()
        .context("no del_gendisk")?;
    let dev = del.text("dev").context("del_gendisk without dev")?;
    let done = ctx
        .trace
        .events
        .iter()
        .find(|e| is_final_endio(e) && e.text("disk") == Some(dev))
        .with_context(|| format!("no bio completed on {dev}"))?;
    need_stack(done)?;
    Ok((del, done))
}

/// complete_after_teardown: a bio completes on a disk after its
/// del_gendisk.
pub fn complete_after_teardown(ctx: &Ctx) -> Result<()> {
    let (del, done) = teardown_bio(ctx)?;
    ensure!(
        done.ts > del.ts,
        "the bio completed before del_gendisk: {}",
        done.describe()
    );
    Ok(())
}

/// complete_after_teardown_fixed: the disk's bios complete before removal.
pub fn complete_after_teardown_fixed(ctx: &Ctx) -> Result<()> {
    let (del, done) = teardown_bio(ctx)?;
    ensure!(
        done.ts < del.ts,
        "a bio completed after del_gendisk: {}",
        done.describe()
    );
    let dev = del.text("dev").unwrap_or_default();
    if let Some(late) = ctx
        .trace
        .events
        .iter()
        .find(|e| e.ts > del.ts && is_final_endio(e) && e.text("disk") == Some(dev))
    {
        bail!("a bio completed after del_gendisk: {}", late.describe());
    }
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
        .context("no md_super_write (array creation writes superblocks)")?;
    need_stack(write)?;
    let first = teardowns(ctx);
    ensure!(!first.is_empty(), "no md_teardown");
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
        let began = e.addr("mddev").and_then(|m| first.get(&m));
        if let Some(t) = began {
            ensure!(
                e.ts < t.ts,
                "a superblock write completed after the teardown began: {}",
                e.describe()
            );
        }
    }
    Ok(())
}

/// md_teardown: the injected md_super_write, a teardown step that sees it
/// pending, and its md_super_written after the teardown began.
pub fn md_teardown(ctx: &Ctx) -> Result<()> {
    let mddev = module_addr(ctx, "mddev ")?;
    let first = teardowns(ctx);
    let began = first
        .get(&mddev)
        .with_context(|| format!("no md_teardown of mddev {mddev:#x}"))?;
    let injected = ctx
        .trace
        .of_kind("md_super_write")
        .filter(|e| e.addr("mddev") == Some(mddev) && e.ts < began.ts)
        .last()
        .context("no md_super_write before the teardown")?;
    need_stack(injected)?;
    let pending = ctx
        .trace
        .of_kind("md_teardown")
        .find(|e| e.addr("mddev") == Some(mddev) && e.int("pending_writes").unwrap_or(0) > 0)
        .context("no md_teardown step with pending_writes > 0")?;
    let written = ctx
        .trace
        .of_kind("md_super_written")
        .find(|e| e.addr("mddev") == Some(mddev) && e.ts > began.ts)
        .context("no md_super_written after the teardown began")?;
    need_stack(written)?;
    ensure!(
        pending.ts <= written.ts,
        "pending teardown step after the completion"
    );
    Ok(())
}

/// `detector check --json` of phase `base` (md_mod not loaded) or `md`:
/// exit 0, and every hook attached with fentry/fexit or kprobe/kretprobe;
/// md's hooks too once md_mod is loaded.
pub fn check_output(share: &Path, phase: &str) -> Result<()> {
    let rc = std::fs::read_to_string(share.join(format!("check-{phase}.rc")))
        .context("no exit status (the guest did not run it)")?;
    ensure!(rc.trim() == "0", "exited with {}", rc.trim());
    let text = std::fs::read_to_string(share.join(format!("check-{phase}.json")))?;
    let json: Value = serde_json::from_str(&text).context("not one JSON object")?;
    let hooks = crate::vm::events::hooks_of_check(&json)?;
    let mut bad = Vec::new();
    let mut md = 0;
    for (name, mechanism, is_md) in &hooks {
        if *is_md {
            md += 1;
            if phase == "base" {
                continue;
            }
        }
        let ok = matches!(
            mechanism.as_deref(),
            Some("fentry" | "fexit" | "kprobe" | "kretprobe")
        ) || (!*is_md && name.starts_with("sched") || name.contains("sys_exit"))
            && mechanism.is_some();
        if !ok {
            bad.push(format!(
                "{name}: {}",
                mechanism.as_deref().unwrap_or("not attached")
            ));
        }
    }
    ensure!(md > 0, "no md hooks listed");
    ensure!(
        bad.is_empty(),
        "hooks without fentry/kprobe: {}",
        bad.join(", ")
    );
    Ok(())
}
