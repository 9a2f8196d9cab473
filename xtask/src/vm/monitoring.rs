//! A real Prometheus and Alertmanager (Debian's packages) on the host's
//! loopback, with detector's alert rules: what the service guest's metrics
//! and alerts must reach. Both are killed when dropped.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::util::{run as run_cmd, workspace_root};

/// A port on 127.0.0.1 nobody listens on now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// GET `url`: the body, or why not (plain HTTP on loopback only).
pub fn get(url: &str) -> Result<String> {
    let mut response = ureq::get(url)
        .config()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .call()
        .with_context(|| format!("GET {url}"))?;
    response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))
}

struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(name: &'static str, cmd: &mut Command, log: PathBuf, url: String) -> Result<Self> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {name} (cargo xtask setup installs it)"))?;
        let mut server = Self {
            name,
            child,
            log,
            url,
        };
        let started = Instant::now();
        while get(&format!("{}/-/ready", server.url)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("{name} exited ({status}):\n{}", server.log_tail());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{name} not ready after 60 s:\n{}", server.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(server)
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

pub struct Monitoring {
    prometheus: Server,
    alertmanager: Server,
}

impl Monitoring {
    /// Alertmanager first (Prometheus sends to it), then Prometheus
    /// scraping `target` as job "detector" every second, with
    /// packaging/prometheus/alerts.yml loaded (checked by promtool first).
    pub fn start(dir: &Path, target: &str) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let am_port = free_port()?;
        let am_config = dir.join("alertmanager.yml");
        // One route: every alert is kept (and visible in /api/v2/alerts);
        // the receiver sends nowhere, nothing leaves the host.
        fs::write(
            &am_config,
            "route:\n  receiver: keep\n  group_by: [alertname, host, rule]\n  group_wait: 1s\n\
             receivers:\n  - name: keep\n",
        )?;
        let alertmanager = Server::start(
            "prometheus-alertmanager",
            Command::new("prometheus-alertmanager")
                .arg(format!("--config.file={}", am_config.display()))
                .arg(format!("--storage.path={}", dir.join("am-data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
                // no gossip port: one Alertmanager, nothing listening
                // beyond loopback
                .arg("--cluster.listen-address="),
            dir.join("alertmanager.log"),
            format!("http://127.0.0.1:{am_port}"),
        )?;
        let rules = workspace_root().join("packaging/prometheus/alerts.yml");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - '{}'\n\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
                 scrape_configs:\n  - job_name: detector\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )?;
        run_cmd(
            Command::new("promtool")
                .arg("check")
                .arg("config")
                .arg(&config),
        )?;
        let prom_port = free_port()?;
        let prometheus = Server::start(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
            dir.join("prometheus.log"),
            format!("http://127.0.0.1:{prom_port}"),
        )?;
        Ok(Self {
            prometheus,
            alertmanager,
        })
    }

    /// The samples of an instant PromQL query: (labels, value).
    pub fn query(&self, promql: &str) -> Result<Vec<(Value, f64)>> {
        let mut url = format!("{}/api/v1/query?query=", self.prometheus.url);
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                url.push(char::from(b));
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        let body: Value = serde_json::from_str(&get(&url)?)?;
        let samples = body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(samples
            .into_iter()
            .filter_map(|s| {
                let v = s["value"][1].as_str()?.parse().ok()?;
                Some((s["metric"].clone(), v))
            })
            .collect())
    }

    /// Alertmanager's alerts (API v2), active or not.
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let body: Value =
            serde_json::from_str(&get(&format!("{}/api/v2/alerts", self.alertmanager.url))?)?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    pub fn describe(&self) -> String {
        format!(
            "{} at {}, {} at {}",
            self.prometheus.name,
            self.prometheus.url,
            self.alertmanager.name,
            self.alertmanager.url
        )
    }
}
