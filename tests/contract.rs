//! The published contract next to the proto: the error-reason catalogue and the gRPC service
//! config must agree with the code.

use std::collections::{BTreeMap, BTreeSet};

use paygate::error::reason;
use paygate::error::{provider_code, refusal_code};
use paygate::providers::{Disposition, Meaning, antom, payxpert};
use tonic::Code;

const CATALOGUE: &str = include_str!("../proto/paygate/v1/error_reasons.md");

/// The catalogue's rows: reason -> the gRPC codes it is listed with.
fn catalogue() -> BTreeMap<String, BTreeSet<String>> {
    let mut rows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in CATALOGUE.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let reason = cells[1].trim_matches('`').to_owned();
        if reason.contains('<') {
            continue; // the pattern row for codes not listed
        }
        rows.entry(reason).or_default().insert(cells[2].to_owned());
    }
    rows
}

fn code_name(c: Code) -> String {
    // tonic's Debug names are CamelCase; the catalogue uses the canonical UPPER_SNAKE names.
    let camel = format!("{c:?}");
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// What a provider table row makes the caller see: (reason, gRPC code), or none for success.
fn provider_row(reason: String, m: Meaning) -> Option<(String, String)> {
    match m {
        Meaning::Success | Meaning::Processing => None,
        Meaning::Definitive(r) => Some((reason, code_name(refusal_code(r)))),
        Meaning::Retryable(why, after) => Some((
            reason,
            code_name(provider_code(&Disposition::Retryable { why, after })),
        )),
        Meaning::Misconfigured => Some((reason, "INTERNAL".into())),
        Meaning::Unknown => Some((reason::OUTCOME_UNKNOWN.into(), "UNAVAILABLE".into())),
    }
}

#[test]
fn the_catalogue_lists_every_reason_with_its_code_and_nothing_else() {
    let rows = catalogue();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (code, m) in antom::codes::TABLE {
        if let Some((r, c)) = provider_row((*code).to_owned(), *m) {
            expected.entry(r).or_default().insert(c);
        }
    }
    for (code, m) in payxpert::codes::TABLE {
        if let Some((r, c)) = provider_row(payxpert::codes::reason(code), *m) {
            expected.entry(r).or_default().insert(c);
        }
    }
    for r in reason::ALL {
        expected.entry((*r).to_owned()).or_default();
    }
    let documented: BTreeSet<&String> = rows.keys().collect();
    let wanted: BTreeSet<&String> = expected.keys().collect();
    assert_eq!(
        documented.difference(&wanted).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "catalogued but never given"
    );
    assert_eq!(
        wanted.difference(&documented).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "given but not catalogued"
    );
    for (r, codes) in &expected {
        for c in codes {
            assert!(
                rows[r].contains(c),
                "{r} is given with {c}; the catalogue says {:?}",
                rows[r]
            );
        }
    }
}

#[test]
fn code_names_are_canonical() {
    assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
    assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
    assert_eq!(code_name(Code::Internal), "INTERNAL");
}

#[test]
fn the_service_config_retries_unavailable_on_every_paygate_service() {
    use prost::Message;
    let config: serde_json::Value =
        serde_json::from_str(include_str!("../proto/paygate/v1/service-config.json")).unwrap();
    let fds = prost_types::FileDescriptorSet::decode(paygate::pb::FILE_DESCRIPTOR_SET).unwrap();
    let services: BTreeSet<String> = fds
        .file
        .iter()
        .filter(|f| f.package() == "paygate.v1")
        .flat_map(|f| f.service.iter().map(|s| format!("paygate.v1.{}", s.name())))
        .collect();
    assert!(services.len() >= 2, "{services:?}");
    let mut covered = BTreeSet::new();
    for mc in config["methodConfig"].as_array().unwrap() {
        let policy = &mc["retryPolicy"];
        let codes: Vec<&str> = policy["retryableStatusCodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(codes, ["UNAVAILABLE"]);
        let attempts = policy["maxAttempts"].as_u64().unwrap();
        assert!((2..=5).contains(&attempts), "gRPC clamps maxAttempts to 5");
        for name in mc["name"].as_array().unwrap() {
            assert!(name.get("method").is_none(), "whole services, every RPC");
            covered.insert(name["service"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(covered, services);
    assert!(config["retryThrottling"]["maxTokens"].as_u64().unwrap() > 0);
}

/// The README's first code block in `lang` after `marker`.
fn readme_block(marker: &str, lang: &str) -> String {
    let readme = include_str!("../README.md");
    let from = readme.find(marker).expect(marker);
    let fence = format!("```{lang}\n");
    let start = from + readme[from..].find(&fence).unwrap() + fence.len();
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_owned()
}

#[test]
fn the_readme_examples_are_the_example_files() {
    let heading = "## Calling it from Python, Node.js, Go and Java";
    let python = readme_block(heading, "python");
    assert_eq!(python, include_str!("../examples/python/quickstart.py"));
    assert!(python.lines().count() <= 10, "{python}");
    let node = readme_block(heading, "js");
    assert_eq!(node, include_str!("../examples/node/quickstart.js"));
    assert!(node.lines().count() <= 10, "{node}");
    // The same one call; Go's and Java's imports and braces take their own lines.
    let go = readme_block(heading, "go");
    assert_eq!(go, include_str!("../examples/go/quickstart/main.go"));
    assert!(go.lines().count() <= 35, "{go}");
    let java = readme_block(heading, "java");
    assert_eq!(java, include_str!("../examples/java/Quickstart.java"));
    assert!(java.lines().count() <= 20, "{java}");
}
