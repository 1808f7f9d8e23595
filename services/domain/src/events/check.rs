//! Validation that reports every problem of a record at once.

use super::{ErrorClass, Lookup};
use crate::Invalid;
use crate::catalog::ProductCode;
use crate::ids::*;

/// Collects every problem of one record instead of stopping at the first.
pub(crate) struct Check {
    problems: Vec<Invalid>,
    unknown_reference: bool,
}

impl Check {
    pub(crate) fn new() -> Self {
        Check { problems: Vec::new(), unknown_reference: false }
    }
    pub(crate) fn take<T>(&mut self, r: Result<T, Invalid>) -> Option<T> {
        r.map_err(|e| self.problems.push(e)).ok()
    }
    pub(crate) fn reference<T>(&mut self, r: Result<T, Invalid>) -> Option<T> {
        if r.is_err() {
            self.unknown_reference = true;
        }
        self.take(r)
    }
    pub(crate) fn rule(&mut self, ok: bool, field: &str, msg: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(Invalid::new(field, msg()));
        }
    }
    pub(crate) fn product(&mut self, r: &Lookup, code: &str) -> Option<ProductCode> {
        let parsed = r.catalog.parse(code);
        // A well-formed code the catalog lacks is an unknown reference; a malformed one is invalid.
        if parsed.is_err() && crate::catalog::split_code(code).is_ok() {
            self.unknown_reference = true;
        }
        self.take(parsed)
    }
    pub(crate) fn cluster(&mut self, r: &Lookup, field: &str, id: &str) -> Option<ClusterId> {
        let c = self.take(ClusterId::parse(id).map_err(|e| Invalid::new(field, e.message)))?;
        self.reference(if r.topology.cluster(c.as_str()).is_some() {
            Ok(c)
        } else {
            Err(Invalid::new(field, format!("{id} is not a cluster of the topology")))
        })
    }
    pub(crate) fn site(&mut self, r: &Lookup, field: &str, id: &str) -> Option<SiteId> {
        let s = self.take(SiteId::parse(id).map_err(|e| Invalid::new(field, e.message)))?;
        self.reference(if r.topology.site(s.as_str()).is_some() {
            Ok(s)
        } else {
            Err(Invalid::new(field, format!("{id} is not a site of the topology")))
        })
    }
    pub(crate) fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Rejection> {
        if self.problems.is_empty() && let Some(v) = build() {
            return Ok(v);
        }
        let class = if self.unknown_reference { ErrorClass::UnknownReference } else { ErrorClass::Invalid };
        Err(Rejection { class, problems: self.problems })
    }
}

/// A record that decoded but broke the contract; carries every problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.reason())]
pub struct Rejection {
    pub class: ErrorClass,
    pub problems: Vec<Invalid>,
}

impl Rejection {
    pub fn reason(&self) -> String {
        self.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
    }
}
