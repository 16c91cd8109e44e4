//! Limits on a whole sweep (`budget:` in the spec): trials per class and wall time.

use serde::{de, Deserialize, Deserializer, Serialize};

/// Limits on a whole sweep (`budget:` in the spec).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Trials per device class, repeats included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_trials: Option<u32>,
    /// Wall time from submission, seconds: after it no trial starts and
    /// pending ones are cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u64>,
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            max_trials: Option<u32>,
            max_duration: Option<String>,
            max_duration_s: Option<u64>,
        }
        let r = Raw::deserialize(d)?;
        if let Some(0) = r.max_trials {
            return Err(de::Error::custom(
                "budget.max_trials = 0 must be at least 1",
            ));
        }
        let secs = match (r.max_duration, r.max_duration_s) {
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(
                    "give budget.max_duration or max_duration_s, not both",
                ))
            }
            (Some(text), None) => {
                let d = humantime::parse_duration(&text).map_err(|e| {
                    de::Error::custom(format!(
                        "budget.max_duration = `{text}` is not a duration ({e}); e.g. `90s`, `10m`, `2h`"
                    ))
                })?;
                Some(d.as_secs().max(1))
            }
            (None, s) => s,
        };
        if let Some(0) = secs {
            return Err(de::Error::custom(
                "budget.max_duration_s = 0 must be at least 1",
            ));
        }
        Ok(Budget {
            max_trials: r.max_trials,
            max_duration_s: secs,
        })
    }
}
