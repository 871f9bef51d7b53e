//! `externalname-invalid`: a `spec.externalName` that is no DNS name — a URL scheme, a
//! port or a path typed by habit, upper case, `_`, or nothing at all. (IP addresses are
//! `externalname-ip`'s.)

use crate::object::Object;
use crate::policy::RuleAction;
use crate::rules::externalname_ip::external_name;
use crate::rules::{Context, Draft};
use crate::target::{NameProblem, dns_name_problem, host_part, normalize_host, parse_ip};

pub const ID: &str = "externalname-invalid";
pub const SUMMARY: &str = "spec.externalName that is not a DNS name (scheme, port, path, upper case, underscore, empty)";
pub const DEFAULT: RuleAction = RuleAction::Deny;

pub fn check(object: &Object, _cx: &Context<'_>) -> Vec<Draft> {
    let Object::Service(service) = object else {
        return Vec::new();
    };
    let is_external_name = service
        .spec
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() == Some("ExternalName"));
    if !is_external_name {
        return Vec::new();
    }
    let value = external_name(service).unwrap_or_default();
    if parse_ip(host_part(value)).is_some() {
        return Vec::new();
    }
    let Some(problem) = dns_name_problem(value) else {
        return Vec::new();
    };
    let suggestion = normalize_host(host_part(value));
    let use_instead = if !suggestion.is_empty() && dns_name_problem(&suggestion).is_none() {
        format!("; use {suggestion:?}")
    } else {
        String::new()
    };
    let message = match &problem {
        NameProblem::Empty => {
            "is empty: an ExternalName Service aliases a DNS name; set spec.externalName to it (for example db.example.com)".to_owned()
        }
        NameProblem::Scheme(_) | NameProblem::Path(_) => format!(
            "{value:?} is a URL, not a DNS name: {}; cluster DNS can only alias a host name{use_instead}",
            problem.what()
        ),
        NameProblem::Port(_) => format!(
            "{value:?} is not a DNS name: {}; ports belong in spec.ports, the alias is the host name alone{use_instead}",
            problem.what()
        ),
        NameProblem::UpperCase => format!(
            "{value:?} is not a valid DNS name: {}; DNS names in Kubernetes are lower case{use_instead}",
            problem.what()
        ),
        NameProblem::TemplateVariable(_) => format!(
            "{value:?} is not a DNS name: {}; the API server refuses it (a DNS-1123 subdomain holds only lower-case letters, digits, '-' and '.')",
            problem.what()
        ),
        _ => format!(
            "{value:?} is not a DNS name: {}; set spec.externalName to the external host's real DNS name",
            problem.what()
        ),
    };
    vec![Draft::violation("spec.externalName", message)]
}

#[cfg(test)]
mod tests {
    use crate::finding::{Action, RuleId};
    use crate::rules::testing::*;

    fn judge_external_name(value: &str) -> Vec<crate::finding::Finding> {
        judge_set(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: ext}}\nspec:\n  type: ExternalName\n  externalName: {value:?}\n"
        ))
    }

    #[test]
    fn an_unrendered_variable_is_named_as_such_not_as_upper_case() {
        let findings = judge_external_name("${NAS_HOST}");
        let f = one(&findings, RuleId::ExternalnameInvalid, Action::Deny, "ext");
        assert!(
            f.message.starts_with("\"${NAS_HOST}\" is not a DNS name: it is the unrendered template variable ${NAS_HOST}"),
            "{}",
            f.message
        );
        assert!(!f.message.contains("upper"), "{}", f.message);
    }

    #[test]
    fn a_url_is_denied_with_the_host_suggested() {
        let findings = judge_external_name("https://api.example.com/v1");
        let f = one(&findings, RuleId::ExternalnameInvalid, Action::Deny, "ext");
        assert!(
            f.message.contains("use \"api.example.com\""),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_port_is_denied_and_sent_to_spec_ports() {
        let findings = judge_external_name("db.example.com:5432");
        let f = one(&findings, RuleId::ExternalnameInvalid, Action::Deny, "ext");
        assert!(
            f.message.contains("ports belong in spec.ports"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("use \"db.example.com\""),
            "{}",
            f.message
        );
    }

    #[test]
    fn upper_case_underscores_and_empty_names_are_denied() {
        for bad in ["DB.example.com", "my_db.example.com", ""] {
            let findings = judge_external_name(bad);
            one(&findings, RuleId::ExternalnameInvalid, Action::Deny, "ext");
        }
    }

    #[test]
    fn valid_names_pass_including_a_trailing_dot_and_a_single_label() {
        for good in [
            "db.example.com",
            "db.example.com.",
            "mysql",
            "api.somecompany.com",
        ] {
            let findings = judge_external_name(good);
            none(&findings, RuleId::ExternalnameInvalid);
        }
    }
}
