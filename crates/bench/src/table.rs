//! The Markdown tables the benchmarks print. Every figure goes through [`Cell`], so that a
//! latency, a ratio or an added latency is written the same way in every table, and
//! BENCHMARKS.md can quote any of them side by side.

use std::fmt;
use std::time::Duration;

/// One figure in a table. The kind, not the caller, decides how it is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A label or a count, as given.
    Text(String),
    /// A latency, with the precision that still means something at its size.
    Time(Duration),
    /// Requests per second, whole: runs differ by far more than one request.
    Rate(f64),
    /// A figure over its baseline, to this many decimals.
    Ratio(f64, usize),
    /// What a latency adds to its baseline, in whole µs; negative when it is faster, which
    /// happens in the tails and is worth seeing rather than hiding.
    Added { value: Duration, baseline: Duration },
}

impl Cell {
    pub fn text(text: impl Into<String>) -> Cell {
        Cell::Text(text.into())
    }

    /// `value / baseline`; a zero baseline (no samples) gives a huge ratio, not a panic.
    pub fn ratio(value: Duration, baseline: Duration, decimals: usize) -> Cell {
        Cell::Ratio(
            value.as_secs_f64() / baseline.as_secs_f64().max(1e-9),
            decimals,
        )
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Text(text) => f.write_str(text),
            Cell::Time(d) => f.write_str(&show(*d)),
            Cell::Rate(r) => write!(f, "{r:.0}"),
            Cell::Ratio(r, decimals) => write!(f, "{r:.decimals$}"),
            Cell::Added { value, baseline } => write!(
                f,
                "{} µs",
                value.as_micros() as i128 - baseline.as_micros() as i128
            ),
        }
    }
}

/// `12.3 ms`, `4.56 ms` or `78 µs`: three significant figures or so, whatever the size.
pub fn show(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{} µs", d.as_micros())
    }
}

/// A header and its rows, printed as one Markdown table followed by a blank line.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: impl IntoIterator<Item = Cell>) -> &mut Table {
        let cells: Vec<Cell> = cells.into_iter().collect();
        debug_assert_eq!(
            cells.len(),
            self.header.len(),
            "a row as wide as the header"
        );
        self.rows.push(cells);
        self
    }

    /// A label and its latencies: the median / p95 / p99 rows.
    pub fn times(
        &mut self,
        label: impl Into<String>,
        times: impl IntoIterator<Item = Duration>,
    ) -> &mut Table {
        let cells = std::iter::once(Cell::text(label)).chain(times.into_iter().map(Cell::Time));
        self.row(cells)
    }

    /// A label and `(value, baseline)` ratios, column by column.
    pub fn ratios(
        &mut self,
        label: impl Into<String>,
        pairs: impl IntoIterator<Item = (Duration, Duration)>,
        decimals: usize,
    ) -> &mut Table {
        let cells = pairs.into_iter().map(|(v, b)| Cell::ratio(v, b, decimals));
        self.row(std::iter::once(Cell::text(label)).chain(cells))
    }

    /// A label and what each value adds to its baseline, column by column.
    pub fn added(
        &mut self,
        label: impl Into<String>,
        pairs: impl IntoIterator<Item = (Duration, Duration)>,
    ) -> &mut Table {
        let cells = pairs
            .into_iter()
            .map(|(value, baseline)| Cell::Added { value, baseline });
        self.row(std::iter::once(Cell::text(label)).chain(cells))
    }

    pub fn print(&self) {
        println!("{self}");
    }
}

/// `| a | b |`; an empty cell is `| |`, as in the header over a column of labels.
fn line<T: fmt::Display>(f: &mut fmt::Formatter<'_>, cells: &[T]) -> fmt::Result {
    f.write_str("|")?;
    for cell in cells {
        let cell = cell.to_string();
        if !cell.is_empty() {
            write!(f, " {cell}")?;
        }
        f.write_str(" |")?;
    }
    f.write_str("\n")
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        line(f, &self.header)?;
        writeln!(f, "|{}", "---|".repeat(self.header.len()))?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn statistics_rows_are_written_as_in_benchmarks_md() {
        let (base, berth) = (
            [us(206_000), us(227_600), us(228_100)],
            [us(206_900), us(243_900), us(314_500)],
        );
        let mut t = Table::new(["", "median", "p95", "p99"]);
        t.times("baseline", base)
            .times("berth", berth)
            .ratios("berth / baseline", berth.into_iter().zip(base), 3)
            .times("detection", [us(1_810), us(3_240), us(999)]);
        assert_eq!(
            t.to_string(),
            "| | median | p95 | p99 |\n\
             |---|---|---|---|\n\
             | baseline | 206.0 ms | 227.6 ms | 228.1 ms |\n\
             | berth | 206.9 ms | 243.9 ms | 314.5 ms |\n\
             | berth / baseline | 1.004 | 1.072 | 1.379 |\n\
             | detection | 1.81 ms | 3.24 ms | 999 µs |\n"
        );
    }

    #[test]
    fn rates_ratios_and_added_latencies_are_written_as_in_benchmarks_md() {
        let mut t = Table::new(["connections", "berth req/s", "berth / nginx"]);
        t.row([
            Cell::text("16"),
            Cell::Rate(43713.4),
            Cell::Ratio(43713.4 / 50654.0, 2),
        ]);
        assert_eq!(
            t.to_string(),
            "| connections | berth req/s | berth / nginx |\n|---|---|---|\n| 16 | 43713 | 0.86 |\n"
        );

        let mut t = Table::new(["", "p50", "p99", "added p50", "added p99"]);
        t.row([
            Cell::text("nginx"),
            Cell::Time(us(95)),
            Cell::Time(us(4_080)),
            Cell::Added {
                value: us(95),
                baseline: us(80),
            },
            Cell::Added {
                value: us(4_080),
                baseline: us(4_990),
            },
        ]);
        assert_eq!(
            t.to_string(),
            "| | p50 | p99 | added p50 | added p99 |\n|---|---|---|---|---|\n\
             | nginx | 95 µs | 4.08 ms | 15 µs | -910 µs |\n"
        );
    }
}
