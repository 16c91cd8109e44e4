//! What a message from the network may carry: the cap on every string and
//! repeated field, and the checks that enforce them where wire types become
//! domain types (`TryFrom<proto::…>`). Every error names the field, the
//! limit, and quotes the offending value (truncated, escaped) so it can go
//! into a log line or a client's error message as it is.
//!
//! The caps are generous for every real agent and small enough that the
//! largest record a client can make the controller store stays far under
//! the store's value limit (etcd's 1.5 MiB).

/// Host names (RFC 1035's 253).
pub const MAX_HOSTNAME: usize = 253;
/// Version strings, git shas, rustc and OS descriptions.
pub const MAX_VERSION: usize = 128;
/// Names: device models, vendors, classes, CPU models, capabilities.
pub const MAX_NAME: usize = 256;
/// Free text: a failure reason.
pub const MAX_TEXT: usize = 4096;
/// A metric, telemetry field or throttle-reason name.
pub const MAX_METRIC_NAME: usize = 128;
/// Entries of a free-form map (a fingerprint's `extra`, an agent's labels).
pub const MAX_MAP_ENTRIES: usize = 64;
/// A key of a free-form map.
pub const MAX_MAP_KEY: usize = 63;
/// A value of a free-form map.
pub const MAX_MAP_VALUE: usize = 253;
/// Fields of one telemetry sample.
pub const MAX_SAMPLE_FIELDS: usize = 128;
/// Throttle reasons of one telemetry sample.
pub const MAX_THROTTLE_REASONS: usize = 32;
/// Metrics of one result.
pub const MAX_METRICS: usize = 512;
/// Bytes of a finished trial's structured detail (`detail_json`).
pub const MAX_DETAIL_BYTES: usize = 512 << 10;
/// Bytes of a finished trial's artifact (one store value).
pub const MAX_ARTIFACT_BYTES: usize = 1 << 20;
/// Devices one agent may declare.
pub const MAX_DEVICES: usize = 256;
/// Capabilities of one device.
pub const MAX_CAPABILITIES: usize = 256;
/// Compiled-in features an agent lists.
pub const MAX_FEATURES: usize = 32;
/// Trials one message may list as running.
pub const MAX_RUNNING: usize = 1024;

/// `value` as a quoted, escaped string of at most 80 characters (with the
/// full length when cut), safe in a log line or an error message: a newline
/// in a value never starts a forged line.
pub fn quote(value: &str) -> String {
    const SHOWN: usize = 80;
    let count = value.chars().count();
    if count <= SHOWN {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(SHOWN).collect();
        format!("{head:?}… ({} bytes)", value.len())
    }
}

/// At most `max` bytes.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "{field}: {} bytes exceeds the limit of {max} bytes ({})",
            value.len(),
            quote(value)
        ));
    }
    Ok(())
}

/// At most `max` bytes of printable text: no control characters (a newline
/// or an escape sequence would forge a log line or a terminal's output).
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    check_len(field, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(format!("{field} {} holds control characters", quote(value)));
    }
    Ok(())
}

/// At most `max` entries.
pub fn check_count(field: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("{field}: {n} entries exceeds the limit of {max}"));
    }
    Ok(())
}

/// A metric, telemetry field or throttle-reason name: 1 to
/// [`MAX_METRIC_NAME`] letters, digits, `_` and `.` (units go in the name:
/// `latency_ms_p50`).
pub fn check_metric_name(field: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_METRIC_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: name {} is not valid: use 1 to {MAX_METRIC_NAME} letters, digits, `_` and `.`",
            quote(name)
        ))
    }
}

/// A free-form string map (labels, a fingerprint's `extra`): at most
/// [`MAX_MAP_ENTRIES`] entries, keys of 1 to [`MAX_MAP_KEY`] letters, digits,
/// `_`, `-`, `.`, values of printable text up to [`MAX_MAP_VALUE`] bytes.
pub fn check_map<'a>(
    field: &str,
    map: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    check_count(field, map.len(), MAX_MAP_ENTRIES)?;
    for (k, v) in map {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_MAP_KEY
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !key_ok {
            return Err(format!(
                "{field}: key {} is not valid: use 1 to {MAX_MAP_KEY} letters, digits, `_`, `-`, `.`",
                quote(k)
            ));
        }
        check_text(&format!("{field}[{k}]"), v, MAX_MAP_VALUE)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_and_cuts() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(1000);
        let q = quote(&long);
        assert!(q.len() < 120 && q.ends_with("(1000 bytes)"), "{q}");
    }

    #[test]
    fn checks_name_the_field_and_limit() {
        let e = check_len("hello.hostname", &"h".repeat(2 << 20), MAX_HOSTNAME).unwrap_err();
        assert!(
            e.starts_with("hello.hostname: 2097152 bytes exceeds the limit of 253"),
            "{e}"
        );
        assert!(e.len() < 200, "the value is cut: {e}");
        let e = check_metric_name("finished.metrics", "x\ninjected").unwrap_err();
        assert!(e.contains("finished.metrics") && !e.contains('\n'), "{e}");
        assert!(check_metric_name("m", "latency_ms_p50").is_ok());
        assert!(check_text("reason", "fine: text", 100).is_ok());
        assert!(check_text("reason", "bad\u{1b}[2J", 100).is_err());
        let m: std::collections::BTreeMap<String, String> =
            [("k\n".to_owned(), "v".to_owned())].into();
        assert!(check_map("fingerprint.extra", m.iter())
            .unwrap_err()
            .contains("fingerprint.extra"));
    }
}
