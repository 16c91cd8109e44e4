//! The report's files: every trial as `trials.csv` and `trials.json`, and
//! writing the three files into place all or nothing.

use super::{Rendered, INDEX, TRIALS_CSV, TRIALS_FORMAT, TRIALS_JSON};
use crate::output::{self, Column};
use crate::table::Col;
use anyhow::{anyhow, bail, Context};
use chimera_domain::results::ResultsFile;
use chimera_domain::Params;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One trial as `trials.json` carries it, and the rows of `trials.csv`
/// (the parameters and the metrics a column each there).
#[derive(Serialize)]
struct TrialRow<'a> {
    // In alphabetical order, as trials.json has always had them.
    agent: Option<&'a str>,
    attempt: u32,
    config_index: u32,
    device_class: &'a str,
    device_id: Option<&'a str>,
    error: Option<&'a str>,
    id: &'a str,
    metrics: &'a BTreeMap<String, f64>,
    params: &'a Params,
    repeat: u32,
    state: &'a str,
    sweep_id: &'a str,
    sweep_name: &'a str,
    wall_ms: Option<f64>,
    workload: &'a str,
}

/// `trials.json`: the rows with the file's format and version.
#[derive(Serialize)]
struct TrialsFile<'a> {
    format: &'static str,
    trials: &'a [TrialRow<'a>],
    version: u32,
}

/// Every trial of these sweeps, in order.
fn rows<'a>(sweeps: &[&'a ResultsFile]) -> Vec<TrialRow<'a>> {
    sweeps
        .iter()
        .flat_map(|r| {
            r.trials.iter().map(move |t| TrialRow {
                id: &t.id,
                sweep_id: &t.sweep_id,
                sweep_name: &r.sweep.name,
                workload: &r.sweep.workload,
                device_class: &t.device_class,
                agent: t.agent.as_deref(),
                device_id: t.device_id.as_deref(),
                config_index: t.config_index,
                params: &t.params,
                repeat: t.repeat,
                attempt: t.attempt,
                state: t.state.name(),
                error: t.error.as_deref(),
                metrics: &t.metrics,
                wall_ms: t.wall_ms,
            })
        })
        .collect()
}

/// Every trial of these sweeps as CSV: the fixed columns, `param.NAME` per
/// parameter, then one column per metric (both sorted by name), then
/// `wall_ms`. Text that a spreadsheet would run as a formula is quoted
/// ([`output::csv_cell`]).
pub fn trials_csv(sweeps: &[&ResultsFile]) -> anyhow::Result<Vec<u8>> {
    let rows = rows(sweeps);
    let text =
        |name: &'static str, cell: fn(&TrialRow) -> String| Column::new(name, Col::key(), cell);
    let mut columns = vec![
        text("id", |t| t.id.to_owned()),
        text("sweep_id", |t| t.sweep_id.to_owned()),
        text("sweep_name", |t| t.sweep_name.to_owned()),
        text("workload", |t| t.workload.to_owned()),
        text("device_class", |t| t.device_class.to_owned()),
        text("agent", |t| t.agent.unwrap_or_default().to_owned()),
        text("device_id", |t| t.device_id.unwrap_or_default().to_owned()),
        text("config_index", |t| t.config_index.to_string()),
    ];
    columns.extend(output::param_columns(&rows, |t| t.params));
    columns.extend([
        text("repeat", |t| t.repeat.to_string()),
        text("attempt", |t| t.attempt.to_string()),
        text("state", |t| t.state.to_owned()),
        text("error", |t| t.error.unwrap_or_default().to_owned()),
    ]);
    columns.extend(output::metric_columns(&rows, |t| t.metrics));
    columns.push(text("wall_ms", |t| {
        t.wall_ms.map(|v| v.to_string()).unwrap_or_default()
    }));
    let mut w = csv::Writer::from_writer(Vec::new());
    output::write_csv(&mut w, &columns, &rows)?;
    w.into_inner().map_err(|e| anyhow!("write CSV: {e}"))
}

/// Every trial of these sweeps as `trials.json`.
pub fn trials_json(sweeps: &[&ResultsFile]) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(&TrialsFile {
        format: TRIALS_FORMAT,
        trials: &rows(sweeps),
        version: 1,
    })?)
}

/// Writes the report's files into `dir`, all or nothing: they are written
/// into a temporary directory first (inside `dir` when it exists, else beside
/// it), then moved into place.
pub fn write(dir: &Path, r: &Rendered) -> anyhow::Result<()> {
    let files: [(&str, &[u8]); 3] = [
        (INDEX, r.html.as_bytes()),
        (TRIALS_CSV, &r.csv),
        (TRIALS_JSON, &r.json),
    ];
    let what = || format!("write the report to --out {}", dir.display());
    if dir.exists() && !dir.is_dir() {
        bail!(
            "{}: `{}` exists and is not a directory",
            what(),
            dir.display()
        );
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let existing = dir.is_dir();
    if !existing {
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("{}: create {}", what(), parent.display()))?;
    }
    let staging_in = if existing { dir } else { parent.as_path() };
    let tmp = tempfile::Builder::new()
        .prefix(".chimera-report-")
        .tempdir_in(staging_in)
        .with_context(|| {
            format!(
                "{}: create a temporary directory in {}",
                what(),
                staging_in.display()
            )
        })?;
    for (name, bytes) in files {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).with_context(|| format!("{}: write {}", what(), p.display()))?;
    }
    if existing {
        for (name, _) in files {
            std::fs::rename(tmp.path().join(name), dir.join(name))
                .with_context(|| format!("{}: move {name} into place", what()))?;
        }
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("{}: set the directory's permissions", what()))?;
    }
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(anyhow!(e).context(format!("{}: move the report into place", what())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures::{results, trial};
    use super::*;
    use chimera_domain::results::TrialState;

    #[test]
    fn csv_escapes_commas_quotes_and_newlines_and_keeps_its_column_order() {
        let mut bad = trial("t00001", 1, "q4_0", &[]);
        bad.state = TrialState::Failed;
        bad.error = Some("out of memory, \"really\"\nsecond line".into());
        let r = results(vec![
            trial("t00000", 0, "q8_0", &[("gflop_per_s", 3.25), ("cov", 0.01)]),
            bad,
        ]);
        let csv = trials_csv(&[&r]).unwrap();
        let mut rd = csv::Reader::from_reader(csv.as_slice());
        let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
        assert_eq!(
            header,
            [
                "id",
                "sweep_id",
                "sweep_name",
                "workload",
                "device_class",
                "agent",
                "device_id",
                "config_index",
                "param.format",
                "param.op",
                "param.shape",
                "repeat",
                "attempt",
                "state",
                "error",
                "cov",
                "gflop_per_s",
                "wall_ms"
            ]
        );
        let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][2], "quick, \"start\"");
        assert_eq!(&rows[0][10], "1,64,64");
        assert_eq!(&rows[0][16], "3.25");
        assert_eq!(&rows[1][14], "out of memory, \"really\"\nsecond line");
        assert_eq!(&rows[1][16], "", "an absent metric is an empty cell");
        // The raw text quotes the fields that need it.
        let text = String::from_utf8(csv).unwrap();
        assert!(text.contains("\"quick, \"\"start\"\"\""), "{text}");
        let json: serde_json::Value = serde_json::from_slice(&trials_json(&[&r]).unwrap()).unwrap();
        assert_eq!(json["format"], TRIALS_FORMAT);
        assert_eq!(json["trials"][0]["metrics"]["gflop_per_s"], 3.25);
        assert_eq!(
            json["trials"][1]["error"],
            "out of memory, \"really\"\nsecond line"
        );
    }

    #[test]
    fn csv_quotes_formulas_in_text_and_keeps_numbers_raw() {
        let mut t = trial("t00000", 0, "q8_0", &[("delta", -2.5)]);
        t.params.insert(
            "note".into(),
            chimera_domain::params::ParamValue::Text("=HYPERLINK(\"http://evil\")".into()),
        );
        t.params
            .insert("offset".into(), chimera_domain::params::ParamValue::Int(-3));
        t.state = TrialState::Failed;
        t.error = Some("@SUM(A1) went wrong".into());
        let csv = trials_csv(&[&results(vec![t])]).unwrap();
        let mut rd = csv::Reader::from_reader(csv.as_slice());
        let header = rd.headers().unwrap().clone();
        let row = rd.records().next().unwrap().unwrap();
        let cell = |name: &str| {
            let i = header.iter().position(|h| h == name).unwrap();
            row[i].to_owned()
        };
        assert_eq!(cell("param.note"), "'=HYPERLINK(\"http://evil\")");
        assert_eq!(cell("error"), "'@SUM(A1) went wrong");
        assert_eq!(cell("param.offset"), "-3");
        assert_eq!(cell("delta"), "-2.5");
        assert_eq!(cell("param.format"), "q8_0");
        let text = String::from_utf8(csv).unwrap();
        assert!(!text.contains(",=") && !text.contains("\"=HYP"), "{text}");
    }

    #[test]
    fn nothing_is_written_when_the_directory_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let r = Rendered {
            html: "<p>x</p>".into(),
            csv: b"a\n".to_vec(),
            json: b"{}".to_vec(),
        };
        let e = format!("{:#}", write(&file.join("report"), &r).unwrap_err());
        assert!(e.contains("a-file/report"), "{e}");
        let e = format!("{:#}", write(&file, &r).unwrap_err());
        assert!(e.contains("not a directory"), "{e}");
        // A good directory gets all three files and no leftovers.
        let out = dir.path().join("out");
        write(&out, &r).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![INDEX, TRIALS_CSV, TRIALS_JSON]);
        // Again into the existing directory: replaced, nothing else left.
        write(&out, &r).unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
