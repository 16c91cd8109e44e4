//! Printing: every listing as a table (box-drawn or markdown), JSON or CSV
//! on stdout. A listing is its rows — a `Serialize` type, which is its JSON —
//! and its columns, each a header, how it gives way in a table and its cell
//! of a row, which make the table and the CSV. Numbers carry their unit in
//! the column header; in CSV a number is its raw value (an empty cell when
//! there is none). Stdout closed early (`| head`) ends the command quietly
//! with exit 0 ([`is_broken_pipe`]).
//!
//! - [`fleet`]: the controller's state (sweeps, agents, telemetry samples).
//! - [`analysis`]: what was measured (trials, comparisons, trade-offs,
//!   Pareto fronts, costs, diffs).

mod analysis;
mod fleet;
mod serve;

use crate::table::{self, Col};
use chimera_proto::v1 as proto;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, ContentArrangement, Table};
use serde::Serialize;
use std::borrow::Cow;
use std::io::Write;
use std::sync::OnceLock;

pub use analysis::{
    comparison, comparison_note, comparison_table, cost, diff, metric_columns, param_columns,
    pareto, results, tradeoff, tradeoff_table, TRADEOFF_NOTE,
};
pub use fleet::{agents, sweep_status, sweeps, telemetry};
pub use serve::{capacity, requests};

/// How a listing is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A table for people, drawn in the process's [`Style`]: box-drawn and
    /// fitted to a width, or GitHub markdown (`--output markdown`). Notes
    /// that explain a table are printed with it in either style.
    Table,
    Json,
    Csv,
}

/// How tables are drawn, set once from the global flags ([`configure`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// `--width N`: fit tables to N columns whatever stdout is; without it,
    /// the terminal's width, or no fitting when stdout is not a terminal.
    pub width: Option<usize>,
    /// `--output markdown`: tables as GitHub markdown (never fitted).
    pub markdown: bool,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// Sets the process's table style (once, from the flags).
pub fn configure(style: Style) {
    let _ = STYLE.set(style);
}

fn style() -> Style {
    STYLE.get().copied().unwrap_or_default()
}

/// Whether `e` is stdout (or any writer) closed by its reader: the command
/// then stops quietly with exit 0, as `head` expects of what feeds it.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().or_else(|| {
            match cause.downcast_ref::<csv::Error>().map(csv::Error::kind) {
                Some(csv::ErrorKind::Io(io)) => Some(io),
                _ => None,
            }
        });
        io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `text` and a line break to stdout; an error (a closed pipe
/// among them, see [`is_broken_pipe`]) is returned, not a panic as
/// `println!` would.
pub fn print_line(text: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Makes `println!` on a closed stdout (the panic "failed printing to
/// stdout: Broken pipe") end the process quietly with exit 0 instead of a
/// panic message and exit 101. Listings return the error instead
/// ([`is_broken_pipe`]); this covers the notes and lines still printed
/// with `println!`. Any other panic is reported as before.
pub fn exit_quietly_on_closed_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("");
        if message.starts_with("failed printing to stdout")
            && message.to_ascii_lowercase().contains("broken pipe")
        {
            std::process::exit(0);
        }
        previous(info);
    }));
}

/// A sweep state's name.
pub fn sweep_state(s: i32) -> &'static str {
    match proto::SweepState::try_from(s) {
        Ok(proto::SweepState::Running) => "running",
        Ok(proto::SweepState::Waiting) => "waiting for devices",
        Ok(proto::SweepState::Done) => "done",
        Ok(proto::SweepState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// One column of a listing of `R`s: its header, how it gives way when the
/// table is too wide, and its cell of each row.
pub struct Column<'a, R> {
    header: String,
    col: Col,
    cell: CellFn<'a, R>,
    /// The cell in CSV when it differs from the table's (a number's raw
    /// value instead of its rounded form).
    raw: Option<CellFn<'a, R>>,
}

/// How a column makes its cell of a row.
type CellFn<'a, R> = Box<dyn Fn(&R) -> String + 'a>;

impl<'a, R> Column<'a, R> {
    /// A column whose cell is the same text in every format.
    pub fn new(header: impl Into<String>, col: Col, cell: impl Fn(&R) -> String + 'a) -> Self {
        Column {
            header: header.into(),
            col,
            cell: Box::new(cell),
            raw: None,
        }
    }

    /// A column of one quantity: [`num`] of it in a table, its raw value
    /// in CSV, an empty cell where a row has none. Never cut; left out by
    /// `keep` (see [`Col::num`]).
    pub fn number(
        header: impl Into<String>,
        keep: u8,
        value: impl Fn(&R) -> Option<f64> + Clone + 'a,
    ) -> Self {
        let raw = value.clone();
        Column {
            header: header.into(),
            col: Col::num(keep),
            cell: Box::new(move |r| value(r).map(num).unwrap_or_default()),
            raw: Some(Box::new(move |r| {
                raw(r).map(|v| v.to_string()).unwrap_or_default()
            })),
        }
    }

    /// The cell of `r` as the format prints it.
    fn cell_for(&self, r: &R, fmt: Format) -> String {
        match (&self.raw, fmt) {
            (Some(raw), Format::Csv) => raw(r),
            _ => (self.cell)(r),
        }
    }
}

/// A metric's name with its unit, `name [unit]`, as a column header.
pub fn with_unit(metric: &str) -> String {
    let unit = chimera_domain::metrics::unit(metric);
    if unit.is_empty() {
        metric.to_owned()
    } else {
        format!("{metric} [{unit}]")
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(Cell::new));
    t
}

/// A CSV cell as spreadsheet programs may open it. They run a cell that
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a formula
/// (OWASP "CSV injection"), and text in these files comes from people and
/// agents: a sweep's parameters (`=HYPERLINK("http://…")`), its name, a
/// trial's error. Such a cell gets a leading `'`, which spreadsheets read as
/// "this is text" and do not show.
///
/// Numbers stay as they are, so the file stays data: a cell that parses as
/// an `f64` (`-2.5`, `-1e-3`, `-inf`; the parser takes nothing but a sign,
/// digits, a point, an exponent and `inf`/`nan`), a percentage of one
/// (`-12.5%`, as `chimera diff` prints a change), and the lone `-` the
/// listings print for "no value" carry no formula. The decision is on the
/// cell's text, not its column, so a column that mixes both is safe.
pub fn csv_cell(text: &str) -> Cow<'_, str> {
    let formula_like = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let number = |t: &str| t.parse::<f64>().is_ok();
    let harmless = text == "-" || number(text) || text.strip_suffix('%').is_some_and(number);
    if formula_like && !harmless {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Writes one CSV record, every cell through [`csv_cell`]. Every CSV the
/// CLI writes (listings with `--output csv`, `trials.csv`) goes through
/// here, header included.
pub fn write_csv_row<W: Write, S: AsRef<str>>(
    w: &mut csv::Writer<W>,
    row: &[S],
) -> csv::Result<()> {
    let cells: Vec<Cow<'_, str>> = row.iter().map(|c| csv_cell(c.as_ref())).collect();
    w.write_record(cells.iter().map(|c| c.as_bytes()))
}

/// The header and the cells of `rows` in `columns`.
pub fn grid<R>(columns: &[Column<'_, R>], rows: &[R]) -> (Vec<String>, Vec<Vec<String>>) {
    let header = columns.iter().map(|c| c.header.clone()).collect();
    let cells = rows
        .iter()
        .map(|r| columns.iter().map(|c| (c.cell)(r)).collect())
        .collect();
    (header, cells)
}

/// Writes `rows` in `columns` as CSV, header first, every cell through
/// [`csv_cell`].
pub fn write_csv<W: Write, R>(
    w: &mut csv::Writer<W>,
    columns: &[Column<'_, R>],
    rows: &[R],
) -> csv::Result<()> {
    write_csv_row(w, &columns.iter().map(|c| &c.header).collect::<Vec<_>>())?;
    for r in rows {
        let cells: Vec<String> = columns.iter().map(|c| c.cell_for(r, Format::Csv)).collect();
        write_csv_row(w, &cells)?;
    }
    w.flush()?;
    Ok(())
}

/// Prints a listing: `json` as JSON, else the `rows` in `columns` as CSV or
/// as a table in the process's [`Style`] (see [`crate::table`]). A closed
/// stdout is an error [`is_broken_pipe`] knows.
fn emit<R, J: Serialize + ?Sized>(
    fmt: Format,
    columns: &[Column<'_, R>],
    rows: &[R],
    json: &J,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match fmt {
        Format::Table => {
            let style = style();
            let width = table::width(style.width, table::terminal_width());
            let (text, dropped) = render(columns, rows, style.markdown, width);
            out.write_all(text.as_bytes())?;
            if let (false, Some(width)) = (dropped.is_empty(), width) {
                eprintln!(
                    "(left out to fit {width} columns: {}; --width, --output markdown, csv or json has every column)",
                    dropped.join(", ")
                );
            }
        }
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(json)?)?,
        Format::Csv => write_csv(&mut csv::Writer::from_writer(&mut out), columns, rows)?,
    }
    out.flush()?;
    Ok(())
}

/// `rows` in `columns` as a table: GitHub markdown (between blank lines, so
/// that a note before or after it is not read as part of it), or box-drawn
/// and fitted to `width`
/// (whole when `None`). Answers the text and the headers of the columns
/// left out to fit.
fn render<R>(
    columns: &[Column<'_, R>],
    rows: &[R],
    markdown: bool,
    width: Option<usize>,
) -> (String, Vec<String>) {
    let (header, cells) = grid(columns, rows);
    if markdown {
        return (
            format!("\n{}\n", table::markdown(&header, &cells)),
            Vec::new(),
        );
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let cols: Vec<Col> = columns.iter().map(|c| c.col).collect();
    let fitted = table::fit(&header, &cells, &cols, width.unwrap_or(usize::MAX));
    let head: Vec<&str> = fitted.header.iter().map(String::as_str).collect();
    let mut t = self::table(&head);
    for r in fitted.rows {
        t.add_row(r);
    }
    (format!("{t}\n"), fitted.dropped)
}

/// A number with four significant digits (values from 1e-4 to 1e7 without an exponent).
pub fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if !(1e-4..1e7).contains(&a) {
        return format!("{v:.3e}");
    }
    let digits = (3 - a.log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

/// [`num`] of a value, or `-` when there is none.
pub fn num_or_dash(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_unknown_workload_is_an_error_naming_the_field_and_value() {
        let e = analysis::trial_table_columns("teleport").err().unwrap();
        let e = format!("{e:#}");
        assert!(
            e.contains("sweep.workload") && e.contains("`teleport`"),
            "{e}"
        );
        assert!(analysis::trial_table_columns("generate").is_ok());
    }

    #[test]
    fn a_listing_is_one_definition_for_its_table_csv_and_json() {
        #[derive(Serialize)]
        struct Point {
            name: &'static str,
            x: f64,
        }
        let rows = [Point { name: "=a", x: 1.0 }, Point { name: "b", x: 0.25 }];
        let columns = [
            Column::new("name", Col::key(), |p: &Point| p.name.to_owned()),
            Column::new(
                with_unit("decode_tokens_per_s"),
                Col::num(1),
                |p: &Point| num(p.x),
            ),
        ];
        let (header, cells) = grid(&columns, &rows);
        assert_eq!(header, ["name", "decode_tokens_per_s [tokens/s]"]);
        assert_eq!(cells, [["=a", "1.000"], ["b", "0.2500"]]);
        let mut w = csv::Writer::from_writer(Vec::new());
        write_csv(&mut w, &columns, &rows).unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner().unwrap()).unwrap(),
            "name,decode_tokens_per_s [tokens/s]\n'=a,1.000\nb,0.2500\n"
        );
    }

    #[test]
    fn cells_a_spreadsheet_would_run_get_a_quote_and_numbers_stay_numbers() {
        for (cell, safe) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-12.5% .. +3.0%", "'-12.5% .. +3.0%"),
            // Numbers, as Rust prints them and as the listings do.
            ("-2.5", "-2.5"),
            ("+2.5", "+2.5"),
            ("-1.250e-5", "-1.250e-5"),
            ("-inf", "-inf"),
            ("-12.5%", "-12.5%"),
            ("-", "-"),
            // Text that starts otherwise.
            ("plain", "plain"),
            ("a=b", "a=b"),
            (" =1", " =1"),
            ("", ""),
        ] {
            assert_eq!(csv_cell(cell), safe, "{cell:?}");
        }
    }

    #[test]
    fn a_csv_row_is_written_with_safe_cells_and_read_back_whole() {
        let mut w = csv::Writer::from_writer(Vec::new());
        write_csv_row(&mut w, &["param.x", "=1+1"]).unwrap();
        write_csv_row(&mut w, &["-2.5".to_owned(), "@a, \"b\"".to_owned()]).unwrap();
        let bytes = w.into_inner().unwrap();
        let mut rd = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice());
        let rows: Vec<Vec<String>> = rd
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        assert_eq!(
            rows,
            [["param.x", "'=1+1"], ["-2.5", "'@a, \"b\""]].map(|r| r.map(str::to_owned))
        );
    }

    #[test]
    fn a_closed_pipe_is_told_from_other_errors_however_it_is_wrapped() {
        use std::io::{Error, ErrorKind};
        let pipe = || Error::from(ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&anyhow::Error::from(pipe())));
        assert!(is_broken_pipe(
            &anyhow::Error::from(pipe()).context("print the table")
        ));
        assert!(is_broken_pipe(&anyhow::Error::from(csv::Error::from(
            pipe()
        ))));
        assert!(!is_broken_pipe(&anyhow::Error::from(Error::from(
            ErrorKind::PermissionDenied
        ))));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }

    #[test]
    fn a_number_column_is_rounded_in_a_table_and_raw_or_empty_in_csv() {
        let rows = [
            ("a", Some(1234.56789)),
            ("b", None),
            ("c", Some(-0.000012345)),
        ];
        type Row = (&'static str, Option<f64>);
        let columns = [
            Column::new("name", Col::key(), |r: &Row| r.0.to_owned()),
            Column::number("x [ms]", 1, |r: &Row| r.1),
        ];
        let (_, cells) = grid(&columns, &rows);
        assert_eq!(cells, [["a", "1235"], ["b", ""], ["c", "-1.234e-5"]]);
        let mut w = csv::Writer::from_writer(Vec::new());
        write_csv(&mut w, &columns, &rows).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text, "name,x [ms]\na,1234.56789\nb,\nc,-0.000012345\n");
    }
}
