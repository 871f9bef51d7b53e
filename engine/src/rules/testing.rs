//! Test support: judge a small manifest set written as YAML.

use k8s_openapi::api::core::v1::Namespace;

use crate::cluster::consumers::{Consumer, consumer_of};
use crate::cluster::{ManifestView, NoClusterView};
use crate::finding::{Action, Finding, RuleId};
use crate::object::Object;
use crate::policy::Policy;
use crate::rules::{Mode, judge};

/// The objects of a manifest set, as the front doors read them: the judged kinds, the
/// Namespaces and the consumers (Ingresses, routes); a Pod or an eksctl ClusterConfig (the
/// seeds have them) is left out, and any other kind is a mistake in the test.
#[derive(Default)]
pub struct Set {
    pub objects: Vec<Object>,
    pub namespaces: Vec<Namespace>,
    pub consumers: Vec<(Consumer, Vec<(String, String)>)>,
}

impl Set {
    /// Reads a multi-document YAML (or JSON) text.
    pub fn read(yaml: &str) -> Set {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).unwrap();
        let mut set = Set::default();
        for doc in docs.into_iter().filter(|d| d.is_object()) {
            match doc["kind"].as_str().unwrap_or_default() {
                "Service" => set
                    .objects
                    .push(Object::Service(serde_json::from_value(doc).unwrap())),
                "Endpoints" => set
                    .objects
                    .push(Object::Endpoints(serde_json::from_value(doc).unwrap())),
                "EndpointSlice" => set
                    .objects
                    .push(Object::EndpointSlice(serde_json::from_value(doc).unwrap())),
                "Namespace" => set.namespaces.push(serde_json::from_value(doc).unwrap()),
                kind => match consumer_of(&doc) {
                    Some(consumer) => set.consumers.push(consumer),
                    // What the seeds carry beside the objects judged.
                    None if ["Pod", "ClusterConfig"].contains(&kind) => {}
                    None => panic!("the test set has a kind nothing reads: {kind:?}"),
                },
            }
        }
        set
    }

    /// The view `check` would build of the set.
    pub fn view(&self) -> ManifestView {
        let mut view = ManifestView::new();
        for namespace in &self.namespaces {
            view.insert_namespace(namespace);
        }
        for (consumer, backends) in &self.consumers {
            view.insert_consumer(consumer, backends);
        }
        for o in &self.objects {
            view.insert(o);
        }
        view
    }
}

/// Reads the objects of a multi-document YAML text and the view of them; Namespaces and
/// consumers are in the view only.
pub fn objects(yaml: &str) -> (Vec<Object>, ManifestView) {
    let set = Set::read(yaml);
    let view = set.view();
    (set.objects, view)
}

/// Judges every object of the set with `policy` (the default when `None`).
pub fn judge_set_with(yaml: &str, policy: Option<&str>, mode: Mode) -> Vec<Finding> {
    let policy = match policy {
        Some(text) => Policy::from_yaml(text, "test-policy.yaml").unwrap(),
        None => Policy::embedded(),
    };
    let (objects, view) = objects(yaml);
    objects
        .iter()
        .flat_map(|o| judge(o, &view, &policy, mode))
        .collect()
}

/// Judges every object as a webhook with no cluster connection would: alone.
pub fn judge_alone(yaml: &str) -> Vec<Finding> {
    let (objects, _) = objects(yaml);
    objects
        .iter()
        .flat_map(|o| judge(o, &NoClusterView, &Policy::embedded(), Mode::Admission))
        .collect()
}

pub fn judge_set(yaml: &str) -> Vec<Finding> {
    judge_set_with(yaml, None, Mode::Set)
}

/// The findings of one rule.
pub fn of_rule(findings: &[Finding], rule: RuleId) -> Vec<Finding> {
    findings
        .iter()
        .filter(|f| f.rule == rule)
        .cloned()
        .collect()
}

/// Asserts exactly one finding of `rule`, with `action`, on object `name`, and returns it.
pub fn one(findings: &[Finding], rule: RuleId, action: Action, name: &str) -> Finding {
    let matching: Vec<&Finding> = findings.iter().filter(|f| f.rule == rule).collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one {rule} finding, got: {findings:#?}"
    );
    let f = matching[0].clone();
    assert_eq!(f.action, action, "{f:#?}");
    assert_eq!(f.object.name, name, "{f:#?}");
    f
}

/// Asserts no finding of `rule`.
pub fn none(findings: &[Finding], rule: RuleId) {
    let matching = of_rule(findings, rule);
    assert!(
        matching.is_empty(),
        "expected no {rule} finding, got: {matching:#?}"
    );
}

/// The seeds' mysql-svc / mysql-ep pair (documents 000 and 002).
pub const MYSQL_PAIR: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: mysql-svc
  namespace: default
spec:
  clusterIP: None
  ports:
    - name: default-ep
      port: 3306
      protocol: TCP
      targetPort: 3306
  type: ClusterIP
---
apiVersion: v1
kind: Endpoints
metadata:
  name: mysql-ep
  namespace: default
subsets:
  - addresses:
      - ip: 114.32.146.154
    ports:
      - name: mysql
        port: 3306
        protocol: TCP
"#;
