//! Name suggestions for near-misses, and the wildcard patterns rules are written in.

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// ` (did you mean `x`?)`, or nothing.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    nearest(name, candidates)
        .map(|candidate| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Matches `text` against a pattern where `*` stands for any run of characters (`/` and `::`
/// included) and `?` for one character. Case-sensitive.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("h10", &["cpu", "h100", "a100"], Some("h100"))]
    #[case("pre-merg", &["pre-merge", "nightly"], Some("pre-merge"))]
    #[case("torch", &["tensorflow", "jax"], None)]
    #[case("x", &["cpu"], None)]
    fn suggests_only_near_misses(
        #[case] name: &str,
        #[case] candidates: &[&str],
        #[case] expected: Option<&str>,
    ) {
        assert_eq!(nearest(name, candidates.iter().copied()), expected);
    }

    #[rstest]
    #[case("*", "anything::at/all", true)]
    #[case("nb::numpy/*", "nb::numpy/arrays", true)]
    #[case("nb::numpy/*", "nb::smoke", false)]
    #[case("*H100*", "NVIDIA H100 80GB HBM3", true)]
    #[case("a?c", "abc", true)]
    #[case("a?c", "ac", false)]
    #[case("cpu", "cpu-large", false)]
    #[case("*::cpu::*", "rt::cpu::cmd::x", true)]
    fn wildcards(#[case] pattern: &str, #[case] text: &str, #[case] expected: bool) {
        assert_eq!(wildcard_match(pattern, text), expected);
    }
}
