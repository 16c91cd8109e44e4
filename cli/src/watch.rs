//! Following a sweep: a live progress bar on a terminal, one line per finished
//! trial otherwise. Everything goes to stderr.

use crate::client::{connect, status, Client};
use chimera_domain::params::{label, params_from_proto};
use chimera_proto::v1 as proto;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

fn done(s: &proto::Sweep) -> u64 {
    (s.trials_succeeded + s.trials_failed + s.trials_cancelled).into()
}

/// How long a watch looks for a leading controller again after losing
/// its stream (a failover, a restart) before it gives up.
pub const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(60);

async fn subscribe(
    client: &mut Client,
    sweep: &str,
) -> Result<tonic::Streaming<proto::SweepEvent>, tonic::Status> {
    Ok(client
        .watch_sweep(proto::WatchSweepRequest {
            sweep_id: sweep.to_owned(),
        })
        .await?
        .into_inner())
}

/// Whether a watch stream that failed this way may work on another try
/// (the controller went away or stepped down), rather than being refused.
fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// Follows the sweep until it finishes; returns its final state. With
/// `reconnect` (the controller list), a lost stream is followed to the
/// leader again for up to [`RECONNECT_FOR`]: the new stream starts with a
/// snapshot, so nothing is missed but the lines of trials that ended
/// meanwhile.
pub async fn watch(
    client: &mut Client,
    sweep: &str,
    reconnect: Option<&str>,
) -> anyhow::Result<proto::Sweep> {
    let mut stream = subscribe(client, sweep)
        .await
        .map_err(status("watch the sweep"))?;
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if !tty {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} trials  {msg}\n  {prefix}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last = None;
    let mut live_client = client.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut ticks = 0u64;
    loop {
        let ev = tokio::select! {
            ev = stream.message() => match ev {
                Ok(Some(ev)) => Some(ev),
                // The stream ended or broke before the sweep did: follow
                // the leader again, if there is a list to find it in.
                other => {
                    let finished = last
                        .as_ref()
                        .is_some_and(ended);
                    let lost = match other {
                        Err(s) if !retryable(&s) => return Err(status("watch the sweep")(s)),
                        Err(s) => s.message().to_owned(),
                        Ok(_) => "the controller closed the stream".to_owned(),
                    };
                    match reconnect {
                        Some(urls) if !finished => {
                            let (c, st) = resubscribe(urls, sweep, &lost, &bar).await?;
                            *client = c;
                            live_client = client.clone();
                            stream = st;
                            continue;
                        }
                        _ => None,
                    }
                }
            },
            _ = tick.tick() => {
                ticks += 1;
                let line = live_line(&mut live_client, sweep).await;
                if tty {
                    if let Some(line) = line {
                        bar.set_prefix(line);
                    }
                } else if let (Some(line), 0) = (line, ticks % 10) {
                    eprintln!("  {line}");
                }
                continue;
            }
        };
        let Some(ev) = ev else { break };
        let Some(s) = ev.sweep else { continue };
        bar.set_length(s.trials_total.into());
        bar.set_position(done(&s));
        if s.state == proto::SweepState::Waiting as i32 {
            bar.set_message(format!("waiting for devices: {}", s.waiting_for));
            if !tty {
                eprintln!("waiting for devices: {}", s.waiting_for);
            }
        } else {
            bar.set_message(format!(
                "{} running, {} failed",
                s.trials_running, s.trials_failed
            ));
        }
        if let Some(t) = ev.trial {
            let state =
                proto::TrialState::try_from(t.state).unwrap_or(proto::TrialState::Unspecified);
            let finished = matches!(
                state,
                proto::TrialState::Succeeded | proto::TrialState::Failed
            );
            if finished {
                let config = params_from_proto(&t.params)
                    .map(|p| label(&p))
                    .unwrap_or_default();
                let line = match state {
                    proto::TrialState::Failed => {
                        format!("trial {} failed: {} ({config})", t.id, t.error)
                    }
                    _ => format!("trial {} succeeded on {} ({config})", t.id, t.agent),
                };
                if tty {
                    bar.println(line);
                } else {
                    eprintln!("[{}/{}] {line}", done(&s), s.trials_total);
                }
            }
        }
        let finished = ended(&s);
        last = Some(s);
        if finished {
            break;
        }
    }
    bar.finish_and_clear();
    let last = last.ok_or_else(|| {
        anyhow::anyhow!("watch: the controller closed the stream without any state")
    })?;
    if !ended(&last) {
        anyhow::bail!(
            "watch sweep {}: the controller closed the stream before the sweep finished",
            last.id
        );
    }
    eprintln!(
        "sweep {} {}: {} succeeded, {} failed, {} cancelled of {} trials",
        last.id,
        crate::output::sweep_state(last.state),
        last.trials_succeeded,
        last.trials_failed,
        last.trials_cancelled,
        last.trials_total
    );
    Ok(last)
}

/// Finds the leading controller among `urls` again and subscribes anew,
/// trying for up to [`RECONNECT_FOR`].
async fn resubscribe(
    urls: &str,
    sweep: &str,
    lost: &str,
    bar: &ProgressBar,
) -> anyhow::Result<(Client, tonic::Streaming<proto::SweepEvent>)> {
    bar.println(format!(
        "lost the controller ({lost}); following the leader among {urls}"
    ));
    if bar.is_hidden() {
        eprintln!("lost the controller ({lost}); following the leader among {urls}");
    }
    let deadline = tokio::time::Instant::now() + RECONNECT_FOR;
    let mut why;
    let mut backoff = chimera_observe::retry::Backoff::new(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(2),
    );
    loop {
        tokio::time::sleep(backoff.next_delay()).await;
        why = match connect(urls).await {
            Ok(mut c) => match subscribe(&mut c, sweep).await {
                Ok(st) => return Ok((c, st)),
                Err(s) if !retryable(&s) => return Err(status("watch the sweep")(s)),
                Err(s) => s.message().to_owned(),
            },
            Err(e) => format!("{e:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "watch sweep {sweep}: no leading controller answered for {} after the stream was lost ({lost}): {why}",
                humantime::format_duration(RECONNECT_FOR)
            );
        }
    }
}

/// One line of the live telemetry of the devices running this sweep's trials:
/// power, temperature, clock and utilisation, where the device reports them.
async fn live_line(client: &mut Client, sweep: &str) -> Option<String> {
    let samples = client
        .live_telemetry(proto::LiveTelemetryRequest {})
        .await
        .ok()?
        .into_inner()
        .samples;
    let parts: Vec<String> = samples
        .iter()
        .filter_map(|a| {
            let s = a.sample.as_ref()?;
            if !s.trial.starts_with(&format!("{sweep}/")) {
                return None;
            }
            let f = |k: &str, unit: &str, digits: usize| {
                s.fields.get(k).map(|v| format!("{v:.digits$} {unit}"))
            };
            let fields: Vec<String> = [
                f("power_w", "W", 0),
                f("temp_c", "°C", 0),
                f("sm_clock_mhz", "MHz", 0).or_else(|| f("cpu_mhz_mean", "MHz", 0)),
                f("gpu_util_pct", "% busy", 0).or_else(|| f("cpu_util_pct", "% busy", 0)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let throttle = if s.throttle.iter().any(|t| t != "gpu_idle") {
                format!(" throttled: {}", s.throttle.join(","))
            } else {
                String::new()
            };
            Some(format!(
                "{}/{} [{}] {}{throttle}",
                a.agent,
                s.device_id,
                s.phase,
                fields.join(", ")
            ))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" | "))
}

/// The exit code when some trial of a sweep failed or was cancelled (see
/// `chimera --help`).
pub const EXIT_FAILED_TRIALS: i32 = 5;

/// 0 when every trial succeeded, [`EXIT_FAILED_TRIALS`] otherwise.
pub fn exit_code(s: &proto::Sweep) -> i32 {
    if s.trials_succeeded == s.trials_total {
        0
    } else {
        EXIT_FAILED_TRIALS
    }
}

/// Whether a sweep has ended (done or cancelled): not running, not waiting.
fn ended(s: &proto::Sweep) -> bool {
    s.state == proto::SweepState::Done as i32 || s.state == proto::SweepState::Cancelled as i32
}
