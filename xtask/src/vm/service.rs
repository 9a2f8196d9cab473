//! `vm-test --service`: detector as a user runs it. A Debian test server
//! (the Debian guest booted with its systemd as PID 1) installs the .deb
//! with `dpkg -i`; a real race from racebench becomes a finding in the
//! findings file and the journal; the host's real Prometheus scrapes the
//! guest through the one port qemu forwards and its alert reaches a real
//! Alertmanager; then `systemctl reload`, `kill -s KILL` and `stop`.
//!
//! The guest side is tests/vm/debian/service-guest (started by systemd's
//! run-generator); it waits for the host's word after the alert.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::util::workspace_root;
use crate::vm::debian_guest::{self, GuestDir};
use crate::vm::monitoring::{Monitoring, free_port};
use crate::vm::service_checks;
use crate::vm::{debian, kmod};

const GUEST: &str = "debian-service";
/// The guest's metrics port (its configuration listens on 0.0.0.0).
const GUEST_METRICS_PORT: u16 = 19975;
/// Boot, three attaches of every program (install, restart after the
/// kill, the unconfined `detector check`), two races: 4-8 minutes under
/// emulation, more on a busy host.
const TIMEOUT_SECS: u64 = 1200;
/// How long the host waits for the guest's finding, and then for the
/// alert to reach Alertmanager.
const FINDING_WAIT: Duration = Duration::from_secs(900);
const ALERT_WAIT: Duration = Duration::from_secs(120);

pub fn run(timeout: Option<u64>) -> Result<()> {
    let started = Instant::now();
    let cache = workspace_root().join(".vm-cache");
    fs::create_dir_all(&cache)?;
    let boot = debian_guest::prepare(&cache)?;
    let deb = crate::package::build()?;
    crate::package::verify(&deb)?;
    crate::package::lintian(&deb)?;
    let headers = debian::kernel_headers(&boot.kernel.release)?;
    let module = kmod::build(
        &workspace_root().join("tests/kmod"),
        &cache.join(format!("kmod-{}", boot.kernel.release)),
        &headers,
    )?;
    let guest = GuestDir::fresh(&cache, GUEST)?;
    guest.stage(
        &workspace_root().join("target/release/detector"),
        "service",
        "",
    )?;
    fs::copy(&deb, guest.bench().join("detector.deb"))?;
    fs::copy(&module, guest.bench().join("racebench.ko"))?;
    fs::create_dir_all(guest.share().join("control"))?;
    let port = free_port()?;
    let monitoring =
        Monitoring::start(&guest.dir.join("monitoring"), &format!("127.0.0.1:{port}"))?;
    eprintln!(
        "vm: booting {} with Debian's systemd for the service test (guest metrics on 127.0.0.1:{port}; {}; prepared in {:.0?})",
        boot.kernel.release,
        monitoring.describe(),
        started.elapsed()
    );
    let timeout = Duration::from_secs(timeout.unwrap_or(TIMEOUT_SECS));
    let host_side = std::thread::scope(|scope| -> Result<Result<()>> {
        let qemu =
            scope.spawn(|| guest.boot_server(&boot, "service", timeout, port, GUEST_METRICS_PORT));
        let host_side = watch_guest(&guest, &monitoring, port, &qemu);
        if let Err(e) = &host_side {
            let _ = fs::write(guest.share().join("control/abort"), format!("{e:#}\n"));
        }
        let outcome = qemu
            .join()
            .map_err(|_| anyhow::anyhow!("the guest's thread panicked"))??;
        if outcome.timed_out {
            bail!(
                "the service guest did not finish within {timeout:?}; serial log {}:\n{}",
                guest.log().display(),
                crate::vm::qemu::log_tail(&guest.log(), 40)
            );
        }
        Ok(host_side)
    })?;
    host_side.context("the host's side of the service test")?;
    service_checks::judge(&guest)?;
    eprintln!("vm: service test passed in {:.0?}", started.elapsed());
    Ok(())
}

/// The host's part while the guest runs: once the guest found the race,
/// the metrics through the forwarded port, Prometheus' counter and the
/// alert in Alertmanager; then the guest may go on.
fn watch_guest(
    guest: &GuestDir,
    monitoring: &Monitoring,
    port: u16,
    qemu: &std::thread::ScopedJoinHandle<'_, Result<crate::vm::qemu::Outcome>>,
) -> Result<()> {
    let phase = guest.out().join("phase");
    let started = Instant::now();
    while fs::read_to_string(&phase).unwrap_or_default().trim() != "alerted" {
        if qemu.is_finished() || guest.finished() {
            bail!(
                "the guest stopped before its finding (see {})",
                guest.out().display()
            );
        }
        if started.elapsed() > FINDING_WAIT {
            bail!("no finding from the guest after {FINDING_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Under emulation on a busy host one answer can take longer than a
    // request's timeout: a few tries, as Prometheus' scrapes get.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut attempt = 1;
    let metrics = loop {
        match crate::vm::monitoring::get(&url) {
            Ok(text) => break text,
            Err(e) if attempt < 5 => eprintln!("vm: {e:#}; trying again"),
            Err(e) => return Err(e.context("the guest's /metrics through the forwarded port")),
        }
        attempt += 1;
    };
    fs::write(guest.dir.join("metrics.txt"), &metrics)?;
    let found_at = Instant::now();
    let rule = "bio-double-complete";
    let alert = loop {
        let counted =
            monitoring.query(&format!("detector_findings_total{{rule=\"{rule}\"}} > 0"))?;
        let alerts = monitoring.alerts()?;
        let alert = alerts
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "DetectorFinding" && a["labels"]["rule"] == rule);
        if let (false, Some(alert)) = (counted.is_empty(), alert) {
            break alert;
        }
        if found_at.elapsed() > ALERT_WAIT {
            bail!(
                "after {ALERT_WAIT:?}: Prometheus counted {counted:?} for {rule}; no DetectorFinding alert for it in Alertmanager"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!(
        "vm: Prometheus counts the {rule} finding; Alertmanager has the alert ({:.1?} after the host saw the guest's finding): {}",
        found_at.elapsed(),
        alert["annotations"]["summary"]
    );
    fs::write(
        guest.dir.join("alert.json"),
        serde_json::to_string_pretty(&alert)?,
    )?;
    fs::write(guest.share().join("control/alerted"), b"")?;
    Ok(())
}
