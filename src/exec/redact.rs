//! Redaction: secret values never reach a record, a report or an artifact. The main function
//! is [`redact`], which the Docker executor applies to every outcome (runtimes with secrets are
//! Docker runtimes today); it lives here so that any executor can.

use super::Outcome;
use crate::sanitise::plain;
use crate::verdict::{Failure, FailureKind};

/// Secrets shorter than this are refused at the start of a trial: masking one letter, or a
/// short word, inside ordinary text reveals it (`***xit***d` gives `e` away).
pub(crate) const MIN_SECRET_BYTES: usize = 6;

/// Replaces every secret value in what the check's process and notebook left with `***`:
/// the output's last lines, the cell's source, exception and traceback, the texts kept for
/// consistency checks, the executed notebook and its HTML, and a summary made of those. The harness's own words (an exit code, a deadline, a setup
/// failure) are never rewritten. Texts with a secret lose their colours, so that no colour
/// code can split a secret in two and hide it from the mask.
pub(crate) fn redact<'a>(
    mut outcome: Outcome,
    secrets: impl Iterator<Item = &'a String>,
) -> Outcome {
    let secrets: Vec<&String> = secrets.filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return outcome;
    }
    let scrub = |text: &mut String| {
        *text = plain(text);
        for secret in &secrets {
            if text.contains(secret.as_str()) {
                *text = text.replace(secret.as_str(), "***");
            }
        }
    };
    if let Some(failure) = outcome.failure.as_mut() {
        if captured_summary(failure) {
            scrub(&mut failure.summary);
        }
        if let Some(tail) = failure.output_tail.as_mut() {
            scrub(tail);
        }
        if let Some(cell) = failure.cell.as_mut() {
            for text in [&mut cell.source_excerpt]
                .into_iter()
                .chain(cell.evalue.as_mut())
                .chain(cell.ename.as_mut())
                .chain(cell.traceback.as_mut())
            {
                scrub(text);
            }
        }
    }
    for cell in outcome.consistent.iter_mut().flatten() {
        scrub(&mut cell.source);
        scrub(&mut cell.text);
        if cell.truncated {
            mask_cut_secret(&mut cell.text, &secrets);
        }
    }
    for kept in outcome.artifact.iter().chain(&outcome.html) {
        redact_file(kept, &secrets);
    }
    outcome
}

/// `text` with every secret in `secrets` (empty ones have nothing to hide) replaced by `***`:
/// for the harness's own texts that carry a secret, such as a service's URL.
pub(crate) fn mask<'a>(text: &str, secrets: impl IntoIterator<Item = &'a String>) -> String {
    let mut text = text.to_owned();
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

/// Masks the beginning of a secret that `text`, cut at a size limit, ends with: the cut may
/// fall inside a secret, whose whole value the mask then no longer finds.
fn mask_cut_secret(text: &mut String, secrets: &[&String]) {
    for secret in secrets {
        let cut = (1..secret.len())
            .rev()
            .filter(|&n| secret.is_char_boundary(n))
            .find(|&n| text.ends_with(&secret[..n]));
        if let Some(n) = cut {
            text.truncate(text.len() - n);
            text.push_str("***");
        }
    }
}

/// Replaces every secret in the file at `path` (an executed notebook, its HTML) with `***`,
/// in each way the file may spell it.
pub(crate) fn redact_file(path: &std::path::Path, secrets: &[&String]) {
    let Ok(mut text) = std::fs::read_to_string(path) else {
        return;
    };
    let before = text.clone();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        for form in spellings(secret) {
            if text.contains(&form) {
                text = text.replace(&form, "***");
            }
        }
    }
    if text != before {
        let _ = crate::record::write_atomic(path, text.as_bytes());
    }
}

/// The ways a file may spell `secret`: as it is, as JSON escapes it (a quote, a backslash),
/// and either of those as HTML escapes it, with the entities of Python's `html.escape`,
/// of markupsafe (nbconvert's templates) and of nbconvert's ANSI filter (`&`, `<`, `>` only).
fn spellings(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned();
    let html = |text: &str, quote: &str, apostrophe: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', quote)
            .replace('\'', apostrophe)
    };
    let mut forms = Vec::new();
    for text in [secret.to_owned(), json] {
        forms.push(html(&text, "&quot;", "&#x27;"));
        forms.push(html(&text, "&#34;", "&#39;"));
        forms.push(html(&text, "\"", "'"));
        forms.push(text);
    }
    // The longest first: a form that holds another is masked whole.
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    forms.dedup();
    forms.retain(|form| !form.is_empty());
    forms
}

/// Whether the failure's summary is the check's own text (an exception, nbconvert's last
/// words, a GPU check's finding) rather than the harness's words about how it ended.
fn captured_summary(failure: &Failure) -> bool {
    match failure.kind {
        FailureKind::CellError
        | FailureKind::CellTimeout
        | FailureKind::KernelDied
        | FailureKind::NoSuchKernel
        | FailureKind::InvalidNotebook
        | FailureKind::GpuCheck
        | FailureKind::Inconsistent => true,
        FailureKind::ExitCode
        | FailureKind::Deadline
        | FailureKind::MissingTool
        | FailureKind::NothingTagged
        | FailureKind::Setup => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Category;

    #[test]
    fn the_harness_words_are_never_masked_and_colours_cannot_hide_a_secret() {
        let outcome = Outcome {
            failure: Some(Failure {
                kind: FailureKind::ExitCode,
                category: Category::Runtime,
                summary: "`sh check.sh` exited with code 3".into(),
                cell: None,
                exit_code: Some(3),
                output_tail: Some("the loader exited early\nkey ex\u{1b}[1mited\u{1b}[0m".into()),
                cause: None,
            }),
            ..Outcome::default()
        };
        let secret = "exited".to_owned();
        let failure = redact(outcome, [&secret].into_iter()).failure.unwrap();
        assert_eq!(failure.summary, "`sh check.sh` exited with code 3");
        assert_eq!(
            failure.output_tail.as_deref(),
            Some("the loader *** early\nkey ***")
        );
    }

    #[test]
    fn a_secret_cut_by_a_cells_size_limit_is_masked_too() {
        let cell = |text: &str, truncated: bool| crate::record::ConsistentCell {
            index: 0,
            id: None,
            source: "print(token)".into(),
            text: text.into(),
            truncated,
        };
        let outcome = Outcome {
            consistent: Some(vec![
                cell("token s3cr3t-token\ntoken s3cr3t-to", true),
                cell("ends with s3c", false),
            ]),
            ..Outcome::default()
        };
        let secret = "s3cr3t-token".to_owned();
        let cells = redact(outcome, [&secret].into_iter()).consistent.unwrap();
        assert_eq!(cells[0].text, "token ***\ntoken ***");
        // Whole, a text's end is no secret's beginning.
        assert_eq!(cells[1].text, "ends with s3c");
    }

    #[test]
    fn a_secret_is_masked_in_the_html_however_it_is_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let html = dir.path().join("failing.html");
        let secret = "a<b>&\"c'd".to_owned();
        std::fs::write(
            &html,
            "<pre>a&lt;b&gt;&amp;\"c'd</pre><p title=\"a&lt;b&gt;&amp;&quot;c&#x27;d\">\
             a&lt;b&gt;&amp;&#34;c&#39;d</p><script>{\"x\": \"a<b>&\\\"c'd\"}</script>",
        )
        .unwrap();
        let outcome = Outcome {
            html: Some(html.clone()),
            ..Outcome::default()
        };
        redact(outcome, [&secret].into_iter());
        assert_eq!(
            std::fs::read_to_string(&html).unwrap(),
            "<pre>***</pre><p title=\"***\">***</p><script>{\"x\": \"***\"}</script>"
        );
    }

    #[test]
    fn secrets_are_redacted_from_failures() {
        let outcome = Outcome {
            failure: Some(Failure {
                kind: FailureKind::CellError,
                category: Category::Runtime,
                summary: "token hunter2 rejected".into(),
                cell: None,
                exit_code: Some(1),
                output_tail: Some("using hunter2".into()),
                cause: None,
            }),
            ..Outcome::default()
        };
        let secret = "hunter2".to_owned();
        let failure = redact(outcome, [&secret].into_iter()).failure.unwrap();
        assert_eq!(failure.summary, "token *** rejected");
        assert_eq!(failure.output_tail.as_deref(), Some("using ***"));
    }
}
