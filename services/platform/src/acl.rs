//! ACLs and SCRAM users on a broker, through librdkafka's admin API.
//!
//! rust-rdkafka wraps no ACL or SCRAM calls, but librdkafka has them
//! (CreateAcls, DescribeAcls, DeleteAcls, AlterUserScramCredentials), so they
//! are called here directly: one request for all bindings, in the process,
//! with the client settings every role uses. Kafka's own `kafka-acls` and
//! `kafka-configs` tools would need a JVM start per principal and a Java
//! runtime wherever `topology apply` runs.

use crate::config::Secret;
use orelink_domain::access::{Grant, Op, Principal, ResourceKind};
use rdkafka::bindings as rd;
use rdkafka::producer::{BaseProducer, Producer};
use std::ffi::{CStr, CString};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{op}: {message}")]
    Admin { op: &'static str, message: String },
}

/// One allow-binding as the broker holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    pub kind: ResourceKind,
    pub name: String,
    pub prefix: bool,
    pub principal: String,
    pub op: Op,
}

/// The bindings that grant `principals` what they declare.
pub fn bindings(principals: &[Principal]) -> Vec<Binding> {
    let mut out: Vec<Binding> = principals
        .iter()
        .flat_map(|p| {
            p.grants.iter().flat_map(move |g: &Grant| {
                g.ops.iter().map(move |op| Binding {
                    kind: g.kind,
                    name: if g.kind == ResourceKind::Cluster { CLUSTER_NAME.into() } else { g.name.clone() },
                    prefix: g.prefix,
                    principal: format!("User:{}", p.name),
                    op: *op,
                })
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

const CLUSTER_NAME: &str = "kafka-cluster";
const TIMEOUT: Duration = Duration::from_secs(30);

fn restype(k: ResourceKind) -> rd::rd_kafka_ResourceType_t {
    match k {
        ResourceKind::Topic => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
        ResourceKind::Group => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
        ResourceKind::TransactionalId => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
        // librdkafka's BROKER is Kafka's CLUSTER resource (code 4).
        ResourceKind::Cluster => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_BROKER,
    }
}

fn kind_of(t: rd::rd_kafka_ResourceType_t) -> Option<ResourceKind> {
    use rd::rd_kafka_ResourceType_t::*;
    Some(match t {
        RD_KAFKA_RESOURCE_TOPIC => ResourceKind::Topic,
        RD_KAFKA_RESOURCE_GROUP => ResourceKind::Group,
        RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => ResourceKind::TransactionalId,
        RD_KAFKA_RESOURCE_BROKER => ResourceKind::Cluster,
        _ => return None,
    })
}

fn operation(op: Op) -> rd::rd_kafka_AclOperation_t {
    use rd::rd_kafka_AclOperation_t::*;
    match op {
        Op::Read => RD_KAFKA_ACL_OPERATION_READ,
        Op::Write => RD_KAFKA_ACL_OPERATION_WRITE,
        Op::Describe => RD_KAFKA_ACL_OPERATION_DESCRIBE,
        Op::IdempotentWrite => RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
    }
}

fn op_of(o: rd::rd_kafka_AclOperation_t) -> Option<Op> {
    use rd::rd_kafka_AclOperation_t::*;
    Some(match o {
        RD_KAFKA_ACL_OPERATION_READ => Op::Read,
        RD_KAFKA_ACL_OPERATION_WRITE => Op::Write,
        RD_KAFKA_ACL_OPERATION_DESCRIBE => Op::Describe,
        RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE => Op::IdempotentWrite,
        _ => return None,
    })
}

fn cstring(s: &str) -> CString {
    CString::new(s).expect("names have no NUL bytes")
}

unsafe fn text(p: *const std::os::raw::c_char) -> String {
    if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() }
}

/// An admin handle: a producer client whose native handle carries the calls.
pub struct AclAdmin {
    client: BaseProducer,
}

/// A result event, destroyed on drop.
struct EventGuard(*mut rd::rd_kafka_event_t);
impl Drop for EventGuard {
    fn drop(&mut self) {
        unsafe { rd::rd_kafka_event_destroy(self.0) }
    }
}

impl AclAdmin {
    pub fn new(config: &rdkafka::ClientConfig) -> Result<AclAdmin, AclError> {
        Ok(AclAdmin { client: config.create()? })
    }

    /// Runs one admin call with a fresh queue and waits for its result event.
    fn call(&self, op: &'static str, kind: rd::rd_kafka_admin_op_t, f: impl FnOnce(*mut rd::rd_kafka_t, *const rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t)) -> Result<EventGuard, AclError> {
        let rk = self.client.client().native_ptr();
        unsafe {
            let queue = rd::rd_kafka_queue_new(rk);
            let options = rd::rd_kafka_AdminOptions_new(rk, kind);
            let mut err = [0 as std::os::raw::c_char; 256];
            rd::rd_kafka_AdminOptions_set_request_timeout(options, TIMEOUT.as_millis() as i32, err.as_mut_ptr(), err.len());
            f(rk, options, queue);
            let ev = rd::rd_kafka_queue_poll(queue, (TIMEOUT.as_millis() + 5_000) as i32);
            rd::rd_kafka_AdminOptions_destroy(options);
            rd::rd_kafka_queue_destroy(queue);
            if ev.is_null() {
                return Err(AclError::Admin { op, message: "no answer from the broker".into() });
            }
            let ev = EventGuard(ev);
            if rd::rd_kafka_event_error(ev.0) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(AclError::Admin { op, message: text(rd::rd_kafka_event_error_string(ev.0)) });
            }
            Ok(ev)
        }
    }

    /// Every allow-binding on the cluster for principals whose user name starts with `prefix`.
    pub fn describe(&self, prefix: &str) -> Result<Vec<Binding>, AclError> {
        let mut err = [0 as std::os::raw::c_char; 256];
        let ev = self.call("describe ACLs", rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS, |rk, options, queue| unsafe {
            let filter = rd::rd_kafka_AclBindingFilter_new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
                std::ptr::null(),
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
                std::ptr::null(),
                std::ptr::null(),
                rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                err.as_mut_ptr(),
                err.len(),
            );
            rd::rd_kafka_DescribeAcls(rk, filter, options, queue);
            rd::rd_kafka_AclBinding_destroy(filter);
        })?;
        let mut out = Vec::new();
        unsafe {
            let result = rd::rd_kafka_event_DescribeAcls_result(ev.0);
            let mut n = 0usize;
            let acls = rd::rd_kafka_DescribeAcls_result_acls(result, &mut n);
            for i in 0..n {
                let a = *acls.add(i);
                let principal = text(rd::rd_kafka_AclBinding_principal(a));
                let (Some(kind), Some(op)) = (kind_of(rd::rd_kafka_AclBinding_restype(a)), op_of(rd::rd_kafka_AclBinding_operation(a))) else { continue };
                if !principal.strip_prefix("User:").is_some_and(|u| u.starts_with(prefix)) {
                    continue;
                }
                let prefix = rd::rd_kafka_AclBinding_resource_pattern_type(a) == rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED;
                out.push(Binding { kind, name: text(rd::rd_kafka_AclBinding_name(a)), prefix, principal, op });
            }
        }
        out.sort();
        Ok(out)
    }

    fn native(b: &Binding, filter: bool) -> Result<*mut rd::rd_kafka_AclBinding_t, AclError> {
        let (name, principal, host) = (cstring(&b.name), cstring(&b.principal), cstring("*"));
        let pattern = if b.prefix { rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED } else { rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL };
        let mut err = [0 as std::os::raw::c_char; 256];
        let allow = rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW;
        let p = unsafe {
            let new = if filter { rd::rd_kafka_AclBindingFilter_new } else { rd::rd_kafka_AclBinding_new };
            new(restype(b.kind), name.as_ptr(), pattern, principal.as_ptr(), host.as_ptr(), operation(b.op), allow, err.as_mut_ptr(), err.len())
        };
        if p.is_null() {
            return Err(AclError::Admin { op: "ACL binding", message: unsafe { text(err.as_ptr()) } });
        }
        Ok(p)
    }

    /// Creates the bindings (creating one that exists is a no-op on the broker).
    pub fn create(&self, bindings: &[Binding]) -> Result<(), AclError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let mut natives = bindings.iter().map(|b| Self::native(b, false)).collect::<Result<Vec<_>, _>>()?;
        let ev = self.call("create ACLs", rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS, |rk, options, queue| unsafe {
            rd::rd_kafka_CreateAcls(rk, natives.as_mut_ptr(), natives.len(), options, queue);
        });
        unsafe { rd::rd_kafka_AclBinding_destroy_array(natives.as_mut_ptr(), natives.len()) };
        let ev = ev?;
        let mut problems = Vec::new();
        unsafe {
            let result = rd::rd_kafka_event_CreateAcls_result(ev.0);
            let mut n = 0usize;
            let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut n);
            for i in 0..n {
                let e = rd::rd_kafka_acl_result_error(*results.add(i));
                if !e.is_null() {
                    problems.push(text(rd::rd_kafka_error_string(e)));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(AclError::Admin { op: "create ACLs", message: problems.join("; ") }) }
    }

    /// Deletes exactly these bindings.
    pub fn delete(&self, bindings: &[Binding]) -> Result<(), AclError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let mut natives = bindings.iter().map(|b| Self::native(b, true)).collect::<Result<Vec<_>, _>>()?;
        let ev = self.call("delete ACLs", rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS, |rk, options, queue| unsafe {
            rd::rd_kafka_DeleteAcls(rk, natives.as_mut_ptr(), natives.len(), options, queue);
        });
        unsafe { rd::rd_kafka_AclBinding_destroy_array(natives.as_mut_ptr(), natives.len()) };
        let ev = ev?;
        let mut problems = Vec::new();
        unsafe {
            let result = rd::rd_kafka_event_DeleteAcls_result(ev.0);
            let mut n = 0usize;
            let responses = rd::rd_kafka_DeleteAcls_result_responses(result, &mut n);
            for i in 0..n {
                let e = rd::rd_kafka_DeleteAcls_result_response_error(*responses.add(i));
                if !e.is_null() {
                    problems.push(text(rd::rd_kafka_error_string(e)));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(AclError::Admin { op: "delete ACLs", message: problems.join("; ") }) }
    }

    /// Creates or resets SCRAM-SHA-512 credentials (salt chosen by librdkafka).
    pub fn upsert_users(&self, users: &[(String, Secret)]) -> Result<(), AclError> {
        if users.is_empty() {
            return Ok(());
        }
        let names: Vec<CString> = users.iter().map(|(u, _)| cstring(u)).collect();
        let mut alterations: Vec<*mut rd::rd_kafka_UserScramCredentialAlteration_t> = users
            .iter()
            .zip(&names)
            .map(|((_, pw), name)| unsafe {
                let pw = pw.expose().as_bytes();
                rd::rd_kafka_UserScramCredentialUpsertion_new(name.as_ptr(), rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512, 8192, pw.as_ptr(), pw.len(), std::ptr::null(), 0)
            })
            .collect();
        let ev = self.call("set SCRAM credentials", rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ANY, |rk, options, queue| unsafe {
            rd::rd_kafka_AlterUserScramCredentials(rk, alterations.as_mut_ptr(), alterations.len(), options, queue);
        });
        unsafe { rd::rd_kafka_UserScramCredentialAlteration_destroy_array(alterations.as_mut_ptr(), alterations.len()) };
        let ev = ev?;
        let mut problems = Vec::new();
        unsafe {
            let result = rd::rd_kafka_event_AlterUserScramCredentials_result(ev.0);
            let mut n = 0usize;
            let responses = rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut n);
            for i in 0..n {
                let r = *responses.add(i);
                let e = rd::rd_kafka_AlterUserScramCredentials_result_response_error(r);
                if !e.is_null() && rd::rd_kafka_error_code(e) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    problems.push(format!("{}: {}", text(rd::rd_kafka_AlterUserScramCredentials_result_response_user(r)), text(rd::rd_kafka_error_string(e))));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(AclError::Admin { op: "set SCRAM credentials", message: problems.join("; ") }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orelink_domain::access;
    use orelink_domain::topology::{Topology, TopologySources};

    #[test]
    fn bindings_are_one_per_operation_and_sorted() {
        let t = Topology::parse(TopologySources::EMBEDDED).unwrap();
        let b = bindings(&access::namespaced(&access::principals(&t), "ns."));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        let partner: Vec<&Binding> = b.iter().filter(|x| x.principal == "User:ns.partner-xijiang-shipping").collect();
        assert_eq!(partner.len(), 7, "read+describe on its topic and its group prefix, write+describe on the offers, idempotent write: {partner:?}");
        assert!(b.iter().filter(|x| x.kind == ResourceKind::Cluster).all(|x| x.name == CLUSTER_NAME));
    }
}
