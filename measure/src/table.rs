//! Text tables: rows of cells padded into aligned columns, each column left- or
//! right-aligned, with an optional rule under the header. A row may end in a note (a reason
//! instead of numbers) that runs on past the columns without widening them.

/// How a column's cells are aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Padded on the right.
    Left,
    /// Padded on the left (numbers).
    Right,
}

/// One column: its header, alignment and least width.
#[derive(Clone, Debug)]
struct Column {
    header: String,
    align: Align,
    min_width: usize,
}

/// A row: its cells, and a note after them.
#[derive(Clone, Debug)]
struct Row {
    cells: Vec<String>,
    note: Option<String>,
}

/// A table being filled.
#[derive(Clone, Debug, Default)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Row>,
    rule: bool,
    headless: bool,
    indent: usize,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            columns: columns
                .iter()
                .map(|(h, a)| Column {
                    header: h.to_string(),
                    align: *a,
                    min_width: 0,
                })
                .collect(),
            ..Table::default()
        }
    }

    /// Adds a column.
    pub fn column(mut self, header: &str, align: Align) -> Table {
        self.columns.push(Column {
            header: header.into(),
            align,
            min_width: 0,
        });
        self
    }

    /// Makes column `i` at least `width` characters wide.
    pub fn min_width(mut self, i: usize, width: usize) -> Table {
        if let Some(c) = self.columns.get_mut(i) {
            c.min_width = width;
        }
        self
    }

    /// Draws a line of dashes under the header.
    pub fn rule(mut self) -> Table {
        self.rule = true;
        self
    }

    /// Leaves the header out (a list of aligned lines).
    pub fn headless(mut self) -> Table {
        self.headless = true;
        self
    }

    /// Starts every line with `n` spaces.
    pub fn indent(mut self, n: usize) -> Table {
        self.indent = n;
        self
    }

    /// Adds a row (cells beyond the columns are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(Row { cells, note: None });
    }

    /// Adds a row of the first `cells`, then `note` in place of the others.
    pub fn row_with_note(&mut self, cells: Vec<String>, note: String) {
        self.rows.push(Row {
            cells,
            note: Some(note),
        });
    }

    fn widths(&self) -> Vec<usize> {
        let mut width: Vec<usize> = self
            .columns
            .iter()
            .map(|c| {
                let header = if self.headless {
                    0
                } else {
                    c.header.chars().count()
                };
                header.max(c.min_width)
            })
            .collect();
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(&row.cells) {
                *w = (*w).max(cell.chars().count());
            }
        }
        width
    }

    /// The table as text, one line per row, trailing blanks trimmed.
    pub fn render(&self) -> String {
        let width = self.widths();
        let line = |cells: &[String], note: Option<&str>| {
            let mut s = " ".repeat(self.indent);
            for (i, cell) in cells.iter().enumerate().take(width.len()) {
                let pad = " ".repeat(width[i].saturating_sub(cell.chars().count()));
                if i > 0 {
                    s.push_str("  ");
                }
                match self.columns[i].align {
                    Align::Right => s.extend([pad.as_str(), cell]),
                    Align::Left => s.extend([cell.as_str(), &pad]),
                }
            }
            if let Some(note) = note {
                s.push_str("  ");
                s.push_str(note);
            }
            s.trim_end().to_string() + "\n"
        };
        let header: Vec<String> = self.columns.iter().map(|c| c.header.clone()).collect();
        let mut out = String::new();
        if !self.headless {
            out += &line(&header, None);
        }
        if self.rule {
            let total = width.iter().sum::<usize>() + 2 * width.len().saturating_sub(1);
            out += &"-".repeat(total);
            out.push('\n');
        }
        for row in &self.rows {
            out += &line(&row.cells, row.note.as_deref());
        }
        out
    }
}

/// Rows of cells under `header`, the first `left` columns left-aligned, the rest
/// right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let right: Vec<bool> = (0..header.len()).map(|i| i >= left).collect();
    table_mixed(header, rows, &right)
}

/// Like [`table`], with the alignment of each column given (`true`: right).
pub fn table_mixed(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let columns: Vec<(&str, Align)> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let align = if right.get(i).copied().unwrap_or(false) {
                Align::Right
            } else {
                Align::Left
            };
            (*h, align)
        })
        .collect();
    let mut t = Table::new(&columns);
    for r in rows {
        t.row(r.clone());
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["a", "num"],
            &[
                vec!["long name".into(), "1".into()],
                vec!["x".into(), "12.5".into()],
            ],
            1,
        );
        assert_eq!(t, "a           num\nlong name     1\nx          12.5\n");
        let t = table_mixed(
            &["n", "k"],
            &[vec!["10".into(), "abc".into()]],
            &[true, false],
        );
        assert_eq!(t, " n  k\n10  abc\n");
    }

    #[test]
    fn notes_run_past_the_columns_and_rules_span_them() {
        let mut t = Table::new(&[("subject", Align::Left)])
            .column("p50", Align::Right)
            .min_width(1, 5)
            .rule();
        t.row(vec!["a".into(), "1.00".into()]);
        t.row_with_note(vec!["b".into()], "not installed (no QEMU)".into());
        assert_eq!(
            t.render(),
            "subject    p50\n--------------\na         1.00\nb        not installed (no QEMU)\n"
        );
        let mut t = Table::new(&[("what", Align::Left), ("shown", Align::Left)])
            .headless()
            .indent(2);
        t.row(vec!["ratio".into(), "1.5x".into()]);
        t.row(vec!["p50".into(), "n/a".into()]);
        assert_eq!(t.render(), "  ratio  1.5x\n  p50    n/a\n");
    }
}
