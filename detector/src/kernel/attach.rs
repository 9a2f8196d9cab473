//! Loading the programs and attaching each hook with the best mechanism the
//! running kernel accepts (see [`super::hooks`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::Program;
use aya::programs::raw_trace_point::RawTracePointLinkId;
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::{Ebpf, EbpfLoader};
use detector_common::config::{NO_OFFSET, SMALL_REGION_BYTES, region_span};
use detector_common::{ProbeConfig, counter};
use serde::Serialize;

use super::btf::{BtfError, KernelBtf};
use super::coverage::{RuleState, coverage};
use super::facts::KernelFacts;
use super::held::{HeldBios, PairedTimesMap};
use super::hooks::{Candidate, HookSpec, Mechanism, hooks};
use super::loss::WatchedProgram;
use super::offsets::{MissingField, probe_config};
use super::rings::{self, RingError};
use super::syscall_hooks::Policy;
use super::taskmaps::TaskMaps;

/// The programs, built for the bpf target by build.rs.
pub(crate) static PROGRAMS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/detector"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "detector needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs; \
         run it as root, e.g. with sudo"
    )]
    NotPrivileged,
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): detector reads struct \
         layouts from it; use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    #[error(
        "this kernel ({release}, {machine}) is not supported: {}; detector supports {}",
        reasons.join("; "),
        super::layout::SUPPORTED
    )]
    Unsupported {
        release: String,
        machine: String,
        reasons: Vec<String>,
    },
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("cannot load the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("the eBPF object lacks map {0} (build mismatch)")]
    MissingMap(&'static str),
    #[error("cannot write the kernel offsets into CONFIG: {0}")]
    Config(#[source] aya::maps::MapError),
    #[error(transparent)]
    Rings(#[from] RingError),
}

/// Sizes and thresholds for the programs' maps.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Ring buffer bytes in all, shared out among the CPUs' rings
    /// ([`super::rings::bytes_per_cpu`]).
    pub ring_bytes: u32,
    /// Unread bytes per ring per wakeup of the reader
    /// (`detector_common::config::wakes_reader`).
    pub wakeup_threshold: u64,
    /// Distinct kernel stacks kept.
    pub stack_entries: u32,
    /// Stacks each CPU may walk per second (0: unlimited).
    pub stack_budget: u32,
    /// Entries of each per-task map (`FRAMES`, `ENTRY_ARGS`): tasks at once
    /// that can be followed; past it, inserts are refused and counted (a
    /// loss for `ENTRY_ARGS`, extra events for `FRAMES`).
    pub task_map_entries: u32,
    /// Report everything the hooks see instead of only what a rule may
    /// need (`trace --full`, for debugging the filtering itself).
    pub full: bool,
    /// When `sys_exit`/`sys_enter` are attached (`syscall_hooks`).
    pub syscall_hooks: Policy,
    pub btf_dir: PathBuf,
    pub kallsyms: PathBuf,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: 16 << 20,
            wakeup_threshold: 256 << 10,
            stack_entries: 16384,
            stack_budget: 10_000,
            task_map_entries: 65536,
            full: false,
            syscall_hooks: Policy::default(),
            btf_dir: PathBuf::from(super::btf::SYS_BTF_DIR),
            kallsyms: PathBuf::from("/proc/kallsyms"),
        }
    }
}

/// The span of a `block_device`'s leading bytes that holds `bd_dev` and
/// `bd_disk` (0: they do not fit a small region; the programs then read
/// them one by one).
fn bdev_span(config: &ProbeConfig) -> u32 {
    let b = config.block;
    region_span(SMALL_REGION_BYTES, &[(b.bdev_dev, 4), (b.bdev_disk, 8)])
}

/// 1 when `gendisk.first_minor` directly follows `gendisk.major`: the
/// programs read both at once.
fn disk_dev_pair(config: &ProbeConfig) -> u32 {
    let b = config.block;
    (b.disk_major != NO_OFFSET && b.disk_first_minor == b.disk_major.wrapping_add(4)).into()
}

/// One try of one candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub mechanism: Mechanism,
    pub target: &'static str,
    /// Why it did not work, in short; the full text (a verifier log, say)
    /// is in `detail`.
    pub error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The kernel does not have this target at all.
    #[serde(skip)]
    pub target_missing: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HookStatus {
    Attached {
        mechanism: Mechanism,
        target: &'static str,
    },
    /// Left out: another attached hook already reports the same.
    Redundant {
        with: &'static str,
    },
    /// This kernel has none of the targets (the function does not exist).
    Absent,
    /// The module is not loaded; attached when it loads.
    WaitingForModule {
        module: &'static str,
    },
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct HookOutcome {
    pub name: &'static str,
    pub module: Option<&'static str>,
    #[serde(flatten)]
    pub status: HookStatus,
    /// Better candidates that did not work, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<Attempt>,
}

impl HookStatus {
    /// One word for record headers: the mechanism, or what else happened.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Attached { mechanism, .. } => mechanism.name(),
            Self::Redundant { .. } => "redundant",
            Self::Absent => "absent",
            Self::WaitingForModule { .. } => "waiting",
            Self::Failed => "failed",
        }
    }
}

impl HookOutcome {
    /// Outcomes as a record header lists them (hook name -> label); unknown
    /// names are skipped, missing hooks count as failed.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Vec<HookOutcome> {
        hooks()
            .iter()
            .map(|spec| {
                let label = labels
                    .get(spec.name)
                    .map(String::as_str)
                    .unwrap_or("failed");
                let status = match label {
                    "redundant" => HookStatus::Redundant { with: "" },
                    "absent" => HookStatus::Absent,
                    "waiting" => HookStatus::WaitingForModule {
                        module: spec.module.unwrap_or(""),
                    },
                    other => match Mechanism::from_name(other) {
                        Some(mechanism) => HookStatus::Attached {
                            mechanism,
                            target: "",
                        },
                        None => HookStatus::Failed,
                    },
                };
                HookOutcome {
                    name: spec.name,
                    module: spec.module,
                    status,
                    tried: Vec::new(),
                }
            })
            .collect()
    }

    pub fn attached(&self) -> Option<Mechanism> {
        match self.status {
            HookStatus::Attached { mechanism, .. } => Some(mechanism),
            _ => None,
        }
    }
}

/// Loaded programs with their attachments. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    btf: KernelBtf,
    aya_btf: Option<aya::Btf>,
    facts: KernelFacts,
    opts: LoadOptions,
    config: ProbeConfig,
    /// Text symbols the hooks target, from kallsyms (name -> module).
    symbols: HashMap<String, Option<String>>,
    pub missing_fields: Vec<MissingField>,
    pub outcomes: Vec<HookOutcome>,
    /// Tracepoint programs' links by program name, for detaching one
    /// and attaching it again (`set_attached`).
    links: HashMap<&'static str, LinkId>,
    /// The CPUs' event rings, by CPU id, until taken.
    rings: Vec<RingBuf<MapData>>,
    /// How many rings (CPU ids), and each one's size.
    pub ring_cpus: u32,
    pub ring_bytes: u32,
    /// The submissions the programs hold back, until taken; `None` while
    /// bios are not paired in the kernel (`ProbeConfig::pair_bios`).
    held: Option<HeldBios>,
}

/// A tracepoint program's link.
enum LinkId {
    Raw(RawTracePointLinkId),
    Btf(BtfTracePointLinkId),
}

/// Text symbols among `wanted`, with their module (`None`: vmlinux).
fn scan_kallsyms(path: &Path, wanted: &[&str]) -> HashMap<String, Option<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(_addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if !matches!(kind, "t" | "T") || !wanted.contains(&name) {
            continue;
        }
        let module = f
            .next()
            .map(|m| m.trim_matches(|c| c == '[' || c == ']').to_owned());
        out.insert(name.to_owned(), module);
    }
    out
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// A short, actionable reason for a failed load or attach; the verifier log
/// stays in the attempt's detail (`detector check --verbose`).
fn explain(mechanism: Mechanism, detail: &str) -> String {
    let fentry = matches!(mechanism, Mechanism::Fentry | Mechanism::Fexit);
    if detail.contains("Operation not permitted") {
        return if fentry {
            "refused by the kernel (EPERM): function tracing is blocked here".into()
        } else {
            "refused by the kernel (EPERM)".into()
        };
    }
    if detail.contains("No such file or directory") && !fentry {
        return "the kernel has no such attach point".into();
    }
    if detail.contains("Verifier output") || detail.contains("verifier") {
        let line = detail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.contains("processed"))
            .unwrap_or_default();
        return format!("rejected by the verifier: {}", line.trim());
    }
    first_line(detail)
}

impl Probes {
    /// Loads the programs, hands them this kernel's offsets and attaches
    /// every hook it can. Hook failures are recorded, not fatal.
    pub fn load(opts: LoadOptions) -> Result<Self, LoadError> {
        let facts = KernelFacts::read();
        if !facts.privileges.can_trace() {
            return Err(LoadError::NotPrivileged);
        }
        if !opts.btf_dir.join("vmlinux").exists() {
            return Err(LoadError::NoBtf);
        }
        raise_memlock_limit();
        let mut btf = KernelBtf::load(&opts.btf_dir)?;
        for module in module_names() {
            btf.load_module(&opts.btf_dir, module)?;
        }
        let reasons = super::layout::unsupported(&btf, &facts.machine);
        if !reasons.is_empty() {
            return Err(LoadError::Unsupported {
                release: facts.release.clone(),
                machine: facts.machine.clone(),
                reasons,
            });
        }
        let cpus = rings::possible_cpus();
        let ring_bytes =
            rings::bytes_per_cpu(opts.ring_bytes, cpus, super::layout::page_size() as u32);
        let (mut config, missing_fields) = probe_config(
            &btf,
            &facts.machine,
            rings::wakeup_threshold(opts.wakeup_threshold, ring_bytes),
        );
        config.stack_budget = opts.stack_budget;
        config.full = opts.full.into();
        config.bio_chain_endio =
            super::symbols::lookup(&opts.kallsyms, "bio_chain_endio").unwrap_or(0);
        let aya_btf = aya::Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new()
            // Read-only data: a constant to the verifier (see the programs'
            // `kernel::task_pid_offset`).
            .override_global("TASK_PID_OFFSET", &config.task.pid, true)
            .override_global("TASK_STACK_OFFSET", &config.task.stack, true)
            .override_global("BDEV_SPAN", &bdev_span(&config), true)
            .override_global("DISK_DEV_PAIR", &disk_dev_pair(&config), true)
            .override_global(
                "HELD_TABLE_USABLE",
                &u32::from(may_pair(&opts, &config, &facts.machine)),
                true,
            )
            .map_max_entries("EVENTS", cpus)
            .map_max_entries("STACKS", opts.stack_entries)
            .map_max_entries("FRAMES", opts.task_map_entries)
            .map_max_entries("ENTRY_ARGS", opts.task_map_entries)
            .load(PROGRAMS)
            .map_err(LoadError::Object)?;
        // Before any program is attached: until then a record has no ring.
        let rings = rings::create(&mut ebpf, cpus, ring_bytes)?;
        let targets: Vec<&str> = hooks()
            .iter()
            .flat_map(|h| h.candidates.iter().map(|c| c.target))
            .collect();
        let symbols = scan_kallsyms(&opts.kallsyms, &targets);
        let mut probes = Self {
            ebpf,
            btf,
            aya_btf,
            facts,
            opts,
            config,
            symbols,
            missing_fields,
            outcomes: Vec::new(),
            links: HashMap::new(),
            rings,
            ring_cpus: cpus,
            ring_bytes,
            held: None,
        };
        probes.write_config()?;
        probes.attach_all();
        // Without a return hook no return clears an episode.
        probes.config.returns_watched = probes.is_attached("sys_exit").into();
        // Names go out once per task only where a rename makes the next
        // record carry the new one.
        probes.config.names_once = probes.is_attached("task_rename").into();
        probes.held = probes.held_bios();
        probes.config.pair_bios = probes.held.is_some().into();
        probes.write_config()?;
        Ok(probes)
    }

    pub fn btf(&self) -> &KernelBtf {
        &self.btf
    }

    pub fn options(&self) -> &LoadOptions {
        &self.opts
    }

    pub fn facts(&self) -> &KernelFacts {
        &self.facts
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Whether hook `name` attached at load.
    pub fn is_attached(&self, name: &str) -> bool {
        self.outcomes
            .iter()
            .any(|o| o.name == name && o.attached().is_some())
    }

    /// Detaches (or attaches again) the tracepoint hooks `names` that
    /// attached at load, in that order; their programs stay loaded.
    pub fn set_attached(&mut self, names: &[&str], on: bool) -> Result<(), String> {
        for name in names {
            let Some((program, target)) = self.attached_program(name) else {
                continue;
            };
            let prog = self
                .ebpf
                .program_mut(program)
                .ok_or_else(|| format!("program {program} missing from the object"))?;
            let e = |e: aya::programs::ProgramError| format!("{name}: {e}");
            match (on, prog, self.links.remove(program)) {
                (true, Program::RawTracePoint(p), None) => {
                    self.links
                        .insert(program, LinkId::Raw(p.attach(target).map_err(e)?));
                }
                (true, Program::BtfTracePoint(p), None) => {
                    self.links
                        .insert(program, LinkId::Btf(p.attach().map_err(e)?));
                }
                (false, Program::RawTracePoint(p), Some(LinkId::Raw(id))) => {
                    p.detach(id).map_err(e)?
                }
                (false, Program::BtfTracePoint(p), Some(LinkId::Btf(id))) => {
                    p.detach(id).map_err(e)?
                }
                (_, _, link) => {
                    // Already as asked (or not a tracepoint): keep it so.
                    if let Some(link) = link {
                        self.links.insert(program, link);
                    }
                }
            }
        }
        Ok(())
    }

    /// Tells the programs whether every return to user space is seen
    /// (`ProbeConfig::returns_watched`).
    pub fn set_returns_watched(&mut self, on: bool) -> Result<(), LoadError> {
        self.config.returns_watched = on.into();
        self.write_config()
    }

    /// The program that hook `name` attached at load, and its target.
    fn attached_program(&self, name: &str) -> Option<(&'static str, &'static str)> {
        let (spec, outcome) = hooks()
            .iter()
            .zip(&self.outcomes)
            .find(|(spec, _)| spec.name == name)?;
        attached_candidate(spec, outcome).map(|c| (c.program, c.target))
    }

    fn write_config(&mut self) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut("CONFIG")
            .ok_or(LoadError::MissingMap("CONFIG"))?;
        let mut array: Array<&mut MapData, ProbeConfig> =
            Array::try_from(map).map_err(LoadError::Config)?;
        array.set(0, self.config, 0).map_err(LoadError::Config)
    }

    fn attach_all(&mut self) {
        self.outcomes = hooks().iter().map(|h| self.attach_hook(h)).collect();
        // Second pass: drop hooks made redundant by better ones.
        let attached: Vec<&'static str> = self
            .outcomes
            .iter()
            .filter(|o| o.attached().is_some())
            .map(|o| o.name)
            .collect();
        for at in 0..self.outcomes.len() {
            if let Some(other) = hooks()[at].redundant_with
                && attached.contains(&other)
            {
                self.drop_hook(at, other);
            }
        }
        self.drop_waker_hook();
    }

    /// Detaches the attached hook `hooks()[at]`, which `with` makes
    /// redundant.
    fn drop_hook(&mut self, at: usize, with: &'static str) {
        if self.outcomes[at].attached().is_none() {
            return;
        }
        for c in hooks()[at].candidates {
            if let Some(p) = self.ebpf.program_mut(c.program) {
                let _ = detach_all(p);
            }
        }
        self.outcomes[at].status = HookStatus::Redundant { with };
    }

    /// `sched_waking` says who wakes a task, which only onstack asks (a
    /// wakeup by the completer's context); for every other rule
    /// `sched_wakeup` says the same. Where onstack cannot run (no wait
    /// hooks on this kernel), it is detached: a program less on every
    /// wakeup on the host.
    fn drop_waker_hook(&mut self) {
        let onstack_runs = coverage(&self.outcomes).iter().any(|r| {
            r.rule == "onstack-completion" && !matches!(r.state, RuleState::Inactive { .. })
        });
        let Some(at) = hooks().iter().position(|h| h.name == "sched_waking") else {
            return;
        };
        if !onstack_runs && self.is_attached("sched_wakeup") {
            self.drop_hook(at, "sched_wakeup");
        }
    }

    fn attach_hook(&mut self, spec: &'static HookSpec) -> HookOutcome {
        let mut tried = Vec::new();
        let built_in = spec
            .candidates
            .iter()
            .any(|c| matches!(self.symbols.get(c.target), Some(None)));
        if let Some(module) = spec.module
            && !built_in
            && !self.btf.has_module(module)
            && !self.symbols.values().any(|m| m.as_deref() == Some(module))
        {
            if !Path::new("/proc/modules").exists() {
                // No module support, and not built in: it can never appear.
                return HookOutcome {
                    name: spec.name,
                    module: spec.module,
                    status: HookStatus::Absent,
                    tried,
                };
            }
            return HookOutcome {
                name: spec.name,
                module: spec.module,
                status: HookStatus::WaitingForModule { module },
                tried,
            };
        }
        for cand in spec.candidates {
            match self.try_candidate(spec, cand) {
                Ok(()) => {
                    return HookOutcome {
                        name: spec.name,
                        module: spec.module,
                        status: HookStatus::Attached {
                            mechanism: cand.mechanism,
                            target: cand.target,
                        },
                        tried,
                    };
                }
                Err(attempt) => tried.push(attempt),
            }
        }
        let status = if tried.iter().all(|a| a.target_missing) {
            HookStatus::Absent
        } else {
            HookStatus::Failed
        };
        HookOutcome {
            name: spec.name,
            module: spec.module,
            status,
            tried,
        }
    }

    fn try_candidate(&mut self, spec: &HookSpec, cand: &Candidate) -> Result<(), Attempt> {
        let fail = |error: String, target_missing: bool| Attempt {
            mechanism: cand.mechanism,
            target: cand.target,
            error: first_line(&error),
            detail: error,
            target_missing,
        };
        let function_exists = self.symbols.contains_key(cand.target);
        match cand.mechanism {
            Mechanism::Fentry | Mechanism::Fexit => {
                if spec.module.is_some() {
                    return Err(fail(
                        "fentry/fexit on module functions is not supported by this build".into(),
                        false,
                    ));
                }
                if !self.btf.has_func(None, cand.target) {
                    return Err(fail(
                        format!("no BTF for function {}", cand.target),
                        !function_exists,
                    ));
                }
            }
            Mechanism::Kprobe | Mechanism::Kretprobe => {
                if !function_exists {
                    return Err(fail(format!("{} is not in kallsyms", cand.target), true));
                }
                if !self.facts.kprobes {
                    return Err(fail(
                        "no kprobe PMU (kernel built without CONFIG_KPROBES)".into(),
                        false,
                    ));
                }
            }
            // Every tracepoint has its `btf_trace_<name>` typedef in the
            // kernel's BTF, which detector requires anyway.
            Mechanism::TpBtf | Mechanism::RawTracepoint => {
                if !self.btf.has_tracepoint(cand.target) {
                    return Err(fail(format!("no tracepoint {}", cand.target), true));
                }
            }
        }
        let btf = self.aya_btf.as_ref();
        let program = self.ebpf.program_mut(cand.program).ok_or_else(|| {
            fail(
                format!("program {} missing from the object", cand.program),
                false,
            )
        })?;
        let link = attach_program(program, cand, btf).map_err(|e| {
            let mut attempt = fail(e, false);
            attempt.error = explain(cand.mechanism, &attempt.detail);
            attempt
        })?;
        if let Some(link) = link {
            self.links.insert(cand.program, link);
        }
        Ok(())
    }

    /// Attaches the hooks of `module` if it has appeared since; returns
    /// whether anything new was attached.
    pub fn attach_module(&mut self, module: &str) -> bool {
        if !Path::new("/sys/module").join(module).exists() {
            if self.btf.has_module(module) {
                self.btf.unload_module(module);
                for o in &mut self.outcomes {
                    if o.module == Some(module_name(module)) {
                        o.status = HookStatus::WaitingForModule {
                            module: module_name(module),
                        };
                    }
                }
            }
            return false;
        }
        let waiting = self
            .outcomes
            .iter()
            .any(|o| matches!(o.status, HookStatus::WaitingForModule { module: m } if m == module));
        if !waiting || self.btf.load_module(&self.opts.btf_dir, module).is_err() {
            return false;
        }
        let (config, missing) =
            probe_config(&self.btf, &self.facts.machine, self.opts.wakeup_threshold);
        self.config.md = config.md;
        self.missing_fields
            .retain(|m| m.module != Some(module_name(module)));
        self.missing_fields
            .extend(missing.into_iter().filter(|m| m.module.is_some()));
        if self.write_config().is_err() {
            return false;
        }
        let targets: Vec<&str> = hooks()
            .iter()
            .flat_map(|h| h.candidates.iter().map(|c| c.target))
            .collect();
        self.symbols = scan_kallsyms(&self.opts.kallsyms, &targets);
        let mut any = false;
        for (i, spec) in hooks().iter().enumerate() {
            if spec.module == Some(module_name(module)) {
                self.outcomes[i] = self.attach_hook(spec);
                any |= self.outcomes[i].attached().is_some();
            }
        }
        any
    }

    /// Takes the CPUs' event rings, by CPU id (once).
    pub fn take_events(&mut self) -> Option<Vec<RingBuf<MapData>>> {
        Some(std::mem::take(&mut self.rings)).filter(|r| !r.is_empty())
    }

    /// Takes the stack map (once).
    pub fn take_stacks(&mut self) -> Option<StackTraceMap<MapData>> {
        StackTraceMap::try_from(self.ebpf.take_map("STACKS")?).ok()
    }

    /// Takes the programs' log buffer (once): their rare diagnostics, read
    /// by aya-log and written to the `log` facade. `None` when the object
    /// has no log calls.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(&mut self.ebpf).ok()
    }

    /// Takes the per-CPU counters (once).
    pub fn take_counters(&mut self) -> Option<PerCpuArray<MapData, counter::Slots>> {
        PerCpuArray::try_from(self.ebpf.take_map("COUNTERS")?).ok()
    }

    /// Takes the map of held submissions (once); `None` while bios are
    /// not paired in the kernel.
    pub fn take_held_bios(&mut self) -> Option<HeldBios> {
        self.held.take()
    }

    /// Takes the paired bios' in-flight times (once).
    pub fn take_paired_times(&mut self) -> Option<PairedTimesMap> {
        let map = self.ebpf.take_map("PAIRED_TIMES")?;
        PerCpuArray::try_from(map).ok().map(PairedTimesMap)
    }

    /// The held-submission table, where the programs may pair bios: not
    /// under `--full` (everything is shipped), nor where `bio_endio` is
    /// hooked (a double completion is only seen when every life's
    /// completions are), nor on a kernel without BPF's atomic exchanges
    /// (before 5.12; arm64: 5.18), or whose request queues do not name
    /// their disk (before 5.15): see `may_pair`.
    fn held_bios(&mut self) -> Option<HeldBios> {
        if !may_pair(&self.opts, &self.config, &self.facts.machine) || self.is_attached("bio_endio")
        {
            return None;
        }
        let Map::Array(map) = self.ebpf.take_map("HELD_SLOTS")? else {
            return None;
        };
        let ages = self
            .ebpf
            .take_map("HELD_AGES")
            .and_then(|m| PerCpuArray::try_from(m).ok());
        HeldBios::new(map, ages)
    }

    /// Takes the per-task maps (once), for pruning.
    pub fn take_task_maps(&mut self) -> TaskMaps {
        let mut take = |name| self.ebpf.take_map(name);
        TaskMaps::new(
            take("FRAMES").and_then(|m| BpfHashMap::try_from(m).ok()),
            take("ENTRY_ARGS").and_then(|m| BpfHashMap::try_from(m).ok()),
        )
    }

    /// The programs attached now, for counting the runs the kernel skips.
    pub fn attached_programs(&self) -> Vec<WatchedProgram> {
        let mut out = Vec::new();
        for (spec, outcome) in hooks().iter().zip(&self.outcomes) {
            let Some(cand) = attached_candidate(spec, outcome) else {
                continue;
            };
            let fd = self
                .ebpf
                .program(cand.program)
                .and_then(|p| p.fd().ok())
                .and_then(|fd| fd.try_clone().ok());
            if let Some(fd) = fd {
                out.push(WatchedProgram::new(cand.program.to_owned(), fd));
            }
        }
        out
    }

    /// Outcomes by hook name.
    pub fn outcome_map(&self) -> BTreeMap<&'static str, &HookOutcome> {
        self.outcomes.iter().map(|o| (o.name, o)).collect()
    }
}

/// The candidate of `spec` that `outcome` says is attached.
fn attached_candidate(
    spec: &'static HookSpec,
    outcome: &HookOutcome,
) -> Option<&'static Candidate> {
    let HookStatus::Attached { mechanism, target } = outcome.status else {
        return None;
    };
    spec.candidates
        .iter()
        .find(|c| c.mechanism == mechanism && c.target == target)
}

/// Modules with hooks, by the name their BTF and /sys/module entry use.
fn module_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = hooks().iter().filter_map(|h| h.module).collect();
    names.sort();
    names.dedup();
    names
}

fn module_name(module: &str) -> &'static str {
    module_names()
        .into_iter()
        .find(|m| *m == module)
        .unwrap_or("unknown")
}

/// Attaches `program` as `cand` says; a tracepoint's link is returned.
fn attach_program(
    program: &mut Program,
    cand: &Candidate,
    btf: Option<&aya::Btf>,
) -> Result<Option<LinkId>, String> {
    let loaded = program.fd().is_ok();
    let need_btf = || btf.ok_or_else(|| "cannot read the kernel BTF for aya".to_owned());
    let e = |e: aya::programs::ProgramError| e.to_string();
    match (cand.mechanism, program) {
        (Mechanism::Fentry, Program::FEntry(p)) => {
            if !loaded {
                p.load(cand.target, need_btf()?).map_err(e)?;
            }
            p.attach().map_err(e)?;
        }
        (Mechanism::Fexit, Program::FExit(p)) => {
            if !loaded {
                p.load(cand.target, need_btf()?).map_err(e)?;
            }
            p.attach().map_err(e)?;
        }
        (Mechanism::Kprobe | Mechanism::Kretprobe, Program::KProbe(p)) => {
            if !loaded {
                p.load().map_err(e)?;
            }
            p.attach(cand.target, 0).map_err(e)?;
        }
        (Mechanism::TpBtf, Program::BtfTracePoint(p)) => {
            if !loaded {
                p.load(cand.target, need_btf()?).map_err(e)?;
            }
            return Ok(Some(LinkId::Btf(p.attach().map_err(e)?)));
        }
        (Mechanism::RawTracepoint, Program::RawTracePoint(p)) => {
            if !loaded {
                p.load().map_err(e)?;
            }
            return Ok(Some(LinkId::Raw(p.attach(cand.target).map_err(e)?)));
        }
        (m, p) => {
            return Err(format!(
                "program {} is a {:?}, not a {} program",
                cand.program,
                p.prog_type(),
                m.name()
            ));
        }
    }
    Ok(None)
}

/// Detaches every link of a program (used for hooks found redundant).
fn detach_all(program: &mut Program) -> Result<(), aya::programs::ProgramError> {
    // Unloading drops the program's links with it; it can be loaded again.
    match program {
        Program::BtfTracePoint(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        _ => Ok(()),
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid struct; failure only matters on old
    // kernels, where the load error then explains itself.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// Whether the programs may pair bios, as far as is known before they
/// are loaded: not under `--full`; where completions find their disk
/// through `request_queue.disk` (5.15+) and flush sequences can be told
/// apart; and where the held table's atomics work. The loader tells the
/// programs (`HELD_TABLE_USABLE`): the verifier reads it as a constant and,
/// where it is 0, never walks the code that pairs (which older verifiers
/// would reject, and which costs every verifier time).
fn may_pair(opts: &LoadOptions, config: &ProbeConfig, machine: &str) -> bool {
    let knows_disks = config.block.q_disk != NO_OFFSET;
    let knows_flushes = config.req_flush_fua_mask != 0;
    !opts.full && knows_disks && knows_flushes && held_table_usable(machine)
}

/// Whether this kernel runs the held table's atomic compare and exchange
/// and exchange on BPF map values: verifier and x86-64 JIT from 5.12, the
/// arm64 JIT from 5.18 (a program its JIT cannot translate fails to load
/// where the JIT is always on, and with it every bio hook).
fn held_table_usable(machine: &str) -> bool {
    use aya::util::KernelVersion;
    let since = match machine {
        "x86_64" => KernelVersion::new(5, 12, 0),
        "aarch64" => KernelVersion::new(5, 18, 0),
        _ => return false,
    };
    KernelVersion::current().is_ok_and(|v| v >= since)
}
