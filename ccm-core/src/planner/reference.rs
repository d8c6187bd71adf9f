//! Results of the exact reference solver (`tools/plan-reference/`), so a plan's cost can be
//! compared with the offline optimum without running the solver.
//!
//! The file is JSON (`config/scenarios/reference/results.json`):
//!
//! ```json
//! {"days": [{"file": "config/scenarios/reference/day-01-20-balanced.yaml", "sessions": 20,
//!            "solver_best_usd": 90.2, "solver_bound_usd": 88.1, "solver_status": "FEASIBLE",
//!            "solver_seconds": 60.0}]}
//! ```
//!
//! Other fields are ignored. A day is matched to a scenario by its file name.

use super::scenario::ScenarioError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Largest results file read (bytes).
pub const MAX_REFERENCE_BYTES: u64 = 4 * 1024 * 1024;

/// One solved day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceDay {
    /// Scenario file, relative to the repository root.
    pub file: String,
    /// Sessions in it.
    pub sessions: usize,
    /// Cost (USD) of the best plan the solver found.
    pub solver_best_usd: f64,
    /// The solver's proven lower bound (USD) on the optimum.
    pub solver_bound_usd: f64,
    /// `OPTIMAL` or `FEASIBLE` (stopped by the time limit).
    pub solver_status: String,
    /// Seconds the solver ran.
    pub solver_seconds: f64,
}

impl ReferenceDay {
    /// `cost / solver best` (1 when both are zero).
    pub fn ratio(&self, cost_usd: f64) -> f64 {
        if self.solver_best_usd > 0.0 {
            cost_usd / self.solver_best_usd
        } else if cost_usd > 0.0 {
            f64::INFINITY
        } else {
            1.0
        }
    }
}

/// A results file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReferenceResults {
    /// The solved days.
    pub days: Vec<ReferenceDay>,
}

impl ReferenceResults {
    /// The entry for scenario file `scenario` (matched by file name), if any.
    pub fn day_for(&self, scenario: &Path) -> Option<&ReferenceDay> {
        let name = scenario.file_name()?;
        self.days
            .iter()
            .find(|d| Path::new(&d.file).file_name() == Some(name))
    }
}

/// Parses a results file's text; `file` names it in errors.
pub fn parse_reference(text: &str, file: &str) -> Result<ReferenceResults, ScenarioError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        ScenarioError {
            file: file.to_string(),
            line: Some(inner.line()),
            field: Some(e.path().to_string()),
            message: inner.to_string(),
        }
    })
}

/// Reads a results file (at most [`MAX_REFERENCE_BYTES`]).
pub fn load_reference(path: &Path) -> Result<ReferenceResults, ScenarioError> {
    let err = |message: String| ScenarioError {
        file: path.display().to_string(),
        line: None,
        field: None,
        message,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| err(format!("cannot read: {e}")))?
        .len();
    if size > MAX_REFERENCE_BYTES {
        return Err(err(format!(
            "{size} bytes, more than the {MAX_REFERENCE_BYTES} allowed"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    parse_reference(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches_by_file_name() {
        let r = parse_reference(
            r#"{"about": "x", "days": [{"file": "config/scenarios/reference/d1.yaml",
               "sessions": 3, "solver_best_usd": 10.0, "solver_bound_usd": 9.0,
               "solver_status": "FEASIBLE", "solver_seconds": 60.0, "ccm_cost_usd": 11}]}"#,
            "r.json",
        )
        .unwrap();
        let d = r.day_for(Path::new("/x/y/d1.yaml")).unwrap();
        assert!((d.ratio(10.2) - 1.02).abs() < 1e-12);
        assert!(r.day_for(Path::new("d2.yaml")).is_none());
    }

    #[test]
    fn bad_file_names_line_and_field() {
        let e = parse_reference("{\"days\": [{\"file\": 3}]}", "r.json").unwrap_err();
        assert_eq!(e.file, "r.json");
        assert_eq!(e.line, Some(1));
        assert!(e.field.as_deref().unwrap_or("").contains("days"), "{e:?}");
    }
}
