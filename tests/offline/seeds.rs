//! The documents the project started from (`../shared/seeds/`), as manifests: every YAML
//! example they print and every pattern they describe in words, each with exactly the
//! findings `extsvc-guard check` must report (DESIGN.md, "Rules").
//!
//! Each case drives the real binary with `check --format json <fixture>` and compares the
//! full list of (rule, action, kind, namespace, name, field) with the expected one, so an
//! extra, a missing or a duplicated finding fails. Lines are computed from the fixture text,
//! never hard-coded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// One expected finding.
struct Expected {
    rule: &'static str,
    action: &'static str,
    kind: &'static str,
    namespace: &'static str,
    name: &'static str,
    field: &'static str,
    /// The fixture line the finding must point at, written as that line's trimmed text
    /// (it must occur exactly once in the fixture).
    at: &'static str,
    /// What the message must start with (empty: anything).
    message_starts_with: &'static str,
    /// What the message must contain.
    message_contains: &'static [&'static str],
}

/// One seed pattern as a manifest file.
struct Case {
    fixture: &'static str,
    /// Kubernetes objects extsvc-guard judges in the file (other kinds are skipped).
    objects: usize,
    findings: &'static [Expected],
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seeds")
}

fn fixture_path(name: &str) -> PathBuf {
    fixture_dir().join(name)
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn guard(args: &[&str], file: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_extsvc-guard"))
        .args(args)
        .arg(file)
        .output()
        .expect("the extsvc-guard binary runs");
    Output {
        code: out.status.code().expect("extsvc-guard exits with a code"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn check_json(file: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["check", "--format", "json"];
    args.extend_from_slice(extra);
    let out = guard(&args, file);
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --format json printed no JSON ({e}):\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    });
    (out.code, json)
}

/// The 1-based line whose trimmed text is exactly `text`, with or without its trailing
/// comment; it must be the only one.
fn line_of(source: &str, text: &str) -> u64 {
    let without_comment = |l: &str| l.split(" #").next().unwrap_or_default().trim().to_owned();
    let hits: Vec<usize> = source
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == text || without_comment(l) == text)
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected exactly one line {text:?} in the fixture, found {hits:?}"
    );
    hits[0] as u64
}

type Tuple = (String, String, String, String, String, String);

fn tuple_of(f: &Value) -> Tuple {
    let s = |k: &str| {
        f[k].as_str()
            .unwrap_or_else(|| panic!("finding key {k:?} is not a string: {f}"))
            .to_owned()
    };
    (
        s("rule"),
        s("action"),
        s("kind"),
        s("namespace"),
        s("name"),
        s("field"),
    )
}

fn expected_tuple(e: &Expected) -> Tuple {
    (
        e.rule.to_owned(),
        e.action.to_owned(),
        e.kind.to_owned(),
        e.namespace.to_owned(),
        e.name.to_owned(),
        e.field.to_owned(),
    )
}

fn verify(case: &Case) {
    let path = fixture_path(case.fixture);
    let source = std::fs::read_to_string(&path).expect("the fixture exists");
    let (code, json) = check_json(&path, &[]);

    let errors = json["errors"].as_array().expect("errors is an array");
    assert!(
        errors.is_empty(),
        "{}: the fixture must load without input errors: {errors:#?}",
        case.fixture
    );
    let findings = json["findings"].as_array().expect("findings is an array");

    let mut actual: Vec<Tuple> = findings.iter().map(tuple_of).collect();
    let mut expected: Vec<Tuple> = case.findings.iter().map(expected_tuple).collect();
    actual.sort();
    expected.sort();
    assert_eq!(
        actual, expected,
        "{}: findings differ (rule, action, kind, namespace, name, field); full output:\n{json:#}",
        case.fixture
    );

    for e in case.findings {
        let f = findings
            .iter()
            .find(|f| tuple_of(f) == expected_tuple(e))
            .expect("compared above");
        let message = f["message"].as_str().expect("message is a string");
        assert!(
            message.starts_with(e.message_starts_with),
            "{}: {} message should start with {:?}:\n{message}",
            case.fixture,
            e.rule,
            e.message_starts_with
        );
        for part in e.message_contains {
            assert!(
                message.contains(part),
                "{}: {} message should contain {part:?}:\n{message}",
                case.fixture,
                e.rule
            );
        }
        assert!(
            !message.contains('\n'),
            "{}: a message is one line: {message:?}",
            case.fixture
        );
        assert_eq!(
            f["line"].as_u64(),
            Some(line_of(&source, e.at)),
            "{}: {} on {} {} should point at the line {:?}",
            case.fixture,
            e.rule,
            e.kind,
            e.name,
            e.at
        );
        assert_eq!(
            f["file"].as_str(),
            Some(path.to_str().expect("UTF-8 path")),
            "{}: the finding names the file as given",
            case.fixture
        );
    }

    // Exit code: 1 when something is denied, else 0; with --fail-on warn also on warnings.
    let denies = case.findings.iter().any(|e| e.action == "deny");
    let warns = case.findings.iter().any(|e| e.action == "warn");
    assert_eq!(
        code,
        i32::from(denies),
        "{}: exit code with the default --fail-on deny",
        case.fixture
    );
    let (code_warn, _) = check_json(&path, &["--fail-on", "warn"]);
    assert_eq!(
        code_warn,
        i32::from(denies || warns),
        "{}: exit code with --fail-on warn",
        case.fixture
    );

    // The objects were really read (a clean result from a file nobody judged proves nothing).
    let text = guard(&["check", "--format", "text"], &path);
    let objects = match case.objects {
        1 => "1 object".to_owned(),
        n => format!("{n} objects"),
    };
    assert!(
        text.stdout.contains(&format!("{objects} in 1 input:")),
        "{}: the text summary should count {objects}:\n{}",
        case.fixture,
        text.stdout
    );
}

// ---- seeds 000 and 002: mysql-svc and mysql-ep ---------------------------------------------

const MYSQL_PAIR_FINDINGS: &[Expected] = &[
    Expected {
        rule: "endpoints-orphaned",
        action: "deny",
        kind: "Endpoints",
        namespace: "default",
        name: "mysql-ep",
        field: "metadata.name",
        at: "name: mysql-ep",
        message_starts_with: "",
        message_contains: &["did you mean Service mysql-svc?"],
    },
    Expected {
        rule: "port-name-mismatch",
        action: "deny",
        kind: "Endpoints",
        namespace: "default",
        name: "mysql-ep",
        field: "subsets[0].ports[0].name",
        at: "- name: mysql",
        message_starts_with: "Endpoints port \"mysql\"/TCP has no Service port of that name; Service mysql-svc has \"default-ep\"/TCP",
        message_contains: &["rename this port to \"default-ep\""],
    },
    Expected {
        rule: "service-no-endpoints",
        action: "warn",
        kind: "Service",
        namespace: "default",
        name: "mysql-svc",
        field: "metadata.name",
        at: "name: mysql-svc",
        message_starts_with: "",
        message_contains: &["Endpoints mysql-ep looks meant for it"],
    },
];

const SEED_000_MYSQL_PAIR: Case = Case {
    fixture: "000-mysql-svc-and-mysql-ep.yaml",
    objects: 2,
    findings: MYSQL_PAIR_FINDINGS,
};

const SEED_002_MYSQL_PAIR: Case = Case {
    fixture: "002-mysql-svc-and-mysql-ep-commented.yaml",
    objects: 2,
    findings: MYSQL_PAIR_FINDINGS,
};

// ---- seed 001: domain, IP, IP + port and headless mappings ---------------------------------

const SEED_001_EXTERNALNAME_DOMAIN: Case = Case {
    fixture: "001-externalname-domain.yaml",
    objects: 1,
    findings: &[],
};

const SEED_001_EXTERNALNAME_IP: Case = Case {
    fixture: "001-externalname-ip.yaml",
    objects: 1,
    findings: &[Expected {
        rule: "externalname-ip",
        action: "deny",
        kind: "Service",
        namespace: "test-1",
        name: "mysql",
        field: "spec.externalName",
        at: "externalName: 192.168.1.10",
        message_starts_with: "\"192.168.1.10\" is an IP address",
        message_contains: &[
            "Service without selector",
            "kubernetes.io/service-name: mysql",
            "addresses: [\"192.168.1.10\"]",
            "ports: [{name: mysql, port: 3306}]",
        ],
    }],
};

const SEED_001_HEADLESS_IP_MAPPING: Case = Case {
    fixture: "001-headless-ip-mapping.yaml",
    objects: 2,
    findings: &[],
};

const SEED_001_IP_PORT_MAPPING_WITH_TARGET_PORT: Case = Case {
    fixture: "001-ip-port-mapping-with-target-port.yaml",
    objects: 2,
    findings: &[],
};

const SEED_001_IP_PORT_MAPPING_WITHOUT_TARGET_PORT: Case = Case {
    fixture: "001-ip-port-mapping-without-target-port.yaml",
    objects: 2,
    findings: &[],
};

const HEADLESS_REMAP_ON_ENDPOINTS: Expected = Expected {
    rule: "headless-port-remap",
    action: "deny",
    kind: "Endpoints",
    namespace: "test-1",
    name: "mysql",
    field: "subsets[0].ports[0].port",
    at: "port: 3307",
    message_starts_with: "port 3307 differs from port 3306 of headless Service mysql",
    message_contains: &["set this port to 3306"],
};

const SEED_001_HEADLESS_PORT_REMAP_ON_ENDPOINTS: Case = Case {
    fixture: "001-headless-port-remap-on-endpoints.yaml",
    objects: 2,
    findings: &[HEADLESS_REMAP_ON_ENDPOINTS],
};

const SEED_001_HEADLESS_PORT_REMAP_WITH_TARGET_PORT: Case = Case {
    fixture: "001-headless-port-remap-with-target-port.yaml",
    objects: 2,
    findings: &[
        HEADLESS_REMAP_ON_ENDPOINTS,
        Expected {
            rule: "headless-port-remap",
            action: "deny",
            kind: "Service",
            namespace: "test-1",
            name: "mysql",
            field: "spec.ports[0].targetPort",
            at: "targetPort: 3307",
            message_starts_with: "targetPort 3307 differs from port 3306 on a headless Service",
            message_contains: &["set targetPort to 3306 (or leave it out)"],
        },
    ],
};

const SEED_001_SAME_NAME_IN_TWO_NAMESPACES: Case = Case {
    fixture: "001-same-service-name-in-two-namespaces.yaml",
    objects: 4,
    findings: &[],
};

// ---- seed 003: manual Endpoints, an ExternalName alias, a selector Service ------------------

const SEED_003_EXTERNAL_SERVICE_WITH_ENDPOINTS: Case = Case {
    fixture: "003-external-service-with-endpoints.yaml",
    objects: 2,
    findings: &[],
};

const SEED_003_EXTERNALNAME_ON_PORT_80: Case = Case {
    fixture: "003-externalname-api-somecompany.yaml",
    objects: 1,
    findings: &[Expected {
        rule: "externalname-host-mismatch",
        action: "warn",
        kind: "Service",
        namespace: "default",
        name: "external-service",
        field: "spec.ports[0]",
        at: "- port: 80",
        message_starts_with: "port 80 looks like HTTP(S)",
        message_contains: &["Host: external-service", "api.somecompany.com"],
    }],
};

const SEED_003_SELECTOR_SERVICE: Case = Case {
    fixture: "003-selector-service-test-svc.yaml",
    objects: 1,
    findings: &[],
};

const SEED_003_SELECTOR_ADDED_BESIDE_HAND_WRITTEN_ENDPOINTS: Case = Case {
    fixture: "003-selector-added-to-external-service.yaml",
    objects: 2,
    findings: &[Expected {
        rule: "endpoints-overwritten",
        action: "deny",
        kind: "Endpoints",
        namespace: "default",
        name: "external-service",
        field: "metadata.name",
        // The Endpoints' own name, the second `name: external-service` of the file.
        at: "name: external-service # the Endpoints",
        message_starts_with: "Service external-service has a selector",
        message_contains: &["endpoints controller"],
    }],
};

// ---- seed 004: ExternalName aliases, the tutorial's Pod and eksctl config -------------------

const SEED_004_EXTERNALNAME_MY_SERVICE: Case = Case {
    fixture: "004-externalname-my-service-prod.yaml",
    objects: 1,
    findings: &[],
};

const SEED_004_EXTERNALNAME_HTTPBIN: Case = Case {
    fixture: "004-externalname-httpbin-and-netshoot.yaml",
    objects: 1,
    findings: &[],
};

const SEED_004_EKSCTL_CONFIG: Case = Case {
    fixture: "004-eksctl-cluster-config.yaml",
    objects: 0,
    findings: &[],
};

const ALL_CASES: &[&Case] = &[
    &SEED_000_MYSQL_PAIR,
    &SEED_002_MYSQL_PAIR,
    &SEED_001_EXTERNALNAME_DOMAIN,
    &SEED_001_EXTERNALNAME_IP,
    &SEED_001_HEADLESS_IP_MAPPING,
    &SEED_001_IP_PORT_MAPPING_WITH_TARGET_PORT,
    &SEED_001_IP_PORT_MAPPING_WITHOUT_TARGET_PORT,
    &SEED_001_HEADLESS_PORT_REMAP_ON_ENDPOINTS,
    &SEED_001_HEADLESS_PORT_REMAP_WITH_TARGET_PORT,
    &SEED_001_SAME_NAME_IN_TWO_NAMESPACES,
    &SEED_003_EXTERNAL_SERVICE_WITH_ENDPOINTS,
    &SEED_003_EXTERNALNAME_ON_PORT_80,
    &SEED_003_SELECTOR_SERVICE,
    &SEED_003_SELECTOR_ADDED_BESIDE_HAND_WRITTEN_ENDPOINTS,
    &SEED_004_EXTERNALNAME_MY_SERVICE,
    &SEED_004_EXTERNALNAME_HTTPBIN,
    &SEED_004_EKSCTL_CONFIG,
];

// ---- the tests ------------------------------------------------------------------------------

#[test]
fn every_seed_fixture_has_a_case_and_every_case_its_fixture() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixture_dir())
        .expect("tests/fixtures/seeds exists")
        .map(|e| e.expect("a directory entry").file_name())
        .map(|n| n.into_string().expect("UTF-8 file name"))
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let cased: BTreeSet<String> = ALL_CASES.iter().map(|c| c.fixture.to_owned()).collect();
    assert_eq!(cased.len(), ALL_CASES.len(), "two cases share a fixture");
    assert_eq!(on_disk, cased);
}

#[test]
fn seed_000_mysql_ep_is_denied_as_orphaned_and_port_mismatched_and_mysql_svc_warned() {
    verify(&SEED_000_MYSQL_PAIR);
}

#[test]
fn seed_002_commented_mysql_pair_gets_the_same_three_findings_as_seed_000() {
    verify(&SEED_002_MYSQL_PAIR);
}

#[test]
fn the_port_name_mismatch_points_at_the_line_of_the_endpoints_port_name() {
    for case in [&SEED_000_MYSQL_PAIR, &SEED_002_MYSQL_PAIR] {
        let path = fixture_path(case.fixture);
        let source = std::fs::read_to_string(&path).unwrap();
        let expected_line = source
            .lines()
            .position(|l| l.trim() == "- name: mysql")
            .expect("the fixture names its Endpoints port mysql")
            as u64
            + 1;
        let (_, json) = check_json(&path, &[]);
        let lines: Vec<u64> = json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule"] == "port-name-mismatch" && f["name"] == "mysql-ep")
            .map(|f| f["line"].as_u64().expect("line is a number"))
            .collect();
        assert_eq!(lines, vec![expected_line], "{}", case.fixture);
    }
}

#[test]
fn seed_001_an_externalname_alias_for_a_domain_is_clean() {
    verify(&SEED_001_EXTERNALNAME_DOMAIN);
}

#[test]
fn seed_001_an_ip_in_externalname_is_denied_with_a_selectorless_replacement() {
    verify(&SEED_001_EXTERNALNAME_IP);
}

#[test]
fn seed_001_a_headless_selectorless_ip_mapping_on_the_same_port_is_clean() {
    verify(&SEED_001_HEADLESS_IP_MAPPING);
}

#[test]
fn seed_001_an_ip_and_port_mapping_3306_to_3307_with_target_port_is_clean() {
    verify(&SEED_001_IP_PORT_MAPPING_WITH_TARGET_PORT);
}

#[test]
fn seed_001_an_ip_and_port_mapping_3306_to_3307_without_target_port_is_clean() {
    verify(&SEED_001_IP_PORT_MAPPING_WITHOUT_TARGET_PORT);
}

#[test]
fn seed_001_a_headless_service_with_endpoints_on_another_port_is_denied_on_the_endpoints_port() {
    verify(&SEED_001_HEADLESS_PORT_REMAP_ON_ENDPOINTS);
}

#[test]
fn seed_001_a_headless_target_port_remap_is_denied_on_the_service_and_on_the_endpoints() {
    verify(&SEED_001_HEADLESS_PORT_REMAP_WITH_TARGET_PORT);
}

#[test]
fn seed_001_the_same_service_name_in_two_namespaces_pairs_each_with_its_own_endpoints() {
    verify(&SEED_001_SAME_NAME_IN_TWO_NAMESPACES);
}

#[test]
fn seed_003_a_selectorless_service_with_same_name_endpoints_is_clean() {
    verify(&SEED_003_EXTERNAL_SERVICE_WITH_ENDPOINTS);
}

#[test]
fn seed_003_an_externalname_alias_on_port_80_is_warned_about_host_and_sni() {
    verify(&SEED_003_EXTERNALNAME_ON_PORT_80);
}

#[test]
fn seed_003_a_warning_alone_exits_0_by_default_and_1_with_fail_on_warn() {
    let path = fixture_path(SEED_003_EXTERNALNAME_ON_PORT_80.fixture);
    let (code, json) = check_json(&path, &[]);
    assert_eq!(json["findings"].as_array().unwrap().len(), 1, "{json:#}");
    assert_eq!(json["findings"][0]["action"], "warn");
    assert_eq!(code, 0);
    let (code, _) = check_json(&path, &["--fail-on", "warn"]);
    assert_eq!(code, 1);
}

#[test]
fn seed_003_a_service_with_a_selector_is_clean() {
    verify(&SEED_003_SELECTOR_SERVICE);
}

#[test]
fn seed_003_hand_written_endpoints_kept_beside_an_added_selector_are_denied_as_overwritten() {
    verify(&SEED_003_SELECTOR_ADDED_BESIDE_HAND_WRITTEN_ENDPOINTS);
}

#[test]
fn seed_004_an_externalname_alias_for_a_database_in_prod_is_clean() {
    verify(&SEED_004_EXTERNALNAME_MY_SERVICE);
}

#[test]
fn seed_004_the_httpbin_alias_without_ports_is_clean_and_its_test_pod_skipped() {
    verify(&SEED_004_EXTERNALNAME_HTTPBIN);
}

#[test]
fn seed_004_the_eksctl_cluster_config_is_skipped_without_an_error() {
    verify(&SEED_004_EKSCTL_CONFIG);
}
