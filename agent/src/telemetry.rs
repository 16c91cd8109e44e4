//! Device telemetry: one sampler thread per device reads its sensors every
//! interval (default 100 ms, down to 10 ms) and files each sample twice: in a
//! short history the worker summarises a trial from, and in an outbound queue
//! the agent loop streams to the controller. Both are bounded; the outbound
//! queue drops its oldest samples when the controller is away and counts them.
//!
//! Invariants: a sampler never blocks a workload (it takes a lock only to push
//! a sample, and reads sensors outside it); a sensor the device cannot read is
//! absent from the sample, never zero.

use chimera_domain::telemetry::{field, Counter, Phase, Sample};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Samples kept for summaries, per device (at 10 ms: 5 minutes).
const HISTORY: usize = 30_000;
/// Samples waiting to be streamed, per device.
pub const OUTBOUND: usize = 20_000;
/// Shortest sampling interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The energy counters, in the order a summary prefers them.
pub const COUNTERS: &[Counter] = &[
    Counter {
        field: field::GPU_ENERGY_MJ,
        joules_per_unit: 1e-3,
        wrap: None,
    },
    Counter {
        field: field::RAPL_PACKAGE_UJ,
        joules_per_unit: 1e-6,
        // Filled per machine from max_energy_range_uj; see `host_rapl_range`.
        wrap: None,
    },
];

#[derive(Default)]
struct Mark {
    phase: Option<Phase>,
    trial: Option<String>,
}

/// One device's telemetry state, shared by its sampler, its worker and the
/// agent loop.
pub struct DeviceTelemetry {
    pub device_id: String,
    mark: Mutex<Mark>,
    history: Mutex<VecDeque<Sample>>,
    outbound: Mutex<VecDeque<Sample>>,
    dropped: AtomicU64,
    pub interval: Duration,
    /// RAPL package counter range, when readable.
    pub rapl_wrap: Option<f64>,
    /// The sampler thread, for the agent to join at shutdown.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl DeviceTelemetry {
    /// The sampler thread, once (it ends when its `stop` flag is set).
    pub fn take_thread(&self) -> Option<std::thread::JoinHandle<()>> {
        self.thread.lock().ok().and_then(|mut t| t.take())
    }

    /// Sets the phase and trial the next samples are tagged with.
    pub fn mark(&self, phase: Phase, trial: Option<&str>) {
        if let Ok(mut m) = self.mark.lock() {
            m.phase = Some(phase);
            m.trial = trial.map(str::to_owned);
        }
    }

    /// Sets only the phase (the trial stays).
    pub fn phase(&self, phase: Phase) {
        if let Ok(mut m) = self.mark.lock() {
            m.phase = Some(phase);
        }
    }

    fn push(&self, s: Sample) {
        if let Ok(mut h) = self.history.lock() {
            if h.len() >= HISTORY {
                h.pop_front();
            }
            h.push_back(s.clone());
        }
        if let Ok(mut o) = self.outbound.lock() {
            if o.len() >= OUTBOUND {
                o.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            o.push_back(s);
        }
    }

    /// Takes up to `max` samples to stream, and the number dropped since the
    /// last call.
    pub fn take_outbound(&self, max: usize) -> (Vec<Sample>, u64) {
        let samples = match self.outbound.lock() {
            Ok(mut o) => {
                let n = o.len().min(max);
                o.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        };
        (samples, self.dropped.swap(0, Ordering::Relaxed))
    }

    /// Samples taken at or after `since_ms` (Unix ms).
    pub fn since(&self, since_ms: i64) -> Vec<Sample> {
        self.history
            .lock()
            .map(|h| h.iter().filter(|s| s.t_ms >= since_ms).cloned().collect())
            .unwrap_or_default()
    }

    /// The newest sample, if any.
    pub fn latest(&self) -> Option<Sample> {
        self.history.lock().ok().and_then(|h| h.back().cloned())
    }

    /// The energy counters, with this machine's RAPL range.
    pub fn counters(&self) -> Vec<Counter> {
        COUNTERS
            .iter()
            .map(|c| Counter {
                wrap: if c.field == field::RAPL_PACKAGE_UJ {
                    self.rapl_wrap
                } else {
                    c.wrap
                },
                ..*c
            })
            .collect()
    }
}

/// Reads a device's sensors.
pub trait Sensors: Send {
    /// Current readings; fields that cannot be read are left out.
    fn read(&mut self) -> (BTreeMap<String, f64>, Vec<String>);
}

/// Starts the sampler thread of a device; it runs until `stop` is set.
pub fn spawn(
    device_id: &str,
    mut sensors: Box<dyn Sensors>,
    interval: Duration,
    rapl_wrap: Option<f64>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Arc<DeviceTelemetry>> {
    let interval = interval.max(MIN_INTERVAL);
    let dt = Arc::new(DeviceTelemetry {
        device_id: device_id.to_owned(),
        mark: Mutex::new(Mark::default()),
        history: Mutex::new(VecDeque::new()),
        outbound: Mutex::new(VecDeque::new()),
        dropped: AtomicU64::new(0),
        interval,
        rapl_wrap,
        thread: Mutex::new(None),
    });
    let shared = dt.clone();
    let thread = std::thread::Builder::new()
        .name(format!("chimera-telemetry-{device_id}"))
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let (fields, throttle) = sensors.read();
                let (phase, trial) = shared
                    .mark
                    .lock()
                    .map(|m| (m.phase.unwrap_or(Phase::Idle), m.trial.clone()))
                    .unwrap_or((Phase::Idle, None));
                shared.push(Sample {
                    t_ms: now_ms(),
                    device_id: shared.device_id.clone(),
                    phase,
                    trial,
                    fields,
                    throttle,
                });
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now; // fell behind: do not burst to catch up
                }
            }
        })?;
    if let Ok(mut slot) = dt.thread.lock() {
        *slot = Some(thread);
    }
    Ok(dt)
}

// ---- host ------------------------------------------------------------------

/// The host CPU's sensors: /proc/stat utilisation, cpufreq (or /proc/cpuinfo)
/// frequency, thermal zones and hwmon temperatures, RAPL energy, process RSS.
#[derive(Default)]
pub struct HostSensors {
    last_stat: Option<(u64, u64)>,
    rapl_package: Option<std::path::PathBuf>,
    rapl_dram: Option<std::path::PathBuf>,
    temps: Vec<std::path::PathBuf>,
    freqs: Vec<std::path::PathBuf>,
}

fn read_f64(p: &std::path::Path) -> Option<f64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The RAPL package counter's range in microjoules, if readable.
pub fn host_rapl_range() -> Option<f64> {
    read_f64(std::path::Path::new(
        "/sys/class/powercap/intel-rapl:0/max_energy_range_uj",
    ))
}

impl HostSensors {
    /// Finds the host's readable sensors once.
    pub fn discover() -> HostSensors {
        let glob = |dir: &str, pred: &dyn Fn(&str) -> bool| -> Vec<std::path::PathBuf> {
            let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(pred))
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        let mut temps: Vec<std::path::PathBuf> =
            glob("/sys/class/thermal", &|n| n.starts_with("thermal_zone"))
                .into_iter()
                .map(|z| z.join("temp"))
                .collect();
        for hw in glob("/sys/class/hwmon", &|n| n.starts_with("hwmon")) {
            temps.extend(glob(hw.to_str().unwrap_or_default(), &|n| {
                n.starts_with("temp") && n.ends_with("_input")
            }));
        }
        temps.retain(|p| read_f64(p).is_some());
        let freqs: Vec<std::path::PathBuf> = glob("/sys/devices/system/cpu", &|n| {
            n.starts_with("cpu") && n[3..].chars().all(|c| c.is_ascii_digit()) && n.len() > 3
        })
        .into_iter()
        .map(|c| c.join("cpufreq/scaling_cur_freq"))
        .filter(|p| read_f64(p).is_some())
        .collect();
        let rapl = |sub: &str| {
            let p = std::path::PathBuf::from(format!("/sys/class/powercap/{sub}/energy_uj"));
            read_f64(&p).map(|_| p)
        };
        // intel-rapl:0:1 is usually DRAM; check its name.
        let dram = std::fs::read_to_string("/sys/class/powercap/intel-rapl:0:1/name")
            .ok()
            .filter(|n| n.trim() == "dram")
            .and_then(|_| rapl("intel-rapl:0:1"));
        HostSensors {
            last_stat: None,
            rapl_package: rapl("intel-rapl:0"),
            rapl_dram: dram,
            temps,
            freqs,
        }
    }
}

/// Busy and total jiffies of all CPUs, from the first line of /proc/stat.
fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

impl Sensors for HostSensors {
    fn read(&mut self) -> (BTreeMap<String, f64>, Vec<String>) {
        let mut f = BTreeMap::new();
        if let Some((busy, total)) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| cpu_jiffies(&s))
        {
            if let Some((b0, t0)) = self.last_stat {
                if total > t0 {
                    f.insert(
                        field::CPU_UTIL_PCT.to_owned(),
                        100.0 * (busy.saturating_sub(b0)) as f64 / (total - t0) as f64,
                    );
                }
            }
            self.last_stat = Some((busy, total));
        }
        let mhz: Vec<f64> = if self.freqs.is_empty() {
            std::fs::read_to_string("/proc/cpuinfo")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("cpu MHz"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse().ok())
                .collect()
        } else {
            self.freqs
                .iter()
                .filter_map(|p| read_f64(p).map(|khz| khz / 1e3))
                .collect()
        };
        if !mhz.is_empty() {
            f.insert(
                field::CPU_MHZ_MEAN.to_owned(),
                mhz.iter().sum::<f64>() / mhz.len() as f64,
            );
            f.insert(
                field::CPU_MHZ_MIN.to_owned(),
                mhz.iter().copied().fold(f64::INFINITY, f64::min),
            );
        }
        let hottest = self
            .temps
            .iter()
            .filter_map(|p| read_f64(p))
            .map(|milli| milli / 1e3)
            .fold(f64::NEG_INFINITY, f64::max);
        if hottest.is_finite() {
            f.insert(field::TEMP_C.to_owned(), hottest);
        }
        if let Some(v) = self.rapl_package.as_deref().and_then(read_f64) {
            f.insert(field::RAPL_PACKAGE_UJ.to_owned(), v);
        }
        if let Some(v) = self.rapl_dram.as_deref().and_then(read_f64) {
            f.insert(field::RAPL_DRAM_UJ.to_owned(), v);
        }
        if let Some(kb) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
        {
            f.insert(field::RSS_BYTES.to_owned(), kb * 1024.0);
        }
        (f, Vec::new())
    }
}

// ---- NVIDIA ------------------------------------------------------------------

/// An NVIDIA GPU's sensors through NVML.
pub struct GpuSensors {
    nvml: Option<nvml_wrapper::Nvml>,
    index: u32,
}

impl GpuSensors {
    /// The sensors of GPU `index` (NVML is opened on the sampler's own handle).
    pub fn new(index: u32) -> GpuSensors {
        GpuSensors {
            nvml: nvml_wrapper::Nvml::init().ok(),
            index,
        }
    }
}

/// Names of the throttle reasons set in `bits` (NVML's bitmask).
pub fn throttle_names(bits: u64) -> Vec<String> {
    use nvml_wrapper::bitmasks::device::ThrottleReasons as T;
    let r = T::from_bits_truncate(bits);
    [
        (T::GPU_IDLE, "gpu_idle"),
        (
            T::APPLICATIONS_CLOCKS_SETTING,
            "applications_clocks_setting",
        ),
        (T::SW_POWER_CAP, "sw_power_cap"),
        (T::HW_SLOWDOWN, "hw_slowdown"),
        (T::SYNC_BOOST, "sync_boost"),
        (T::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
        (T::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
        (T::HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
        (T::DISPLAY_CLOCK_SETTING, "display_clock_setting"),
    ]
    .iter()
    .filter(|(flag, _)| r.contains(*flag))
    .map(|(_, n)| (*n).to_owned())
    .collect()
}

impl Sensors for GpuSensors {
    fn read(&mut self) -> (BTreeMap<String, f64>, Vec<String>) {
        use nvml_wrapper::enum_wrappers::device::{Clock, PcieUtilCounter, TemperatureSensor};
        let mut f = BTreeMap::new();
        let Some(dev) = self
            .nvml
            .as_ref()
            .and_then(|n| n.device_by_index(self.index).ok())
        else {
            return (f, Vec::new());
        };
        let mut put = |k: &str, v: Option<f64>| {
            if let Some(v) = v {
                f.insert(k.to_owned(), v);
            }
        };
        put(
            field::POWER_W,
            dev.power_usage().ok().map(|mw| mw as f64 / 1e3),
        );
        put(
            field::GPU_ENERGY_MJ,
            dev.total_energy_consumption().ok().map(|mj| mj as f64),
        );
        put(
            field::POWER_LIMIT_W,
            dev.enforced_power_limit().ok().map(|mw| mw as f64 / 1e3),
        );
        put(
            field::TEMP_C,
            dev.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
        );
        put(
            field::SM_CLOCK_MHZ,
            dev.clock_info(Clock::SM).ok().map(f64::from),
        );
        put(
            field::MEM_CLOCK_MHZ,
            dev.clock_info(Clock::Memory).ok().map(f64::from),
        );
        if let Ok(u) = dev.utilization_rates() {
            put(field::GPU_UTIL_PCT, Some(u.gpu as f64));
            put(field::MEM_UTIL_PCT, Some(u.memory as f64));
        }
        put(
            field::MEM_USED_BYTES,
            dev.memory_info().ok().map(|m| m.used as f64),
        );
        put(
            field::PCIE_TX_KB_PER_S,
            dev.pcie_throughput(PcieUtilCounter::Send)
                .ok()
                .map(f64::from),
        );
        put(
            field::PCIE_RX_KB_PER_S,
            dev.pcie_throughput(PcieUtilCounter::Receive)
                .ok()
                .map(f64::from),
        );
        let throttle = dev
            .current_throttle_reasons()
            .map(|r| throttle_names(r.bits()))
            .unwrap_or_default();
        (f, throttle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_jiffies_reads_busy_and_total() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_jiffies(stat), Some((150, 1000)));
        assert_eq!(cpu_jiffies("garbage"), None);
    }

    #[test]
    fn throttle_bits_decode_to_names() {
        use nvml_wrapper::bitmasks::device::ThrottleReasons as T;
        let bits = (T::SW_POWER_CAP | T::HW_THERMAL_SLOWDOWN).bits();
        assert_eq!(
            throttle_names(bits),
            vec!["sw_power_cap", "hw_thermal_slowdown"]
        );
        assert!(throttle_names(0).is_empty());
    }

    #[test]
    fn the_host_sampler_tags_phases_and_bounds_its_queue() {
        let stop = Arc::new(AtomicBool::new(false));
        let dt = spawn(
            "cpu",
            Box::new(HostSensors::discover()),
            Duration::from_millis(10),
            None,
            stop.clone(),
        )
        .unwrap();
        dt.mark(Phase::Measure, Some("s/t/1"));
        // Until five samples have come (a loaded machine may take far longer
        // than 5 periods), within a generous bound.
        let mut samples = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while samples.len() < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let (more, dropped) = dt.take_outbound(usize::MAX);
            assert_eq!(dropped, 0);
            samples.extend(more);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(samples.len() >= 5, "{}", samples.len());
        let tagged: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.phase == Phase::Measure)
            .collect();
        assert!(!tagged.is_empty());
        assert!(tagged.iter().all(|s| s.trial.as_deref() == Some("s/t/1")));
        // /proc/stat exists on Linux: utilisation from the second sample on.
        assert!(samples[1..]
            .iter()
            .all(|s| s.fields.contains_key(field::CPU_UTIL_PCT)));
        assert!(samples
            .iter()
            .all(|s| s.fields.contains_key(field::RSS_BYTES)));
    }
}
