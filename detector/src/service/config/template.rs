//! The commented default configuration (`detector config default`): the
//! file packaging installs as /etc/detector/detector.toml. Values come from
//! [`Config::default`], so the text cannot drift from the defaults; a test
//! checks that it parses back to them and names every key.

use std::fmt::Write as _;

use super::{Config, DEFAULT_METRICS_PORT, values::Bytes};
use crate::engine::Rule;

/// The default configuration file, every key commented.
pub fn default_file() -> String {
    let d = Config::default();
    let mut out = String::from(HEADER);
    out.push_str(
        "\n[rules]\n\
         # false turns a rule off. `detector check` lists the rules and says which\n\
         # ones this kernel can run. Applied on reload.\n",
    );
    for rule in Rule::ALL {
        let _ = writeln!(out, "{} = {}", rule.name(), d.enabled(rule));
    }
    let t = &d.thresholds;
    let _ = write!(
        out,
        r#"
[thresholds]
# When the rules with a deadline report: the same as `detector trace`'s
# --lost-wakeup-after, --stuck-handler-after and --lost-io-after. Durations
# are strings ("500ms", "5s", "2m") or numbers of seconds. Applied on reload
# to what starts being timed from then on.

# A task asleep in I/O wait this long after all its I/O completed, and not
# woken (lost-wakeup). The kernel's hung-task warning comes after 120 s.
lost-wakeup-after = "{}"
# A bio completion handler still running after this long
# (stuck-completion-handler). The hard-lockup watchdog fires at 10 s.
stuck-handler-after = "{}"
# A submitted bio not completed after this long (lost-io-completion). The
# SCSI command timeout is 30 s.
lost-io-after = "{}"
"#,
        humantime::format_duration(t.lost_wakeup_after.0),
        humantime::format_duration(t.stuck_handler_after.0),
        humantime::format_duration(t.lost_io_after.0),
    );
    let _ = write!(
        out,
        r#"
[filter]
# Which findings are stored, logged and counted. The engine always sees
# everything: a race's other side is rarely the selected process or device.
# Devices are "MAJ:MIN" strings as lsblk prints them. Empty lists select
# everything; an exclusion wins over a selection. Applied on reload.
devices = []
exclude-devices = []
pids = []
exclude-pids = []

[kernel]
# Ring-buffer memory between the programs and detector, in all ("4M",
# "16M", "64M"): shared out among one ring per CPU, each a power of two of
# at least a page. Larger loses fewer events in bursts. Needs a restart.
ring-buffer-size = "{}"
# Kernel stacks each CPU may capture per second (0: no limit): stack walks
# are most of the cost of an event. Needs a restart.
stack-budget = {}
# Tasks the programs can follow at once in each per-task map (tasks whose
# syscall return, wakeup or function exit is awaited); past it those events
# are lost, counted and reported as loss. Needs a restart.
task-map-entries = {}
# "on-demand": sys_exit/sys_enter are attached only while some task submits
# I/O or uses an on-stack completion (with any program on them, every
# syscall on the host takes the kernel's slow path), and detached after
# syscall-hooks-idle without one; "always". Needs a restart.
syscall-hooks = "on-demand"
syscall-hooks-idle = "{}"

[metrics]
# Where Prometheus scrapes /metrics (IP:PORT). Port {DEFAULT_METRICS_PORT} is outside the
# fully allocated range of Prometheus' default port allocations
# (9100-9999). Loopback only by default: open it deliberately, e.g.
# "0.0.0.0:{DEFAULT_METRICS_PORT}". Needs a restart.
address = "{}"

[findings]
# Every finding is appended to this file as one JSON line and fsynced before
# it is logged or counted; `detector findings` lists them. Needs a restart.
path = "{}"
# Past this size the file is rotated: findings.jsonl becomes
# findings.jsonl.1, .1 becomes .2, and so on ("64M", "1G").
rotate-size = "{}"
# How many rotated files are kept (the oldest is deleted beyond).
keep = {}

[log]
# "auto": the journal's native protocol (with fields such as RULE, SEVERITY,
# FINDING_ID) when stderr is the journal, plain lines on stderr otherwise;
# "plain"; "json" (one object per line on stderr); "journal". Needs a
# restart.
format = "auto"
# error, warn, info, debug or trace, or per-module directives
# ("info,detector::service=debug"). Applied on reload.
level = "{}"
"#,
        ring_size(d.kernel.ring_buffer_size.0),
        d.kernel.stack_budget,
        d.kernel.task_map_entries.0,
        humantime::format_duration(d.kernel.syscall_hooks_idle.0),
        d.metrics.address.get_ref().0,
        d.findings.path.get_ref().display(),
        size(d.findings.rotate_size),
        d.findings.keep,
        d.log.level.0,
    );
    out
}

const HEADER: &str = "\
# detector's configuration, read by `detector run` (default path:
# /etc/detector/detector.toml). Every key is optional: one left out takes
# the default shown here. `detector config check FILE` validates a file;
# SIGHUP (`systemctl reload detector`) re-reads it, applying what can change
# live and logging what needs a restart.
";

fn size(b: Bytes) -> String {
    serde_json::to_value(b)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| b.0.to_string())
}

fn ring_size(bytes: u32) -> String {
    size(Bytes(bytes.into()))
}
