//! Where traffic goes: IP addresses and host names, the CIDR and domain-pattern lists the
//! policy allows or denies, and the DNS-name rules `externalName` must follow.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// A target: an IP address or a DNS host name (lower case, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ip(IpAddr),
    Host(String),
}

impl Target {
    /// Reads an address or host as written in an object. IPv4-mapped IPv6 addresses
    /// (`::ffff:127.0.0.1`) are read as the IPv4 address they carry, so they cannot slip
    /// past an IPv4 deny range.
    pub fn parse(text: &str) -> Target {
        let trimmed = text.trim();
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(trimmed);
        match parse_ip(unbracketed) {
            Some(ip) => Target::Ip(ip),
            None => Target::Host(normalize_host(unbracketed)),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(ip) => write!(f, "{ip}"),
            Target::Host(h) => f.write_str(h),
        }
    }
}

/// Parses an IP literal the way Kubernetes reads it (Go's `ParseIPSloppy`, used by
/// kube-apiserver's validation and by kube-proxy): IPv4 parts may carry leading zeros and are
/// read as decimal, so `100.100.100.0200` is 100.100.100.200. A trailing dot (`1.2.3.4.`)
/// still reads as the address.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let ip = match IpAddr::from_str(text) {
        Ok(ip) => ip,
        Err(_) => parse_with_leading_zeros(text)?,
    };
    Some(canonical_ip(ip))
}

/// The address an IP literal written with leading zeros in an IPv4 part means to Kubernetes
/// (`010.1.1.1` → 10.1.1.1), or `None` when it has none or is no IP at all. Other tools read
/// such parts as octal (inet_aton: 010 is 8), and Kubernetes 1.33+ warns that a later
/// release will refuse them.
pub fn leading_zero_ip(text: &str) -> Option<IpAddr> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if IpAddr::from_str(text).is_ok() {
        return None;
    }
    parse_with_leading_zeros(text)
}

/// Go 1.16's `net.ParseIP`, which `ParseIPSloppy` keeps: dotted-quad IPv4, alone or as the
/// tail of an IPv6 address, each part decimal digits (any number of leading zeros) ≤ 255.
fn parse_with_leading_zeros(text: &str) -> Option<IpAddr> {
    let quad = |s: &str| -> Option<std::net::Ipv4Addr> {
        let mut octets = [0u8; 4];
        let mut parts = s.split('.');
        for octet in &mut octets {
            let part = parts.next()?;
            if part.is_empty() || part.len() > 12 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *octet = u8::try_from(part.parse::<u32>().ok()?).ok()?;
        }
        parts
            .next()
            .is_none()
            .then_some(std::net::Ipv4Addr::from(octets))
    };
    match text.rsplit_once(':') {
        None => quad(text).map(IpAddr::V4),
        Some((head, tail)) if tail.contains('.') => {
            let v4 = quad(tail)?;
            IpAddr::from_str(&format!("{head}:{v4}")).ok()
        }
        Some(_) => None,
    }
}

/// How an address reads in a message: as written, and what Kubernetes reads it as when the
/// two differ (`"100.100.100.0200" (read by Kubernetes as 100.100.100.200)`).
pub fn show_address(written: &str, ip: IpAddr) -> String {
    match leading_zero_ip(written.trim()) {
        Some(_) => format!("{:?} (read by Kubernetes as {ip})", written.trim()),
        None => ip.to_string(),
    }
}

/// IPv4-mapped IPv6 addresses become the IPv4 address they carry.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Lower case, no trailing dot: how DNS compares names.
pub fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A CIDR in a policy list, with why it is there when it is one of the well-known ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpNet,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let net = match IpNet::from_str(text) {
            Ok(net) => net,
            // A bare address means that one address.
            Err(_) => match IpAddr::from_str(text) {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "{text:?} is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an IP address"
                    ));
                }
            },
        };
        if net.network() != net.addr() {
            return Err(format!(
                "{text:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(Cidr { net })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(&canonical_ip(ip))
    }

    /// Why a well-known range is denied, for messages.
    pub fn description(&self) -> Option<&'static str> {
        well_known_range(&self.net)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.net)
    }
}

fn well_known_range(net: &IpNet) -> Option<&'static str> {
    let text = net.to_string();
    Some(match text.as_str() {
        "0.0.0.0/8" => "\"this network\", never a real destination",
        "127.0.0.0/8" => "loopback: the Pod or node itself",
        "::/128" => "the unspecified address",
        "::1/128" => "IPv6 loopback: the Pod or node itself",
        "169.254.0.0/16" => "link-local; 169.254.169.254 is the cloud metadata server",
        "fe80::/10" => "IPv6 link-local",
        "224.0.0.0/4" => "multicast",
        "ff00::/8" => "IPv6 multicast",
        "100.100.100.200/32" => "the Alibaba Cloud metadata server",
        "fd00:ec2::254/128" => "the AWS metadata server over IPv6",
        _ => return None,
    })
}

/// A host name pattern: an exact name (`db.example.com`) or every name under a domain
/// (`*.example.com`, which does not match `example.com` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    Subdomains(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim();
        let (wild, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let name = rest.trim_end_matches('.');
        if let Some(problem) = dns_name_problem(name) {
            return Err(format!(
                "{text:?} is not a host name or a *.domain pattern: {}",
                problem.what()
            ));
        }
        let name = name.to_owned();
        Ok(if wild {
            HostPattern::Subdomains(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    /// `host` must be normalised (lower case, no trailing dot).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(domain) => write!(f, "*.{domain}"),
        }
    }
}

/// A list of CIDRs and host patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetList {
    pub cidrs: Vec<Cidr>,
    pub hosts: Vec<HostPattern>,
}

/// Which entry of a list a target matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListMatch<'a> {
    Cidr(&'a Cidr),
    Host(&'a HostPattern),
}

impl fmt::Display for ListMatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListMatch::Cidr(c) => match c.description() {
                Some(d) => write!(f, "{c} ({d})"),
                None => write!(f, "{c}"),
            },
            ListMatch::Host(h) => write!(f, "{h}"),
        }
    }
}

impl TargetList {
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty() && self.hosts.is_empty()
    }

    pub fn find(&self, target: &Target) -> Option<ListMatch<'_>> {
        match target {
            Target::Ip(ip) => self
                .cidrs
                .iter()
                .find(|c| c.contains(*ip))
                .map(ListMatch::Cidr),
            Target::Host(host) => self
                .hosts
                .iter()
                .find(|h| h.matches(host))
                .map(ListMatch::Host),
        }
    }
}

/// What is wrong with a would-be DNS name, precisely enough to tell the user the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    Scheme(String),
    Port(String),
    Path(String),
    UpperCase,
    Underscore,
    TooLong(usize),
    LabelTooLong(String),
    EmptyLabel,
    BadLabelEdge(String),
    BadCharacter(char),
    /// `${NAS_HOST}`, `{{ .Values.host }}`: a template the manifest was not rendered with.
    TemplateVariable(String),
}

impl NameProblem {
    /// What is wrong, as a phrase.
    pub fn what(&self) -> String {
        match self {
            NameProblem::Empty => "it is empty".into(),
            NameProblem::Scheme(s) => format!("it starts with the URL scheme \"{s}://\""),
            NameProblem::Port(p) => format!("it ends with the port \":{p}\""),
            NameProblem::Path(p) => format!("it contains the path \"{p}\""),
            NameProblem::UpperCase => "it contains upper-case letters".into(),
            NameProblem::Underscore => "it contains \"_\", which DNS host names may not".into(),
            NameProblem::TooLong(n) => format!("it is {n} characters long, more than 253"),
            NameProblem::LabelTooLong(l) => {
                format!("its label \"{l}\" is longer than 63 characters")
            }
            NameProblem::EmptyLabel => {
                "it contains an empty label (\"..\" or a leading dot)".into()
            }
            NameProblem::BadLabelEdge(l) => {
                format!("its label \"{l}\" starts or ends with \"-\"")
            }
            NameProblem::BadCharacter(c) => format!("it contains {c:?}, which DNS names may not"),
            NameProblem::TemplateVariable(v) => format!(
                "it is the unrendered template variable {v}: the manifest was applied without rendering it (helm template, envsubst, kustomize replacements)"
            ),
        }
    }
}

/// Checks a DNS-1123 subdomain (what `externalName` must be), lenient only about one trailing
/// dot. The first problem found is returned, most telling first: a URL's scheme before its
/// upper-case letters.
pub fn dns_name_problem(name: &str) -> Option<NameProblem> {
    if name.is_empty() {
        return Some(NameProblem::Empty);
    }
    if let Some(variable) = template_variable(name) {
        return Some(NameProblem::TemplateVariable(variable));
    }
    if let Some((scheme, _)) = name.split_once("://") {
        return Some(NameProblem::Scheme(scheme.to_owned()));
    }
    if let Some(slash) = name.find('/') {
        return Some(NameProblem::Path(name[slash..].to_owned()));
    }
    if let Some((_, port)) = name.rsplit_once(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && !name.contains("::")
    {
        return Some(NameProblem::Port(port.to_owned()));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(NameProblem::UpperCase);
    }
    if name.contains('_') {
        return Some(NameProblem::Underscore);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Some(NameProblem::BadCharacter(c));
    }
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.len() > 253 {
        return Some(NameProblem::TooLong(body.len()));
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Some(NameProblem::EmptyLabel);
        }
        if label.len() > 63 {
            return Some(NameProblem::LabelTooLong(label.to_owned()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(NameProblem::BadLabelEdge(label.to_owned()));
        }
    }
    None
}

/// The Service a cluster-internal name stands for: `<service>.<namespace>.svc`, with or
/// without the cluster domain (`.svc.cluster.local`) and a trailing dot. Only these are
/// in-cluster names for an ExternalName: a CNAME target is absolute, so resolvers never
/// complete a shorter one (`db.shop`) with their search domains.
pub fn in_cluster_service(host: &str) -> Option<(String, String)> {
    let host = normalize_host(host);
    let mut labels = host.split('.');
    let (service, namespace, svc) = (labels.next()?, labels.next()?, labels.next()?);
    (svc == "svc" && !service.is_empty() && !namespace.is_empty())
        .then(|| (service.to_owned(), namespace.to_owned()))
}

/// The first unrendered template variable in `text`: `${VAR}`, `$(VAR)`, `{{ … }}`, `<%= … %>`.
pub fn template_variable(text: &str) -> Option<String> {
    for (open, close) in [("${", "}"), ("$(", ")"), ("{{", "}}"), ("<%", "%>")] {
        if let Some(start) = text.find(open)
            && let Some(len) = text[start + open.len()..].find(close)
        {
            let end = start + open.len() + len + close.len();
            return Some(text[start..end].to_owned());
        }
    }
    None
}

/// Words people write where an address belongs until they know it.
const PLACEHOLDERS: [&str; 10] = [
    "ip",
    "ip_address",
    "ipaddress",
    "address",
    "todo",
    "tbd",
    "changeme",
    "x.x.x.x",
    "<ip>",
    "your-ip",
];

/// What an address field holds instead of the IP address the API server requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressProblem {
    /// Absent or empty (in YAML, often a key spelled `IP:`, which is ignored).
    Missing,
    TemplateVariable(String),
    Placeholder,
    /// A DNS name: valid where names go (externalName), not here.
    HostName,
    /// An IP of the other family than the EndpointSlice's addressType.
    WrongFamily {
        expected: &'static str,
    },
    NotAnAddress,
}

/// Why `text` is not an IP address of `family` (`IPv4`, `IPv6`, or any when `None`), as the
/// API server would refuse it, or `None` when it is one.
pub fn address_problem(text: &str, family: Option<&'static str>) -> Option<AddressProblem> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Some(AddressProblem::Missing);
    }
    if let Some(ip) = parse_ip(trimmed) {
        // An IPv4-mapped IPv6 address is read as IPv4 for judging targets; its family is
        // what it is written as.
        let written_v6 = trimmed.contains(':');
        return match family {
            Some("IPv4") if written_v6 || !ip.is_ipv4() => {
                Some(AddressProblem::WrongFamily { expected: "IPv4" })
            }
            Some("IPv6") if !written_v6 => Some(AddressProblem::WrongFamily { expected: "IPv6" }),
            _ => None,
        };
    }
    if let Some(variable) = template_variable(trimmed) {
        return Some(AddressProblem::TemplateVariable(variable));
    }
    if PLACEHOLDERS.contains(&trimmed.to_ascii_lowercase().as_str())
        || trimmed.chars().all(|c| c == 'x' || c == 'X' || c == '.')
    {
        return Some(AddressProblem::Placeholder);
    }
    if dns_name_problem(trimmed).is_none() && trimmed.chars().any(|c| c.is_ascii_alphabetic()) {
        return Some(AddressProblem::HostName);
    }
    Some(AddressProblem::NotAnAddress)
}

/// Pulls the host out of something typed by habit: `https://db.example.com:5432/x` →
/// `db.example.com`. Used to suggest the fix for an invalid `externalName`.
pub fn host_part(text: &str) -> &str {
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    let rest = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if let Some(inner) = rest.strip_prefix('[') {
        return inner.split(']').next().unwrap_or(inner);
    }
    if rest.parse::<Ipv6Addr>().is_ok() {
        return rest;
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_read_as_ipv4() {
        assert_eq!(
            Target::parse("::ffff:169.254.169.254"),
            Target::Ip("169.254.169.254".parse().unwrap())
        );
    }

    #[test]
    fn ipv4_parts_with_leading_zeros_are_read_as_decimal_as_kubernetes_reads_them() {
        let meant: IpAddr = "100.100.100.200".parse().unwrap();
        assert_eq!(parse_ip("100.100.100.0200"), Some(meant));
        assert_eq!(leading_zero_ip("100.100.100.0200"), Some(meant));
        assert_eq!(parse_ip("010.001.1.1"), Some("10.1.1.1".parse().unwrap()));
        assert_eq!(
            parse_ip("::ffff:169.254.169.0254"),
            Some("169.254.169.254".parse().unwrap())
        );
        // Canonical spellings are not reported as leading-zero ones.
        assert_eq!(leading_zero_ip("100.100.100.200"), None);
        assert_eq!(leading_zero_ip("fd00::1"), None);
        // Still no IP: out of range, too few parts, not digits.
        for text in [
            "1.2.3.0256",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.x",
            "01.2.3.-4",
            "db.example.com",
        ] {
            assert_eq!(parse_ip(text), None, "{text}");
        }
        assert_eq!(
            show_address("100.100.100.0200", meant),
            "\"100.100.100.0200\" (read by Kubernetes as 100.100.100.200)"
        );
        assert_eq!(show_address("100.100.100.200", meant), "100.100.100.200");
    }

    #[test]
    fn what_an_address_field_holds_instead_of_an_address_is_named() {
        use AddressProblem::*;
        assert_eq!(address_problem("", None), Some(Missing));
        assert_eq!(address_problem("  ", None), Some(Missing));
        assert_eq!(
            address_problem("${NAS_IP}", None),
            Some(TemplateVariable("${NAS_IP}".into()))
        );
        assert_eq!(
            address_problem("{{ .Values.ip }}", None),
            Some(TemplateVariable("{{ .Values.ip }}".into()))
        );
        assert_eq!(address_problem("IP", None), Some(Placeholder));
        assert_eq!(address_problem("x.x.x.x", None), Some(Placeholder));
        assert_eq!(address_problem("nas.home.lan", None), Some(HostName));
        assert_eq!(address_problem("nas", None), Some(HostName));
        assert_eq!(
            address_problem("fd00::1", Some("IPv4")),
            Some(WrongFamily { expected: "IPv4" })
        );
        assert_eq!(
            address_problem("10.0.0.1", Some("IPv6")),
            Some(WrongFamily { expected: "IPv6" })
        );
        assert_eq!(address_problem("300.1.1.1", None), Some(NotAnAddress));
        assert_eq!(address_problem("10.0.0.1", Some("IPv4")), None);
        assert_eq!(address_problem("010.0.0.1", Some("IPv4")), None);
        assert_eq!(address_problem("fd00::1", Some("IPv6")), None);
        assert_eq!(address_problem("fd00::1", None), None);
    }

    #[test]
    fn cluster_internal_names_give_the_service_they_stand_for() {
        let db = Some(("db".to_owned(), "shop".to_owned()));
        assert_eq!(in_cluster_service("db.shop.svc"), db);
        assert_eq!(in_cluster_service("db.shop.svc.cluster.local"), db);
        assert_eq!(in_cluster_service("DB.shop.svc.cluster.local."), db);
        assert_eq!(in_cluster_service("db.shop"), None);
        assert_eq!(in_cluster_service("db.example.com"), None);
        assert_eq!(in_cluster_service("svc"), None);
    }

    #[test]
    fn an_unrendered_variable_in_a_name_is_named_as_such() {
        assert_eq!(
            dns_name_problem("${NAS_HOST}"),
            Some(NameProblem::TemplateVariable("${NAS_HOST}".into()))
        );
        assert_eq!(
            dns_name_problem("db.{{ .Release.Namespace }}.svc"),
            Some(NameProblem::TemplateVariable(
                "{{ .Release.Namespace }}".into()
            ))
        );
    }

    #[test]
    fn host_names_are_compared_in_lower_case_without_the_trailing_dot() {
        assert_eq!(
            Target::parse("Metadata.Google.Internal."),
            Target::Host("metadata.google.internal".into())
        );
    }

    #[test]
    fn a_wildcard_pattern_matches_subdomains_but_not_the_domain_itself() {
        let p = HostPattern::parse("*.localhost").unwrap();
        assert!(p.matches("foo.localhost"));
        assert!(p.matches("a.b.localhost"));
        assert!(!p.matches("localhost"));
        assert!(!p.matches("notlocalhost"));
        assert!(!p.matches("foo.localhost.example.com"));
    }

    #[test]
    fn cidrs_with_host_bits_are_refused_with_the_network_suggested() {
        let err = Cidr::parse("10.0.0.1/8").unwrap_err();
        assert!(err.contains("10.0.0.0/8"), "{err}");
        assert!(Cidr::parse("10.0.0.0/8").is_ok());
        assert!(Cidr::parse("fd00:ec2::254").is_ok());
        assert!(Cidr::parse("ten/8").is_err());
    }

    #[test]
    fn dns_problems_name_what_was_typed_by_habit() {
        assert_eq!(
            dns_name_problem("https://db.example.com"),
            Some(NameProblem::Scheme("https".into()))
        );
        assert_eq!(
            dns_name_problem("db.example.com:5432"),
            Some(NameProblem::Port("5432".into()))
        );
        assert_eq!(
            dns_name_problem("db.example.com/path"),
            Some(NameProblem::Path("/path".into()))
        );
        assert_eq!(
            dns_name_problem("DB.example.com"),
            Some(NameProblem::UpperCase)
        );
        assert_eq!(
            dns_name_problem("my_db.example.com"),
            Some(NameProblem::Underscore)
        );
        assert_eq!(dns_name_problem(""), Some(NameProblem::Empty));
        assert_eq!(dns_name_problem("db.example.com"), None);
        assert_eq!(dns_name_problem("db.example.com."), None);
        assert_eq!(dns_name_problem("mysql"), None);
    }

    #[test]
    fn host_part_strips_scheme_port_path_and_credentials() {
        assert_eq!(host_part("https://db.example.com:5432/x"), "db.example.com");
        assert_eq!(host_part("user@db.example.com"), "db.example.com");
        assert_eq!(host_part("192.168.1.10:3306"), "192.168.1.10");
        assert_eq!(host_part("[fd00::1]:80"), "fd00::1");
        assert_eq!(host_part("fd00::1"), "fd00::1");
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
    }

    proptest! {
        #[test]
        fn every_dns_1123_subdomain_is_accepted(labels in prop::collection::vec(label(), 1..5), dot in any::<bool>()) {
            let mut name = labels.join(".");
            if dot { name.push('.'); }
            prop_assert_eq!(dns_name_problem(&name), None);
        }

        #[test]
        fn names_with_upper_case_or_underscore_are_refused(labels in prop::collection::vec(label(), 1..4), bad in prop::sample::select(vec!['A', 'Z', '_']), at in 0usize..100) {
            let name = labels.join(".");
            let at = at % (name.len() + 1);
            let mut bad_name = name.clone();
            bad_name.insert(at, bad);
            prop_assert!(dns_name_problem(&bad_name).is_some());
        }

        #[test]
        fn dns_name_checking_never_panics(s in ".{0,300}") {
            let _ = dns_name_problem(&s);
            let _ = host_part(&s);
            let _ = Target::parse(&s);
        }

        #[test]
        fn an_ipv4_cidr_contains_exactly_the_addresses_sharing_its_prefix(net in any::<u32>(), len in 0u8..=32, ip in any::<u32>()) {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            let network = std::net::Ipv4Addr::from(net & mask);
            let cidr = Cidr::parse(&format!("{network}/{len}")).unwrap();
            let expected = (ip & mask) == (net & mask);
            prop_assert_eq!(cidr.contains(IpAddr::V4(ip.into())), expected);
            // The same address written IPv4-mapped must be judged the same.
            let mapped = IpAddr::V6(std::net::Ipv4Addr::from(ip).to_ipv6_mapped());
            prop_assert_eq!(cidr.contains(mapped), expected);
        }

        #[test]
        fn an_ipv6_cidr_contains_exactly_the_addresses_sharing_its_prefix(net in any::<u128>(), len in 0u8..=128, ip in any::<u128>()) {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            let network = Ipv6Addr::from(net & mask);
            prop_assume!(network.to_ipv4_mapped().is_none());
            let cidr = Cidr::parse(&format!("{network}/{len}")).unwrap();
            let addr = Ipv6Addr::from(ip);
            prop_assume!(addr.to_ipv4_mapped().is_none());
            prop_assert_eq!(cidr.contains(IpAddr::V6(addr)), (ip & mask) == (net & mask));
        }
    }
}
