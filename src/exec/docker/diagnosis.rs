//! Diagnosis: what a failed container trial means, said so a user can act on it. The main
//! function is [`missing_tool`], which recognises an image that lacks what every check needs.

use crate::error::EngineError;
use crate::record::Category;

/// What a container lacks, recognised from an exec's output, said so a user can fix it.
pub(crate) fn missing_tool(
    output: &str,
    exit_code: Option<i64>,
    python: &str,
    image: &str,
) -> Option<String> {
    if output.contains("exec: \"timeout\"") {
        return Some(format!(
            "image `{image}` has no `timeout` command (GNU coreutils), which every check runs under inside the container"
        ));
    }
    let no_python = output.contains(&format!("failed to run command '{python}'"))
        || output.contains(&format!("exec: \"{python}\""));
    if no_python
        || (exit_code == Some(127) && output.contains(python) && output.contains("No such file"))
    {
        return Some(format!(
            "image `{image}` has no `{python}` (install Python in the image, or set the runtime's `python` to its interpreter)"
        ));
    }
    // What a runner executes notebooks with: nbconvert brings them all.
    for module in ["nbclient", "nbformat", "jupyter_client", "nbconvert"] {
        if output.contains(&format!("No module named '{module}'"))
            || output.contains(&format!("No module named {module}"))
        {
            return Some(format!(
                "`{python}` in image `{image}` has no {module} (install jupyter-nbconvert, which brings it, or `pip install nbconvert ipykernel`, in the image)"
            ));
        }
    }
    None
}

/// The category of a trial that an engine error ended: an image problem is the runtime's.
pub(super) fn category_of(error: &EngineError) -> Category {
    match error {
        EngineError::ImageMissing { .. }
        | EngineError::Pull { .. }
        | EngineError::Build { .. }
        | EngineError::Earlier { image: true, .. } => Category::Runtime,
        _ => Category::Infrastructure,
    }
}

/// An I/O error met while doing `operation` for `target`, as an engine error.
pub(super) fn io_error(
    operation: &'static str,
    target: &str,
    error: std::io::Error,
) -> EngineError {
    EngineError::Operation {
        operation,
        target: target.to_owned(),
        error: bollard::errors::Error::IOError { err: error },
    }
}

/// Why a check failed that the container itself knows: it stopped, or the OOM killer acted.
/// `memory` is the container's limit in bytes.
pub(super) fn after_failure_note(
    running: bool,
    oom_kills: u64,
    memory: Option<i64>,
) -> Option<String> {
    if !running {
        Some("the container stopped while the check ran: it was killed from outside, or by the engine".to_owned())
    } else if oom_kills > 0 {
        let limit = memory
            .map(|m| format!(" of {} MiB", m / (1024 * 1024)))
            .unwrap_or_default();
        Some(format!(
            "the container hit its memory limit{limit}: the OOM killer ended {oom_kills} process(es); raise `memory`, or use less"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        "OCI runtime exec failed: exec failed: unable to start container process: exec: \"timeout\": executable file not found in $PATH",
        Some(126),
        "no `timeout` command"
    )]
    #[case(
        "timeout: failed to run command 'python3': No such file or directory",
        Some(127),
        "has no `python3`"
    )]
    #[case(
        "/usr/bin/python3: No module named nbconvert",
        Some(1),
        "has no nbconvert"
    )]
    #[case(
        "ModuleNotFoundError: No module named 'nbclient'",
        Some(1),
        "has no nbclient"
    )]
    fn recognises_what_an_image_lacks(
        #[case] output: &str,
        #[case] code: Option<i64>,
        #[case] expected: &str,
    ) {
        let message = missing_tool(output, code, "python3", "img").unwrap();
        assert!(message.contains(expected), "{message}");
    }

    #[test]
    fn an_ordinary_failure_is_not_a_missing_tool() {
        assert_eq!(
            missing_tool(
                "ZeroDivisionError: division by zero",
                Some(1),
                "python3",
                "img"
            ),
            None
        );
    }

    #[rstest]
    #[case(false, 0, None, Some("the container stopped while the check ran"))]
    #[case(true, 2, Some(64 * 1024 * 1024), Some("memory limit of 64 MiB: the OOM killer ended 2 process(es)"))]
    #[case(true, 0, Some(64 * 1024 * 1024), None)]
    fn a_failure_says_what_the_container_went_through(
        #[case] running: bool,
        #[case] oom_kills: u64,
        #[case] memory: Option<i64>,
        #[case] expected: Option<&str>,
    ) {
        let note = after_failure_note(running, oom_kills, memory);
        match expected {
            Some(part) => assert!(note.as_deref().unwrap_or("").contains(part), "{note:?}"),
            None => assert_eq!(note, None),
        }
    }
}
