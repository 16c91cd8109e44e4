//! Following a sweep: a live progress bar on a terminal, one line per finished
//! trial otherwise. Everything goes to stderr.

use crate::status;
use chimera_domain::params::{label, params_from_proto};
use chimera_proto::v1 as proto;
use chimera_proto::v1::operator_service_client::OperatorServiceClient;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use tonic::transport::Channel;

fn done(s: &proto::Sweep) -> u64 {
    (s.trials_succeeded + s.trials_failed + s.trials_cancelled).into()
}

/// Follows the sweep until it finishes; returns its final state.
pub async fn watch(
    client: &mut OperatorServiceClient<Channel>,
    sweep: &str,
) -> anyhow::Result<proto::Sweep> {
    let mut stream = client
        .watch_sweep(proto::WatchSweepRequest {
            sweep_id: sweep.to_owned(),
        })
        .await
        .map_err(status("watch the sweep"))?
        .into_inner();
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if !tty {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} trials  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last = None;
    while let Some(ev) = stream.message().await.map_err(status("watch the sweep"))? {
        let Some(s) = ev.sweep else { continue };
        bar.set_length(s.trials_total.into());
        bar.set_position(done(&s));
        bar.set_message(format!(
            "{} running, {} failed",
            s.trials_running, s.trials_failed
        ));
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
        let finished = s.state != proto::SweepState::Running as i32;
        last = Some(s);
        if finished {
            break;
        }
    }
    bar.finish_and_clear();
    let last = last.ok_or_else(|| {
        anyhow::anyhow!("watch: the controller closed the stream without any state")
    })?;
    if last.state == proto::SweepState::Running as i32 {
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

/// 0 when every trial succeeded, 2 otherwise.
pub fn exit_code(s: &proto::Sweep) -> i32 {
    if s.trials_succeeded == s.trials_total {
        0
    } else {
        2
    }
}
