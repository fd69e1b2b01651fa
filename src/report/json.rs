//! `report.json`: the [`Report`] as it is, schema-versioned.

use super::Report;
use std::io::Write;

/// Writes `report` as pretty JSON.
pub fn write(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}
