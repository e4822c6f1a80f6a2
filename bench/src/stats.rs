//! Sample summaries (median, p90, min, max, mean) and the plain-text table
//! the benchmarks print.
//!
//! Percentiles use the nearest-rank method on the sorted samples: the p-th
//! percentile of `n` samples is the `ceil(p/100 * n)`-th smallest, so every
//! figure printed is a time that was actually measured.

use std::fmt::Write as _;
use std::time::Duration;

/// The unit a row is printed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Milliseconds, two decimals.
    Ms,
    /// Microseconds, one decimal.
    Us,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::Us => "µs",
        }
    }

    fn format(self, d: Duration) -> String {
        match self {
            Unit::Ms => format!("{:.2}", d.as_secs_f64() * 1e3),
            Unit::Us => format!("{:.1}", d.as_secs_f64() * 1e6),
        }
    }
}

/// What a set of samples comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    pub(crate) median: Duration,
    pub(crate) p90: Duration,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) mean: Duration,
}

/// The nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[Duration], p: u32) -> Duration {
    let n = sorted.len();
    let rank = (n * p as usize).div_ceil(100).clamp(1, n);
    sorted[rank - 1]
}

/// Summarizes samples; `None` when there are none.
pub(crate) fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let total: Duration = sorted.iter().sum();
    let n = sorted.len();
    Some(Summary {
        n,
        median: percentile(&sorted, 50),
        p90: percentile(&sorted, 90),
        min: sorted[0],
        max: sorted[n - 1],
        mean: total / u32::try_from(n).unwrap_or(u32::MAX),
    })
}

/// One line of the table.
#[derive(Debug, Clone)]
struct Row {
    label: String,
    unit: Unit,
    summary: Summary,
}

/// A table of summaries, printed with aligned columns.
#[derive(Debug, Default)]
pub(crate) struct Table {
    sections: Vec<(String, Vec<Row>)>,
}

impl Table {
    /// Starts a new group of rows under a title.
    pub(crate) fn section(&mut self, title: impl Into<String>) {
        self.sections.push((title.into(), Vec::new()));
    }

    /// Adds a row to the current section (rows with no samples are skipped).
    pub(crate) fn row(&mut self, label: impl Into<String>, unit: Unit, samples: &[Duration]) {
        let Some(summary) = summarize(samples) else {
            return;
        };
        if self.sections.is_empty() {
            self.section("");
        }
        if let Some((_, rows)) = self.sections.last_mut() {
            rows.push(Row {
                label: label.into(),
                unit,
                summary,
            });
        }
    }

    /// Renders the table as plain text.
    pub(crate) fn render(&self) -> String {
        const HEAD: [&str; 8] = ["", "n", "median", "p90", "min", "max", "mean", "unit"];
        let mut lines: Vec<Option<[String; 8]>> = Vec::new();
        let mut titles: Vec<Option<&str>> = Vec::new();
        lines.push(Some(HEAD.map(str::to_owned)));
        titles.push(None);
        for (title, rows) in &self.sections {
            lines.push(None);
            titles.push(Some(title));
            for r in rows {
                let s = &r.summary;
                lines.push(Some([
                    format!("  {}", r.label),
                    s.n.to_string(),
                    r.unit.format(s.median),
                    r.unit.format(s.p90),
                    r.unit.format(s.min),
                    r.unit.format(s.max),
                    r.unit.format(s.mean),
                    r.unit.name().to_owned(),
                ]));
                titles.push(None);
            }
        }
        let mut widths = [0usize; 8];
        for cells in lines.iter().flatten() {
            for (w, c) in widths.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for (cells, title) in lines.iter().zip(&titles) {
            match (cells, title) {
                (None, Some(title)) => {
                    let _ = writeln!(out, "{title}");
                }
                (Some(cells), _) => {
                    let mut line = String::new();
                    for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                        let pad = w - c.chars().count();
                        match i {
                            0 => {
                                line.push_str(c);
                                line.push_str(&" ".repeat(pad));
                            }
                            7 => {
                                line.push_str("  ");
                                line.push_str(c);
                            }
                            _ => {
                                line.push_str("  ");
                                line.push_str(&" ".repeat(pad));
                                line.push_str(c);
                            }
                        }
                    }
                    let _ = writeln!(out, "{}", line.trim_end());
                }
                (None, None) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=10).rev().map(us).collect();
        let s = summarize(&samples).unwrap();
        assert_eq!(s.n, 10);
        assert_eq!(s.median, us(5));
        assert_eq!(s.p90, us(9));
        assert_eq!(s.min, us(1));
        assert_eq!(s.max, us(10));
        assert_eq!(s.mean, Duration::from_nanos(5500));
        let one = summarize(&[us(7)]).unwrap();
        assert_eq!((one.median, one.p90), (us(7), us(7)));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn renders_aligned_rows() {
        let mut t = Table::default();
        t.section("calls");
        t.row("GetInfo", Unit::Us, &[us(100), us(200)]);
        let text = t.render();
        assert!(text.contains("calls\n"), "{text}");
        assert!(text.contains("  GetInfo"), "{text}");
        assert!(text.contains("100.0"), "{text}");
    }
}
