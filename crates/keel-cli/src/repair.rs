//! `keel repair`: turn a model's broken structured output into the JSON it meant, or refuse.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use keel_repair::Repairer;
use serde_json::{Value, json};

/// Flags of `keel repair`.
#[derive(Debug, Args)]
#[command(after_help = "\
Repaired: code fences, prose and <think> blocks around the JSON; trailing and missing commas;
single, curly or no quotes; comments; True/False/None/undefined; +1, .5, 5.; raw newlines and
unescaped quotes in strings; truncated output (closed, an incomplete member dropped); several
values (an array); a document escaped once. With --schema also: numeric strings, \"true\"/
\"false\", enum case, misspelled keys, stringified objects, a lone value where an array belongs.

Refused (exit code 1, the reason on stderr): prose without JSON, empty output, template or code
braces; with --schema: a missing required field (never filled in), null or \"N/A\" where a value
is required, an enum value that matches nothing. Depth: valid JSON passes as written up to 10000
levels of nesting; deeper output is refused (\"nested deeper than 10000 levels\"), and output that
must be repaired, extracted from prose, checked against --schema or indented (--pretty) is refused
past 127 levels.

Examples:
  echo \"Sure! {'a': 1, b: True,}\" | keel repair       prints {\"a\":1,\"b\":true}
  keel repair --schema ticket.json out.txt --report    JSON on stdout, the fixes on stderr
  keel repair --jsonl < cases.jsonl > results.jsonl

--jsonl reads one case per line: {\"id\": \"…\", \"input\": \"<raw model output>\", \"schema\": {…}}
(schema optional, other fields ignored) and writes one line per case, in order:
{\"id\": \"…\", \"output\": \"<repaired JSON text>\" | null, \"error\": null | \"<why>\"}.
output is null exactly when nothing could be recovered without inventing data.")]
pub(crate) struct RepairArgs {
    /// The model output to repair; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    input: Option<PathBuf>,
    /// A JSON Schema file the result must satisfy.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Also print the fixes that were applied, on stderr.
    #[arg(long)]
    report: bool,
    /// How --report prints: lines of text, or the report as one JSON object.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text, value_name = "FORMAT")]
    report_format: ReportFormat,
    /// Print the repaired JSON indented.
    #[arg(long)]
    pretty: bool,
    /// Batch mode: JSON Lines cases on stdin, one result line per case on stdout.
    #[arg(long, conflicts_with_all = ["input", "schema", "pretty"])]
    jsonl: bool,
}

/// How `--report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    /// One line per fix.
    Text,
    /// The report as JSON.
    Json,
}

pub(crate) fn run(args: RepairArgs) -> anyhow::Result<()> {
    let repairer = Repairer::new();
    if args.jsonl {
        return run_jsonl(&repairer);
    }
    let schema = match &args.schema {
        Some(path) => Some(read_schema(path)?),
        None => None,
    };
    let input = match &args.input {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        _ => {
            let mut buf = Vec::new();
            std::io::stdin().lock().read_to_end(&mut buf).context("cannot read stdin")?;
            buf
        }
    };
    let repaired = repairer.repair_bytes(&input, schema.as_ref()).context("cannot repair the output")?;
    let text = if args.pretty {
        // A text too deep to build its value is refused rather than printed some other way.
        let value =
            repaired.try_value().ok_or(keel_repair::RepairError::TooDeep { limit: keel_repair::MAX_VALUE_DEPTH });
        serde_json::to_string_pretty(value.context("cannot indent the output")?)?
    } else {
        repaired.text().to_owned()
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    if args.report {
        let mut err = std::io::stderr().lock();
        match args.report_format {
            ReportFormat::Text => {
                writeln!(err, "repair: {}", repaired.report().header_value())?;
                write!(err, "{}", repaired.report())?;
            }
            ReportFormat::Json => writeln!(err, "{}", serde_json::to_string(repaired.report())?)?,
        }
    }
    Ok(())
}

fn read_schema(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the schema {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("the schema {} is not valid JSON", path.display()))
}

/// One result line for one case line.
fn answer_line(repairer: &Repairer, line: &[u8]) -> Value {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(err) => return invalid(Value::Null, &format!("not UTF-8 ({err})")),
    };
    let case: Value = match serde_json::from_str(text) {
        Ok(case) => case,
        Err(err) => {
            // Salvage the id when the line is almost JSON, so the answer can still be matched.
            let id = keel_repair::partial(text)
                .and_then(|v| v.get("id").filter(|id| id.is_string() || id.is_number()).cloned())
                .unwrap_or(Value::Null);
            return invalid(id, &err.to_string());
        }
    };
    let Value::Object(case) = case else { return invalid(Value::Null, "not a JSON object") };
    let id = case.get("id").cloned().unwrap_or(Value::Null);
    let Some(input) = case.get("input").and_then(Value::as_str) else {
        return invalid(id, "\"input\" is missing or not a string");
    };
    let schema = match case.get("schema") {
        None | Some(Value::Null) => None,
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => Some(schema),
        Some(_) => return invalid(id, "\"schema\" is not a JSON Schema object"),
    };
    match repairer.repair(input, schema) {
        Ok(repaired) => json!({"id": id, "output": repaired.text(), "error": null}),
        Err(err) => json!({"id": id, "output": null, "error": err.to_string()}),
    }
}

fn invalid(id: Value, why: &str) -> Value {
    json!({"id": id, "output": null, "error": format!("invalid case line: {why}")})
}

fn run_jsonl(repairer: &Repairer) -> anyhow::Result<()> {
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).context("cannot read stdin")? == 0 {
            break;
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let answer = answer_line(repairer, trimmed);
        let mut text = serde_json::to_string(&answer)?;
        text.push('\n');
        out.write_all(text.as_bytes()).context("cannot write stdout")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_cases_and_bad_lines() {
        let repairer = Repairer::new();
        let ok = answer_line(&repairer, br#"{"id": "a", "input": "```json\n{'x': 1,}\n```", "expected": 1}"#);
        assert_eq!(ok, json!({"id": "a", "output": "{\"x\":1}", "error": null}));
        let refused = answer_line(&repairer, br#"{"id": "b", "input": "Sorry, I can't."}"#);
        assert_eq!(refused["output"], Value::Null);
        assert!(refused["error"].as_str().is_some_and(|e| e.contains("no JSON")));
        let schema =
            answer_line(&repairer, br#"{"id": 3, "input": "{}", "schema": {"type": "object", "required": ["a"]}}"#);
        assert_eq!(schema["id"], json!(3));
        assert!(schema["error"].as_str().is_some_and(|e| e.contains("missing required field")));
        let broken = answer_line(&repairer, br#"{"id": "c", "input": "x"#);
        assert_eq!(broken["id"], json!("c"));
        assert!(broken["error"].as_str().is_some_and(|e| e.starts_with("invalid case line")));
        let not_string = answer_line(&repairer, br#"{"id": "d", "input": 5}"#);
        assert!(not_string["error"].as_str().is_some_and(|e| e.starts_with("invalid case line")));
    }

    /// The `--jsonl` contract on the public corpus: one answer per case, in order, with the
    /// case's id; `output` is strict JSON or null, and null exactly when `error` says why.
    #[test]
    fn jsonl_contract_on_the_public_corpus() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/repair-corpus/public.jsonl");
        let corpus = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read the repair corpus at {}: {err}", path.display()));
        let repairer = Repairer::new();
        let mut refused = 0;
        for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
            let case: Value = serde_json::from_str(line).unwrap();
            let answer = answer_line(&repairer, line.as_bytes());
            assert_eq!(
                answer.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap(),
                ["id", "output", "error"]
            );
            assert_eq!(answer["id"], case["id"]);
            match (&answer["output"], &answer["error"]) {
                (Value::String(text), Value::Null) => {
                    assert!(serde_json::from_str::<Value>(text).is_ok(), "{text}");
                }
                (Value::Null, Value::String(_)) => refused += 1,
                other => panic!("bad answer {other:?}"),
            }
            if case["expected"].is_null() {
                assert!(answer["output"].is_null(), "invented an output for {}", case["id"]);
            }
        }
        assert!(refused > 0);
    }
}
