//! The human-readable report: findings grouped by object, colour only on a terminal.

use std::fmt::Write;

use crate::finding::Action;
use crate::report::Report;

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn action(self, action: Action) -> String {
        let code = match action {
            Action::Deny => "1;31",
            Action::Warn => "33",
            Action::Info => "36",
        };
        self.paint(code, &format!("{:<4}", action.as_str()))
    }
}

pub fn render(report: &Report, style: Style) -> String {
    let mut out = String::new();
    for e in &report.errors {
        let place = match (e.document, e.line) {
            (0, _) => e.file.clone(),
            (_, 0) => e.file.clone(),
            (_, line) => format!("{}:{line}", e.file),
        };
        let _ = writeln!(
            out,
            "{} {place}: {}",
            style.paint("1;31", "error"),
            e.message
        );
    }
    if !report.errors.is_empty() {
        out.push('\n');
    }
    let mut current: Option<(&str, &crate::object::ObjectRef)> = None;
    for l in &report.findings {
        let object = &l.finding.object;
        if current != Some((l.file.as_str(), object)) {
            if current.is_some() {
                out.push('\n');
            }
            let _ = writeln!(
                out,
                "{} ({})",
                style.paint("1", &object.to_string()),
                l.file
            );
            current = Some((l.file.as_str(), object));
        }
        // Objects read from a cluster have no line.
        let line = match l.line {
            0 => String::new(),
            n => format!(" (line {n})"),
        };
        let _ = writeln!(
            out,
            "  {} {}  {}{line}\n       {}",
            style.action(l.finding.action),
            l.finding.rule,
            l.finding.field,
            l.finding.message
        );
    }
    if !report.findings.is_empty() {
        out.push('\n');
    }
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let _ = writeln!(
        out,
        "{} in {}: {}, {}, {}{}",
        plural(report.objects, "object", "objects"),
        plural(report.files, "input", "inputs"),
        plural(report.count(Action::Deny), "denial", "denials"),
        plural(report.count(Action::Warn), "warning", "warnings"),
        plural(report.count(Action::Info), "note", "notes"),
        if report.errors.is_empty() {
            String::new()
        } else {
            format!(
                ", {}",
                plural(report.errors.len(), "input error", "input errors")
            )
        }
    );
    for d in &report.duplicates {
        let places: Vec<String> =
            d.at.iter()
                .map(|(file, line)| format!("{file}:{line}"))
                .collect();
        let judged = places.last().cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {} is defined {} times ({}); the last, at {judged}, was judged, as kubectl apply of the same inputs would leave it",
            style.paint("1;33", "note"),
            d.object,
            places.len(),
            places.join(", ")
        );
    }
    if !report.unjudged.is_empty() {
        let total: usize = report.unjudged.values().sum();
        let why: Vec<String> = report
            .unjudged
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        let _ = writeln!(
            out,
            "{} not judged: {}",
            plural(total, "object", "objects"),
            why.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{Finding, RuleId};
    use crate::object::{Kind, ObjectRef};
    use crate::report::Located;

    #[test]
    fn findings_on_objects_read_from_a_cluster_show_no_line() {
        let finding = Finding {
            rule: RuleId::EndpointsOrphaned,
            action: Action::Warn,
            object: ObjectRef {
                kind: Kind::Endpoints,
                namespace: "shop".into(),
                name: "db-ep".into(),
            },
            field: "metadata.name".into(),
            message: "no Service".into(),
        };
        let mut report = Report {
            objects: 1,
            files: 1,
            ..Report::default()
        };
        report.findings.push(Located {
            finding: finding.clone(),
            file: "cluster".into(),
            line: 0,
        });
        let text = render(&report, Style { color: false });
        assert!(
            text.contains("endpoints-orphaned  metadata.name\n"),
            "{text}"
        );
        assert!(!text.contains("line 0"), "{text}");
        report.findings[0].line = 7;
        let text = render(&report, Style { color: false });
        assert!(text.contains("metadata.name (line 7)"), "{text}");
    }
}
