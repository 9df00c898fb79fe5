//! The evaluation report: one row per metric with the model's value and its baseline's, rendered
//! as a table or JSON; the report passes only when every metric beats its baseline.

use serde::Serialize;

/// Whether a metric improves downwards (errors) or upwards (IoU, recall, PSNR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    LowerIsBetter,
    HigherIsBetter,
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
    /// Scenes the value is averaged over.
    pub scenes: usize,
}

impl Row {
    /// Strictly better than the baseline.
    pub fn beats_baseline(&self) -> bool {
        match self.direction {
            Direction::LowerIsBetter => self.value < self.baseline,
            Direction::HigherIsBetter => self.value > self.baseline,
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

    /// True when there are rows and every one beats its baseline.
    pub fn passes(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(Row::beats_baseline)
    }

    /// A plain-text table, one line per row, with a verdict column.
    pub fn render_table(&self) -> String {
        let headers = [
            "task", "metric", "model", "baseline", "", "scenes", "verdict",
        ];
        let cells: Vec<[String; 7]> = self
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
                    if r.beats_baseline() { "beats" } else { "FAILS" }.to_owned(),
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
        Row {
            task: "rgb -> depth".into(),
            metric: "abs rel".into(),
            value,
            baseline_name: "mean training depth".into(),
            baseline,
            direction,
            scenes: 200,
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
        let table = report.render_table();
        assert_eq!(table.lines().count(), 4);
        assert!(table.lines().nth(1).unwrap().ends_with("beats"), "{table}");
        assert!(table.lines().nth(3).unwrap().ends_with("FAILS"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][1]["direction"], "higher_is_better");
    }
}
