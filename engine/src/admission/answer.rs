//! What an answer says, made from the findings: the denial message, the warnings (each one
//! line the API server keeps), the audit annotation and the verdict.

use std::fmt::Write;

use crate::cluster::ClusterView;
use crate::finding::{Action, Finding};
use crate::object::{Object, ServiceShape};
use crate::policy::Policy;

use super::{Decision, Status, Verdict};

/// A warning longer than this is cut.
const WARNING_MAX_CHARS: usize = 600;

/// The API server cuts every warning of an answer to 256 characters when they are more than
/// 4 KiB together; past this total, they are cut here to [`WARNING_SHORT_CHARS`] instead,
/// with a visible end.
const WARNINGS_TOTAL: usize = 4000;
const WARNING_SHORT_CHARS: usize = 250;

/// Lines of a denial message, and warnings, shown at most: a 10,000-address Endpoints with
/// a finding per address must not become a megabyte answer that nobody reads. The rest is
/// counted, and every finding stays in the metrics.
const MAX_SHOWN: usize = 20;

/// Audit entries kept at most (audit annotations are stored with every event).
const MAX_AUDITED: usize = 50;

/// `and 3 more (endpoint-metadata-ip ×3)`: what a capped list left out, by rule.
pub(super) fn left_out(rest: &[&Finding], what: &str) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for f in rest {
        match counts.iter_mut().find(|(r, _)| *r == f.rule.as_str()) {
            Some((_, n)) => *n += 1,
            None => counts.push((f.rule.as_str(), 1)),
        }
    }
    let by_rule: Vec<String> = counts.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
    format!("… and {} more {what} ({})", rest.len(), by_rule.join(", "))
}

/// Fills in what the answer says from the findings: denial message, warnings, audit, verdict.
pub(super) fn settle(mut decision: Decision, findings: Vec<Finding>) -> Decision {
    let denials: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.action == Action::Deny)
        .collect();
    let warned: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.action == Action::Warn)
        .collect();
    decision.warnings = warned
        .iter()
        .take(MAX_SHOWN)
        .map(|f| {
            warning_line(&format!(
                "[{}] {} {}: {}",
                f.rule, f.object, f.field, f.message
            ))
        })
        .collect();
    if warned.len() > MAX_SHOWN {
        decision
            .warnings
            .push(warning_line(&left_out(&warned[MAX_SHOWN..], "warnings")));
    }
    if decision.warnings.iter().map(String::len).sum::<usize>() > WARNINGS_TOTAL {
        for line in &mut decision.warnings {
            cut(line, WARNING_SHORT_CHARS);
        }
    }
    let audited: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.action > Action::Info)
        .collect();
    let mut audit: Vec<String> = audited
        .iter()
        .take(MAX_AUDITED)
        .map(|f| format!("{}={}@{}", f.rule, f.action.as_str(), f.field))
        .collect();
    if audited.len() > MAX_AUDITED {
        audit.push(format!("+{} more", audited.len() - MAX_AUDITED));
    }
    decision.audit = (!audit.is_empty()).then(|| audit.join("; "));
    decision.allowed = true;
    decision.status = None;
    if denials.is_empty() {
        decision.verdict = if decision.warnings.is_empty() {
            Verdict::Allowed
        } else {
            Verdict::Warned
        };
    } else {
        let mut message = String::new();
        for (i, f) in denials.iter().take(MAX_SHOWN).enumerate() {
            if i > 0 {
                message.push('\n');
            }
            let _ = write!(
                message,
                "[{}] {} {}: {}",
                f.rule, f.object, f.field, f.message
            );
        }
        if denials.len() > MAX_SHOWN {
            message.push('\n');
            message.push_str(&left_out(&denials[MAX_SHOWN..], "denials"));
        }
        decision.allowed = false;
        decision.status = Some(Status {
            code: 403,
            reason: "Forbidden",
            message,
        });
        decision.verdict = Verdict::Denied;
    }
    decision.findings = findings;
    decision
}

/// The denials and warnings of `decision` that rest on other objects: those the same
/// request does not get when its object is judged alone (`alone`: decided with only the
/// namespace's labels, see [`crate::cluster::LabelsOnly`]).
pub fn cross_object_findings(decision: &Decision, alone: &Decision) -> usize {
    decision
        .findings
        .iter()
        .filter(|f| f.action > Action::Info && !found_alone(f, alone))
        .count()
}

/// Whether `alone` has `f`'s finding (same rule and field) at least as strong.
pub(super) fn found_alone(f: &Finding, alone: &Decision) -> bool {
    alone
        .findings
        .iter()
        .any(|a| a.action >= f.action && a.rule == f.rule && a.field == f.field)
}

pub(super) fn denied_alone(f: &Finding, alone: &Decision) -> bool {
    alone
        .findings
        .iter()
        .any(|a| a.action == Action::Deny && a.rule == f.rule && a.field == f.field)
}

/// Turns the cross-object denials of `decision` into warnings that say why: the other
/// objects could not be confirmed. Denials the object earns alone stay.
pub fn downgrade_cross_object(decision: Decision, alone: &Decision, reason: &str) -> Decision {
    let mut findings = decision.findings.clone();
    for f in findings
        .iter_mut()
        .filter(|f| f.action == Action::Deny && !denied_alone(f, alone))
    {
        f.action = Action::Warn;
        f.message
            .insert_str(0, &format!("not denied because {reason}: "));
    }
    settle(decision, findings)
}

/// Deleting a selectorless Service leaves its hand-written EndpointSlices behind (the API
/// server removes only the same-name Endpoints): allowed, with a warning naming them.
pub(super) fn delete_warnings(
    object: &Object,
    view: &dyn ClusterView,
    policy: &Policy,
) -> Vec<String> {
    let Object::Service(service) = object else {
        return Vec::new();
    };
    if !matches!(
        ServiceShape::of(service),
        ServiceShape::IpMapping | ServiceShape::HeadlessMapping
    ) {
        return Vec::new();
    }
    let namespace = object.namespace();
    if policy
        .for_namespace(namespace, view.namespace_labels(namespace).as_ref())
        .exempt
    {
        return Vec::new();
    }
    let name = object.name();
    let left: Vec<String> = view
        .slices_for(namespace, &name)
        .into_iter()
        // What a controller wrote is owned by the Service or its Endpoints and goes with them.
        .filter(|s| s.controller.is_none())
        .map(|s| s.name)
        .collect();
    if left.is_empty() {
        return Vec::new();
    }
    vec![warning_line(&format!(
        "Service {namespace}/{name} is deleted but its hand-written EndpointSlice{} {} stay{} behind, unused; delete {}: kubectl delete endpointslice -n {namespace} {}",
        if left.len() == 1 { "" } else { "s" },
        left.join(", "),
        if left.len() == 1 { "s" } else { "" },
        if left.len() == 1 { "it" } else { "them" },
        left.join(" ")
    ))]
}

/// One line the API server keeps: no control characters, and not so long that the total
/// gets truncated.
pub(super) fn warning_line(text: &str) -> String {
    // Bytes bound characters: a short line without control characters is already one.
    if text.len() <= WARNING_MAX_CHARS && !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(&mut line, WARNING_MAX_CHARS);
    line
}

/// Cuts `line` to `max` characters, the last one an ellipsis.
pub(super) fn cut(line: &mut String, max: usize) {
    if line.chars().count() > max {
        *line = line.chars().take(max - 1).collect();
        line.push('…');
    }
}
