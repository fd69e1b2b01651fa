//! Failed notebooks, readable without Jupyter: after a notebook trial fails, its kept executed
//! notebook is rendered as HTML by the runtime's own nbconvert (on its runner, best effort, off
//! the trial's time) and kept beside it. The main function is [`keep`]; each executor moves
//! the files in and out of its trial folder.

use super::Outcome;
use std::path::Path;

/// The folder, in a trial folder, where a failed notebook is rendered.
const RENDER: &str = "render";

/// The executed notebook of `outcome` when it is a failed notebook's: what is rendered.
pub(super) fn wanted(outcome: &Outcome) -> Option<&Path> {
    outcome.failure.as_ref()?;
    outcome.artifact.as_deref()
}

/// Where, in the trial folder, the executed notebook `artifact` is put to be rendered, and
/// where its HTML comes out.
pub(super) fn paths(artifact: &Path) -> (String, String) {
    let file = artifact.file_name().unwrap_or_default().to_string_lossy();
    let stem = Path::new(&*file).with_extension("");
    (
        format!("{RENDER}/{file}"),
        format!("{RENDER}/{}.html", stem.to_string_lossy()),
    )
}

/// Keeps `rendered`, the HTML of `outcome`'s executed notebook, beside it (`x.ipynb` gets
/// `x.html`), or notes why there is none; the trial's verdict is unchanged either way.
pub(super) fn keep(outcome: &mut Outcome, rendered: Result<Vec<u8>, String>) {
    let Some(artifact) = outcome.artifact.as_deref() else {
        return;
    };
    let html = artifact.with_extension("html");
    let kept = rendered.and_then(|bytes| {
        crate::record::write_atomic(&html, &bytes)
            .map_err(|error| format!("cannot write {}: {error}", html.display()))
    });
    match kept {
        Ok(()) => outcome.html = Some(html),
        Err(why) => outcome.artifact_note = Some(format!("no HTML: {}", short(&why))),
    }
}

/// The first line of `why`, at most 300 characters of it: a note, not a log.
fn short(why: &str) -> String {
    let line = why.trim().lines().next().unwrap_or_default();
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Category, Failure, FailureKind};

    fn failed(artifact: &Path) -> Outcome {
        Outcome {
            failure: Some(Failure {
                kind: FailureKind::CellError,
                category: Category::Notebook,
                summary: "ZeroDivisionError: division by zero".into(),
                cell: None,
                exit_code: Some(1),
                output_tail: None,
                cause: None,
            }),
            artifact: Some(artifact.to_owned()),
            ..Outcome::default()
        }
    }

    #[test]
    fn the_html_is_kept_beside_the_executed_notebook_or_a_note_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = dir.path().join("py/cpu/sub/failing.cell.ipynb");
        assert_eq!(
            paths(&artifact),
            (
                "render/failing.cell.ipynb".to_owned(),
                "render/failing.cell.html".to_owned()
            )
        );
        let mut outcome = failed(&artifact);
        assert_eq!(wanted(&outcome), Some(artifact.as_path()));
        keep(&mut outcome, Ok(b"<html>division by zero</html>".to_vec()));
        let html = dir.path().join("py/cpu/sub/failing.cell.html");
        assert_eq!(outcome.html.as_deref(), Some(html.as_path()));
        assert_eq!(
            std::fs::read_to_string(&html).unwrap(),
            "<html>division by zero</html>"
        );
        assert_eq!(outcome.artifact_note, None);

        let mut outcome = failed(&artifact);
        let why = "nbconvert is not installed in the runtime (No module named 'nbconvert')\nmore";
        keep(&mut outcome, Err(why.into()));
        assert_eq!(outcome.html, None);
        assert_eq!(
            outcome.artifact_note.as_deref(),
            Some(
                "no HTML: nbconvert is not installed in the runtime (No module named 'nbconvert')"
            )
        );
        // A passing notebook is not rendered.
        let passed = Outcome {
            failure: None,
            ..failed(&artifact)
        };
        assert_eq!(wanted(&passed), None);
    }
}
