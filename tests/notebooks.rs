//! The corpus of odd notebooks (`fixtures/odd-notebooks`, made by its `generate.py`): plain
//! nbconvert and runtime-matrix side by side on every file, on the host and in the base image,
//! failing on any disagreement. With bad files in the matrix, `--list` still lists every trial,
//! the reports are complete, and an `[[exclude]]` drops a bad file's trial.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{cache, ensure_base_image, fixtures, harness, output, records};

/// The matrix's runtimes, each with the place plain nbconvert's verdict is measured for it.
const RUNTIMES: [(&str, &str); 2] = [("host", "host"), ("debian", "docker")];

fn corpus() -> PathBuf {
    fixtures().join("odd-notebooks")
}

fn matrix() -> PathBuf {
    fixtures().join("matrices/odd_notebooks.toml")
}

/// `verdicts.json`'s cases, by file name.
fn manifest() -> BTreeMap<String, Value> {
    let path = corpus().join("verdicts.json");
    let manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    manifest["files"]
        .as_object()
        .unwrap_or_else(|| panic!("{} has no `files`", path.display()))
        .iter()
        .map(|(file, case)| (file.clone(), case.clone()))
        .collect()
}

fn trial(runtime: &str, file: &str) -> String {
    format!(
        "{runtime}::cpu::nb::{}",
        file.strip_suffix(".ipynb").unwrap()
    )
}

/// Every trial the matrix must have: each file on each runtime.
fn every_trial(files: &BTreeMap<String, Value>) -> BTreeSet<String> {
    RUNTIMES
        .iter()
        .flat_map(|(runtime, _)| files.keys().map(|file| trial(runtime, file)))
        .collect()
}

/// The trial names `--list` printed (`[kind] name: test`).
fn listed(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(|line| {
            line.split_once("] ")
                .map_or(line, |(_, name)| name)
                .to_owned()
        })
        .collect()
}

/// The base image's name, as the matrix declares it.
fn debian_image() -> String {
    let text = std::fs::read_to_string(matrix()).unwrap();
    let config: toml::Value = toml::from_str(&text).unwrap();
    config["runtimes"]["debian"]["image"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_corpus_is_what_its_script_makes() {
    let made = tempfile::tempdir().unwrap();
    let status = Command::new("python3")
        .arg(corpus().join("generate.py"))
        .arg(made.path())
        .status()
        .expect("python3 runs");
    assert!(status.success(), "generate.py failed");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".ipynb") || name == "verdicts.json")
            .collect()
    };
    let committed = names(&corpus());
    assert_eq!(names(made.path()), committed);
    for name in &committed {
        assert!(
            std::fs::read(made.path().join(name)).unwrap()
                == std::fs::read(corpus().join(name)).unwrap(),
            "{name} differs from what generate.py makes: run it and commit the result"
        );
    }
    // Every file has its verdicts, and the corpus holds each kind of file.
    let files = manifest();
    let notebooks: BTreeSet<String> = committed
        .into_iter()
        .filter(|name| name.ends_with(".ipynb"))
        .collect();
    assert_eq!(files.keys().cloned().collect::<BTreeSet<_>>(), notebooks);
    let groups: BTreeSet<&str> = files
        .values()
        .map(|case| case["group"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        BTreeSet::from([
            "invalid",
            "name",
            "not-a-notebook",
            "repairable",
            "tolerated",
            "upgradable",
            "valid"
        ])
    );
}

#[test]
fn listing_the_corpus_lists_every_trial() {
    let files = manifest();
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(&mut harness(&matrix(), out.path(), "list", &["--list"]));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(listed(&stdout), every_trial(&files), "{stderr}");
    // So does `plan`.
    let (code, stdout, stderr) = output(
        support::runtime_matrix()
            .args(["plan", "--format", "json", "--config"])
            .arg(matrix()),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let planned: BTreeSet<String> = plan["plan"]["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(planned, every_trial(&files));
    // Names that need quoting select their trial exactly, as cargo-nextest selects it.
    for file in [
        "-leading-dash.ipynb",
        "dollar $HOME.ipynb",
        "[brackets].ipynb",
    ] {
        let name = trial("host", file);
        let exact = format!("[host] {name}");
        let (code, stdout, stderr) = output(&mut harness(
            &matrix(),
            out.path(),
            "list",
            &["--list", "--exact", &exact],
        ));
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        assert_eq!(listed(&stdout), BTreeSet::from([name]), "{stdout}");
    }
}

#[test]
fn an_exclude_drops_a_bad_files_trial() {
    let files = manifest();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("matrix.toml");
    let text = std::fs::read_to_string(matrix()).unwrap().replace(
        "\"../",
        &format!("\"{}/../", fixtures().join("matrices").display()),
    );
    std::fs::write(
        &config,
        format!(
            "{text}\n[[exclude]]\ncheck = \"nb::binary\"\nreason = \"bytes, not a notebook\"\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let (code, stdout, stderr) = output(&mut harness(&config, &out, "exclude", &["--list"]));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let excluded: BTreeSet<String> = RUNTIMES
        .iter()
        .map(|(runtime, _)| trial(runtime, "binary.ipynb"))
        .collect();
    let mut expected = every_trial(&files);
    expected.retain(|name| !excluded.contains(name));
    assert_eq!(listed(&stdout), expected);

    // A run reports it as excluded, with the reason.
    let (code, stdout, stderr) = output(&mut harness(
        &config,
        &out,
        "exclude",
        &["--exact", "[host] host::cpu::nb::valid_4_5"],
    ));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("exclude/report.json")).unwrap()).unwrap();
    let reported: BTreeMap<String, String> = report["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for name in &excluded {
        assert_eq!(
            reported.get(name).map(String::as_str),
            Some("excluded by matrix.toml: bytes, not a notebook"),
            "{report}"
        );
    }
}

/// Plain nbconvert's verdict on one file: its exit code, and what it said (see
/// `nbconvert-verdicts.sh`).
#[derive(Debug)]
struct Plain {
    code: i32,
    says: String,
}

/// Parses the lines of `nbconvert-verdicts.sh`.
fn plain_verdicts(place: &str, stdout: &[u8]) -> BTreeMap<String, Plain> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (Some(file), Some(code), Some(says)) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("nbconvert-verdicts.sh ({place}) printed `{line}`");
            };
            let code = code.parse().unwrap_or_else(|_| panic!("{place}: `{line}`"));
            (
                file.to_owned(),
                Plain {
                    code,
                    says: says.to_owned(),
                },
            )
        })
        .collect()
}

/// Plain nbconvert in the base image: one container, the corpus sent in as a tar on stdin (no
/// bind mount, so a remote engine would do too), one loop over the files.
fn nbconvert_in_container(image: &str) -> BTreeMap<String, Plain> {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(corpus())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar runs");
    let output = Command::new("docker")
        .args(["run", "-i", "--rm", "--network", "none", image, "sh", "-c"])
        .arg("mkdir /corpus && tar -x -C /corpus && exec sh /corpus/nbconvert-verdicts.sh /corpus")
        .stdin(tar.stdout.take().unwrap())
        .output()
        .expect("docker runs");
    assert!(tar.wait().unwrap().success(), "tar failed");
    assert!(
        output.status.success(),
        "the loop in the container failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    plain_verdicts("docker", &output.stdout)
}

/// The virtualenv runtime-matrix provisioned for runtime `host`: `python3` with nbconvert and
/// ipykernel from pip and nothing else, in the shared cache.
fn host_virtualenv() -> PathBuf {
    let version = Command::new("python3")
        .args(["-c", "import platform; print(platform.python_version())"])
        .output()
        .expect("python3 runs");
    let prefix = format!("py{}-", String::from_utf8_lossy(&version.stdout).trim());
    let venvs = cache().join("venvs");
    std::fs::read_dir(&venvs)
        .unwrap_or_else(|e| panic!("{}: {e}", venvs.display()))
        .map(|e| e.unwrap().path())
        .find(|venv| {
            venv.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
                && std::fs::read_to_string(venv.join(".runtime-matrix-ready")).ok()
                    == Some("ipykernel\nnbconvert".to_owned())
        })
        .unwrap_or_else(|| panic!("no virtualenv of plain nbconvert in {}", venvs.display()))
}

/// Plain nbconvert on the host, with the virtualenv runtime-matrix runs host notebooks with.
fn nbconvert_on_host(venv: &Path) -> BTreeMap<String, Plain> {
    let path = std::env::join_paths(
        std::iter::once(venv.join("bin"))
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let output = Command::new("sh")
        .arg(corpus().join("nbconvert-verdicts.sh"))
        .arg(corpus())
        .env("PATH", path)
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "the loop on the host failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    plain_verdicts("host", &output.stdout)
}

/// The exception an nbconvert message names (`nbformat.reader.NotJSONError: ...`): the part
/// that stays when nbformat rewords a message.
fn exception(says: &str) -> &str {
    says.split_once(": ").map_or(says, |(name, _)| name)
}

/// Whether `text` holds `word` not as a part of a longer name (`id`, not `invalid`).
fn names_word(text: &str, word: &str) -> bool {
    let part = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(word).any(|(at, _)| {
        !part(text[..at].chars().next_back()) && !part(text[at + word.len()..].chars().next())
    })
}

/// Everything a record's failure says, one part a line.
fn failure_text(failure: &Value) -> String {
    [
        &failure["summary"],
        &failure["cell"]["ename"],
        &failure["cell"]["evalue"],
        &failure["cell"]["traceback"],
        &failure["output_tail"],
    ]
    .into_iter()
    .filter_map(Value::as_str)
    .collect::<Vec<_>>()
    .join("\n")
}

/// What is wrong with runtime-matrix's record of `file` against plain nbconvert's verdict and
/// the manifest's expectation, if anything.
fn disagreement(file: &str, plain: &Plain, expected: &Value, record: &Value) -> Option<String> {
    let status = record["status"].as_str().unwrap_or("no status");
    let failure = &record["failure"];
    if plain.code == 0 {
        return (status != "passed").then(|| {
            format!(
                "nbconvert passes it, runtime-matrix says {status}: {}",
                failure_text(failure)
            )
        });
    }
    if status != "failed" {
        return Some(format!(
            "nbconvert fails it ({}), runtime-matrix says {status}",
            plain.says
        ));
    }
    let text = failure_text(failure);
    let mut wrong = Vec::new();
    for key in ["kind", "category"] {
        if failure[key] != expected[key] {
            wrong.push(format!("{key} {} (want {})", failure[key], expected[key]));
        }
    }
    if let Some(field) = expected["field"].as_str()
        && !names_word(&text, field)
    {
        wrong.push(format!("the message does not name the field `{field}`"));
    }
    if let Some(cell) = expected["cell"].as_u64() {
        let named = failure["cell"]["index"].as_u64() == Some(cell)
            || [
                format!("cells[{cell}]"),
                format!("['cells'][{cell}]"),
                format!("cell {cell}"),
            ]
            .iter()
            .any(|form| text.contains(form.as_str()));
        if !named {
            wrong.push(format!("the failure does not name cell {cell}"));
        }
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{} (nbconvert: {}; runtime-matrix: {text}) in {file}",
            wrong.join(", "),
            plain.says
        )
    })
}

#[test]
fn plain_nbconvert_and_runtime_matrix_agree_on_every_file() {
    ensure_base_image();
    let files = manifest();
    let out = tempfile::tempdir().unwrap();
    let run_id = format!("odd-notebooks-{}", std::process::id());
    let (code, stdout, stderr) = output(&mut harness(
        &matrix(),
        out.path(),
        &run_id,
        &["--include-ignored"],
    ));
    // Some files fail; none stops the others.
    assert_eq!(code, Some(101), "{stdout}\n{stderr}");
    // Then the two loops side by side, one nbconvert each: not during the run, whose kernels
    // must start within their 60 s on a busy machine of two cores.
    let image = debian_image();
    let in_container = std::thread::spawn(move || nbconvert_in_container(&image));
    let on_host = nbconvert_on_host(&host_virtualenv());
    let in_container = in_container.join().unwrap();
    let records = records(out.path(), &run_id);

    let mut disagreements = Vec::new();
    for (file, case) in &files {
        for (runtime, place) in RUNTIMES {
            let measured = if place == "host" {
                &on_host
            } else {
                &in_container
            };
            let Some(plain) = measured.get(file) else {
                disagreements.push(format!(
                    "{place}: plain nbconvert gave no verdict on {file}"
                ));
                continue;
            };
            // Plain nbconvert still says what was measured when the corpus was made.
            let recorded = &case["nbconvert"][place];
            let now = if plain.code == 0 { "pass" } else { "fail" };
            if recorded["verdict"] != now
                || (plain.code != 0
                    && exception(&plain.says) != exception(recorded["says"].as_str().unwrap()))
            {
                disagreements.push(format!(
                    "{place}: plain nbconvert's verdict on {file} is {now} ({}, exit {}), \
                     verdicts.json says {recorded} (measure again and update generate.py)",
                    plain.says, plain.code
                ));
            }
            let name = trial(runtime, file);
            let Some(record) = records.get(&name) else {
                disagreements.push(format!("{name}: no record"));
                continue;
            };
            if let Some(wrong) = disagreement(file, plain, &case["runtime-matrix"], record) {
                disagreements.push(format!("{name}: {wrong}"));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}\n\nstdout:\n{stdout}\nstderr:\n{stderr}",
        disagreements.len(),
        disagreements.join("\n")
    );

    // The reports hold every trial: report.json and junit.xml all of them, report.md each
    // failure.
    let trials = every_trial(&files);
    let failed: BTreeSet<String> = records
        .iter()
        .filter(|(_, record)| record["status"] == "failed")
        .map(|(name, _)| name.clone())
        .collect();
    let report_dir = out.path().join(&run_id);
    let report: Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    let in_report: BTreeSet<String> = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trial"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(in_report, trials);
    assert_eq!(report["summary"]["total"], trials.len());
    assert_eq!(report["summary"]["failed"], failed.len());
    assert_eq!(
        report["summary"]["passed"],
        trials.len() - failed.len(),
        "{}",
        report["summary"]
    );
    let junit = std::fs::read_to_string(report_dir.join("junit.xml")).unwrap();
    let totals = junit
        .lines()
        .find(|line| line.trim_start().starts_with("<testsuites"))
        .unwrap_or_else(|| panic!("{junit}"));
    for count in [
        format!("tests=\"{}\"", trials.len()),
        format!("failures=\"{}\"", failed.len()),
    ] {
        assert!(totals.contains(&count), "junit.xml: {totals}");
    }
    let in_junit: BTreeSet<String> = junit
        .split("<testcase name=\"")
        .skip(1)
        .map(|rest| xml_unescape(&rest[..rest.find('"').unwrap()]))
        .collect();
    assert_eq!(in_junit, trials, "junit.xml's test cases");
    let markdown = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    for name in &failed {
        assert!(
            markdown.contains(&format!("### `{name}`")),
            "report.md lacks the failure of {name}"
        );
    }
}

fn xml_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
