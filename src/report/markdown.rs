//! `report.md`: a runtime x machine grid, the failures with their cells, expected failures,
//! exclusions, the setup the runs did and the slowest trials. Fit for a CI job summary.

use super::Report;
use super::text::count;
use crate::record::TrialRecord;
use crate::verdict::Status;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

const SLOWEST: usize = 10;

/// The most report.md holds: GitHub cuts a job summary at 1 MiB, and a summary step may add
/// lines of its own.
pub const LIMIT: usize = 900 * 1024;

/// Writes `report` as Markdown, at most [`LIMIT`] bytes of it: a longer one is cut at a line,
/// with a last line saying so and where the rest is.
pub fn write(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let mut whole = Vec::new();
    render(report, &mut whole)?;
    out.write_all(&cap(whole, LIMIT))
}

/// `markdown` cut to at most `limit` bytes at a line boundary, ending with a line that says how
/// many lines were cut; unchanged when it fits.
fn cap(mut markdown: Vec<u8>, limit: usize) -> Vec<u8> {
    if markdown.len() <= limit {
        return markdown;
    }
    let note = |lines: usize| {
        format!(
            "\n**report.md was cut here at {} KiB ({} left out)**: report.json and junit.xml \
             hold every trial.\n",
            limit / 1024,
            count(lines, "line", "lines")
        )
    };
    // Room for the note, whose length barely depends on the number it holds.
    let room = limit.saturating_sub(note(usize::MAX).len());
    let cut = markdown[..room]
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let left_out = markdown[cut..]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count();
    markdown.truncate(cut);
    markdown.extend_from_slice(note(left_out).as_bytes());
    markdown
}

/// Writes all of `report` as Markdown.
fn render(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let s = &report.summary;
    writeln!(out, "# runtime-matrix report\n")?;
    // An incomplete run never reads as passing: what did not run proved nothing.
    let verdict = if report.interrupted {
        "⛔ interrupted"
    } else if !report.not_run.is_empty() {
        "⛔ incomplete"
    } else if report.has_failures() {
        "❌ failing"
    } else {
        "✅ passing"
    };
    let not_run_count = match s.not_run {
        0 => String::new(),
        n => format!("; {n} not run"),
    };
    let skipped_count = match s.skipped {
        0 => String::new(),
        n => format!("; {n} skipped (opt-in)"),
    };
    writeln!(
        out,
        "**{verdict}**: {} ran: {}{not_run_count}{skipped_count}; {} excluded.\n",
        count(s.total, "trial", "trials"),
        super::text::outcomes(s),
        s.excluded
    )?;
    for i in &report.interruptions {
        writeln!(
            out,
            "Run `{}` was interrupted by {} at {} on `{}`: its trials that had not finished are listed under *Not run*.\n",
            i.run_id, i.signal_name, i.at, i.host
        )?;
    }
    if !report.runs_without_plan.is_empty() {
        writeln!(
            out,
            "Run(s) {} recorded no plan (made by a runtime-matrix older than plans): trials they planned but did not finish are not known, so none of theirs is listed as not run.\n",
            code_list(&report.runs_without_plan)
        )?;
    }
    if !report.runs.is_empty() {
        let engines = if report.engines.is_empty() {
            String::new()
        } else {
            format!(" Engines: {}.", code_list(&report.engines))
        };
        writeln!(
            out,
            "Runs: {}. Hosts: {}.{engines}\n",
            code_list(&report.runs),
            code_list(&report.hosts)
        )?;
    }
    grid(report, out)?;
    consistency(report, out)?;
    if let Some(comparison) = &report.baseline {
        super::baseline::write_markdown(comparison, out)?;
    }
    not_run(report, out)?;
    failures(report, out)?;
    expected(report, out)?;
    reused(report, out)?;
    excluded(report, out)?;
    setup(report, out)?;
    slowest(report, out)?;
    heaviest(report, out)
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    expected: usize,
    excluded: usize,
    skipped: usize,
    not_run: usize,
}

fn grid(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let mut cells: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    let mut machines = BTreeSet::new();
    // Consistency checks have no runtime or machine: they have a section of their own.
    for t in report.trials.iter().filter(|t| !t.runtime.is_empty()) {
        machines.insert(t.machine.as_str());
        let tally = cells.entry((&t.runtime, &t.machine)).or_default();
        match t.status {
            Status::Passed => tally.passed += 1,
            Status::Failed | Status::UnexpectedPass => tally.failed += 1,
            Status::ExpectedFailure => tally.expected += 1,
        }
    }
    for e in &report.excluded {
        machines.insert(e.machine.as_str());
        cells.entry((&e.runtime, &e.machine)).or_default().excluded += 1;
    }
    for n in report.not_run.iter().filter(|n| !n.runtime.is_empty()) {
        machines.insert(n.machine.as_str());
        cells.entry((&n.runtime, &n.machine)).or_default().not_run += 1;
    }
    for e in &report.skipped {
        machines.insert(e.machine.as_str());
        cells.entry((&e.runtime, &e.machine)).or_default().skipped += 1;
    }
    let runtimes: BTreeSet<&str> = cells.keys().map(|(runtime, _)| *runtime).collect();
    writeln!(out, "## Runtime × machine\n")?;
    write!(out, "| runtime |")?;
    for machine in &machines {
        write!(out, " {machine} |")?;
    }
    write!(out, "\n|---|")?;
    for _ in &machines {
        write!(out, "---|")?;
    }
    writeln!(out)?;
    for runtime in runtimes {
        write!(out, "| **{runtime}** |")?;
        for machine in &machines {
            let text = match cells.get(&(runtime, machine)) {
                None => "".to_owned(),
                Some(t) => {
                    let mut parts = Vec::new();
                    if t.not_run > 0 {
                        parts.push(format!("⛔ {} not run", t.not_run));
                    }
                    if t.failed > 0 {
                        parts.push(format!("❌ {} failed", t.failed));
                    }
                    if t.passed > 0 {
                        parts.push(format!("✅ {} passed", t.passed));
                    }
                    if t.expected > 0 {
                        parts.push(format!("⚠️ {} expected", t.expected));
                    }
                    if t.skipped > 0 {
                        parts.push(format!("⏸️ {} skipped", t.skipped));
                    }
                    if t.excluded > 0 {
                        parts.push(format!("⏭️ {} excluded", t.excluded));
                    }
                    parts.join("<br>")
                }
            };
            write!(out, " {text} |")?;
        }
        writeln!(out)?;
    }
    writeln!(out)
}

/// One line per consistency check: its verdict and what it compared; then, for each that
/// failed, the cell, the executions on each side and how their outputs differ.
fn consistency(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let checks: Vec<(&TrialRecord, &crate::record::ConsistencyResult)> = report
        .trials
        .iter()
        .filter_map(|t| t.consistency.as_ref().map(|c| (t, c)))
        .collect();
    let not_run: Vec<&super::NotRun> = report
        .not_run
        .iter()
        .filter(|n| n.runtime.is_empty())
        .collect();
    if checks.is_empty() && not_run.is_empty() {
        return Ok(());
    }
    writeln!(out, "## Consistency\n")?;
    writeln!(
        out,
        "The cells tagged for comparison print the same in every runtime and machine that ran \
         their notebook.\n"
    )?;
    writeln!(out, "| notebook | verdict | compared |\n|---|---|---|")?;
    for (t, c) in &checks {
        let verdict = match (t.status, c.compared.len()) {
            (Status::Passed, 0 | 1) => "➖ nothing compared",
            (Status::Passed, _) => "✅ agree",
            (Status::ExpectedFailure, _) => "⚠️ differ as declared",
            (Status::UnexpectedPass, _) => "❌ agree, but a difference is declared",
            (Status::Failed, _) => match t.failure.as_ref().map(|f| f.kind) {
                Some(crate::verdict::FailureKind::Inconsistent) => "❌ differ",
                _ => "❌ failed",
            },
        };
        let compared = match (&t.note, &t.failure) {
            (Some(note), _) => note.clone(),
            (None, Some(failure)) => failure.summary.clone(),
            (None, None) => String::new(),
        };
        writeln!(
            out,
            "| `{}` | {verdict} | {} |",
            c.notebook,
            cell(&compared)
        )?;
    }
    for n in &not_run {
        writeln!(out, "| `{}` | ⛔ not run | {} |", n.name, cell(&n.reason))?;
    }
    writeln!(out)?;
    for (t, c) in checks {
        let Some(failure) = t.failure.as_ref().filter(|_| t.status != Status::Passed) else {
            continue;
        };
        writeln!(out, "### `{}`\n", t.trial)?;
        writeln!(out, "- {}", inline(&failure.summary))?;
        if let Some(expected) = &t.expected {
            writeln!(out, "- declared difference: {}", inline(&expected.reason))?;
        }
        let executions: Vec<String> = c
            .compared
            .iter()
            .map(|e| format!("{} on {}", e.runtime, e.machine))
            .collect();
        writeln!(out, "- compared: {}", inline(&executions.join(", ")))?;
        if !c.not_compared.is_empty() {
            let not_compared: Vec<String> = c
                .not_compared
                .iter()
                .map(|n| format!("{} on {} ({})", n.runtime, n.machine, n.reason))
                .collect();
            writeln!(out, "- not compared: {}", inline(&not_compared.join("; ")))?;
        }
        if let Some(cell) = &failure.cell {
            writeln!(out, "- cell {} (0-based):\n", cell.index)?;
            writeln!(out, "```python\n{}\n```\n", cell.source_excerpt)?;
        }
        if let Some(details) = &failure.output_tail {
            writeln!(out, "```\n{}\n```\n", details.trim_end())?;
        }
    }
    Ok(())
}

/// Every planned trial without a record, so that none is mistaken for passing.
fn not_run(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    if report.not_run.is_empty() {
        return Ok(());
    }
    writeln!(out, "## Not run\n")?;
    writeln!(out, "| trial | run | why |\n|---|---|---|")?;
    for n in &report.not_run {
        writeln!(
            out,
            "| `{}` | `{}` | {} |",
            n.name,
            n.run_id,
            cell(&n.reason)
        )?;
    }
    writeln!(out)
}

fn failures(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let failed: Vec<&TrialRecord> = report
        .trials
        .iter()
        .filter(|t| t.status.is_failure())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    writeln!(out, "## Failures\n")?;
    for t in failed {
        writeln!(out, "### `{}`\n", t.trial)?;
        if t.status == Status::UnexpectedPass {
            let reason = t.expected.as_ref().map(|e| e.reason.as_str()).unwrap_or("");
            writeln!(
                out,
                "Passed, but declared as an expected failure ({reason}). Remove or narrow the \
                 `[[expected-failures]]` entry.\n"
            )?;
            continue;
        }
        failure_body(t, out)?;
    }
    Ok(())
}

fn failure_body(t: &TrialRecord, out: &mut impl Write) -> std::io::Result<()> {
    let Some(f) = &t.failure else { return Ok(()) };
    let category = super::text::name_of(&f.category);
    writeln!(
        out,
        "- **{}** ({category}; {:.1}s)",
        f.kind.describe(),
        t.seconds
    )?;
    writeln!(out, "- {}", inline(&f.summary))?;
    if let Some(cause) = f.cause {
        writeln!(
            out,
            "- cause `{}`: {}",
            super::text::name_of(&cause),
            cause.explain()
        )?;
    }
    if let Some(cell) = &f.cell {
        writeln!(out, "- cell {} (0-based):\n", cell.index)?;
        writeln!(out, "```python\n{}\n```\n", cell.source_excerpt)?;
        if let Some(traceback) = &cell.traceback {
            writeln!(
                out,
                "<details><summary>traceback</summary>\n\n```\n{}\n```\n</details>\n",
                traceback.trim_end()
            )?;
        }
    } else if let Some(tail) = f.output_tail.as_deref().filter(|t| !t.trim().is_empty()) {
        writeln!(
            out,
            "\n<details><summary>output (last lines)</summary>\n\n```\n{}\n```\n</details>\n",
            tail.trim_end()
        )?;
    }
    match (&t.artifact, &t.html, &t.artifact_note) {
        (Some(artifact), html, note) => {
            write!(out, "Executed notebook: {}", link(artifact))?;
            if let Some(html) = html {
                write!(out, ", as HTML: {}", link(html))?;
            }
            if let Some(note) = note {
                write!(out, " ({})", inline(note))?;
            }
            writeln!(out, "\n")
        }
        (None, _, Some(note)) => {
            let note = inline(note);
            let mut chars = note.chars();
            let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
            writeln!(out, "{}{}\n", first.unwrap_or_default(), chars.as_str())
        }
        (None, _, None) => writeln!(out),
    }
}

/// A link to the file at `path` (relative to the report's folder), named by the file's name.
fn link(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut text = String::new();
    for c in name.chars() {
        if "\\`*_[]<>!#|".contains(c) {
            text.push('\\');
        }
        text.push(c);
    }
    // Percent-encoded: a link target with a space, a parenthesis or a non-ASCII name works
    // on GitHub and in local viewers alike.
    let mut target = String::new();
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                target.push(byte as char);
            }
            _ => target.push_str(&format!("%{byte:02X}")),
        }
    }
    format!("[{text}]({target})")
}

fn expected(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let expected: Vec<&TrialRecord> = report
        .trials
        .iter()
        .filter(|t| t.status == Status::ExpectedFailure)
        .collect();
    if expected.is_empty() {
        return Ok(());
    }
    writeln!(out, "## Expected failures\n")?;
    writeln!(
        out,
        "| trial | declared reason | failed with |\n|---|---|---|"
    )?;
    for t in expected {
        let reason = t.expected.as_ref().map(|e| e.reason.as_str()).unwrap_or("");
        let summary = t.failure.as_ref().map(|f| f.summary.as_str()).unwrap_or("");
        writeln!(
            out,
            "| `{}` | {} | {} |",
            t.trial,
            cell(reason),
            cell(summary)
        )?;
    }
    writeln!(out)
}

/// The trials not executed because their inputs were unchanged since they passed, each with
/// the run it is reused from.
fn reused(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let reused: Vec<(&TrialRecord, &crate::record::Reused)> = report
        .trials
        .iter()
        .filter_map(|t| t.reused.as_ref().map(|r| (t, r)))
        .collect();
    if reused.is_empty() {
        return Ok(());
    }
    writeln!(out, "## Reused\n")?;
    writeln!(
        out,
        "Not executed: their inputs (image or virtualenv, notebook, data, settings, GPUs, \
         runtime-matrix) are unchanged since they ran with this outcome (`--reuse-results`).\n"
    )?;
    writeln!(
        out,
        "| trial | outcome | reused from run | ran at | seconds there |\n|---|---|---|---|---:|"
    )?;
    for (t, r) in reused {
        writeln!(
            out,
            "| `{}` | {} | reused from run `{}` | {} | {:.2} |",
            t.trial,
            super::text::name_of(&t.status),
            cell(&r.run_id),
            cell(&r.at),
            r.seconds
        )?;
    }
    writeln!(out)
}

fn excluded(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    by_reason(&report.skipped, "Skipped", out)?;
    by_reason(&report.excluded, "Excluded", out)
}

/// `entries` under `heading`, grouped by reason: a GPU machine on a CPU host excludes many
/// trials for one reason.
fn by_reason(
    entries: &[crate::plan::Excluded],
    heading: &str,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in entries {
        by_reason.entry(&e.reason).or_default().push(&e.name);
    }
    writeln!(out, "## {heading}\n")?;
    writeln!(out, "| reason | trials |\n|---|---|")?;
    for (reason, names) in by_reason {
        let shown: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
        let more = if names.len() > 5 {
            format!(" and {} more", names.len() - 5)
        } else {
            String::new()
        };
        writeln!(out, "| {} | {}{more} |", cell(reason), shown.join(", "))?;
    }
    writeln!(out)
}

/// What was set up, apart from the trials: their seconds leave it out.
fn setup(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    if report.summary.setup.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "## Setup
"
    )?;
    writeln!(
        out,
        "Images built or pulled and virtualenvs provisioned, each with the most seconds a trial \
         spent on it, doing it or waiting for it; no trial's seconds count it.\n"
    )?;
    writeln!(
        out,
        "| runtime | machine | setup | of | seconds |\n|---|---|---|---|---:|"
    )?;
    for s in &report.summary.setup {
        writeln!(
            out,
            "| **{}** | {} | {} | `{}` | {:.2} |",
            cell(&s.runtime),
            cell(&s.machine),
            s.kind.as_str(),
            cell(&s.subject),
            s.seconds
        )?;
    }
    writeln!(out)
}

fn slowest(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    // A reused trial did not run: it is not among this run's slowest.
    let mut trials: Vec<&TrialRecord> = report
        .trials
        .iter()
        .filter(|t| t.reused.is_none())
        .collect();
    if trials.is_empty() {
        return Ok(());
    }
    trials.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    writeln!(out, "## Slowest trials\n")?;
    writeln!(out, "| trial | seconds | slowest cell |\n|---|---:|---|")?;
    for t in trials.into_iter().take(SLOWEST) {
        let slowest_cell = t
            .cells
            .iter()
            .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
            .map(|c| format!("cell {} ({:.2}s)", c.index, c.seconds))
            .unwrap_or_default();
        writeln!(
            out,
            "| `{}` | {:.2} | {} |",
            t.trial, t.seconds, slowest_cell
        )?;
    }
    Ok(())
}

/// The trials that used the most memory, with their CPU time (and GPU memory, when any trial
/// measured some): what users size machines from.
fn heaviest(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let mut trials: Vec<(&TrialRecord, &crate::record::Resources)> = report
        .trials
        .iter()
        .filter_map(|t| Some((t, t.resources.as_ref()?)))
        .filter(|(_, r)| r.peak_memory_bytes.is_some())
        .collect();
    if trials.is_empty() {
        return Ok(());
    }
    trials.sort_by_key(|(t, r)| (std::cmp::Reverse(r.peak_memory_bytes), &t.trial));
    let gpu = trials.iter().any(|(_, r)| !r.gpu_memory_bytes.is_empty());
    writeln!(out, "\n## Heaviest trials\n")?;
    match gpu {
        true => writeln!(
            out,
            "| trial | peak memory | CPU seconds | peak GPU memory |\n|---|---:|---:|---:|"
        )?,
        false => writeln!(
            out,
            "| trial | peak memory | CPU seconds |\n|---|---:|---:|"
        )?,
    }
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    for (t, r) in trials.into_iter().take(SLOWEST) {
        let cpu = r.cpu_seconds.map(|s| format!("{s:.2}")).unwrap_or_default();
        let memory = r.peak_memory_bytes.map(mib).unwrap_or_default();
        write!(out, "| `{}` | {memory} | {cpu} |", t.trial)?;
        if gpu {
            // Several GPUs' peaks are summed: each is the peak of one GPU, not of the trial.
            match r.gpu_memory_bytes.is_empty() {
                true => write!(out, "  |")?,
                false => write!(out, " {} |", mib(r.gpu_memory_bytes.values().sum()))?,
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    inline(text).replace('|', "\\|")
}

fn inline(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_the_file_and_encode_the_path() {
        assert_eq!(
            link("../run 1/artifacts/py/cpu/my_[nb] (2).ipynb"),
            "[my\\_\\[nb\\] (2).ipynb](../run%201/artifacts/py/cpu/my_%5Bnb%5D%20%282%29.ipynb)"
        );
    }

    #[test]
    fn a_report_that_fits_is_not_cut() {
        let text = b"# report\n\nall passed\n".to_vec();
        assert_eq!(cap(text.clone(), 1024), text);
    }

    #[test]
    fn a_long_report_is_cut_at_a_line_within_the_limit_and_says_so() {
        let text: String = (0..1000)
            .map(|i| format!("| trial {i} | failed |\n"))
            .collect();
        let capped = String::from_utf8(cap(text.clone().into_bytes(), 4096)).unwrap();
        assert!(capped.len() <= 4096, "{}", capped.len());
        let (kept, note) = capped.rsplit_once("\n\n").unwrap();
        assert!(text.starts_with(&format!("{kept}\n")), "cut mid-line");
        let left_out = text.lines().count() - kept.lines().count();
        assert_eq!(
            note,
            format!(
                "**report.md was cut here at 4 KiB ({left_out} lines left out)**: report.json and \
                 junit.xml hold every trial.\n"
            )
        );
    }
}
