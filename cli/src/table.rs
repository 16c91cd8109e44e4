//! Fitting a table to the terminal, or writing it as GitHub markdown. A
//! table wider than its width (the terminal's own, asked of the terminal;
//! `--width N`; none when stdout is not a terminal, so a pipe or a file gets
//! every cell whole) first wraps its headers at spaces and underscores, then
//! drops the columns it can spare (lowest [`Col::keep`] first; a column with
//! no value in any row goes first), then cuts text cells with `…` down to
//! each column's minimum. Numbers and ids are never cut. Only the `table`
//! format is fitted: `markdown`, `json` and `csv` always carry every column
//! in full.

/// How a column gives way when its table is too wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Col {
    /// Text that may be cut with `…` down to this many characters; `None` for
    /// numbers and ids, which are never cut.
    pub min: Option<usize>,
    /// Columns are left out lowest `keep` first when cutting text is not
    /// enough; a column of [`Col::KEEP`] never is.
    pub keep: u8,
}

impl Col {
    /// Never left out.
    pub const KEEP: u8 = u8::MAX;

    /// An id or key column: never cut, never left out.
    pub const fn key() -> Col {
        Col {
            min: None,
            keep: Col::KEEP,
        }
    }

    /// A number: never cut; left out by `keep`.
    pub const fn num(keep: u8) -> Col {
        Col { min: None, keep }
    }

    /// Text: cut down to `min` characters, left out by `keep`.
    pub const fn text(keep: u8, min: usize) -> Col {
        Col {
            min: Some(min),
            keep,
        }
    }
}

/// A table fitted to a width.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fitted {
    /// Header cells (with `\n` where a header wraps).
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Headers of the columns left out that had a value in some row.
    pub dropped: Vec<String>,
}

/// The width of the terminal stdout is, asked of the terminal itself
/// (`TIOCGWINSZ`; `$COLUMNS` is not exported by shells); `None` when stdout
/// is not a terminal or does not say.
pub fn terminal_width() -> Option<usize> {
    console::Term::stdout()
        .size_checked()
        .map(|(_rows, cols)| usize::from(cols))
}

/// The width tables are fitted to: `--width N` when given, else the
/// terminal's; `None` (nothing is cut or left out) when neither is known,
/// as when stdout is a pipe or a file.
pub fn width(flag: Option<usize>, terminal: Option<usize>) -> Option<usize> {
    flag.or(terminal)
}

/// A table as GitHub-flavoured markdown: a header row, a delimiter row
/// (right-aligned where every cell of the column is a number) and the
/// rows; `|` in a cell is escaped and line breaks become spaces, so each
/// row stays one line.
pub fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        s.replace(['\n', '\r', '\t'], " ")
            .replace('\\', "\\\\")
            .replace('|', "\\|")
    };
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let numeric = |i: usize| {
        let mut values = rows
            .iter()
            .filter_map(|r| r.get(i))
            .filter(|c| !c.is_empty())
            .peekable();
        values.peek().is_some() && values.all(|c| c.parse::<f64>().is_ok())
    };
    let mut out = line(header.iter().map(|h| cell(h)).collect());
    out.push_str(&line(
        (0..header.len())
            .map(|i| if numeric(i) { "---:" } else { "---" }.to_owned())
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(
            (0..header.len())
                .map(|i| cell(r.get(i).map_or("", String::as_str)))
                .collect(),
        ));
    }
    out
}

/// Characters a table with columns of these widths takes, borders included
/// (comfy-table's `UTF8_FULL_CONDENSED`: `│ a ┆ b │`).
pub fn rendered_width(widths: &[usize]) -> usize {
    widths.iter().sum::<usize>() + 3 * widths.len() + 1
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to `w` characters, the last one `…` when anything was cut.
pub fn truncate(s: &str, w: usize) -> String {
    if chars(s) <= w {
        return s.to_owned();
    }
    if w == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(w - 1).collect();
    out.push('…');
    out
}

/// Pieces of a header, each ending where a line may break: after a space
/// (dropped at the end of a line) or after an underscore.
fn pieces(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        cur.push(c);
        if c == ' ' || c == '_' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `s` wrapped greedily into lines of at most `w` characters where it can
/// break; a piece longer than `w` is cut with `…`.
fn wrap(s: &str, w: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for p in pieces(s) {
        let candidate = format!("{cur}{p}");
        if chars(candidate.trim_end()) <= w || cur.is_empty() {
            cur = candidate;
        } else {
            lines.push(cur.trim_end().to_owned());
            cur = p;
        }
    }
    if !cur.trim_end().is_empty() || lines.is_empty() {
        lines.push(cur.trim_end().to_owned());
    }
    lines.into_iter().map(|l| truncate(&l, w)).collect()
}

fn longest_piece(s: &str) -> usize {
    pieces(s)
        .iter()
        .map(|p| chars(p.trim_end()))
        .max()
        .unwrap_or(0)
}

fn header_width(h: &str) -> usize {
    h.lines().map(chars).max().unwrap_or(0)
}

/// Fits a table to `width` characters (see the module's documentation).
/// `cols` has one entry per header cell; a missing entry counts as text that
/// may be cut to 8 characters and left out first.
pub fn fit(header: &[&str], rows: &[Vec<String>], cols: &[Col], width: usize) -> Fitted {
    let n = header.len();
    let col = |i: usize| cols.get(i).copied().unwrap_or(Col::text(0, 8));
    let clean = |s: &str| s.replace(['\n', '\r', '\t'], " ");
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            (0..n)
                .map(|i| r.get(i).map(|c| clean(c)).unwrap_or_default())
                .collect()
        })
        .collect();
    let cell_w: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| chars(&r[i])).max().unwrap_or(0))
        .collect();
    let natural: Vec<usize> = (0..n)
        .map(|i| cell_w[i].max(header_width(header[i])))
        .collect();
    if rendered_width(&natural) <= width {
        return Fitted {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows,
            dropped: Vec::new(),
        };
    }
    // 1. Headers wrap down to their cells' width (or their longest word).
    let mut widths: Vec<usize> = (0..n)
        .map(|i| cell_w[i].max(longest_piece(header[i])))
        .collect();
    // 2. Leave out columns, lowest `keep` first, while even the narrowest
    // form of the table is too wide. A column with no value goes first.
    let base = widths.clone();
    let min_w = |i: usize| col(i).min.map_or(base[i], |m| base[i].min(m.max(1)));
    let keep = |i: usize| {
        let k = col(i).keep;
        if k != Col::KEEP && cell_w[i] == 0 {
            0
        } else {
            k
        }
    };
    let mut active: Vec<usize> = (0..n).collect();
    loop {
        let mins: Vec<usize> = active.iter().map(|&i| min_w(i)).collect();
        if rendered_width(&mins) <= width {
            break;
        }
        let victim = active
            .iter()
            .enumerate()
            .filter(|(_, &i)| keep(i) != Col::KEEP)
            .min_by(|(pa, &a), (pb, &b)| keep(a).cmp(&keep(b)).then(pb.cmp(pa)))
            .map(|(p, _)| p);
        match victim {
            Some(p) => {
                active.remove(p);
            }
            None => break,
        }
    }
    // 3. Cut text columns, the widest first, one character at a time.
    loop {
        let now: Vec<usize> = active.iter().map(|&i| widths[i]).collect();
        if rendered_width(&now) <= width {
            break;
        }
        let widest = active
            .iter()
            .copied()
            .filter(|&i| col(i).min.is_some() && widths[i] > min_w(i))
            .max_by(|&a, &b| widths[a].cmp(&widths[b]).then(b.cmp(&a)));
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    let dropped = (0..n)
        .filter(|i| !active.contains(i) && cell_w[*i] > 0)
        .map(|i| header[i].to_owned())
        .collect();
    let header = active
        .iter()
        .map(|&i| wrap(header[i], widths[i]).join("\n"))
        .collect();
    let rows = rows
        .iter()
        .map(|r| {
            active
                .iter()
                .map(|&i| match col(i).min {
                    Some(_) => truncate(&r[i], widths[i]),
                    None => r[i].clone(),
                })
                .collect()
        })
        .collect();
    Fitted {
        header,
        rows,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_lines(f: &Fitted) -> Vec<String> {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
            .set_header(f.header.iter().map(comfy_table::Cell::new));
        for r in &f.rows {
            t.add_row(r.clone());
        }
        t.to_string().lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_narrow_table_is_left_alone() {
        let rows = vec![vec!["a".to_owned(), "1.5".to_owned()]];
        let f = fit(
            &["name", "value"],
            &rows,
            &[Col::text(1, 4), Col::num(1)],
            80,
        );
        assert_eq!(f.header, vec!["name", "value"]);
        assert_eq!(f.rows, rows);
        assert!(f.dropped.is_empty());
    }

    #[test]
    fn a_wide_table_cuts_text_but_never_numbers_and_fits_the_width() {
        let class = "cpu: AMD EPYC 7B13 64-Core Processor with a very long name x2";
        let config = "op=qmatmul format=q4_0 shape=64,2048,2048 threads=16 variant=naive";
        let rows = vec![vec![
            config.to_owned(),
            class.to_owned(),
            "123456.789012".to_owned(),
        ]];
        let header = ["configuration", "device_class", "gflop_per_s [GFLOP/s]"];
        let cols = [Col::text(5, 12), Col::text(4, 12), Col::num(9)];
        for width in [80, 60] {
            let f = fit(&header, &rows, &cols, width);
            for line in table_lines(&f) {
                assert!(line.chars().count() <= width, "{width}: {line}");
            }
            assert_eq!(f.rows[0][2], "123456.789012", "numbers are never cut");
            assert!(f.rows[0][0].ends_with('…') && f.rows[0][1].ends_with('…'));
            assert!(f.dropped.is_empty());
        }
        // The header wrapped at its space instead of widening the column.
        let f = fit(&header, &rows, &cols, 60);
        assert_eq!(f.header[2], "gflop_per_s\n[GFLOP/s]");
        // Narrower than the cut text and the number: the lower-priority text
        // column goes, the number stays whole.
        let f = fit(&header, &rows, &cols, 40);
        assert_eq!(f.dropped, vec!["device_class"]);
        assert_eq!(f.rows[0][1], "123456.789012");
        for line in table_lines(&f) {
            assert!(line.chars().count() <= 40, "{line}");
        }
    }

    #[test]
    fn columns_are_left_out_lowest_priority_first_and_empty_ones_before_them() {
        let header = [
            "id",
            "name",
            "pending",
            "running",
            "succeeded",
            "error",
            "created_unix_s",
        ];
        let rows = vec![vec![
            "01KAS1Y9N7W1G4E6M9C7V3T2QX".to_owned(),
            "a-rather-long-sweep-name".to_owned(),
            "0".to_owned(),
            "1".to_owned(),
            "23".to_owned(),
            String::new(),
            "1795437486".to_owned(),
        ]];
        let cols = [
            Col::key(),
            Col::text(8, 8),
            Col::num(2),
            Col::num(3),
            Col::num(7),
            Col::text(9, 10),
            Col::num(1),
        ];
        let f = fit(&header, &rows, &cols, 70);
        for line in table_lines(&f) {
            assert!(line.chars().count() <= 70, "{line}");
        }
        // The empty error column went first (and is not reported: it held
        // nothing), then created_unix_s (keep 1), then pending (keep 2).
        assert!(!f.header.iter().any(|h| h == "error"));
        assert_eq!(f.dropped, vec!["pending", "created_unix_s"]);
        assert_eq!(f.header.len(), 4);
        assert_eq!(
            f.rows[0][0], "01KAS1Y9N7W1G4E6M9C7V3T2QX",
            "ids are kept whole"
        );
        // Too narrow for anything but the key: it stays, uncut.
        let f = fit(&header, &rows, &cols, 20);
        assert_eq!(f.rows[0], vec!["01KAS1Y9N7W1G4E6M9C7V3T2QX"]);
    }

    #[test]
    fn truncation_and_wrapping_count_characters() {
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
        assert_eq!(truncate("short", 6), "short");
        assert_eq!(wrap("created_unix_s", 8), vec!["created_", "unix_s"]);
        assert_eq!(wrap("hardware [$/month]", 9), vec!["hardware", "[$/month]"]);
    }

    #[test]
    fn the_width_is_the_flag_else_the_terminal_else_none() {
        assert_eq!(width(Some(120), Some(200)), Some(120));
        assert_eq!(width(None, Some(200)), Some(200));
        assert_eq!(width(None, None), None, "a pipe gets the whole table");
        assert_eq!(width(Some(80), None), Some(80));
    }

    #[test]
    fn markdown_escapes_pipes_and_right_aligns_number_columns() {
        let header = ["config", "gflop_per_s [GFLOP/s]", "error"].map(str::to_owned);
        let rows = vec![
            vec!["format=q4|0".to_owned(), "12.35".to_owned(), String::new()],
            vec![
                "format=q8_0".to_owned(),
                String::new(),
                "a \\ b\nsecond line".to_owned(),
            ],
        ];
        expect_test::expect![[r#"
            | config | gflop_per_s [GFLOP/s] | error |
            | --- | ---: | --- |
            | format=q4\|0 | 12.35 |  |
            | format=q8_0 |  | a \\ b second line |
        "#]]
        .assert_eq(&markdown(&header, &rows));
    }
}
