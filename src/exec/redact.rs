//! Redaction: secret values never reach a record, a report or an artifact. The main function
//! is [`redact`], which the Docker executor applies to every outcome (runtimes with secrets are
//! Docker runtimes today); it lives here so that any executor can.

use super::Outcome;

/// Replaces every secret value in the outcome's texts with `***`.
pub(crate) fn redact<'a>(
    mut outcome: Outcome,
    secrets: impl Iterator<Item = &'a String>,
) -> Outcome {
    let secrets: Vec<&String> = secrets.filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return outcome;
    }
    let scrub = |text: &mut String| {
        for secret in &secrets {
            if text.contains(secret.as_str()) {
                *text = text.replace(secret.as_str(), "***");
            }
        }
    };
    if let Some(failure) = outcome.failure.as_mut() {
        scrub(&mut failure.summary);
        if let Some(tail) = failure.output_tail.as_mut() {
            scrub(tail);
        }
        if let Some(cell) = failure.cell.as_mut() {
            for text in [&mut cell.source_excerpt]
                .into_iter()
                .chain(cell.evalue.as_mut())
                .chain(cell.traceback.as_mut())
            {
                scrub(text);
            }
        }
    }
    if let Some(artifact) = &outcome.artifact
        && let Ok(mut text) = std::fs::read_to_string(artifact)
    {
        let before = text.clone();
        scrub(&mut text);
        if text != before {
            let _ = crate::record::write_atomic(artifact, text.as_bytes());
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::FailureKind;
    use crate::verdict::{Category, Failure};

    #[test]
    fn secrets_are_redacted_from_failures() {
        let outcome = Outcome {
            failure: Some(Failure {
                kind: FailureKind::ExitCode,
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
