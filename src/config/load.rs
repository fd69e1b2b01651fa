//! Reading `matrix.toml` and running its two passes.

use super::{Matrix, raw, validate};
use crate::error::ConfigError;
use std::path::Path;

impl Matrix {
    /// Reads, parses and validates the matrix file at `path`, a regular file of at most
    /// 4 MiB.
    ///
    /// Notebook globs are resolved against the file's `notebooks-dir`, and every notebook they
    /// match is checked to be nbformat 4 JSON. Unknown keys do not fail the load; they end up
    /// in [`Matrix::warnings`], or, when the matrix is invalid, in the error
    /// ([`ConfigError::warnings`]).
    pub fn load(path: &Path) -> Result<Matrix, ConfigError> {
        let read = |error| ConfigError::Read {
            path: path.to_owned(),
            error,
        };
        let bytes = crate::fsx::read_bounded(path, crate::fsx::CONFIG).map_err(read)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            ))
        })?;
        let (raw, unknown_keys) = raw::parse(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            error,
        })?;
        validate::compile(path, raw, unknown_keys)
    }
}

/// Prints a matrix's warnings, one `warning: ` line each: those of a valid matrix, or of an
/// invalid one before its error, since an unknown key may explain the error.
pub(crate) fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}
