//! `parameters = { ... }` on a runtime, a machine or an `[[overrides]]` entry: names that can
//! be assigned in a Python cell, and values papermill can write.

use super::compiler::{Compiler, key_part, shown};
use crate::config::matrix::{BUILTIN_PREFIX, Parameters};
use crate::config::raw::RawParameters;
use serde_json::Value;

/// Python's hard keywords: assigning to one is a syntax error. Soft keywords (`match`,
/// `case`, `type`, `_`) are ordinary names.
const PYTHON_KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

impl Compiler {
    /// The parameters at `key` (`runtimes.x`, `machines.y`, `overrides[0]`), each name and
    /// value checked; a bad one is a problem naming its key and is left out.
    pub(super) fn parameters(&mut self, key: &str, raw: &RawParameters) -> Parameters {
        let mut parameters = Parameters::new();
        for (name, value) in raw {
            let name_key = format!("{key}.parameters.{}", key_part(name));
            if let Some(problem) = name_problem(name) {
                self.problem(&name_key, problem);
                continue;
            }
            match json_value(value) {
                Ok(value) => {
                    parameters.insert(name.clone(), value);
                }
                Err((path, problem)) => self.problem(format!("{name_key}{path}"), problem),
            }
        }
        parameters
    }
}

/// Why `name` cannot be a parameter: it must be assignable in a Python cell, and not be a
/// built-in's.
fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
        Some(format!(
            "parameter name `{}` is not a Python identifier (use ASCII letters, digits and `_`, not starting with a digit)",
            shown(name)
        ))
    } else if PYTHON_KEYWORDS.contains(&name) {
        Some(format!(
            "parameter name `{name}` is a Python keyword, which cannot be assigned (rename it)"
        ))
    } else if name.starts_with(BUILTIN_PREFIX) {
        Some(format!(
            "parameter name `{name}` starts with `{BUILTIN_PREFIX}`, which is reserved for the built-in parameters"
        ))
    } else {
        None
    }
}

/// `value` as the runner is given it; or, for a value papermill cannot write, the key path
/// below the parameter (`.a[2]`) and why.
fn json_value(value: &toml::Value) -> Result<Value, (String, String)> {
    Ok(match value {
        toml::Value::String(text) => Value::String(text.clone()),
        toml::Value::Integer(number) => Value::from(*number),
        toml::Value::Boolean(flag) => Value::Bool(*flag),
        toml::Value::Float(number) => match serde_json::Number::from_f64(*number) {
            Some(number) => Value::Number(number),
            None => {
                let written = if number.is_nan() {
                    "nan".to_owned()
                } else {
                    number.to_string()
                };
                return Err((
                    String::new(),
                    format!(
                        "`{written}` cannot be a parameter value: only finite floats can be (write it as a string and convert it in the notebook)"
                    ),
                ));
            }
        },
        toml::Value::Datetime(datetime) => {
            return Err((
                String::new(),
                format!(
                    "the date-time {datetime} cannot be a parameter value: papermill has no date type (quote it, \"{datetime}\", and parse it in the notebook)"
                ),
            ));
        }
        toml::Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    json_value(item).map_err(|(path, why)| (format!("[{i}]{path}"), why))
                })
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => Value::Object(
            table
                .iter()
                .map(|(name, item)| {
                    json_value(item)
                        .map(|item| (name.clone(), item))
                        .map_err(|(path, why)| (format!(".{}{path}", key_part(name)), why))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(text: &str) -> (Parameters, Vec<String>) {
        let raw: RawParameters = toml::from_str(text).unwrap();
        let mut c = Compiler::for_tests();
        let parameters = c.parameters("runtimes.r", &raw);
        let problems = c
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        (parameters, problems)
    }

    #[test]
    fn every_toml_value_but_dates_and_non_finite_floats_becomes_json() {
        let (parameters, problems) = compile(
            r#"
            text = "a \"b\"\n"
            count = -3
            rate = 0.5
            whole = 2.0
            flag = true
            list = [1, "two", [3.5]]
            table = { b = 1, a = { c = false } }
            "#,
        );
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            Value::Object(parameters.into_iter().collect()),
            json!({
                "text": "a \"b\"\n", "count": -3, "rate": 0.5, "whole": 2.0, "flag": true,
                "list": [1, "two", [3.5]], "table": {"a": {"c": false}, "b": 1},
            })
        );
        // A float stays a float for the runner: 2.0, not 2.
        assert_eq!(compile("whole = 2.0").0["whole"].to_string(), "2.0");
    }

    #[test]
    fn bad_names_and_values_name_their_key() {
        let (parameters, problems) = compile(
            r#"
            1st = 1
            "has-dash" = 1
            class = 1
            runtime_matrix_gpus = 8
            when = 2026-01-01T00:00:00Z
            nested = { ok = 1, deep = [1, nan] }
            big = inf
            fine_name = 1
            "#,
        );
        assert_eq!(
            problems,
            [
                "runtimes.r.parameters.1st: parameter name `1st` is not a Python identifier (use ASCII letters, digits and `_`, not starting with a digit)",
                "runtimes.r.parameters.big: `inf` cannot be a parameter value: only finite floats can be (write it as a string and convert it in the notebook)",
                "runtimes.r.parameters.class: parameter name `class` is a Python keyword, which cannot be assigned (rename it)",
                "runtimes.r.parameters.has-dash: parameter name `has-dash` is not a Python identifier (use ASCII letters, digits and `_`, not starting with a digit)",
                "runtimes.r.parameters.nested.deep[1]: `nan` cannot be a parameter value: only finite floats can be (write it as a string and convert it in the notebook)",
                "runtimes.r.parameters.runtime_matrix_gpus: parameter name `runtime_matrix_gpus` starts with `runtime_matrix_`, which is reserved for the built-in parameters",
                "runtimes.r.parameters.when: the date-time 2026-01-01T00:00:00Z cannot be a parameter value: papermill has no date type (quote it, \"2026-01-01T00:00:00Z\", and parse it in the notebook)",
            ]
        );
        assert_eq!(parameters.keys().collect::<Vec<_>>(), ["fine_name"]);
    }

    #[test]
    fn soft_keywords_and_underscores_are_names() {
        let (parameters, problems) = compile("match = 1\n_private = 2\ntype = 3\nx9 = 4");
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(parameters.len(), 4);
    }
}
