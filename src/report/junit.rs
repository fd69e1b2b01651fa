//! `junit.xml`: one test suite per runtime, one test case per trial. Expected failures pass;
//! excluded trials are skipped with their reason. Planned trials that did not run are errors,
//! not skips: CI gates and test-report tools pass a suite whose cases were skipped, and a
//! trial an interrupted run never finished proved nothing.

use super::Report;
use crate::verdict::Status;
use std::collections::BTreeMap;
use std::io::Write;

/// One `<testcase>`.
struct Case {
    name: String,
    seconds: f64,
    body: String,
    failed: bool,
    skipped: bool,
    error: bool,
}

/// The cases of `report`, by runtime: records, then trials not run, then exclusions.
fn suites(report: &Report) -> BTreeMap<&str, Vec<Case>> {
    let mut suites: BTreeMap<&str, Vec<Case>> = BTreeMap::new();
    for t in &report.trials {
        let body = match t.status {
            Status::Passed => String::new(),
            Status::ExpectedFailure => format!(
                "<system-out>{}</system-out>",
                escape(&format!(
                    "expected failure ({}): {}",
                    t.expected.as_ref().map(|e| e.reason.as_str()).unwrap_or(""),
                    t.failure.as_ref().map(|f| f.summary.as_str()).unwrap_or("")
                ))
            ),
            Status::UnexpectedPass => format!(
                "<failure message=\"passed, but declared as an expected failure\" type=\"unexpected-pass\">{}</failure>",
                escape(t.expected.as_ref().map(|e| e.reason.as_str()).unwrap_or(""))
            ),
            Status::Failed => {
                let f = t.failure.as_ref();
                let kind = f.map(|f| super::text::name_of(&f.kind)).unwrap_or_default();
                format!(
                    "<failure message=\"{}\" type=\"{}\">{}</failure>",
                    escape(f.map(|f| f.summary.as_str()).unwrap_or("")),
                    escape(&kind),
                    escape(crate::report::text::failure_details(t, None).trim_start())
                )
            }
        };
        suites.entry(&t.runtime).or_default().push(Case {
            name: format!("{}::{}", t.machine, t.check),
            seconds: t.seconds,
            failed: t.status.is_failure(),
            skipped: false,
            error: false,
            body,
        });
    }
    for n in &report.not_run {
        suites.entry(&n.runtime).or_default().push(Case {
            name: format!("{}::{}", n.machine, n.check),
            seconds: 0.0,
            failed: false,
            skipped: false,
            error: true,
            body: format!(
                "<error message=\"not run: {}\" type=\"not-run\"/>",
                escape(&n.reason)
            ),
        });
    }
    for e in &report.excluded {
        suites.entry(&e.runtime).or_default().push(Case {
            name: format!("{}::{}", e.machine, e.check),
            seconds: 0.0,
            failed: false,
            skipped: true,
            error: false,
            body: format!("<skipped message=\"{}\"/>", escape(&e.reason)),
        });
    }
    suites
}

/// Writes `report` as JUnit XML.
pub fn write(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let suites = suites(report);
    let count = |cases: &[Case], f: fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count();
    let all: Vec<&Case> = suites.values().flatten().collect();
    writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(
        out,
        "<testsuites name=\"runtime-matrix\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        all.len(),
        all.iter().filter(|c| c.failed).count(),
        all.iter().filter(|c| c.error).count(),
        all.iter().filter(|c| c.skipped).count(),
        all.iter().map(|c| c.seconds).sum::<f64>()
    )?;
    for (runtime, cases) in &suites {
        writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            escape(runtime),
            cases.len(),
            count(cases, |c| c.failed),
            count(cases, |c| c.error),
            count(cases, |c| c.skipped),
            cases.iter().map(|c| c.seconds).sum::<f64>()
        )?;
        for case in cases {
            let open = format!(
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                escape(&case.name),
                escape(runtime),
                case.seconds
            );
            if case.body.is_empty() {
                writeln!(out, "{open}/>")?;
            } else {
                writeln!(out, "{open}>{}</testcase>", case.body)?;
            }
        }
        writeln!(out, "  </testsuite>")?;
    }
    writeln!(out, "</testsuites>")
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0 cannot hold.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}
