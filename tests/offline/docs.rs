//! The README and the example manifests say what the tool does: keep them true.

use std::path::{Path, PathBuf};
use std::process::Command;

use extsvc_guard::policy::DEFAULT_POLICY_YAML;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check_json(args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_extsvc-guard"))
        .current_dir(root())
        .args(["check", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap();
    (out.status.code().unwrap(), json)
}

fn rules_fired(json: &serde_json::Value) -> Vec<(String, String)> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_owned(),
                f["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_readme_prints_the_embedded_default_policy_verbatim() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(DEFAULT_POLICY_YAML),
        "README.md must contain engine/src/policy/default.yaml verbatim"
    );
}

#[test]
fn the_readme_rules_table_has_a_row_for_every_rule_of_the_catalogue() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rows: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|id| extsvc_guard::finding::RuleId::from_id(id).is_some())
        .collect();
    let ids: Vec<&str> = extsvc_guard::finding::RuleId::NAMES.to_vec();
    assert_eq!(
        rows, ids,
        "the README's rules table (## The rules) needs a row `| `<id>` | … |` for every rule, \
         in catalogue order"
    );
}

#[test]
fn each_rule_example_fires_its_rule() {
    for (file, rule, action) in [
        ("mysql-pair.yaml", "endpoints-orphaned", "deny"),
        ("mysql-pair.yaml", "port-name-mismatch", "deny"),
        ("mysql-pair.yaml", "service-no-endpoints", "warn"),
        (
            "endpointslice-unlabeled.yaml",
            "endpointslice-unlabeled",
            "deny",
        ),
        (
            "endpoints-overwritten.yaml",
            "endpoints-overwritten",
            "deny",
        ),
        ("externalname-ip.yaml", "externalname-ip", "deny"),
        ("externalname-invalid.yaml", "externalname-invalid", "deny"),
        (
            "externalname-host-mismatch.yaml",
            "externalname-host-mismatch",
            "warn",
        ),
        ("headless-port-remap.yaml", "headless-port-remap", "deny"),
        ("target-disallowed.yaml", "target-disallowed", "deny"),
        ("target-disallowed.yaml", "address-noncanonical", "warn"),
        ("address-invalid.yaml", "address-invalid", "deny"),
        ("selector-change.yaml", "selector-change", "warn"),
        (
            "externalname-target-missing.yaml",
            "externalname-target-missing",
            "warn",
        ),
    ] {
        let path = Path::new("docs/examples").join(file);
        let (_, json) = check_json(&[path.to_str().unwrap()]);
        let fired = rules_fired(&json);
        assert!(
            fired.contains(&(rule.to_owned(), action.to_owned())),
            "{file}: expected {action} {rule}, got {fired:?}"
        );
    }
}

#[test]
fn the_required_metadata_example_is_denied_with_its_policy() {
    let (code, json) = check_json(&[
        "--policy",
        "docs/policies/required-metadata.yaml",
        "docs/examples/required-metadata.yaml",
    ]);
    assert_eq!(code, 1);
    let fired = rules_fired(&json);
    assert_eq!(
        fired,
        vec![
            ("required-metadata".to_owned(), "info".to_owned()),
            ("required-metadata".to_owned(), "deny".to_owned()),
            ("required-metadata".to_owned(), "deny".to_owned()),
        ]
    );
}

#[test]
fn the_correct_patterns_pass_clean() {
    let (code, json) = check_json(&["docs/examples/correct-patterns.yaml"]);
    assert_eq!(rules_fired(&json), Vec::<(String, String)>::new());
    assert_eq!(code, 0);
}

/// Every `fn` name under `dir`, recursively (tests and unit tests alike).
fn function_names(dir: &Path, names: &mut std::collections::BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            function_names(&path, names);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for part in text.split("fn ").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
    }
}

#[test]
fn every_test_the_security_page_cites_as_proof_exists() {
    let page = std::fs::read_to_string(root().join("docs/security.md")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    function_names(&root().join("tests"), &mut names);
    function_names(&root().join("src"), &mut names);
    function_names(&root().join("engine/src"), &mut names);
    let cited: Vec<&str> = page
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim_end_matches("…"))
        // Metric names are cited too; they are not functions.
        .filter(|s| !s.starts_with("extsvc_guard_"))
        .filter(|s| {
            s.matches('_').count() >= 4
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(cited.len() >= 10, "{cited:?}");
    for name in cited {
        assert!(
            names.contains(name),
            "docs/security.md cites a test that does not exist: {name}"
        );
    }
}
