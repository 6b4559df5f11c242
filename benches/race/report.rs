//! The race's output: one markdown table per mode, `figure | nchan | Herald | Herald/nchan`,
//! rows in the order they were first set. A cell is a number with its text, or only text
//! (then there is no ratio). Raw lines go to stdout as the run goes (see [`raw`]).

use crate::stream::Kind;

struct Cell {
    value: Option<f64>,
    text: String,
}

struct Row {
    figure: String,
    /// [nchan, Herald]
    cells: [Option<Cell>; 2],
}

pub struct Table {
    pub title: String,
    rows: Vec<Row>,
}

fn column(kind: Kind) -> usize {
    match kind {
        Kind::Nchan => 0,
        Kind::Herald => 1,
    }
}

impl Table {
    pub fn new(title: String) -> Table {
        Table {
            title,
            rows: Vec::new(),
        }
    }

    fn put(&mut self, figure: &str, kind: Kind, cell: Cell) {
        let at = match self.rows.iter().position(|r| r.figure == figure) {
            Some(at) => at,
            None => {
                self.rows.push(Row {
                    figure: figure.to_owned(),
                    cells: [None, None],
                });
                self.rows.len() - 1
            }
        };
        self.rows[at].cells[column(kind)] = Some(cell);
    }

    /// A number, shown with `decimals` digits after the point; its ratio is taken from what
    /// is shown (nchan's 0.04 shows as 0.0 and has no ratio, not one of 500).
    pub fn num(&mut self, figure: &str, kind: Kind, value: f64, decimals: usize) {
        let text = format!("{value:.decimals$}");
        self.put(
            figure,
            kind,
            Cell {
                value: Some(text.parse().unwrap_or(value)),
                text,
            },
        );
    }

    /// A count, shown with thousands separators.
    pub fn count(&mut self, figure: &str, kind: Kind, value: u64) {
        self.put(
            figure,
            kind,
            Cell {
                value: Some(value as f64),
                text: thousands(value),
            },
        );
    }

    /// A tally of events (lost, duplicates, refusals …): shown like a count, without a ratio,
    /// which would mean nothing (4,000 lost against 3).
    pub fn tally(&mut self, figure: &str, kind: Kind, value: u64) {
        self.put(
            figure,
            kind,
            Cell {
                value: None,
                text: thousands(value),
            },
        );
    }

    /// Text only (no ratio).
    pub fn text(&mut self, figure: &str, kind: Kind, text: String) {
        self.put(figure, kind, Cell { value: None, text });
    }

    /// Whether a phase failed (its error is a row).
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.figure.ends_with("error"))
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### {}\n\n| figure | nchan | Herald | Herald/nchan |\n|---|---|---|---|\n",
            self.title
        );
        for row in &self.rows {
            let text = |i: usize| {
                row.cells[i]
                    .as_ref()
                    .map_or("—".to_owned(), |c| c.text.clone())
            };
            let value = |i: usize| row.cells[i].as_ref().and_then(|c| c.value);
            let ratio = match (value(1), value(0)) {
                (Some(h), Some(n)) if n != 0.0 => format!("{:.2}", h / n),
                _ => "—".to_owned(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {ratio} |\n",
                row.figure,
                text(0),
                text(1)
            ));
        }
        out
    }
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A raw line: mode, target, scenario, then free text.
pub fn raw(mode: &str, kind: Kind, scenario: &str, text: &str) {
    println!("raw {mode} {kind:?} {scenario}: {text}");
}
