//! Tracebacks from IPython are coloured with ANSI escapes; reports want plain text.

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ST`, and
/// two-character escapes) from `text`.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;
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
    fn strips_escapes(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(strip_ansi(input), expected);
    }
}
