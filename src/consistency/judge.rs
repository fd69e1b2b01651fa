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
    let status = match compared.len() {
        0 | 1 => Status::Passed,
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
    if compared.len() < 2 {
        let ran = match compared {
            [] => "no execution ran it to its end".to_owned(),
            [(one, _)] => format!("only {} ran it to its end", side(one)),
            _ => unreachable!("fewer than two"),
        };
        return (None, format!("nothing compared: {ran}{not_compared}"));
    }
    if compared.iter().all(|(_, cells)| cells.is_empty()) {
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
    let key = |cell: &ConsistentCell| match &cell.id {
        Some(id) => format!("id:{id}"),
        None => format!("index:{}", cell.index),
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
    let mut details = format!("{names} printed {} different outputs:", groups.len());
    for (n, group) in result.groups.iter().enumerate() {
        details.push_str(&format!("\n[{}] {}", n + 1, group.executions.join(", ")));
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
            "\n(some outputs were cut at {} KiB before they were compared)",
            crate::record::CONSISTENT_CELL_LIMIT / 1024
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

/// `; not compared: a on cpu (failed: ...), ...`, or nothing.
fn not_compared_note(not_compared: &[NotCompared]) -> String {
    if not_compared.is_empty() {
        return String::new();
    }
    let mut named: Vec<String> = not_compared
        .iter()
        .take(NAMED)
        .map(|n| format!("{} on {} ({})", n.runtime, n.machine, n.reason))
        .collect();
    if not_compared.len() > NAMED {
        named.push(format!("and {} more", not_compared.len() - NAMED));
    }
    format!("; not compared: {}", named.join("; "))
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

/// The lines of `a` and `b` from the first that differs, a few of each, `-` and `+` marked.
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
    let mut out = format!(" from line {}", first + 1);
    let shown = |lines: &[&str], mark: char, out: &mut String| {
        let rest = lines.get(first..).unwrap_or_default();
        if rest.is_empty() {
            out.push_str(&format!("\n  {mark} (no more lines)"));
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
