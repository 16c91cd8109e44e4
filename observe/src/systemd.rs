//! systemd integration (`Type=notify` units): readiness, stopping and the
//! watchdog, through `sd_notify`. Every call is a no-op outside systemd
//! (no `NOTIFY_SOCKET`), and a failed notification is logged, never fatal.

use std::future::Future;
use std::time::Duration;

fn send(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Tells systemd the service is up (`READY=1`), with a status line.
pub fn ready(status: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells systemd the service is shutting down (`STOPPING=1`).
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

/// When the unit has `WatchdogSec=`, pings systemd (`WATCHDOG=1`) at half
/// the interval for as long as `alive()` says the service is making
/// progress; when it stops saying so, the pings stop and systemd restarts
/// the service. Returns at once, after spawning the task on `tasks` (it
/// ends when `stop` is cancelled); outside a watchdog-enabled unit nothing
/// is spawned.
pub fn spawn_watchdog<F, Fut>(
    tasks: &tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
    alive: F,
) where
    F: Fn(Duration) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(50));
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog on"
    );
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if alive(every).await {
                send(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!("not making progress: withholding the systemd watchdog ping");
            }
        }
    });
}
