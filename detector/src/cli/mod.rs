//! The `detector` command line: one file per subcommand.

pub mod args;
mod check;
mod config;
mod findings;
mod generate;
mod replay;
mod run;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::{EngineConfig, Rule};
use crate::event::Dev;
use crate::filter::EventFilter;
use crate::kernel::attach::HookOutcome;
use crate::kernel::coverage::{RuleState, coverage};
use crate::kernel::syscall_hooks::When;
use crate::session::terminal::EventOutput;
use args::{parse_duration, parse_ring_size};

const ABOUT: &str = "Live race detector for the Linux block and completion paths";

const LONG_ABOUT: &str = "\
Live race detector for the Linux block and completion paths.

Small eBPF programs on submit_bio, bio_endio, complete, wait_for_completion*,
md's superblock writes and the scheduler record per-object lifecycle events;
an engine checks ordering invariants as the events arrive and reports a race
the moment it happens, with both sides' stacks and the interleaving that
proves it: completions landing on a returned stack frame, lost wakeups, md
superblock writes outliving their array, double and lost bio completions,
stuck completion handlers.

Each hook uses the best mechanism the running kernel offers (fentry/fexit,
then kprobes, then tracepoints); `detector check` shows what this kernel
allows and which rules that leaves active. Needs root.";

const EXAMPLES: &str = "\
Examples:
  detector check                        what this kernel allows, hook by hook
  detector trace                        trace until Ctrl-C, report races as they happen
  detector trace -d 30s --dev 259:0     30 seconds, I/O of one device
  detector trace --json | jq 'select(.finding)'
                                        findings as JSON, one per line
  detector trace -d 1m -o run.rec       keep the event stream for later
  detector replay run.rec               the same analysis, offline
  detector run                          as a service: findings stored, metrics on :19975
  detector findings --since 1d          what the service found in the last day
  detector replay run.rec --json | jq -r 'select(.event == \"bio_queue\") | .dev' | sort | uniq -c";

#[derive(Parser, Debug)]
#[command(
    name = "detector",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show what this kernel offers (BTF, kprobes, fentry, ring buffers,
    /// privileges) and, hook by hook, how detector attaches and which rules
    /// that leaves active.
    ///
    /// Loads and attaches every program the way `trace` would, then detaches:
    /// what it prints is what a trace session gets. Exits 0 when tracing is
    /// possible, 1 when it is not.
    Check(CheckArgs),
    /// Trace this host live: report races as they happen, then a summary.
    ///
    /// Runs until Ctrl-C (or SIGTERM, or --duration). Findings go to stdout
    /// as they happen; a status line (events/s, drops) goes to stderr when it
    /// is a terminal; the summary goes to stderr at the end.
    Trace(TraceArgs),
    /// Read a record file (or a JSON-lines event file) back through the same
    /// pipeline and engine, and print the same summary.
    Replay(ReplayArgs),
    /// Run as a service: trace until SIGTERM, store every finding, serve
    /// Prometheus metrics, log to the journal.
    ///
    /// Reads its configuration from --config (default
    /// /etc/detector/detector.toml; built-in defaults when that file does
    /// not exist). SIGHUP re-reads it. With NOTIFY_SOCKET set it tells
    /// systemd when every hook is attached (READY=1) and pings its watchdog.
    Run(RunArgs),
    /// Check a configuration file, or print the commented default one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List the findings a `detector run` stored, rendered as `trace` shows
    /// them (or as the stored JSON lines).
    Findings(FindingsArgs),
    /// Write the man pages (detector(1) and one per subcommand) and the
    /// bash, zsh and fish completions into DIR: what the package ships,
    /// made from these definitions at build time.
    #[command(hide = true)]
    Generate {
        /// Created if missing; gets man/ and completions/.
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The configuration file (TOML; `detector config default` prints one).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Play a record file (`trace -o`) back at its recorded pace instead of
    /// tracing this host, then keep serving until stopped: proves alerting
    /// end to end without waiting for a real race.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate FILE without running: syntax, types, unknown keys, values;
    /// exits 0 when `detector run --config FILE` would accept it.
    Check {
        /// The configuration file.
        file: PathBuf,
    },
    /// Print the default configuration, every key commented.
    Default,
}

#[derive(Args, Debug)]
pub struct FindingsArgs {
    /// Only findings since this long ago (30m, 2h, 7d) or since this time
    /// (2026-11-29T03:00:00Z, 2026-11-29 03:00:00, UTC).
    #[arg(long, value_name = "DUR|TIME")]
    pub since: Option<String>,
    /// Only findings of this kind or rule (repeatable): lost-wakeup,
    /// complete-after-return, onstack-completion...
    #[arg(long = "rule", value_name = "RULE")]
    pub rules: Vec<String>,
    /// Print the stored JSON lines instead of the rendering.
    #[arg(long)]
    pub json: bool,
    /// The configuration whose findings file to read (when FILE is not
    /// given).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A findings file (rotated siblings FILE.1, FILE.2... are read too,
    /// oldest first). Default: the configuration's `[findings] path`.
    pub file: Option<PathBuf>,
}

/// Event display and filters, shared by trace and replay.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// JSON lines on stdout: one object per event (with an `event` field)
    /// and one per finding (with a `finding` field). Addresses are "0x..."
    /// strings, devices "MAJ:MIN".
    #[arg(long)]
    pub json: bool,
    /// Print every event, one line each (with --json: always on). Bios
    /// paired in the kernel (asynchronous I/O that ended cleanly after its
    /// syscall returned) are only counted: --full shows them too.
    #[arg(long)]
    pub events: bool,
    /// With --json, add each event's symbolized kernel stack as `frames`.
    #[arg(long, requires = "json")]
    pub stacks: bool,
    /// Only show and record I/O of this device (MAJ:MIN, as in lsblk;
    /// repeatable), and the tasks submitting to it.
    #[arg(long = "dev", value_name = "MAJ:MIN")]
    pub devs: Vec<Dev>,
    /// Only show and record events of this process (repeatable), and what is
    /// related to it: completions of its bios, wakeups of its threads,
    /// completions it waits on. The engine still sees everything.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Leave out the I/O of this device (repeatable), and findings about
    /// objects on it; wins over --dev.
    #[arg(long = "exclude-dev", value_name = "MAJ:MIN")]
    pub excluded_devs: Vec<Dev>,
    /// Leave out the events of this process (repeatable), and findings it
    /// takes part in; wins over --pid.
    #[arg(long = "exclude-pid", value_name = "PID")]
    pub excluded_pids: Vec<u32>,
}

impl OutputArgs {
    /// The filter these flags describe.
    pub fn filter(&self) -> EventFilter {
        EventFilter::new(self.pids.clone(), self.devs.clone())
            .excluding(self.excluded_pids.clone(), self.excluded_devs.clone())
    }

    /// How events are shown.
    pub fn event_output(&self) -> EventOutput {
        match (self.json, self.events) {
            (true, _) => EventOutput::Json,
            (false, true) => EventOutput::Lines,
            (false, false) => EventOutput::None,
        }
    }
}

/// Engine thresholds, shared by trace and replay.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Report a task asleep in I/O wait this long after its I/O completed
    /// with no wakeup (lost-wakeup).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub lost_wakeup_after: Duration,
    /// Report a bio completion handler still running after this long
    /// (stuck-completion-handler); the hard-lockup watchdog fires at 10s.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "2s")]
    pub stuck_handler_after: Duration,
    /// Report a submitted bio with no completion after this long
    /// (lost-io-completion).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "30s")]
    pub lost_io_after: Duration,
    /// Turn a rule off (repeatable); `detector check` lists the rules.
    #[arg(long = "disable-rule", value_name = "RULE")]
    pub disabled_rules: Vec<String>,
}

impl EngineArgs {
    /// The engine's configuration: these thresholds, the kernel's stack
    /// size, and every rule except those turned off here or left without
    /// their hooks (`hooks`: the session's outcomes, when known).
    pub fn engine_config(
        &self,
        thread_size: u32,
        hooks: Option<&[HookOutcome]>,
    ) -> anyhow::Result<EngineConfig> {
        let coverage = hooks.map(coverage);
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let mut cfg = EngineConfig {
            thread_size: thread_size as u64,
            lost_wakeup_after_ns: ns(self.lost_wakeup_after),
            stuck_handler_after_ns: ns(self.stuck_handler_after),
            lost_io_after_ns: ns(self.lost_io_after),
            bio_endio_hooked: hooks.is_some_and(|outcomes| {
                outcomes
                    .iter()
                    .any(|o| o.name == "bio_endio" && o.attached().is_some())
            }),
            ..EngineConfig::default()
        };
        for name in &self.disabled_rules {
            let rule: Rule = name.parse()?;
            cfg.rules.remove(rule);
        }
        for c in coverage.iter().flatten() {
            if matches!(c.state, RuleState::Inactive { .. })
                && let Ok(rule) = c.rule.parse::<Rule>()
            {
                // Half of a rule's hooks would make it see half of the
                // story: a missing wait looks like no wait at all.
                cfg.rules.remove(rule);
            }
        }
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Show the full reason (verifier log) of every failed attempt.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Stop after this long (e.g. 30s, 5m, or seconds); default: Ctrl-C.
    #[arg(short, long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write the event stream to FILE for `detector replay`.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Report everything the hooks see: every switch, wakeup, syscall
    /// boundary and completion call on the host, not only those of tasks
    /// and objects a rule follows, and every bio (by default, asynchronous
    /// I/O that completes cleanly after its syscall returned is paired in
    /// the kernel and only counted). For debugging; costs every traced
    /// task several times what the default does.
    #[arg(long)]
    pub full: bool,
    /// Create FILE once every hook is attached (for scripts that must not
    /// start their workload earlier).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// No status line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Ring buffer memory in all (4M, 16M, 64M...), shared out among one
    /// ring per CPU (each a power of two, at least a page). Larger loses
    /// fewer events under bursts.
    #[arg(long, value_name = "SIZE", value_parser = parse_ring_size, default_value = "16M")]
    pub buffer_size: u32,
    /// Kernel stacks each CPU may capture per second (0: no limit). Stack
    /// walks dominate the cost per event; past the budget events carry no
    /// stack, and the summary counts them.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub stack_budget: u32,
    /// Tasks the programs can follow at once in each per-task map (tasks
    /// whose function exit is awaited, or whose on-stack frames are
    /// followed). Past it, exits are lost, counted and reported as loss.
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..))]
    pub task_map_entries: u32,
    /// When to keep the sys_exit/sys_enter hooks attached. Any program on
    /// them slows every syscall on the host (10-15 % on syscall-heavy
    /// loads), so by default they are attached only while a task submits
    /// I/O or uses an on-stack completion. While they are detached, a
    /// lost wakeup whose task may have returned to user space unseen is
    /// counted indeterminate, not reported.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = When::OnDemand)]
    pub syscall_hooks: When,
    /// With --syscall-hooks on-demand: detach them after this long with
    /// no task needing them.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
    pub syscall_hooks_idle: Duration,
    /// At the end, write the session's counters to FILE as one JSON
    /// object: events read and lost, the summary, the engine's tables,
    /// detection latency percentiles, CPU time.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// A file written by `detector trace --record`, or JSON lines of events.
    pub file: PathBuf,
    /// At the end, write the session's counters to FILE as one JSON object
    /// (as `trace --stats-json` does, without what only a live session has).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Run(args) => run::run(args),
        Command::Config(command) => config::run(command),
        Command::Findings(args) => findings::run(args),
        Command::Generate { dir } => generate::run(&dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("detector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
