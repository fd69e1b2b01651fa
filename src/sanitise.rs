//! Text from outside the harness (a notebook's exception, a command's output, an engine's
//! words) made safe to show. The main functions are [`plain`], for records and reports, and
//! [`for_terminal`], for what the harness prints.
//!
//! Such text can carry terminal control sequences that set the window title (OSC 0/2), write
//! the clipboard (OSC 52), clear the screen (`ESC [2J`, `ESC c`) or hide what follows.
//! [`plain`] removes every control sequence and control character but `\n` and `\t`;
//! [`for_terminal`] keeps plain SGR colour codes (`ESC [` digits and `;` `m`) as well, and
//! resets the colours at the end when the text left them set. A line rewritten with `\r` (a
//! progress bar) keeps the text after its last `\r`, so that nothing can be overwritten on a
//! terminal.

use crate::record::TrialRecord;
use crate::verdict::Failure;

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';
/// The C1 string terminator.
const ST: char = '\u{9c}';
/// The SGR code that resets colours and attributes.
const RESET: &str = "\u{1b}[0m";

/// `text` with every control sequence and control character removed, but `\n` and `\t`.
pub fn plain(text: &str) -> String {
    clean(text, false)
}

/// `text` as a terminal may show it: like [`plain`], but plain SGR colour codes are kept,
/// and a reset is added at the end when the text leaves a colour set.
pub fn for_terminal(text: &str) -> String {
    clean(text, true)
}

/// `failure` with each of its texts passed through `clean`.
pub fn failure(failure: &Failure, clean: fn(&str) -> String) -> Failure {
    let mut failure = failure.clone();
    failure.summary = clean(&failure.summary);
    if let Some(tail) = failure.output_tail.as_mut() {
        *tail = clean(tail);
    }
    if let Some(cell) = failure.cell.as_mut() {
        cell.source_excerpt = clean(&cell.source_excerpt);
        for text in [
            cell.ename.as_mut(),
            cell.evalue.as_mut(),
            cell.traceback.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            *text = clean(text);
        }
    }
    failure
}

/// Puts a record's free texts in [`plain`] form: its failure, its note (a GPU check's
/// finding), its image's labels (the image author's words), the reason of its expected
/// failure and its parameters' strings. The harness does this before it writes a record, and the reports again to records
/// read from disk (written by an older version, or by hand).
pub fn record(record: &mut TrialRecord) {
    if let Some(found) = &record.failure {
        record.failure = Some(failure(found, plain));
    }
    let image_labels = record
        .image
        .iter_mut()
        .flat_map(|image| image.labels.values_mut());
    let texts = record
        .note
        .iter_mut()
        .chain(record.artifact_note.iter_mut())
        .chain(image_labels)
        .chain(record.reused.iter_mut().flat_map(|reused| {
            // Read back from the result reuse store: outside text like the rest.
            [&mut reused.run_id, &mut reused.at, &mut reused.host]
        }))
        // The engine's name for its host is the engine's word, not ours.
        .chain(
            record
                .engine
                .iter_mut()
                .filter_map(|engine| engine.name.as_mut()),
        )
        .chain(
            record
                .expected
                .iter_mut()
                .map(|expected| &mut expected.reason),
        );
    let consistent = record
        .consistent
        .iter_mut()
        .flatten()
        .flat_map(|cell| [&mut cell.source, &mut cell.text]);
    let groups = record
        .consistency
        .iter_mut()
        .flat_map(|c| &mut c.groups)
        .flat_map(|group| group.executions.iter_mut().chain([&mut group.excerpt]));
    for text in texts.chain(consistent).chain(groups) {
        *text = plain(text);
    }
    record.parameters.values_mut().for_each(plain_strings);
}

/// Every string in `value`, keys of tables included, in [`plain`] form.
fn plain_strings(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) => *text = plain(text),
        Value::Array(items) => items.iter_mut().for_each(plain_strings),
        Value::Object(table) => {
            *table = std::mem::take(table)
                .into_iter()
                .map(|(key, mut item)| {
                    plain_strings(&mut item);
                    (plain(&key), item)
                })
                .collect();
        }
        _ => {}
    }
}

fn clean(text: &str, keep_colours: bool) -> String {
    let mut lines = Vec::new();
    // Whether a colour or attribute is set and not yet reset.
    let mut coloured = false;
    for line in text.split('\n') {
        // What a terminal would finally show of a line rewritten with `\r`.
        let line = line.trim_end_matches('\r');
        let line = line.rsplit_once('\r').map_or(line, |(_, last)| last);
        lines.push(clean_line(line, keep_colours, &mut coloured));
    }
    let mut out = lines.join("\n");
    if coloured {
        // Before any final newlines, so that the reset does not make a line of its own.
        out.insert_str(out.trim_end_matches('\n').len(), RESET);
    }
    out
}

/// One line without its control sequences; `coloured` follows the SGR codes it keeps.
fn clean_line(line: &str, keep_colours: bool, coloured: &mut bool) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' => out.push(c),
            ESC => match chars.peek().copied() {
                Some('[') => {
                    chars.next();
                    let sequence = control_sequence(&mut chars);
                    if keep_colours && is_sgr(&sequence) {
                        out.push(ESC);
                        out.push('[');
                        out.push_str(&sequence);
                        *coloured = !matches!(sequence.as_str(), "m" | "0m");
                    }
                }
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    chars.next();
                    skip_string(&mut chars);
                }
                // nF escapes (character sets and the like): intermediates, then a final.
                Some(' '..='/') => {
                    while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
                    chars.next_if(|c| ('0'..='~').contains(c));
                }
                // Two-character escapes: `ESC c` (reset), `ESC 7`, `ESC M`, ...
                Some('0'..='~') => {
                    chars.next();
                }
                _ => {}
            },
            // C1 introducers of a control sequence and of control strings.
            '\u{9b}' => {
                control_sequence(&mut chars);
            }
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The parameters, intermediates and final byte of a CSI sequence, its introducer already
/// read. A sequence cut short by any other character ends there.
fn control_sequence(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut sequence = String::new();
    while let Some(c) = chars.next_if(|c| (' '..='?').contains(c)) {
        sequence.push(c);
    }
    if let Some(c) = chars.next_if(|c| ('@'..='~').contains(c)) {
        sequence.push(c);
    }
    sequence
}

/// `ESC [` digits and `;`, then `m`: a colour or attribute, nothing else.
fn is_sgr(sequence: &str) -> bool {
    sequence
        .strip_suffix('m')
        .is_some_and(|params| params.chars().all(|c| c.is_ascii_digit() || c == ';'))
}

/// Skips an OSC, DCS, SOS, PM or APC string up to its terminator (BEL, `ESC \` or ST); the
/// end of the line ends it too, since its introducer is gone and nothing after it can be read
/// as part of it.
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            BEL | ST => return,
            ESC if chars.next_if_eq(&'\\').is_some() => return,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{for_terminal, plain};
    use rstest::rstest;

    #[rstest]
    #[case(
        "\u{1b}[31mZeroDivisionError\u{1b}[39m: division by zero",
        "ZeroDivisionError: division by zero"
    )]
    #[case("\u{1b}[1;32m----> \u{1b}[0m1 1/0", "----> 1 1/0")]
    #[case("\u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{1b}\\", "link")]
    #[case("plain text", "plain text")]
    #[case("ünïcode \u{1b}[0m✓", "ünïcode ✓")]
    #[case(
        "title\u{1b}]0;pwned\u{7} and \u{1b}]2;pwned\u{1b}\\ set",
        "title and  set"
    )]
    #[case("clip\u{1b}]52;c;cm0gLXJmIH4=\u{7}board", "clipboard")]
    #[case("\u{1b}[2J\u{1b}[H\u{1b}cclear", "clear")]
    #[case(
        "dcs\u{1b}Pq#0;2;0;0;0\u{1b}\\ apc\u{1b}_x\u{1b}\\ pm\u{1b}^y\u{9c}.",
        "dcs apc pm."
    )]
    #[case("c1\u{9b}2J \u{9d}0;t\u{7}\u{85}\u{80}end", "c1 end")]
    #[case(
        "bell\u{7} nul\u{0} bs\u{8} del\u{7f} tab\tnl\n",
        "bell nul bs del tab\tnl\n"
    )]
    #[case("charset\u{1b}(Bok \u{1b}7\u{1b}8", "charsetok ")]
    #[case("cut short \u{1b}]0;title", "cut short ")]
    #[case("osc\u{1b}]0;a\nnext line", "osc\nnext line")]
    #[case("crlf\r\nline", "crlf\nline")]
    #[case("10%\r50%\r100%\ndone\r", "100%\ndone")]
    #[case("hidden\r\u{1b}[8mshown", "shown")]
    fn removes_every_control_sequence(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(plain(input), expected);
    }

    #[rstest]
    #[case("\u{1b}[31mred\u{1b}[0m", "\u{1b}[31mred\u{1b}[0m")]
    #[case("\u{1b}[1;38;5;199mbold\u{1b}[m!", "\u{1b}[1;38;5;199mbold\u{1b}[m!")]
    #[case("\u{1b}[31mred\nline\n\n", "\u{1b}[31mred\nline\u{1b}[0m\n\n")]
    #[case(
        "\u{1b}]0;title\u{7}\u{1b}[2J\u{1b}c\u{1b}[31mE",
        "\u{1b}[31mE\u{1b}[0m"
    )]
    #[case("\u{1b}[38:5:1mcolon\u{1b}[?1049h\u{1b}[5n", "colon")]
    #[case("no colour", "no colour")]
    fn terminals_keep_colours_only(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(for_terminal(input), expected);
    }

    #[test]
    fn records_keep_no_control_sequence_in_any_free_text() {
        use crate::record::{Expectation, TrialImage, TrialRecord};
        use crate::verdict::{Category, Failure, FailureKind, Status};
        let hostile = "x\u{1b}]0;title\u{7}\u{1b}[31my";
        let mut record = TrialRecord {
            schema: 1,
            run_id: "r".into(),
            trial: "a::b::cmd::c".into(),
            runtime: "a".into(),
            machine: "b".into(),
            check: "cmd::c".into(),
            executor: "docker".into(),
            tags: vec![],
            parameters: [("p".to_owned(), serde_json::json!({ hostile: [hostile] }))].into(),
            status: Status::ExpectedFailure,
            failure: Some(Failure {
                kind: FailureKind::ExitCode,
                category: Category::Runtime,
                summary: hostile.into(),
                cell: None,
                exit_code: Some(1),
                output_tail: Some(hostile.into()),
                cause: None,
            }),
            expected: Some(Expectation {
                reason: hostile.into(),
                matches: None,
            }),
            started_at: "2026-12-01T00:00:00Z".into(),
            seconds: 1.0,
            setup: vec![],
            cells: vec![],
            artifact: None,
            html: None,
            artifact_note: Some(hostile.into()),
            gpus: vec![],
            note: Some(hostile.into()),
            image: Some(TrialImage {
                reference: "img".into(),
                id: "sha256:0".into(),
                digest: None,
                labels: [("l".to_owned(), hostile.to_owned())].into(),
            }),
            resources: None,
            host: "h".into(),
            reused: Some(crate::record::Reused {
                run_id: hostile.into(),
                at: hostile.into(),
                host: hostile.into(),
                seconds: 1.0,
            }),
            engine: None,
            consistent: None,
            consistency: None,
            services: Vec::new(),
        };
        super::record(&mut record);
        let json = serde_json::to_string(&record).unwrap();
        assert!(
            !json.contains("\\u001b") && !json.contains("\\u0007"),
            "{json}"
        );
        assert_eq!(json.matches("\"xy\"").count(), 11, "{json}");
    }

    #[rstest]
    #[case("\u{1b}[31mred")]
    #[case("x\u{1b}]52;c;AAAA\u{7}\u{1b}[1my\r\nz")]
    fn cleaning_twice_changes_nothing(#[case] input: &str) {
        assert_eq!(for_terminal(&for_terminal(input)), for_terminal(input));
        assert_eq!(plain(&plain(input)), plain(input));
        assert_eq!(plain(&for_terminal(input)), plain(input));
    }
}
