//! SIGHUP: the configuration read again. Rules, thresholds, filters and the
//! log level change at once; what sizes the kernel side or is bound at
//! start (ring buffer, stack budget, metrics address, findings file, log
//! format) keeps its value and is logged as needing a restart. A file that
//! does not load leaves everything as it was, and says why.

use super::config::Loaded;
use super::daemon::{Daemon, Source};
use crate::session::{Session, Stacks};

pub fn reload(daemon: &mut Daemon, session: &mut Session<Box<dyn Stacks>>, source: &Source) {
    daemon.notifier.reloading();
    let new = match Loaded::read(&daemon.config_path, daemon.config_explicit) {
        Ok(new) => new,
        Err(e) => {
            daemon.metrics.config_loaded(false);
            tracing::error!("configuration not reloaded, the running one stays: {e}");
            return;
        }
    };
    let old = &daemon.loaded.config;
    for change in old.restart_only_changes(&new.config) {
        tracing::warn!("{change} needs a restart; the running value stays");
    }
    let config = old.live_part_of(&new.config);
    let live = new.with_config(config);
    let engine = match source.engine_config(&live) {
        Ok(engine) => engine,
        Err(e) => {
            daemon.metrics.config_loaded(false);
            tracing::error!("configuration not reloaded, the running one stays: {e:#}");
            return;
        }
    };
    if let Err(e) = daemon.log.set_level(&live.config.log.level.0) {
        tracing::warn!("log level unchanged: {e}");
    }
    session.reconfigure(&engine, live.config.event_filter());
    daemon.metrics.set_thresholds(&engine);
    let config = &live.config;
    daemon
        .metrics
        .set_coverage(source.hooks().1.as_deref(), |r| config.enabled(r));
    daemon.metrics.config_loaded(true);
    let t = &config.thresholds;
    let off: Vec<&str> = crate::engine::Rule::ALL
        .into_iter()
        .filter(|r| !engine.enabled(*r))
        .map(|r| r.name())
        .collect();
    tracing::info!(
        lost_wakeup_after = %humantime::format_duration(t.lost_wakeup_after.0),
        stuck_handler_after = %humantime::format_duration(t.stuck_handler_after.0),
        lost_io_after = %humantime::format_duration(t.lost_io_after.0),
        "configuration reloaded from {}: lost-wakeup-after {}, stuck-handler-after {}, \
         lost-io-after {}; rules off: {}",
        live.name().display(),
        humantime::format_duration(t.lost_wakeup_after.0),
        humantime::format_duration(t.stuck_handler_after.0),
        humantime::format_duration(t.lost_io_after.0),
        if off.is_empty() { "none".to_owned() } else { off.join(", ") },
    );
    daemon.loaded = live;
}
