//! The evaluation report: one row per metric with the model's value, its baseline's, and how
//! confidently the model beats it, rendered as a table or JSON; the report passes only when every
//! metric clearly beats its baseline.

use serde::Serialize;

use crate::evidence::{CLEAR_CONFIDENCE, SceneScores};

/// Whether a metric improves downwards (errors) or upwards (IoU, recall, PSNR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    LowerIsBetter,
    HigherIsBetter,
}

impl Direction {
    /// Whether `value` is strictly better than `other` in this direction.
    pub fn better(self, value: f64, other: f64) -> bool {
        match self {
            Direction::LowerIsBetter => value < other,
            Direction::HigherIsBetter => value > other,
        }
    }
}

/// One metric on one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The task, e.g. `rgb -> depth`.
    pub task: String,
    /// The metric and its unit, e.g. `abs rel`.
    pub metric: String,
    pub value: f64,
    /// What the baseline is, e.g. `mean training depth`.
    pub baseline_name: String,
    pub baseline: f64,
    pub direction: Direction,
    /// Scenes the value is measured over.
    pub scenes: usize,
    /// The fraction of bootstrap resamples of the scenes on which the model beats the baseline
    /// (see [`crate::evidence`]).
    pub confidence: f64,
}

impl Row {
    /// The row of a metric from its per-scene evidence; `None` when there is nothing to measure.
    pub fn measured(
        task: impl Into<String>,
        metric: impl Into<String>,
        baseline_name: impl Into<String>,
        direction: Direction,
        evidence: &SceneScores,
    ) -> Option<Row> {
        let (value, baseline) = evidence.totals()?;
        Some(Row {
            task: task.into(),
            metric: metric.into(),
            value,
            baseline_name: baseline_name.into(),
            baseline,
            direction,
            scenes: evidence.scenes(),
            confidence: evidence.confidence(direction),
        })
    }

    /// Strictly better than the baseline over all scenes.
    pub fn better_than_baseline(&self) -> bool {
        self.direction.better(self.value, self.baseline)
    }

    /// Better, and by a margin that survives resampling the scenes.
    pub fn beats_baseline(&self) -> bool {
        self.better_than_baseline() && self.confidence >= CLEAR_CONFIDENCE
    }

    /// `beats`, `UNCLEAR` (better, but not confidently) or `FAILS`.
    pub fn verdict(&self) -> &'static str {
        if self.beats_baseline() {
            "beats"
        } else if self.better_than_baseline() {
            "UNCLEAR"
        } else {
            "FAILS"
        }
    }
}

/// All rows of one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Adds the rows, in order.
    pub fn extend(&mut self, rows: impl IntoIterator<Item = Row>) {
        self.rows.extend(rows);
    }

    /// True when there are rows and every one clearly beats its baseline.
    pub fn passes(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(Row::beats_baseline)
    }

    /// A plain-text table, one line per row, with a verdict column.
    pub fn render_table(&self) -> String {
        let headers = [
            "task",
            "metric",
            "model",
            "baseline",
            "",
            "scenes",
            "confidence",
            "verdict",
        ];
        let cells: Vec<[String; 8]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.task.clone(),
                    r.metric.clone(),
                    format!("{:.4}", r.value),
                    format!("{:.4}", r.baseline),
                    format!("({})", r.baseline_name),
                    r.scenes.to_string(),
                    format!("{:.1}%", 100.0 * r.confidence),
                    r.verdict().to_owned(),
                ]
            })
            .collect();
        let mut widths = headers.map(str::len);
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let out: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.join("  ").trim_end().to_owned() + "\n"
        };
        let mut out = line(&headers.map(str::to_owned));
        for row in &cells {
            out += &line(row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: f64, baseline: f64, direction: Direction) -> Row {
        let better = direction.better(value, baseline);
        Row {
            task: "rgb -> depth".into(),
            metric: "abs rel".into(),
            value,
            baseline_name: "mean training depth".into(),
            baseline,
            direction,
            scenes: 200,
            confidence: if better { 1.0 } else { 0.0 },
        }
    }

    #[test]
    fn every_row_must_beat_its_baseline() {
        let mut report = Report::default();
        assert!(!report.passes(), "an empty report proves nothing");
        report.push(row(0.1, 0.3, Direction::LowerIsBetter));
        report.push(row(0.7, 0.2, Direction::HigherIsBetter));
        assert!(report.passes());
        report.push(row(0.3, 0.3, Direction::LowerIsBetter));
        assert!(!report.passes(), "a tie does not beat the baseline");
        let mut unclear = row(0.2, 0.3, Direction::LowerIsBetter);
        unclear.confidence = 0.9;
        report.push(unclear);
        let table = report.render_table();
        let last_two = |line: usize| {
            let cells: Vec<&str> = table
                .lines()
                .nth(line)
                .unwrap()
                .split_whitespace()
                .collect();
            cells[cells.len() - 2..].join(" ")
        };
        assert_eq!(table.lines().count(), 5);
        assert_eq!(last_two(1), "100.0% beats", "{table}");
        assert_eq!(last_two(3), "0.0% FAILS", "{table}");
        assert_eq!(last_two(4), "90.0% UNCLEAR", "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][1]["direction"], "higher_is_better");
        assert_eq!(json["rows"][3]["confidence"], 0.9);
    }

    #[test]
    fn a_measured_row_carries_its_evidence() {
        let evidence = SceneScores::Means(vec![(0.1, 0.3), (0.2, 0.3)]);
        let row = Row::measured("t", "m", "b", Direction::LowerIsBetter, &evidence).unwrap();
        assert!((row.value - 0.15).abs() < 1e-12 && (row.baseline - 0.3).abs() < 1e-12);
        assert_eq!((row.scenes, row.confidence), (2, 1.0));
        assert!(row.beats_baseline());
        let nothing = SceneScores::Means(Vec::new());
        assert!(Row::measured("t", "m", "b", Direction::LowerIsBetter, &nothing).is_none());
    }
}
