//! Judging one consistency check from the records of its notebook's trials: which executions
//! can be compared, whether their tagged cells agree, and the failure naming the first cell
//! that does not.

use super::normalise::Normaliser;
use crate::record::{
    ConsistencyResult, ConsistentCell, Execution, Expectation, NotCompared, OutputGroup,
    TrialRecord,
};
use crate::verdict::{Category, CellFailure, Failure, FailureKind, Status};
use std::collections::BTreeMap;

/// The most lines of a difference shown, from the first that differs.
const DIFF_LINES: usize = 6;
/// The most characters of one line shown.
const LINE_CHARS: usize = 200;
/// The most trials named in a note.
const NAMED: usize = 6;

/// What a judge sees of a notebook's trials: their records (one per trial), and those that
/// have none, with the reason (not run, skipped, excluded).
pub(crate) struct Seen<'a> {
    /// Records, one per trial; those of other checks are ignored.
    pub records: Vec<&'a TrialRecord>,
    /// The notebook's trials without a record, and why.
    pub missing: Vec<NotCompared>,
}

/// The verdict on one consistency check.
pub(crate) struct Verdict {
    /// How it ended, its expected-difference declaration considered.
    pub status: Status,
    /// The difference, or why nothing could be compared when that is a failure.
    pub failure: Option<Failure>,
    /// What was compared, in one line.
    pub note: String,
}

/// Judges the consistency check of `result` (its settings filled in) from `seen`, filling in
/// what it compared; `expected` is its expected-difference declaration.
pub(crate) fn judge(
    result: &mut ConsistencyResult,
    expected: Option<&Expectation>,
    seen: Seen,
) -> Verdict {
    let mut records: Vec<&TrialRecord> = seen
        .records
        .into_iter()
        .filter(|r| r.check == result.notebook_check && !r.runtime.is_empty())
        .collect();
    records.sort_by(|a, b| a.trial.cmp(&b.trial));
    let mut compared: Vec<(&TrialRecord, &[ConsistentCell])> = Vec::new();
    let mut not_compared = seen.missing;
    for record in records {
        let why = match (&record.failure, &record.consistent) {
            (Some(failure), _) => format!(
                "{}: {}",
                crate::report::text::name_of(&record.status),
                failure.kind.describe()
            ),
            (None, None) => {
                "its record keeps no outputs to compare (it ran before the notebook was \
                 declared in [consistency], or with an older runtime-matrix)"
                    .to_owned()
            }
            (None, Some(cells)) => {
                compared.push((record, cells));
                continue;
            }
        };
        not_compared.push(NotCompared {
            trial: record.trial.clone(),
            runtime: record.runtime.clone(),
            machine: record.machine.clone(),
            reason: why,
        });
    }
    not_compared.sort_by(|a, b| a.trial.cmp(&b.trial));
    not_compared.dedup_by(|a, b| a.trial == b.trial);
    result.compared = compared
        .iter()
        .map(|(record, _)| Execution {
            trial: record.trial.clone(),
            runtime: record.runtime.clone(),
            machine: record.machine.clone(),
            run_id: record.run_id.clone(),
        })
        .collect();
    result.not_compared = not_compared;
    result.cells = 0;
    result.groups = Vec::new();

    let (failure, note) = compare(result, &compared);
    // With fewer than two executions nothing was compared: that neither agrees nor differs,
    // so an expected difference is no unexpected pass.
    let status = match (compared.len(), &failure) {
        (0 | 1, None) => Status::Passed,
        _ => status_of(expected, failure.as_ref()),
    };
    Verdict {
        status,
        failure,
        note,
    }
}

/// The difference between `compared`'s tagged cells, or the note saying they agree.
fn compare(
    result: &mut ConsistencyResult,
    compared: &[(&TrialRecord, &[ConsistentCell])],
) -> (Option<Failure>, String) {
    let sides = |members: &[usize]| -> Vec<String> {
        members
            .iter()
            .map(|&i| side(compared[i].0))
            .collect::<Vec<_>>()
    };
    let not_compared = not_compared_note(&result.not_compared);
    // Even one execution shows that the notebook has no tagged cell.
    if !compared.is_empty() && compared.iter().all(|(_, cells)| cells.is_empty()) {
        let failure = Failure {
            kind: FailureKind::NothingTagged,
            category: Category::Notebook,
            summary: format!(
                "no cell tagged `{}` in {}: tag the cells to compare, or drop it from consistency.notebooks",
                result.tag, result.notebook
            ),
            cell: None,
            exit_code: None,
            output_tail: None,
            cause: None,
        };
        return (Some(failure), String::new());
    }
    if compared.len() < 2 {
        let ran = match compared {
            [] => "no execution ran it to its end".to_owned(),
            [(one, _)] => format!("only {} ran it to its end", side(one)),
            _ => unreachable!("fewer than two"),
        };
        return (None, format!("nothing compared: {ran}{not_compared}"));
    }
    let normaliser = match Normaliser::new(&result.sanitizers, result.float_tolerance) {
        Ok(normaliser) => normaliser,
        Err(error) => {
            let failure = Failure {
                kind: FailureKind::Setup,
                category: Category::Infrastructure,
                summary: crate::error::chain(&error),
                cell: None,
                exit_code: None,
                output_tail: None,
                cause: None,
            };
            return (Some(failure), String::new());
        }
    };

    // Cells are matched by id, else by index; in the order of the first execution having them.
    // An id no other execution has is made up (nbformat gives a cell without one a random id
    // as it runs it) or the cell's alone: such a cell is matched by index.
    let mut executions_by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, cells) in compared {
        let ids: std::collections::BTreeSet<&str> =
            cells.iter().filter_map(|c| c.id.as_deref()).collect();
        for id in ids {
            *executions_by_id.entry(id).or_default() += 1;
        }
    }
    let key = |cell: &ConsistentCell| match &cell.id {
        Some(id) if executions_by_id.get(id.as_str()).is_some_and(|&n| n > 1) => {
            format!("id:{id}")
        }
        _ => format!("index:{}", cell.index),
    };
    let mut order: BTreeMap<String, (usize, &ConsistentCell)> = BTreeMap::new();
    for (_, cells) in compared {
        for cell in cells.iter() {
            order.entry(key(cell)).or_insert((cell.index, cell));
        }
    }
    let mut keys: Vec<(usize, String, &ConsistentCell)> = order
        .into_iter()
        .map(|(key, (index, cell))| (index, key, cell))
        .collect();
    keys.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));

    let mut differing: Vec<(&ConsistentCell, Vec<Group>)> = Vec::new();
    for (_, cell_key, cell) in &keys {
        // Each execution joins the first group whose first member it agrees with.
        let mut groups: Vec<Group> = Vec::new();
        for (i, (_, cells)) in compared.iter().enumerate() {
            let text = cells
                .iter()
                .find(|c| &key(c) == cell_key)
                .map(|c| normaliser.normalise(&c.text));
            let joined = groups.iter_mut().find(|(first, _)| match (first, &text) {
                (Some(a), Some(b)) => normaliser.agree(a, b),
                (None, None) => true,
                _ => false,
            });
            match joined {
                Some((_, members)) => members.push(i),
                None => groups.push((text, vec![i])),
            }
        }
        if groups.len() > 1 {
            differing.push((cell, groups));
        }
    }
    result.cells = keys.len();
    let all = sides(&(0..compared.len()).collect::<Vec<_>>());
    let Some((cell, groups)) = differing.first() else {
        return (
            None,
            format!(
                "{} executions agree on {}: {}{not_compared}",
                compared.len(),
                crate::report::text::count(keys.len(), "cell", "cells"),
                all.join(", ")
            ),
        );
    };

    result.groups = groups
        .iter()
        .map(|(text, members)| OutputGroup {
            executions: sides(members),
            excerpt: match text {
                Some(text) => excerpt(text),
                None => "(no such cell)".to_owned(),
            },
        })
        .collect();
    let names = describe_cell(cell);
    let summary = format!(
        "{names} printed differently: {}",
        result
            .groups
            .iter()
            .map(|g| g.executions.join(", "))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    // The summary names the cell; these lines say who printed what, and how it differs.
    let mut details = String::new();
    for (n, group) in result.groups.iter().enumerate() {
        if n > 0 {
            details.push('\n');
        }
        details.push_str(&format!("[{}] {}", n + 1, group.executions.join(", ")));
    }
    let first = groups[0].0.as_deref();
    for (n, (other, _)) in groups.iter().enumerate().skip(1).take(2) {
        details.push_str(&format!("\ndiff [1] -> [{}]:", n + 1));
        details.push_str(&diff(first, other.as_deref()));
    }
    if differing.len() > 1 {
        let others: Vec<String> = differing[1..]
            .iter()
            .map(|(cell, _)| cell.index.to_string())
            .collect();
        details.push_str(&format!("\nalso differ: cells {}", others.join(", ")));
    }
    if compared
        .iter()
        .any(|(_, cells)| cells.iter().any(|c| c.truncated))
    {
        details.push_str(&format!(
            "\n(some outputs were cut before they were compared: at {} KiB a cell, {} MiB and {} cells a trial)",
            crate::record::CONSISTENT_CELL_LIMIT / 1024,
            crate::record::CONSISTENT_TEXT_LIMIT / (1024 * 1024),
            crate::record::CONSISTENT_CELLS_MAX,
        ));
    }
    let failure = Failure {
        kind: FailureKind::Inconsistent,
        category: Category::Notebook,
        summary,
        cell: Some(CellFailure {
            index: cell.index,
            source_excerpt: cell.source.clone(),
            ename: None,
            evalue: None,
            traceback: None,
        }),
        exit_code: None,
        output_tail: Some(details),
        cause: None,
    };
    (Some(failure), String::new())
}

/// Executions that printed the same in one cell: the first one's normalised text (`None`
/// when it lacks the cell), and the executions, by position in the compared list.
type Group = (Option<String>, Vec<usize>);

/// `runtime on machine`.
fn side(record: &TrialRecord) -> String {
    format!("{} on {}", record.runtime, record.machine)
}

/// `cell 2 (id `sum`: `print(total)`)`.
fn describe_cell(cell: &ConsistentCell) -> String {
    let first = cell.source.lines().next().unwrap_or_default();
    let first = cut(first, 80);
    match &cell.id {
        Some(id) => format!("cell {} (id `{id}`: `{first}`)", cell.index),
        None => format!("cell {} (`{first}`)", cell.index),
    }
}

/// `; not compared: failed: a on cpu; excluded: b on gpu, c on gpu`, by the first word of
/// each reason, or nothing; the record keeps every reason whole.
fn not_compared_note(not_compared: &[NotCompared]) -> String {
    if not_compared.is_empty() {
        return String::new();
    }
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for n in not_compared {
        let kind = n.reason.split(':').next().unwrap_or_default();
        by_kind
            .entry(kind)
            .or_default()
            .push(format!("{} on {}", n.runtime, n.machine));
    }
    let parts: Vec<String> = by_kind
        .into_iter()
        .map(|(kind, mut sides)| {
            if sides.len() > NAMED {
                let more = sides.len() - NAMED;
                sides.truncate(NAMED);
                sides.push(format!("and {more} more"));
            }
            format!("{kind}: {}", sides.join(", "))
        })
        .collect();
    format!("; not compared: {}", parts.join("; "))
}

/// The first lines of a group's text.
fn excerpt(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .take(DIFF_LINES)
        .map(|l| cut(l, LINE_CHARS))
        .collect();
    let mut excerpt = lines.join("\n");
    if text.lines().count() > DIFF_LINES {
        excerpt.push_str("\n...");
    }
    excerpt
}

/// The lines of `a` and `b` from the first that differs to the last that does (the lines both
/// end with are left out), a few of each, `-` and `+` marked.
fn diff(a: Option<&str>, b: Option<&str>) -> String {
    let (Some(a), Some(b)) = (a, b) else {
        return format!(
            "\n  the cell is missing from [{}]",
            if a.is_none() { 1 } else { 2 }
        );
    };
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let same_end = a[first..]
        .iter()
        .rev()
        .zip(b[first..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = format!(" from line {}", first + 1);
    let shown = |lines: &[&str], mark: char, out: &mut String| {
        let rest = lines.get(first..lines.len() - same_end).unwrap_or_default();
        if rest.is_empty() {
            out.push_str(&format!("\n  {mark} (no line)"));
        }
        for line in rest.iter().take(DIFF_LINES / 2) {
            out.push_str(&format!("\n  {mark} {}", cut(line, LINE_CHARS)));
        }
        if rest.len() > DIFF_LINES / 2 {
            out.push_str(&format!("\n  {mark} ..."));
        }
    };
    shown(&a, '-', &mut out);
    shown(&b, '+', &mut out);
    out
}

/// `text` cut after `chars` characters, with `...`.
fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// The status of a consistency check given its failure and its expected-difference
/// declaration: the same rules as a trial's expected failure.
pub(crate) fn status_of(expected: Option<&Expectation>, failure: Option<&Failure>) -> Status {
    match (expected, failure) {
        (None, None) => Status::Passed,
        (None, Some(_)) => Status::Failed,
        (Some(_), None) => Status::UnexpectedPass,
        (Some(rule), Some(failure)) => match &rule.matches {
            Some(text) if !failure.text().contains(text.as_str()) => Status::Failed,
            _ => Status::ExpectedFailure,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn record(trial: &str, status: &str, cells: Option<Value>) -> TrialRecord {
        let mut parts = trial.splitn(3, "::");
        let (runtime, machine, check) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let failure = (status != "passed").then(|| {
            json!({"kind": "cell-error", "category": "runtime", "summary": "ModuleNotFoundError",
                   "cell": null, "exit_code": 1, "output_tail": null})
        });
        serde_json::from_value(json!({
            "schema": 1, "run_id": "r", "trial": trial, "runtime": runtime, "machine": machine,
            "check": check, "executor": "host", "tags": [], "status": status,
            "failure": failure, "expected": null, "started_at": "", "seconds": 1.0,
            "cells": [], "artifact": null, "host": "h", "consistent": cells,
        }))
        .unwrap()
    }

    fn result() -> ConsistencyResult {
        serde_json::from_value(json!({
            "notebook": "x.ipynb", "notebook_check": "nb::x", "tag": "consistent",
            "float_tolerance": 0.0, "compared": [], "not_compared": [], "cells": 0,
        }))
        .unwrap()
    }

    fn cell(index: usize, id: Option<&str>, text: &str) -> Value {
        json!({"index": index, "id": id, "source": "print(x)", "text": text})
    }

    #[rstest::rstest]
    #[case::the_lines_both_end_with_are_left_out(
        "a\nsame\n",
        "b\nsame\n",
        " from line 1\n  - a\n  + b"
    )]
    #[case::a_line_only_one_has("x\ny\n", "x\nnew\ny\n", " from line 2\n  - (no line)\n  + new")]
    #[case::an_end_only_one_has("x\n", "x\ny\n", " from line 2\n  - (no line)\n  + y")]
    fn a_diff_shows_only_the_lines_that_differ(
        #[case] a: &str,
        #[case] b: &str,
        #[case] expected: &str,
    ) {
        assert_eq!(diff(Some(a), Some(b)), expected);
    }

    #[test]
    fn cells_are_matched_by_id_wherever_they_are() {
        // Another version of the notebook has a cell more before it: same id, same output.
        let a = record(
            "a::cpu::nb::x",
            "passed",
            Some(json!([cell(1, Some("s"), "1\n")])),
        );
        let b = record(
            "b::cpu::nb::x",
            "passed",
            Some(json!([cell(2, Some("s"), "1\n")])),
        );
        let mut result = result();
        let verdict = judge(
            &mut result,
            None,
            Seen {
                records: vec![&a, &b],
                missing: vec![],
            },
        );
        assert_eq!(verdict.status, Status::Passed);
        assert_eq!(
            verdict.note,
            "2 executions agree on 1 cell: a on cpu, b on cpu"
        );
    }

    #[test]
    fn cells_whose_ids_no_other_execution_has_are_matched_by_index() {
        // nbformat's random ids for cells that had none: different in every execution.
        let a = record(
            "a::cpu::nb::x",
            "passed",
            Some(json!([
                cell(1, Some("1f0e"), "1\n"),
                cell(2, Some("s"), "2\n")
            ])),
        );
        let b = record(
            "b::cpu::nb::x",
            "passed",
            Some(json!([
                cell(1, Some("9ab3"), "1\n"),
                cell(3, Some("s"), "2\n")
            ])),
        );
        let mut result = result();
        let verdict = judge(
            &mut result,
            None,
            Seen {
                records: vec![&a, &b],
                missing: vec![],
            },
        );
        assert_eq!(verdict.status, Status::Passed, "{:?}", verdict.failure);
        assert_eq!(
            verdict.note,
            "2 executions agree on 2 cells: a on cpu, b on cpu"
        );
    }

    #[test]
    fn failed_trials_and_other_notebooks_are_not_compared_and_one_execution_compares_nothing() {
        let a = record(
            "a::cpu::nb::x",
            "passed",
            Some(json!([cell(0, None, "1\n")])),
        );
        let b = record("b::cpu::nb::x", "expected-failure", None);
        let c = record("c::cpu::nb::x", "failed", None);
        let other = record(
            "a::cpu::nb::y",
            "passed",
            Some(json!([cell(0, None, "2\n")])),
        );
        let expected = Expectation {
            reason: "declared".into(),
            matches: None,
        };
        let mut result = result();
        let verdict = judge(
            &mut result,
            Some(&expected),
            Seen {
                records: vec![&a, &b, &c, &other],
                missing: vec![NotCompared {
                    trial: "d::gpu::nb::x".into(),
                    runtime: "d".into(),
                    machine: "gpu".into(),
                    reason: "excluded: no GPU here".into(),
                }],
            },
        );
        // Nothing compared is no unexpected pass of a declared difference.
        assert_eq!(verdict.status, Status::Passed);
        assert_eq!(
            verdict.note,
            "nothing compared: only a on cpu ran it to its end; not compared: excluded: d on gpu; \
             expected-failure: b on cpu; failed: c on cpu"
        );
        assert_eq!(result.compared.len(), 1);
        assert_eq!(result.not_compared.len(), 3);
    }

    #[test]
    fn a_difference_groups_the_executions_and_an_expected_one_must_match() {
        let a = record(
            "a::cpu::nb::x",
            "passed",
            Some(json!([cell(0, None, "1\n")])),
        );
        let b = record(
            "b::cpu::nb::x",
            "passed",
            Some(json!([cell(0, None, "1\n")])),
        );
        let c = record(
            "c::gpu::nb::x",
            "passed",
            Some(json!([cell(0, None, "2\n")])),
        );
        let seen = || Seen {
            records: vec![&a, &b, &c],
            missing: vec![],
        };
        let verdict = judge(&mut result(), None, seen());
        assert_eq!(verdict.status, Status::Failed);
        let failure = verdict.failure.unwrap();
        assert_eq!(
            failure.summary,
            "cell 0 (`print(x)`) printed differently: a on cpu, b on cpu | c on gpu"
        );
        assert_eq!(
            failure.output_tail.unwrap(),
            "[1] a on cpu, b on cpu\n[2] c on gpu\ndiff [1] -> [2]: from line 1\n  - 1\n  + 2"
        );
        let expected = |matches: &str| Expectation {
            reason: "the GPU rounds differently".into(),
            matches: Some(matches.into()),
        };
        let status = |matches: &str| judge(&mut result(), Some(&expected(matches)), seen()).status;
        assert_eq!(status("c on gpu"), Status::ExpectedFailure);
        assert_eq!(status("a on gpu"), Status::Failed);
    }
}
