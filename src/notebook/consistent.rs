//! The cells of an executed notebook that a consistency check compares: those carrying its
//! tag, with the text they printed. The main function is [`consistent_cells`].

use crate::record::{
    CONSISTENT_CELL_LIMIT, CONSISTENT_CELLS_MAX, CONSISTENT_TEXT_LIMIT, ConsistentCell,
};
use crate::sanitise::plain;
use serde_json::Value;

/// The cells of the executed `notebook` whose `metadata.tags` hold `tag`, in cell order, each
/// with its text: `text/plain` of its results and displays and its stdout and stderr, in output
/// order, each part ending with a newline, cut at [`CONSISTENT_CELL_LIMIT`] bytes and at what is
/// left of [`CONSISTENT_TEXT_LIMIT`]; at most [`CONSISTENT_CELLS_MAX`] cells. A cell's
/// index does not count the cell tagged `injected-parameters`, which only executions with
/// parameters have: the same cell has the same index in every execution.
pub(crate) fn consistent_cells(notebook: &Value, tag: &str) -> Vec<ConsistentCell> {
    let Some(cells) = notebook.get("cells").and_then(Value::as_array) else {
        return Vec::new();
    };
    let tagged = cells
        .iter()
        .filter(|cell| !has_tag(cell, INJECTED_PARAMETERS))
        .enumerate()
        .filter(|(_, cell)| has_tag(cell, tag));
    // A record over its read limit would fail every report of the run: all the cells share
    // one budget, and their number is bounded.
    let mut left = CONSISTENT_TEXT_LIMIT;
    let mut kept: Vec<ConsistentCell> = Vec::new();
    for (index, cell) in tagged {
        if kept.len() == CONSISTENT_CELLS_MAX {
            if let Some(last) = kept.last_mut() {
                last.truncated = true;
            }
            break;
        }
        let (text, truncated) = bounded(printed(cell), CONSISTENT_CELL_LIMIT.min(left));
        left -= text.len();
        let source =
            super::execution::excerpt(&multiline(cell.get("source").unwrap_or(&Value::Null)), 6);
        kept.push(ConsistentCell {
            index,
            id: cell.get("id").and_then(Value::as_str).map(str::to_owned),
            source: plain(&bounded(source, SOURCE_LIMIT).0),
            text: plain(&text),
            truncated,
        });
    }
    kept
}

/// The most bytes of a compared cell's source a record keeps, for messages.
const SOURCE_LIMIT: usize = 1024;

/// The tag of the cell papermill (and the runner) injects the parameters in.
const INJECTED_PARAMETERS: &str = "injected-parameters";

fn has_tag(cell: &Value, tag: &str) -> bool {
    cell.get("metadata")
        .and_then(|metadata| metadata.get("tags"))
        .and_then(Value::as_array)
        .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag)))
}

/// What `cell` printed, in output order.
fn printed(cell: &Value) -> String {
    let mut text = String::new();
    let outputs = cell.get("outputs").and_then(Value::as_array);
    for output in outputs.into_iter().flatten() {
        let part = match output.get("output_type").and_then(Value::as_str) {
            Some("stream") => output.get("text").map(multiline),
            Some("execute_result" | "display_data") => output
                .get("data")
                .and_then(|data| data.get("text/plain"))
                .map(multiline),
            _ => None,
        };
        if let Some(part) = part.filter(|part| !part.is_empty()) {
            text.push_str(&part);
            if !part.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    text
}

/// nbformat's multiline string: a string, or a list of lines.
fn multiline(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// `text` cut at `limit` bytes (at a character), and whether it was.
fn bounded(mut text: String, limit: usize) -> (String, bool) {
    if text.len() <= limit {
        return (text, false);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tagged_cells_keep_results_displays_and_streams_in_output_order() {
        let notebook = json!({"cells": [
            {"cell_type": "code", "id": "a", "metadata": {"tags": ["consistent"]},
             "source": ["x = 1\n", "x"], "outputs": [
                {"output_type": "stream", "name": "stdout", "text": ["one\n", "two"]},
                {"output_type": "display_data", "data": {"text/plain": "<Figure>", "image/png": "..."}},
                {"output_type": "stream", "name": "stderr", "text": "warn\n"},
                {"output_type": "execute_result", "data": {"text/plain": ["1"]}, "execution_count": 1},
            ]},
            {"cell_type": "code", "id": "b", "metadata": {"tags": ["other"]}, "source": "",
             "outputs": [{"output_type": "stream", "name": "stdout", "text": "not kept"}]},
            {"cell_type": "markdown", "metadata": {"tags": ["consistent"]}, "source": "# Title"},
        ]});
        let cells = consistent_cells(&notebook, "consistent");
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].index, 0);
        assert_eq!(cells[0].id.as_deref(), Some("a"));
        assert_eq!(cells[0].source, "x = 1\nx");
        assert_eq!(cells[0].text, "one\ntwo\n<Figure>\nwarn\n1\n");
        assert!(!cells[0].truncated);
        // A tagged cell without outputs compares as printing nothing.
        assert_eq!((cells[1].index, cells[1].id.as_deref()), (2, None));
        assert_eq!(cells[1].text, "");
        assert!(consistent_cells(&notebook, "missing").is_empty());
    }

    #[test]
    fn an_injected_parameters_cell_does_not_shift_the_indexes() {
        let tagged = json!({"cell_type": "code", "metadata": {"tags": ["consistent"]},
            "source": "x", "outputs": []});
        let injected = json!({"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
            "source": "# Parameters\nextra = 1\n", "outputs": []});
        let plain = json!({"cells": [{"cell_type": "code", "metadata": {}, "source": "",
            "outputs": []}, tagged.clone()]});
        let with_parameters = json!({"cells": [injected, {"cell_type": "code",
            "metadata": {}, "source": "", "outputs": []}, tagged]});
        assert_eq!(consistent_cells(&plain, "consistent")[0].index, 1);
        assert_eq!(consistent_cells(&with_parameters, "consistent")[0].index, 1);
    }

    #[test]
    fn many_large_cells_keep_a_record_readable() {
        // 200 tagged cells printing 64 KiB each, of newlines (each two bytes in JSON), with a
        // long source line: a record over its read limit fails every report of the run.
        let cell = json!({"cell_type": "code", "metadata": {"tags": ["t"]},
            "source": "x".repeat(100_000),
            "outputs": [{"output_type": "stream", "name": "stdout",
                         "text": "\n".repeat(CONSISTENT_CELL_LIMIT)}]});
        let notebook = json!({"cells": vec![cell; 200]});
        let cells = consistent_cells(&notebook, "t");
        assert!(!cells.is_empty());
        assert!(cells.iter().all(|c| c.source.len() <= 1100));
        assert!(cells.last().unwrap().truncated);
        let bytes = serde_json::to_vec(&cells).unwrap().len();
        assert!(
            (bytes as u64) < crate::fsx::RECORD.bytes / 2,
            "{bytes} bytes"
        );
    }

    #[test]
    fn a_cells_text_is_bounded_and_says_it_was_cut() {
        let long = "é".repeat(CONSISTENT_CELL_LIMIT);
        let notebook = json!({"cells": [{"cell_type": "code", "metadata": {"tags": ["t"]},
            "source": "", "outputs": [{"output_type": "stream", "name": "stdout", "text": long}]}]});
        let cell = &consistent_cells(&notebook, "t")[0];
        assert!(cell.truncated);
        assert!(cell.text.len() <= CONSISTENT_CELL_LIMIT);
    }
}
