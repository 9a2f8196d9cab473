//! What the figures were measured on: they mean little without it.

use std::process::Command;

use crate::util::output;

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub date: String,
}

impl Machine {
    pub fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = output(Command::new("uname").arg("-r"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            cpu,
            cores,
            kernel,
            date,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{}, {} cores, kernel {}, {}",
            self.cpu, self.cores, self.kernel, self.date
        )
    }
}
