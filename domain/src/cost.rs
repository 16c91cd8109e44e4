//! What a token costs: measured throughput and energy per configuration and
//! device class, priced with an operator's prices file (energy added only
//! where the device's price does not include power).

use crate::compare::split;
use crate::metrics;
use crate::results::{TrialRecord, TrialState};
use crate::stats::median;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The throughput a cost is computed from when none is asked for
/// (`chimera cost --throughput`).
pub const DEFAULT_THROUGHPUT: &str = metrics::DECODE_TOKENS_PER_S;

/// Hours in the month the costs are quoted for (30 days).
pub const HOURS_PER_MONTH: f64 = 720.0;

/// The prices file (TOML).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Electricity, US dollars per kWh.
    pub energy_usd_per_kwh: f64,
    /// Device prices, first match wins.
    #[serde(rename = "device", default)]
    pub devices: Vec<DevicePrice>,
}

/// The price of one kind of device.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevicePrice {
    /// Matches a device class containing this text (`H100`, `cpu: AMD EPYC`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// Rent (or amortised cost) of one device, US dollars per hour.
    pub usd_per_hour: f64,
    /// Whether `usd_per_hour` already pays for the device's electricity (a
    /// cloud rental does; an amortised purchase does not). Default false:
    /// the measured energy is priced at `energy_usd_per_kwh` and added.
    #[serde(default)]
    pub power_included: bool,
    /// Where the figure comes from.
    #[serde(default)]
    pub source: String,
    /// Spot (preemptible) price, US dollars per hour (`--pricing spot`).
    #[serde(default)]
    pub spot_usd_per_hour: Option<f64>,
    /// Share of time a spot device is lost to interruptions (0 to below 1):
    /// the devices needed grow by 1 / (1 - rate).
    #[serde(default)]
    pub spot_interruption_rate: Option<f64>,
    /// Effective hourly price with a one-year commitment (`--pricing reserved-1y`).
    #[serde(default)]
    pub reserved_1y_usd_per_hour: Option<f64>,
    /// Effective hourly price with a three-year commitment (`--pricing reserved-3y`).
    #[serde(default)]
    pub reserved_3y_usd_per_hour: Option<f64>,
}

/// Which of a device's prices a cost uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pricing {
    #[default]
    OnDemand,
    Spot,
    Reserved1y,
    Reserved3y,
}

impl Pricing {
    pub const ALL: [Pricing; 4] = [
        Pricing::OnDemand,
        Pricing::Spot,
        Pricing::Reserved1y,
        Pricing::Reserved3y,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pricing::OnDemand => "on-demand",
            Pricing::Spot => "spot",
            Pricing::Reserved1y => "reserved-1y",
            Pricing::Reserved3y => "reserved-3y",
        }
    }
}

impl std::str::FromStr for Pricing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::pick(s, &Pricing::ALL, Pricing::name).map_err(|near| {
            format!(
                "unknown pricing `{s}`, expected one of: on-demand, spot, reserved-1y, reserved-3y{}",
                crate::names::hint(near)
            )
        })
    }
}

impl DevicePrice {
    /// The hourly price under `pricing`, and the share of time the device
    /// is usable (below 1 for spot); none when the file quotes no such price.
    pub fn hourly(&self, pricing: Pricing) -> Option<(f64, f64)> {
        match pricing {
            Pricing::OnDemand => Some((self.usd_per_hour, 1.0)),
            Pricing::Spot => self
                .spot_usd_per_hour
                .map(|p| (p, 1.0 - self.spot_interruption_rate.unwrap_or(0.0))),
            Pricing::Reserved1y => self.reserved_1y_usd_per_hour.map(|p| (p, 1.0)),
            Pricing::Reserved3y => self.reserved_3y_usd_per_hour.map(|p| (p, 1.0)),
        }
    }
}

impl Prices {
    /// Parses and checks a prices file; errors name the field.
    pub fn parse(text: &str) -> Result<Prices, String> {
        let p: Prices = toml::from_str(text).map_err(|e| format!("prices file: {e}"))?;
        if !(p.energy_usd_per_kwh.is_finite() && p.energy_usd_per_kwh >= 0.0) {
            return Err(format!(
                "prices file: energy_usd_per_kwh = {} must be a non-negative number",
                p.energy_usd_per_kwh
            ));
        }
        for (i, d) in p.devices.iter().enumerate() {
            if d.pattern.is_empty() || !(d.usd_per_hour.is_finite() && d.usd_per_hour >= 0.0) {
                return Err(format!(
                    "prices file: device[{i}] (match = `{}`, usd_per_hour = {}) needs a non-empty match and a non-negative price",
                    d.pattern, d.usd_per_hour
                ));
            }
            for (name, v) in [
                ("spot_usd_per_hour", d.spot_usd_per_hour),
                ("reserved_1y_usd_per_hour", d.reserved_1y_usd_per_hour),
                ("reserved_3y_usd_per_hour", d.reserved_3y_usd_per_hour),
            ] {
                if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                    return Err(format!(
                        "prices file: device[{i}] (match = `{}`): {name} = {v} must be a non-negative number",
                        d.pattern
                    ));
                }
            }
            if let Some(r) = d
                .spot_interruption_rate
                .filter(|r| !(r.is_finite() && (0.0..1.0).contains(r)))
            {
                return Err(format!(
                    "prices file: device[{i}] (match = `{}`): spot_interruption_rate = {r} must be from 0 to below 1",
                    d.pattern
                ));
            }
        }
        Ok(p)
    }

    /// The price of a device class, if listed.
    pub fn device(&self, class: &str) -> Option<&DevicePrice> {
        self.devices.iter().find(|d| class.contains(&d.pattern))
    }
}

/// One configuration on one class, priced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CostRow {
    pub group: String,
    pub setup: String,
    pub class: String,
    /// The load the throughput was measured at, for a `serve` sweep: its
    /// capacity within the SLO (`concurrency 4 within ttft<=500ms @90%`),
    /// or its peak without one.
    pub load: Option<String>,
    /// Median over repeats, tokens/s per device.
    pub tokens_per_s: f64,
    /// Repeats the median is over.
    pub samples: usize,
    /// The device's price already includes its electricity: no energy is added.
    pub power_included: bool,
    /// Devices needed for the monthly volume at the target utilisation.
    pub devices: u64,
    pub hardware_usd_per_month: Option<f64>,
    /// From the measured `joules_per_token`; none when the device had no
    /// energy sensor, or its price includes power.
    pub energy_usd_per_month: Option<f64>,
    /// Hardware + energy per million tokens at the target utilisation.
    pub usd_per_million_tokens: Option<f64>,
}

/// What a monthly volume is priced at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Volume {
    pub tokens_per_month: f64,
    /// Share of the month the fleet is busy.
    pub utilization: f64,
    pub pricing: Pricing,
}

/// Prices every configuration of a sweep that reports `throughput` (tokens/s).
/// A `serve` sweep is priced at its capacity: the output tokens/s a device
/// gives at the highest load within the sweep's SLO (see
/// [`crate::capacity`]), so batching's gain is in the price.
pub fn cost(
    trials: &[TrialRecord],
    prices: &Prices,
    throughput: &str,
    volume: Volume,
) -> Vec<CostRow> {
    type Key = (String, String, String);
    let mut tps: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    let mut jpt: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    let mut loads: BTreeMap<Key, String> = BTreeMap::new();
    let serve = trials
        .iter()
        .any(|t| t.metrics.contains_key(metrics::REQUESTS_OK));
    if serve {
        for c in crate::capacity::curves(trials) {
            let (point, how) = match (c.capacity_point(), &c.slo) {
                (Some(p), Some(slo)) => (Some(p), format!("within {}", slo.label())),
                (None, Some(slo)) => {
                    loads.insert(
                        (String::new(), c.setup.clone(), c.class.clone()),
                        format!("no load met {}", slo.label()),
                    );
                    (None, String::new())
                }
                (_, None) => (
                    c.points.iter().max_by(|a, b| {
                        a.output_tokens_per_s
                            .unwrap_or(0.0)
                            .total_cmp(&b.output_tokens_per_s.unwrap_or(0.0))
                    }),
                    "peak, no slo".to_owned(),
                ),
            };
            let Some(p) = point else { continue };
            let key = (String::new(), c.setup.clone(), c.class.clone());
            let at = |t: &&TrialRecord| {
                let (setup, param, level) = crate::capacity::position(t);
                t.device_class == c.class
                    && t.state == TrialState::Succeeded
                    && setup == c.setup
                    && param == p.load_param
                    && level == p.load
            };
            for t in trials.iter().filter(at) {
                if let Some(v) = t.metrics.get(metrics::OUTPUT_TOKENS_PER_S) {
                    tps.entry(key.clone()).or_default().push(*v);
                }
                if let Some(v) = t.metrics.get(metrics::JOULES_PER_TOKEN) {
                    jpt.entry(key.clone()).or_default().push(*v);
                }
            }
            let load = if p.load_param == "concurrency" {
                format!("concurrency {}", p.load)
            } else {
                format!("request_rate {}/s", p.load)
            };
            loads.insert(key, format!("{load} {how}"));
        }
    }
    for t in trials
        .iter()
        .filter(|t| !serve && t.state == TrialState::Succeeded)
    {
        let (g, s) = split(&t.params);
        let key = (g, s, t.device_class.clone());
        if let Some(v) = t
            .metrics
            .get(throughput)
            .filter(|v| v.is_finite() && **v > 0.0)
        {
            tps.entry(key.clone()).or_default().push(*v);
        }
        if let Some(v) = t
            .metrics
            .get(metrics::JOULES_PER_TOKEN)
            .filter(|v| v.is_finite())
        {
            jpt.entry(key).or_default().push(*v);
        }
    }
    let Volume {
        tokens_per_month,
        utilization,
        pricing,
    } = volume;
    tps.into_iter()
        .filter(|(_, v)| v.iter().all(|x| x.is_finite() && *x > 0.0) && !v.is_empty())
        .map(|(key, mut v)| {
            let samples = v.len();
            let rate = median(&mut v);
            let device_price = prices.device(&key.2);
            let price = device_price.and_then(|p| p.hourly(pricing));
            // Spot devices are lost part of the time: more are needed.
            let usable = price.map_or(1.0, |p| p.1);
            let per_device_month = rate * 3600.0 * HOURS_PER_MONTH * utilization * usable;
            let devices = (tokens_per_month / per_device_month).ceil().max(1.0) as u64;
            let power_included = device_price.is_some_and(|p| p.power_included);
            let hardware = price.map(|p| devices as f64 * p.0 * HOURS_PER_MONTH);
            // Joules per token, where measured and not already paid for.
            let joules = jpt
                .get_mut(&key)
                .filter(|_| !power_included)
                .map(|j| median(j));
            let energy = joules.map(|j| tokens_per_month * j / 3.6e6 * prices.energy_usd_per_kwh);
            let per_million = price.map(|(hourly, usable)| {
                let hw = hourly / (rate * 3600.0 * utilization * usable) * 1e6;
                let en = joules
                    .map(|j| j * 1e6 / 3.6e6 * prices.energy_usd_per_kwh)
                    .unwrap_or(0.0);
                hw + en
            });
            CostRow {
                load: loads.get(&key).cloned(),
                group: key.0,
                setup: key.1,
                class: key.2,
                tokens_per_s: rate,
                samples,
                power_included,
                devices,
                hardware_usd_per_month: hardware,
                energy_usd_per_month: energy,
                usd_per_million_tokens: per_million,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{ParamValue, Params};

    #[test]
    fn prices_a_configuration_and_names_bad_fields() {
        let prices = Prices::parse(
            "energy_usd_per_kwh = 0.10\n[[device]]\nmatch = \"H100\"\nusd_per_hour = 3.6\nsource = \"test\"\n",
        )
        .unwrap();
        let mut params = Params::new();
        params.insert("format".into(), ParamValue::Text("q8_0".into()));
        let t = TrialRecord {
            id: "t0".into(),
            sweep_id: "s".into(),
            state: TrialState::Succeeded,
            device_class: "NVIDIA H100 80GB HBM3 79GiB".into(),
            params,
            config_index: 0,
            repeat: 0,
            attempt: 1,
            agent: None,
            device_id: None,
            metrics: [
                ("decode_tokens_per_s".to_owned(), 1000.0),
                ("joules_per_token".to_owned(), 0.36),
            ]
            .into(),
            fingerprint: None,
            error: None,
            wall_ms: None,
            detail: None,
            depends_on: None,
            rung: None,
            pinned: None,
            assigned_unix_ms: None,
        };
        // 1000 tokens/s at 50 %: 1.296e9 tokens per device-month.
        let volume = |pricing| Volume {
            tokens_per_month: 2.0e9,
            utilization: 0.5,
            pricing,
        };
        let rows = cost(
            std::slice::from_ref(&t),
            &prices,
            "decode_tokens_per_s",
            volume(Pricing::OnDemand),
        );
        let r = &rows[0];
        assert_eq!(r.devices, 2);
        assert!(!r.power_included, "the default: energy is added");
        assert!((r.hardware_usd_per_month.unwrap() - 2.0 * 3.6 * 720.0).abs() < 1e-9);
        // 2e9 tokens x 0.36 J = 200 kWh -> $20.
        assert!((r.energy_usd_per_month.unwrap() - 20.0).abs() < 1e-9);
        // $3.6/h / (1.8e6 tokens/h) = $2 per million, + 0.01 energy.
        assert!((r.usd_per_million_tokens.unwrap() - 2.01).abs() < 1e-9);
        // A rental price that includes power: the energy is not added again.
        let rental = Prices::parse(
            "energy_usd_per_kwh = 0.10\n[[device]]\nmatch = \"H100\"\nusd_per_hour = 3.6\npower_included = true\n",
        )
        .unwrap();
        let rows = cost(
            std::slice::from_ref(&t),
            &rental,
            "decode_tokens_per_s",
            volume(Pricing::OnDemand),
        );
        let r = &rows[0];
        assert!(r.power_included && r.energy_usd_per_month.is_none());
        assert!((r.usd_per_million_tokens.unwrap() - 2.0).abs() < 1e-9);
        // Spot: a cheaper hour, but half the time lost: twice the devices.
        let spot = Prices::parse(
            "energy_usd_per_kwh = 0.10\n[[device]]\nmatch = \"H100\"\nusd_per_hour = 3.6\npower_included = true\nspot_usd_per_hour = 1.2\nspot_interruption_rate = 0.5\n",
        )
        .unwrap();
        let r = &cost(
            std::slice::from_ref(&t),
            &spot,
            "decode_tokens_per_s",
            volume(Pricing::Spot),
        )[0];
        assert_eq!(r.devices, 4);
        assert!((r.usd_per_million_tokens.unwrap() - 1.2 / (1.8e6 * 0.5) * 1e6).abs() < 1e-9);
        // A tier the file does not quote: no price, still the devices.
        let r = &cost(
            std::slice::from_ref(&t),
            &spot,
            "decode_tokens_per_s",
            volume(Pricing::Reserved3y),
        )[0];
        assert!(r.usd_per_million_tokens.is_none() && r.devices == 2);
        let e = Prices::parse(
            "energy_usd_per_kwh = 0.1\n[[device]]\nmatch = \"x\"\nusd_per_hour = 1\nspot_interruption_rate = 1.5\n",
        )
        .unwrap_err();
        assert!(e.contains("spot_interruption_rate = 1.5"), "{e}");
        // The shipped example: cloud rentals, power included.
        let shipped = Prices::parse(include_str!("../../examples/prices.toml")).unwrap();
        assert!(!shipped.devices.is_empty());
        assert!(shipped.devices.iter().all(|d| d.power_included));
        let e = Prices::parse("energy_usd_per_kwh = -1\n").unwrap_err();
        assert!(e.contains("energy_usd_per_kwh = -1"), "{e}");
        let e = Prices::parse("energy_usd_per_kwh = 0.1\ncolour = 1\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }
}
