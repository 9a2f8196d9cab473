//! `detector check`: what this kernel allows, hook by hook and rule by rule.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::CheckArgs;
use crate::kernel::attach::{HookStatus, LoadError, LoadOptions, Probes};
use crate::kernel::coverage::{RuleState, coverage, mechanism_verdict};
use crate::kernel::facts::KernelFacts;
use crate::kernel::hooks::Mechanism;
use crate::kernel::layout::SUPPORTED;
use crate::kernel::loss::accounting;

fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

fn facts_text(f: &KernelFacts) -> String {
    let mut s = String::new();
    let p = &f.privileges;
    let caps: Vec<&str> = [
        (p.cap_sys_admin, "CAP_SYS_ADMIN"),
        (p.cap_bpf, "CAP_BPF"),
        (p.cap_perfmon, "CAP_PERFMON"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    let _ = writeln!(s, "kernel       {} ({})", f.release, f.machine);
    let _ = writeln!(s, "supported    {SUPPORTED}");
    let _ = writeln!(
        s,
        "privileges   euid {} {}",
        p.euid,
        if caps.is_empty() {
            "(no BPF capabilities)".to_owned()
        } else {
            format!("({})", caps.join(", "))
        }
    );
    let _ = writeln!(
        s,
        "BTF          {}",
        if f.btf {
            "yes (/sys/kernel/btf/vmlinux)"
        } else {
            "no: struct layouts unknown, nothing can be traced"
        }
    );
    let _ = writeln!(
        s,
        "lockdown     {}",
        f.lockdown
            .as_deref()
            .unwrap_or("unknown (securityfs not mounted)")
    );
    let _ = writeln!(
        s,
        "md_mod       {}",
        if f.md_mod_loaded {
            "loaded"
        } else if f.modules {
            "not loaded (md hooks attach when it loads)"
        } else {
            "absent (this kernel has no module support)"
        }
    );
    s
}

pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let facts = KernelFacts::read();
    let probes = match Probes::load(LoadOptions::default()) {
        Ok(p) => p,
        Err(e @ (LoadError::NotPrivileged | LoadError::NoBtf | LoadError::Unsupported { .. })) => {
            if args.json {
                let reasons = match &e {
                    LoadError::Unsupported { reasons, .. } => reasons.clone(),
                    _ => Vec::new(),
                };
                println!(
                    "{}",
                    json!({
                        "kernel": facts,
                        "supported_kernels": SUPPORTED,
                        "can_trace": false,
                        "error": e.to_string(),
                        "unsupported_because": reasons,
                    })
                );
            } else {
                print!("{}", facts_text(&facts));
                println!("\ncannot trace: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    let outcomes = &probes.outcomes;
    let rules = coverage(outcomes);
    let fentry = mechanism_verdict(outcomes, &[Mechanism::Fentry, Mechanism::Fexit]);
    let kprobe = mechanism_verdict(outcomes, &[Mechanism::Kprobe, Mechanism::Kretprobe]);
    let tracepoints = mechanism_verdict(outcomes, &[Mechanism::TpBtf, Mechanism::RawTracepoint]);
    let can_trace = outcomes.iter().any(|o| o.attached().is_some());
    if args.json {
        let verdict = |v: &Result<(), String>| match v {
            Ok(()) => json!({"available": true}),
            Err(why) => json!({"available": false, "reason": why}),
        };
        println!(
            "{}",
            json!({
                "kernel": facts,
                "supported_kernels": SUPPORTED,
                "mechanisms": {
                    "fentry": verdict(&fentry),
                    "kprobe": verdict(&kprobe),
                    "tracepoint": verdict(&tracepoints),
                    "ring_buffer": {"available": true},
                },
                "hooks": outcomes,
                "rules": rules,
                "loss_accounting": accounting(probes.btf()),
                "missing_fields": probes.missing_fields.iter().map(|m| json!({
                    "module": m.module, "field": m.field, "reason": m.reason,
                })).collect::<Vec<_>>(),
                "can_trace": can_trace,
            })
        );
        return Ok(if can_trace {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    let mut out = facts_text(&facts);
    let _ = writeln!(out, "\n{:<18} {:<10} WHY NOT", "MECHANISM", "AVAILABLE");
    let mechanism_reasons: Vec<String> = [&fentry, &kprobe, &tracepoints]
        .iter()
        .filter_map(|v| v.as_ref().err().cloned())
        .collect();
    for (name, v) in [
        ("fentry/fexit", &fentry),
        ("kprobe/kretprobe", &kprobe),
        ("tracepoints", &tracepoints),
    ] {
        let (avail, why) = match v {
            Ok(()) => ("yes", ""),
            Err(why) => ("no", why.as_str()),
        };
        let row = format!("{name:<18} {avail:<10} {why}");
        let _ = writeln!(out, "{}", row.trim_end());
    }
    let _ = writeln!(out, "{:<18} {}", "ring buffer", yes_no(true));

    let _ = writeln!(
        out,
        "\n{:<46} {:<15} {:<26} NOTES",
        "HOOK", "ATTACHED AS", "TARGET"
    );
    for o in outcomes {
        let (how, target, mut notes) = match &o.status {
            HookStatus::Attached { mechanism, target } => {
                (mechanism.name().to_owned(), *target, Vec::new())
            }
            HookStatus::Redundant { with } => (
                "-".into(),
                "",
                vec![format!("not needed: {with} is attached")],
            ),
            HookStatus::Absent
                if crate::kernel::hooks::hook(o.name).is_some_and(|h| h.optional) =>
            {
                ("-".into(), "", vec!["this kernel does not have it".into()])
            }
            HookStatus::Absent => (
                "-".into(),
                "",
                vec!["not found (possibly inlined): its rules cannot see it".into()],
            ),
            HookStatus::WaitingForModule { module } => (
                "-".into(),
                "",
                vec![format!("waiting for {module} to load")],
            ),
            HookStatus::Failed => ("NONE".into(), "", Vec::new()),
        };
        if !matches!(o.status, HookStatus::Absent) {
            // Mechanism-wide reasons are in the table above: name them only.
            let mut unavailable = Vec::new();
            for a in o.tried.iter().filter(|a| !a.target_missing) {
                if mechanism_reasons.contains(&a.error) {
                    // Two functions tried the same way: one name.
                    if !unavailable.contains(&a.mechanism.name()) {
                        unavailable.push(a.mechanism.name());
                    }
                } else {
                    notes.push(format!("{}: {}", a.mechanism.name(), a.error));
                }
            }
            if !unavailable.is_empty() {
                notes.insert(0, format!("{} unavailable", unavailable.join(", ")));
            }
        }
        let row = format!(
            "{:<46} {:<15} {:<26} {}",
            o.name,
            how,
            target,
            notes.join("; ")
        );
        let _ = writeln!(out, "{}", row.trim_end());
        if args.verbose {
            for a in &o.tried {
                if a.detail != a.error {
                    let _ = writeln!(
                        out,
                        "    {} {}:\n{}",
                        a.mechanism.name(),
                        a.target,
                        a.detail
                    );
                }
            }
        }
    }

    let _ = writeln!(out, "\n{:<28} {:<10} DETAILS", "RULE", "STATE");
    for r in &rules {
        let (state, details) = match &r.state {
            RuleState::Active => ("active", format!("reports {}", r.findings.join(", "))),
            RuleState::Degraded { missing, effect } => (
                "degraded",
                format!("{effect} (without {})", missing.join(", ")),
            ),
            RuleState::Inactive { missing } => {
                let mut m: Vec<&str> = missing.clone();
                m.truncate(4);
                let more = if missing.len() > 4 { ", ..." } else { "" };
                ("inactive", format!("needs {}{more}", m.join(", ")))
            }
            RuleState::WaitingForModule { module } => {
                ("waiting", format!("activates when {module} loads"))
            }
        };
        let _ = writeln!(out, "{:<28} {:<10} {}", r.rule, state, details);
    }
    let _ = writeln!(out, "\n{:<28} {:<10} HOW", "LOSS", "COUNTED");
    for l in accounting(probes.btf()) {
        let _ = writeln!(out, "{:<28} {:<10} {}", l.cause, yes_no(l.counted), l.how);
    }
    if !probes.missing_fields.is_empty() {
        let _ = writeln!(
            out,
            "\nfields missing from this kernel's BTF (their reads return 0):"
        );
        for m in &probes.missing_fields {
            let _ = writeln!(out, "  {}: {}", m.field, m.reason);
        }
    }
    if !can_trace {
        let _ = writeln!(
            out,
            "\nno hook could be attached: this kernel cannot be traced"
        );
    }
    print!("{out}");
    Ok(if can_trace {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
