//! `extsvc-guard check`: judge manifests as one set, report, and exit 0/1/2.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};

use crate::cli::{CheckArgs, Color, FailOn, Format, exit};
use crate::finding::Action;
use crate::manifest::ManifestSet;
use crate::object::ObjectRef;
use crate::parallel;
use crate::policy::Policy;
use crate::report::{Duplicate, Located, Report, sarif, text};
use crate::rules::{self, Mode, judge};

pub(super) fn run(args: CheckArgs) -> u8 {
    let policy = match &args.policy {
        Some(path) => match Policy::load(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("extsvc-guard: {e}");
                return exit::USAGE;
            }
        },
        None => Policy::embedded(),
    };
    let set = ManifestSet::load(&args.paths);
    let report = check_set(&set, &policy);
    let rendered = match args.format {
        Format::Text => text::render(
            &report,
            text::Style {
                color: use_color(args.color),
            },
        ),
        Format::Json => report.to_json() + "\n",
        Format::Sarif => sarif::render(&report) + "\n",
    };
    // The set holds every object and source text: freeing it object by object, on one
    // core, took a noticeable share of a large check just before the process exits and
    // the system takes the memory back anyway.
    std::mem::forget(set);
    let mut out = std::io::stdout().lock();
    if out.write_all(rendered.as_bytes()).is_err() {
        return exit::USAGE;
    }
    exit_code(&report, args.fail_on)
}

pub(super) fn use_color(choice: Color) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

/// Judges every object of the set against the rest of it, in runs of objects spread over
/// the cores; findings keep the order of the objects.
pub fn check_set(set: &ManifestSet, policy: &Policy) -> Report {
    let view = set.view();
    let (later, duplicates) = duplicates(set);
    let runs = parallel::runs(set.objects.len(), OBJECTS_PER_RUN);
    let per_run = parallel::map(&runs, |run| {
        let mut locator = set.locator();
        let mut findings = Vec::new();
        let mut unjudged = Vec::new();
        for (index, loaded) in set
            .objects
            .get(run.clone())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            // An object defined again later is judged once, as the later copy.
            if later.contains(&(run.start + index)) {
                continue;
            }
            if let Some(why) = rules::unjudged(&loaded.object, &view, policy, Mode::Set) {
                unjudged.push(why);
                continue;
            }
            for finding in judge(&loaded.object, &view, policy, Mode::Set) {
                let (file, line) = locator.locate(loaded, &finding.field);
                findings.push(Located {
                    finding,
                    file,
                    line,
                });
            }
        }
        (findings, unjudged)
    });
    let mut report = Report {
        errors: set.errors.clone(),
        objects: set.objects.len(),
        files: set.sources.len(),
        duplicates,
        ..Report::default()
    };
    for (findings, unjudged) in per_run {
        report.findings.extend(findings);
        for why in unjudged {
            *report.unjudged.entry(why).or_default() += 1;
        }
    }
    report
}

/// The objects defined again later in the set (their indexes), and each such object with
/// every place it is defined, the judged (last) one last: `kubectl apply` of the same inputs
/// would leave the last one in the cluster.
fn duplicates(set: &ManifestSet) -> (HashSet<usize>, Vec<Duplicate>) {
    let mut places: HashMap<ObjectRef, Vec<usize>> = HashMap::new();
    for (index, loaded) in set.objects.iter().enumerate() {
        places
            .entry(loaded.object.reference())
            .or_default()
            .push(index);
    }
    let mut earlier = HashSet::new();
    let mut duplicates = Vec::new();
    let mut locator = set.locator();
    for (object, indexes) in places {
        let Some((_, before)) = indexes.split_last() else {
            continue;
        };
        if before.is_empty() {
            continue;
        }
        earlier.extend(before.iter().copied());
        let at = indexes
            .iter()
            .filter_map(|i| set.objects.get(*i))
            .map(|loaded| locator.locate(loaded, "metadata.name"))
            .collect();
        duplicates.push(Duplicate { object, at });
    }
    duplicates.sort_by(|a, b| a.at.cmp(&b.at));
    (earlier, duplicates)
}

/// Objects judged per unit of parallel work: enough to make handing it over cheap, few
/// enough that both cores stay busy to the end.
const OBJECTS_PER_RUN: usize = 512;

pub(super) fn exit_code(report: &Report, fail_on: FailOn) -> u8 {
    if !report.errors.is_empty() {
        return exit::USAGE;
    }
    let threshold = match fail_on {
        FailOn::Deny => Action::Deny,
        FailOn::Warn => Action::Warn,
    };
    if report
        .findings
        .iter()
        .any(|f| f.finding.action >= threshold)
    {
        exit::DENIED
    } else {
        exit::OK
    }
}
