//! The telemetry sampler's own cost: CPU time of the process while only the
//! host sampler runs, against the same process idle for the same time (the
//! peer measured in the same run), as a percentage of one core.
//!
//! `cargo bench -p chimera-agent --bench sampler -- [SECONDS]` (default 10 s per case).

use chimera_agent::telemetry::{spawn, HostSensors};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU time of every thread of this process, nanoseconds (/proc schedstat).
fn process_cpu_ns() -> u64 {
    let mut total = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

fn measure(d: Duration, interval: Option<Duration>) -> (f64, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let dt = interval.map(|i| {
        spawn(
            "cpu",
            Box::new(HostSensors::discover()),
            i,
            None,
            stop.clone(),
        )
        .expect("start the sampler")
    });
    std::thread::sleep(Duration::from_millis(200)); // let it settle
    let (c0, t0) = (process_cpu_ns(), Instant::now());
    std::thread::sleep(d);
    let (c1, t1) = (process_cpu_ns(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    let samples = dt.map(|d| d.take_outbound(usize::MAX).0.len()).unwrap_or(0);
    let pct = (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64 * 100.0;
    (pct, samples)
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let d = Duration::from_secs(secs);
    println!("host sampler cost, {secs} s per case, % of one core (process CPU time / wall time)");
    for ms in [100u64, 10] {
        let (idle, _) = measure(d, None);
        let (with, n) = measure(d, Some(Duration::from_millis(ms)));
        println!(
            "interval {ms:>3} ms: idle process {idle:.3} %, with sampler {with:.3} %, sampler {:.3} % of a core ({n} samples, {:.1} us CPU per sample)",
            with - idle,
            (with - idle) / 100.0 * d.as_secs_f64() * 1e6 / n.max(1) as f64
        );
    }
}
