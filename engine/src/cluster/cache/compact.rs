//! The compact pieces objects are kept as: shared strings, addresses, ports, and the
//! labels and annotations a policy needs ([`Kept`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::cluster::EndpointPort;
use crate::object::protocol_or_tcp;
use crate::policy::Policy;

/// What the cache keeps of an object's metadata beyond what the rules always read (the
/// controllers' markers, the leader-election annotation, external-dns annotations): the
/// labels and annotations a policy requires, whose values `required-metadata` compares,
/// and the uid, which `scan` names each object by in its reports. Which keys a policy
/// requires is known only with the policy, so the cache is told (see
/// [`ClusterCache::set_kept`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    pub labels: BTreeSet<String>,
    pub annotations: BTreeSet<String>,
    pub uid: bool,
}

impl Kept {
    /// What judging with `policy` reads of an object's labels and annotations.
    pub fn for_policy(policy: &Policy) -> Kept {
        Kept {
            labels: policy
                .required
                .labels
                .iter()
                .map(|r| r.key.clone())
                .collect(),
            annotations: policy
                .required
                .annotations
                .iter()
                .map(|r| r.key.clone())
                .collect(),
            uid: false,
        }
    }

    /// Whether objects kept with `self` hold everything `other` keeps.
    pub fn covers(&self, other: &Kept) -> bool {
        other.labels.is_subset(&self.labels)
            && other.annotations.is_subset(&self.annotations)
            && (self.uid || !other.uid)
    }
}

/// A string many objects share (a protocol, a port name, a managed-by value): kept once.
#[derive(Debug, Default)]
pub(super) struct Interner(HashSet<Arc<str>>);

impl Interner {
    pub(super) fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        self.0.insert(Arc::clone(&shared));
        shared
    }

    /// Forgets the strings no object uses any more.
    pub(super) fn prune(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
    }
}

/// An endpoint address: an IP literal in 17 bytes when it reads back exactly as written.
#[derive(Debug, Clone)]
pub(super) enum Address {
    Ip(IpAddr),
    Text(Box<str>),
}

impl Address {
    pub(super) fn new(text: String) -> Address {
        match text.parse::<IpAddr>() {
            Ok(ip) if ip.to_string() == text => Address::Ip(ip),
            _ => Address::Text(text.into_boxed_str()),
        }
    }

    pub(super) fn text(&self) -> String {
        match self {
            Address::Ip(ip) => ip.to_string(),
            Address::Text(t) => t.to_string(),
        }
    }
}

/// Every address's text, sorted and without repeats: how the projections list them.
pub(super) fn address_texts<'a>(lists: impl Iterator<Item = &'a [Address]>) -> Vec<String> {
    let mut texts: Vec<String> = lists.flat_map(|l| l.iter().map(Address::text)).collect();
    texts.sort();
    texts.dedup();
    texts
}

/// A port of an Endpoints subset or an EndpointSlice, as kube-proxy reads it (no name is
/// the empty name, no protocol TCP); `None`: a slice port without a number ("all ports").
#[derive(Debug, Clone)]
pub(super) struct Port {
    pub(super) name: Arc<str>,
    pub(super) protocol: Arc<str>,
    pub(super) port: Option<i32>,
}

impl Port {
    pub(super) fn new(
        name: Option<&String>,
        protocol: Option<&String>,
        port: Option<i32>,
        strings: &mut Interner,
    ) -> Port {
        Port {
            name: strings.get(name.map_or("", String::as_str)),
            protocol: strings.get(protocol_or_tcp(protocol)),
            port,
        }
    }

    pub(super) fn projection(&self) -> Option<EndpointPort> {
        Some(EndpointPort {
            name: self.name.to_string(),
            protocol: self.protocol.to_string(),
            port: self.port?,
        })
    }

    pub(super) fn name(&self) -> Option<String> {
        (!self.name.is_empty()).then(|| self.name.to_string())
    }
}

/// The labels and annotations kept of one object ([`Kept`]), and its uid when kept.
#[derive(Debug, Clone, Default)]
pub(super) struct Meta {
    pub(super) labels: Box<[(Arc<str>, Box<str>)]>,
    pub(super) annotations: Box<[(Arc<str>, Box<str>)]>,
    pub(super) uid: Option<Box<str>>,
}

/// The entries of `map` whose keys are in `keys` or selected by `also`.
pub(super) fn pick(
    map: Option<BTreeMap<String, String>>,
    keys: &BTreeSet<String>,
    also: &dyn Fn(&str) -> bool,
    strings: &mut Interner,
) -> Box<[(Arc<str>, Box<str>)]> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| keys.contains(k) || also(k))
        .map(|(k, v)| (strings.get(&k), v.into_boxed_str()))
        .collect()
}

impl Meta {
    /// What `kept` keeps of `meta`, plus the annotations `also` selects; `None` when nothing.
    pub(super) fn new(
        meta: &mut ObjectMeta,
        kept: &Kept,
        also: impl Fn(&str) -> bool,
        strings: &mut Interner,
    ) -> Option<Box<Meta>> {
        let labels = pick(meta.labels.take(), &kept.labels, &|_| false, strings);
        let annotations = pick(meta.annotations.take(), &kept.annotations, &also, strings);
        let uid = meta
            .uid
            .take()
            .filter(|_| kept.uid)
            .map(String::into_boxed_str);
        (!labels.is_empty() || !annotations.is_empty() || uid.is_some()).then(|| {
            Box::new(Meta {
                labels,
                annotations,
                uid,
            })
        })
    }

    /// `metadata` of a rebuilt object: its name, namespace and what was kept, with `labels`
    /// and `annotations` added where the kept ones do not already say them.
    pub(super) fn object_meta(
        meta: Option<&Meta>,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> ObjectMeta {
        let map = |kept: Option<&[(Arc<str>, Box<str>)]>, added: &[(&str, &str)]| {
            let mut map: BTreeMap<String, String> = kept
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for (k, v) in added {
                map.entry((*k).to_owned())
                    .or_insert_with(|| (*v).to_owned());
            }
            (!map.is_empty()).then_some(map)
        };
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: map(meta.map(|m| &*m.labels), labels),
            annotations: map(meta.map(|m| &*m.annotations), annotations),
            uid: meta.and_then(|m| m.uid.as_deref()).map(str::to_owned),
            ..ObjectMeta::default()
        }
    }
}
