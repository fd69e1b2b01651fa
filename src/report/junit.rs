//! `junit.xml`: one test suite per runtime, one test case per trial. Expected failures pass;
//! excluded trials are skipped with their reason.

use super::Report;
use crate::verdict::Status;
use std::collections::BTreeMap;
use std::io::Write;

/// Writes `report` as JUnit XML.
pub fn write(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    struct Case {
        name: String,
        seconds: f64,
        body: String,
        failed: bool,
        skipped: bool,
    }
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
            body,
        });
    }
    for e in &report.excluded {
        suites.entry(&e.runtime).or_default().push(Case {
            name: format!("{}::{}", e.machine, e.check),
            seconds: 0.0,
            failed: false,
            skipped: true,
            body: format!("<skipped message=\"{}\"/>", escape(&e.reason)),
        });
    }
    let count = |cases: &[Case], f: fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count();
    let all: Vec<&Case> = suites.values().flatten().collect();
    writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(
        out,
        "<testsuites name=\"runtime-matrix\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        all.len(),
        all.iter().filter(|c| c.failed).count(),
        all.iter().filter(|c| c.skipped).count(),
        all.iter().map(|c| c.seconds).sum::<f64>()
    )?;
    for (runtime, cases) in &suites {
        writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            escape(runtime),
            cases.len(),
            count(cases, |c| c.failed),
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
