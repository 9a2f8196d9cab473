//! Talking to systemd (`Type=notify`): readiness once every hook is
//! attached, a one-line status, reload and stop notices, and watchdog pings
//! from the loop that drains the ring buffer, so that a stuck pipeline
//! stops them and systemd restarts the service. Without `NOTIFY_SOCKET`
//! every call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    /// Set when `NOTIFY_SOCKET` is.
    enabled: bool,
    /// Half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    /// The first send error was logged; later ones are not.
    complained: bool,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            ping_every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last_ping: None,
            complained: false,
        }
    }

    /// How often the watchdog wants a ping, if it is on.
    pub fn ping_every(&self) -> Option<Duration> {
        self.ping_every
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states)
            && !std::mem::replace(&mut self.complained, true)
        {
            tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
        }
    }

    /// Every hook is attached: the service is up.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&mut self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// A reload starts (`Type=notify-reload` wants the monotonic time).
    pub fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The reload is done (whether the new file was taken or not).
    pub fn reloaded(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Pings the watchdog if half its timeout passed since the last ping.
    /// Called after each batch the pipeline took in.
    pub fn alive(&mut self) {
        let Some(every) = self.ping_every else {
            return;
        };
        if self.last_ping.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        self.last_ping = Some(Instant::now());
        self.send(&[NotifyState::Watchdog]);
    }
}
