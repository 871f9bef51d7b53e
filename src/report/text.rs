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
        let _ = writeln!(
            out,
            "  {} {}  {} (line {})\n       {}",
            style.action(l.finding.action),
            l.finding.rule,
            l.finding.field,
            l.line,
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
    out
}
