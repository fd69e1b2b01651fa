//! Normalising a cell's text before it is compared: line endings and trailing whitespace, the
//! declared sanitizers (regex replacements, in order), and numbers compared within a tolerance.

use crate::record::Sanitizer;
use regex::Regex;
use std::sync::LazyLock;

/// The declared sanitizers, compiled once per comparison.
pub(crate) struct Normaliser {
    sanitizers: Vec<(Regex, String)>,
    tolerance: f64,
}

/// A sanitizer whose regex does not compile (a record edited by hand: config refuses one).
#[derive(Debug, thiserror::Error)]
#[error("sanitizer regex `{regex}` is invalid")]
pub(crate) struct BadSanitizer {
    regex: String,
    #[source]
    error: regex::Error,
}

impl Normaliser {
    /// A normaliser applying `sanitizers`, comparing numbers within the relative `tolerance`.
    pub(crate) fn new(
        sanitizers: &[Sanitizer],
        tolerance: f64,
    ) -> Result<Normaliser, BadSanitizer> {
        let sanitizers = sanitizers
            .iter()
            .map(|s| {
                Regex::new(&s.regex)
                    .map(|regex| (regex, s.replace.clone()))
                    .map_err(|error| BadSanitizer {
                        regex: s.regex.clone(),
                        error,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Normaliser {
            sanitizers,
            tolerance,
        })
    }

    /// `text` with `\r\n` as `\n` and a lone `\r` overwriting its line as a terminal and
    /// Jupyter show it (a progress bar: its last state only, however many it printed), each
    /// sanitizer applied in order, then every line without its trailing whitespace and the
    /// text without trailing empty lines.
    pub(crate) fn normalise(&self, text: &str) -> String {
        let mut text = overwritten(&text.replace("\r\n", "\n"));
        for (regex, replace) in &self.sanitizers {
            if let std::borrow::Cow::Owned(replaced) = regex.replace_all(&text, replace.as_str()) {
                text = replaced;
            }
        }
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        let kept = lines
            .iter()
            .rposition(|line| !line.is_empty())
            .map_or(0, |last| last + 1);
        lines[..kept].join("\n")
    }

    /// Whether two normalised texts agree: equal, or (with a tolerance) equal but for numbers
    /// within it.
    pub(crate) fn agree(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        if self.tolerance == 0.0 {
            return false;
        }
        let (a, b) = (tokens(a), tokens(b));
        a.len() == b.len()
            && a.iter().zip(&b).all(|pair| match pair {
                (Token::Number(x), Token::Number(y)) => close(*x, *y, self.tolerance),
                (Token::Text(x), Token::Text(y)) => x == y,
                _ => false,
            })
    }
}

/// `text` with each line as it shows once every `\r` in it has sent the cursor back to the
/// line's start, the text after it overwriting what was there.
fn overwritten(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_owned();
    }
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            let mut shown: Vec<char> = Vec::new();
            for part in line.split('\r') {
                for (i, c) in part.chars().enumerate() {
                    match shown.get_mut(i) {
                        Some(at) => *at = c,
                        None => shown.push(c),
                    }
                }
            }
            shown.into_iter().collect()
        })
        .collect();
    lines.join("\n")
}

/// Whether `x` and `y` differ by at most `tolerance` relative to the larger, or by at most
/// `tolerance` absolutely (for values near 0, where a relative tolerance means nothing). An
/// infinity or `nan` is close to itself only.
fn close(x: f64, y: f64, tolerance: f64) -> bool {
    if x == y || (x.is_nan() && y.is_nan()) {
        return true;
    }
    // Else `inf` would be within any relative tolerance of every number (`inf <= t * inf`).
    if !x.is_finite() || !y.is_finite() {
        return false;
    }
    let difference = (x - y).abs();
    difference <= tolerance || difference <= tolerance * x.abs().max(y.abs())
}

#[derive(Debug, PartialEq)]
enum Token<'a> {
    Number(f64),
    Text(&'a str),
}

/// A decimal number as Python prints them: sign, digits, fraction, exponent; `nan` and `inf`.
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf\b|nan\b)")
        .expect("the number pattern compiles")
});

/// `text` as floats and the text between them. Integers stay text, compared exactly: the
/// tolerance is for floats, and an int printed as a float (`3` and `3.0`, a changed dtype) is a
/// difference. Digits that go on a word (`float64`, a hex id) stay text too.
fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut at = 0;
    for found in NUMBER.find_iter(text) {
        let in_word = text[..found.start()]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphabetic() || c == '_');
        let integer = !found.as_str().contains(['.', 'e', 'E', 'i', 'n']);
        if in_word || integer {
            continue;
        }
        let Ok(number) = found.as_str().parse::<f64>() else {
            continue;
        };
        if found.start() > at {
            tokens.push(Token::Text(&text[at..found.start()]));
        }
        tokens.push(Token::Number(number));
        at = found.end();
    }
    if at < text.len() {
        tokens.push(Token::Text(&text[at..]));
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn normaliser(sanitizers: &[(&str, &str)], tolerance: f64) -> Normaliser {
        let sanitizers: Vec<Sanitizer> = sanitizers
            .iter()
            .map(|(regex, replace)| Sanitizer {
                regex: (*regex).into(),
                replace: (*replace).into(),
            })
            .collect();
        Normaliser::new(&sanitizers, tolerance).unwrap()
    }

    #[rstest]
    #[case("a\r\nb\r\n", "a\nb")]
    #[case("a  \nb\t\n\n\n", "a\nb")]
    // A carriage return overwrites its line: a progress bar compares by its last state.
    #[case("a\rb", "b")]
    #[case("10%\r 50%\r100%\ndone\n", "100%\ndone")]
    #[case("abc\rX\r", "Xbc")]
    #[case("  lead stays\n", "  lead stays")]
    #[case("", "")]
    fn line_endings_and_trailing_whitespace_are_noise(#[case] text: &str, #[case] normal: &str) {
        assert_eq!(normaliser(&[], 0.0).normalise(text), normal);
    }

    #[test]
    fn sanitizers_apply_in_order_with_groups() {
        let n = normaliser(
            &[
                (r"\d{4}-\d{2}-\d{2}T[0-9:.]+", "<TIMESTAMP>"),
                (r"id=(\w)\w*", "id=$1…"),
                ("<TIMESTAMP>", "<T>"),
            ],
            0.0,
        );
        assert_eq!(
            n.normalise("at 2026-12-02T09:16:50.123456 id=abcdef\n"),
            "at <T> id=a…"
        );
    }

    #[rstest]
    #[case("0.30000000000000004", "0.3", 1e-9, true)]
    #[case("0.30000000000000004", "0.3", 0.0, false)]
    #[case("sum = 1.0000001e6 (n=3)", "sum = 1.0000002e6 (n=3)", 1e-6, true)]
    #[case("sum = 1.0001e6", "sum = 1.0002e6", 1e-6, false)]
    // Near 0 the tolerance is an absolute floor: 1e-17 and -2e-17 are both "zero".
    #[case("[1e-17, 2.0]", "[-2e-17, 2.0]", 1e-9, true)]
    #[case("[1e-3, 2.0]", "[0.0, 2.0]", 1e-9, false)]
    // Text around numbers must be equal; a number is never equal to text.
    #[case("mean 1.0", "median 1.0", 1e-3, false)]
    #[case("n=3", "n=x", 1e9, false)]
    #[case("3 items", "3 items extra", 1e-3, false)]
    #[case("nan", "nan", 1e-9, true)]
    #[case("0.5", "0.5", 0.0, true)]
    // An infinity equals only itself: no finite number is within a tolerance of it.
    #[case("inf", "1.0", 1e-9, false)]
    #[case("inf", "-inf", 1e-9, false)]
    #[case("[inf, 2.0]", "[inf, 2.0000000001]", 1e-9, true)]
    #[case("nan", "inf", 1e-9, false)]
    // The tolerance is for floats: an int printed as a float is a changed dtype, not noise,
    // and integers (counts, shapes, ids) are compared exactly.
    #[case("3", "3.0", 1e-9, false)]
    #[case("[1 2 3]", "[1. 2. 3.]", 1e-9, false)]
    #[case("rows: 1000000", "rows: 1000001", 1e-3, false)]
    #[case("1e+16", "10000000000000002.0", 1e-9, true)]
    // Digits inside a word are part of it: `float64`, hex ids.
    #[case("dtype float64", "dtype float32", 1.0, false)]
    #[case("id ab7e1c", "id ab070c", 1e-9, false)]
    #[case("np.float64(0.30000000000000004)", "np.float64(0.3)", 1e-9, true)]
    #[case("x = -1.5", "x = 1.5", 1e-9, false)]
    #[case("x = -0.0", "x = 0.0", 1e-9, true)]
    #[case("(1.5+2.0000000001j)", "(1.5+2.0j)", 1e-9, true)]
    fn numbers_agree_within_the_tolerance_only(
        #[case] a: &str,
        #[case] b: &str,
        #[case] tolerance: f64,
        #[case] agree: bool,
    ) {
        assert_eq!(normaliser(&[], tolerance).agree(a, b), agree, "{a} vs {b}");
    }

    #[test]
    fn an_invalid_regex_is_an_error_naming_it() {
        let error = Normaliser::new(
            &[Sanitizer {
                regex: "(".into(),
                replace: String::new(),
            }],
            0.0,
        )
        .err()
        .unwrap();
        assert_eq!(error.to_string(), "sanitizer regex `(` is invalid");
    }
}
