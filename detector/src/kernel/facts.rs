//! What the running kernel and this process can do, read without loading
//! anything: the first half of `detector check`.

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::btf::SYS_BTF_DIR;

/// Capability bits (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Clone, Debug, Serialize)]
pub struct Privileges {
    pub euid: u32,
    pub cap_sys_admin: bool,
    pub cap_bpf: bool,
    pub cap_perfmon: bool,
}

impl Privileges {
    /// Loading tracing programs needs CAP_BPF and CAP_PERFMON (or
    /// CAP_SYS_ADMIN on kernels before 5.8).
    pub fn can_trace(&self) -> bool {
        self.cap_sys_admin || (self.cap_bpf && self.cap_perfmon)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelFacts {
    pub release: String,
    pub machine: String,
    /// `/sys/kernel/btf/vmlinux` exists: struct layouts and BTF tracepoints.
    pub btf: bool,
    /// The kprobe PMU exists: kprobes and kretprobes can be created.
    pub kprobes: bool,
    /// Lockdown mode, e.g. `none`, `integrity`, `confidentiality`; `None`
    /// when securityfs is not mounted or the LSM is absent.
    pub lockdown: Option<String>,
    pub tracefs_mounted: bool,
    pub bpffs_mounted: bool,
    /// `kernel.bpf_stats_enabled`: per-program run time accounting.
    pub bpf_stats_enabled: Option<bool>,
    /// The kernel supports loadable modules (`/proc/modules` exists).
    pub modules: bool,
    /// Loaded modules detector has hooks for.
    pub md_mod_loaded: bool,
    pub privileges: Privileges,
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn utsname() -> (String, String) {
    // SAFETY: uname fills a caller-provided struct; it cannot fail with a
    // valid pointer.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return ("unknown".into(), "unknown".into());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&uts.release), field(&uts.machine))
}

/// The active lockdown mode is the bracketed word: `none [integrity] ...`.
pub fn parse_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

/// Effective capabilities from `/proc/self/status` (`CapEff: <hex>`).
pub fn parse_cap_eff(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

fn mounted(fstype: &str) -> bool {
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(fstype))
}

impl KernelFacts {
    pub fn read() -> Self {
        let (release, machine) = utsname();
        let caps = parse_cap_eff(&fs::read_to_string("/proc/self/status").unwrap_or_default());
        let has = |bit: u32| caps & (1u64 << bit) != 0;
        Self {
            release,
            machine,
            btf: Path::new(SYS_BTF_DIR).join("vmlinux").exists(),
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            lockdown: read_trimmed("/sys/kernel/security/lockdown")
                .as_deref()
                .and_then(parse_lockdown),
            tracefs_mounted: mounted("tracefs"),
            bpffs_mounted: mounted("bpf"),
            bpf_stats_enabled: read_trimmed("/proc/sys/kernel/bpf_stats_enabled").map(|v| v == "1"),
            modules: Path::new("/proc/modules").exists(),
            md_mod_loaded: Path::new("/sys/module/md_mod").exists(),
            privileges: Privileges {
                // SAFETY: geteuid cannot fail.
                euid: unsafe { libc::geteuid() },
                cap_sys_admin: has(CAP_SYS_ADMIN),
                cap_bpf: has(CAP_BPF),
                cap_perfmon: has(CAP_PERFMON),
            },
        }
    }
}

/// This host's name, as the kernel has it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_mode_is_the_bracketed_word() {
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(parse_lockdown("[none] integrity").as_deref(), Some("none"));
        assert_eq!(parse_lockdown("garbage"), None);
        assert_eq!(parse_lockdown("unterminated [x"), None);
    }

    #[test]
    fn cap_eff_parses() {
        let status = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(status);
        assert!(caps & (1 << CAP_BPF) != 0 && caps & (1 << CAP_SYS_ADMIN) != 0);
        assert_eq!(parse_cap_eff("no caps here"), 0);
    }
}
