//! Cross-cluster sharing policy (`topology/sharing.toml`) and the pure
//! decision the share role applies to each order status from the matcher.
//!
//! Contract rule 5: an order that allows cross-cluster filling and still has a
//! remainder its home cluster cannot fill is shared; by default at once, to
//! every other cluster. Per-cluster and per-order (rule) policies change the
//! delay, the targets and what the shared record reveals. A share is withdrawn
//! once the order is filled or cancelled.
//!
//! Decisions carry deterministic `event_id`s (order and target set), so a
//! status read twice yields a share the matcher already knows and ignores.

use crate::catalog::family_of;
use crate::events::{OrderState, SharedOrderKind, wire};
use crate::{Catalog, Invalid};
use std::collections::{BTreeMap, BTreeSet};

/// Fields a layer may set; unset fields fall through to the layer below.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    pub delay_minutes: Option<i64>,
    pub targets: Option<Vec<String>>,
    pub reveal_buyer: Option<bool>,
    pub reveal_price_cap: Option<bool>,
}

/// A per-order rule: matches on family and/or buyer.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub description: String,
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub buyer: Option<String>,
    #[serde(flatten)]
    pub patch: PolicyPatch,
}

/// The parsed `sharing.toml`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sharing {
    pub default: PolicyPatch,
    #[serde(default)]
    pub cluster: BTreeMap<String, PolicyPatch>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

/// The policy one order gets, all layers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub delay_ms: i64,
    /// Cluster ids, or `*` for every other cluster.
    pub targets: Vec<String>,
    pub reveal_buyer: bool,
    pub reveal_price_cap: bool,
    /// Which layers made it: "default", "cluster hechi", "rule: ...".
    pub source: String,
}

/// What to do about one order status.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to share or withdraw.
    Nothing,
    /// Publish `share` once event time reaches `due` (its `shared_at`).
    Share { due: i64, share: wire::SharedOrder },
    /// Publish this withdrawal now.
    Withdraw(wire::SharedOrder),
}

impl Sharing {
    /// The contract's default: at once, to every other cluster, revealing nothing.
    pub fn contract_default() -> Sharing {
        Sharing {
            default: PolicyPatch { delay_minutes: Some(0), targets: Some(vec!["*".into()]), reveal_buyer: Some(false), reveal_price_cap: Some(false) },
            cluster: BTreeMap::new(),
            rules: Vec::new(),
        }
    }

    /// Problems with cluster names, delays and rules, all at once.
    pub fn check(&self, clusters: &BTreeSet<String>, catalog: &Catalog) -> Vec<Invalid> {
        let mut p = Vec::new();
        let d = &self.default;
        for (field, missing) in [
            ("delay_minutes", d.delay_minutes.is_none()),
            ("targets", d.targets.is_none()),
            ("reveal_buyer", d.reveal_buyer.is_none()),
            ("reveal_price_cap", d.reveal_price_cap.is_none()),
        ] {
            if missing {
                p.push(Invalid::new(format!("topology/sharing.toml: default.{field}"), "the default must set every field"));
            }
        }
        let mut patch = |at: String, patch: &PolicyPatch| {
            if let Some(m) = patch.delay_minutes.filter(|m| !(0..=7 * 24 * 60).contains(m)) {
                p.push(Invalid::new(format!("{at}.delay_minutes"), format!("{m} is outside 0..=10080 (a week)")));
            }
            for t in patch.targets.iter().flatten().filter(|t| *t != "*" && !clusters.contains(*t)) {
                p.push(Invalid::new(format!("{at}.targets"), format!("unknown cluster {t:?}")));
            }
            if patch.targets.as_ref().is_some_and(|t| t.is_empty()) {
                p.push(Invalid::new(format!("{at}.targets"), "empty: to never share, the order says allow_cross_cluster = false"));
            }
        };
        patch("topology/sharing.toml: default".into(), &self.default);
        for (c, pp) in &self.cluster {
            patch(format!("topology/sharing.toml: cluster.{c}"), pp);
        }
        for (i, r) in self.rules.iter().enumerate() {
            patch(format!("topology/sharing.toml: rule[{i}]"), &r.patch);
        }
        for c in self.cluster.keys().filter(|c| !clusters.contains(*c)) {
            p.push(Invalid::new(format!("topology/sharing.toml: cluster.{c}"), "unknown cluster"));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("topology/sharing.toml: rule[{i}]");
            if r.family.is_none() && r.buyer.is_none() {
                p.push(Invalid::new(at.clone(), "a rule must match on family or buyer (the cluster layer covers the rest)"));
            }
            if let Some(f) = r.family.as_ref().filter(|f| !catalog.has_family(f)) {
                p.push(Invalid::new(format!("{at}.family"), format!("unknown product family {f:?}")));
            }
        }
        p
    }

    /// The policy of an order of `cluster`, `family` and `buyer`.
    pub fn policy_for(&self, cluster: &str, family: &str, buyer: &str) -> Policy {
        let mut layers: Vec<(String, &PolicyPatch)> = vec![("default".into(), &self.default)];
        if let Some(c) = self.cluster.get(cluster) {
            layers.push((format!("cluster {cluster}"), c));
        }
        let rule = self.rules.iter().find(|r| r.family.as_deref().is_none_or(|f| f == family) && r.buyer.as_deref().is_none_or(|b| b == buyer));
        if let Some(r) = rule {
            layers.push((format!("rule: {}", r.description), &r.patch));
        }
        let mut policy = Policy { delay_ms: 0, targets: vec!["*".into()], reveal_buyer: false, reveal_price_cap: false, source: String::new() };
        let mut sources = Vec::new();
        for (name, l) in layers {
            sources.push(name);
            if let Some(m) = l.delay_minutes {
                policy.delay_ms = m * 60_000;
            }
            if let Some(t) = &l.targets {
                policy.targets = t.clone();
            }
            if let Some(b) = l.reveal_buyer {
                policy.reveal_buyer = b;
            }
            if let Some(b) = l.reveal_price_cap {
                policy.reveal_price_cap = b;
            }
        }
        policy.source = sources.join(" > ");
        policy
    }

    /// What the share role does about `status`; `clusters` lists every cluster
    /// id in topology order (targets come out in that order).
    pub fn decide(&self, clusters: &[String], status: &wire::OrderStatus) -> Decision {
        let family = family_of(&status.product_code);
        match status.state {
            OrderState::Open if status.allow_cross_cluster && status.remaining_kg > 0 => {
                let policy = self.policy_for(&status.cluster, family, &status.buyer_id);
                let all = policy.targets.iter().any(|t| t == "*");
                let targets: Vec<String> = clusters.iter().filter(|c| **c != status.cluster && (all || policy.targets.contains(c))).cloned().collect();
                // Already open to every target: nothing new to say.
                if targets.is_empty() || targets.iter().all(|t| status.shared_to.contains(t)) {
                    return Decision::Nothing;
                }
                let due = status.status_at + policy.delay_ms;
                let share = wire::SharedOrder {
                    event_id: format!("share/{}/{}", status.order_id, targets.join("+")),
                    shared_at: due,
                    kind: SharedOrderKind::Shared,
                    order_id: status.order_id.clone(),
                    origin_cluster: status.cluster.clone(),
                    target_clusters: targets,
                    product_code: status.product_code.clone(),
                    remaining_kg: status.remaining_kg,
                    deliver_by: status.deliver_by,
                    destination_site: status.destination_site.clone(),
                    buyer_id: policy.reveal_buyer.then(|| status.buyer_id.clone()),
                    max_price_cny_per_t: policy.reveal_price_cap.then_some(status.max_price_cny_per_t),
                };
                Decision::Share { due, share }
            }
            OrderState::Filled | OrderState::Cancelled if !status.shared_to.is_empty() => Decision::Withdraw(wire::SharedOrder {
                event_id: format!("withdraw/{}/{}", status.order_id, status.shared_to.join("+")),
                shared_at: status.status_at,
                kind: SharedOrderKind::Withdrawn,
                order_id: status.order_id.clone(),
                origin_cluster: status.cluster.clone(),
                target_clusters: status.shared_to.clone(),
                product_code: status.product_code.clone(),
                remaining_kg: 0,
                deliver_by: status.deliver_by,
                destination_site: status.destination_site.clone(),
                buyer_id: None,
                max_price_cny_per_t: None,
            }),
            _ => Decision::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;
    use proptest::prelude::*;

    fn clusters() -> Vec<String> {
        ["baise", "hechi", "fangchenggang", "nanning"].map(String::from).to_vec()
    }

    fn status(cluster: &str, product: &str, state: OrderState, remaining: i64, cross: bool, shared_to: &[&str]) -> wire::OrderStatus {
        wire::OrderStatus {
            event_id: "ev/ORD-1".into(),
            status_at: 1_000_000,
            version: 1,
            state,
            order_id: "ORD-1".into(),
            cluster: cluster.into(),
            buyer_id: "91450100MA5L0ABC1X".into(),
            product_code: product.into(),
            destination_site: "nanning-jiangnan-processing".into(),
            deliver_by: 9_000_000,
            max_price_cny_per_t: 21_000,
            allow_cross_cluster: cross,
            remaining_kg: remaining,
            allocated_kg: 0,
            shared_to: shared_to.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn contract_default_shares_at_once_to_every_other_cluster_revealing_nothing() {
        let d = Sharing::contract_default().decide(&clusters(), &status("baise", "AL-INGOT-AL99.70", OrderState::Open, 5, true, &[]));
        let Decision::Share { due, share } = d else { panic!("{d:?}") };
        assert_eq!(due, 1_000_000);
        assert_eq!(share.target_clusters, ["hechi", "fangchenggang", "nanning"]);
        assert_eq!((share.buyer_id, share.max_price_cny_per_t), (None, None));
        assert_eq!(share.event_id, "share/ORD-1/hechi+fangchenggang+nanning");
    }

    #[test]
    fn layers_apply_default_then_cluster_then_first_matching_rule() {
        let s = Topology::embedded().sharing;
        let p = s.policy_for("hechi", "SN-INGOT", "x");
        assert_eq!((p.delay_ms, p.reveal_price_cap, p.reveal_buyer), (15 * 60_000, true, false));
        assert_eq!(p.source, "default > cluster hechi");
        let p = s.policy_for("nanning", "CU-CATHODE", "x");
        assert_eq!(p.targets, ["fangchenggang", "nanning"]);
        assert!(p.reveal_buyer, "the cluster layer still applies under the rule");
        let Decision::Share { share, .. } = s.decide(&clusters(), &status("nanning", "CU-CATHODE-CU-CATH-1", OrderState::Open, 5, true, &[])) else { panic!() };
        assert_eq!(share.target_clusters, ["fangchenggang"], "home is never a target");
        assert_eq!(share.buyer_id.as_deref(), Some("91450100MA5L0ABC1X"));
    }

    #[test]
    fn nothing_is_shared_without_permission_a_remainder_or_a_new_target() {
        let s = Sharing::contract_default();
        assert_eq!(s.decide(&clusters(), &status("baise", "AL-INGOT-AL99.70", OrderState::Open, 5, false, &[])), Decision::Nothing);
        assert_eq!(s.decide(&clusters(), &status("baise", "AL-INGOT-AL99.70", OrderState::Open, 0, true, &[])), Decision::Nothing);
        let all = ["hechi", "fangchenggang", "nanning"];
        assert_eq!(s.decide(&clusters(), &status("baise", "AL-INGOT-AL99.70", OrderState::Open, 5, true, &all)), Decision::Nothing);
        assert_eq!(s.decide(&clusters(), &status("baise", "AL-INGOT-AL99.70", OrderState::Filled, 0, true, &[])), Decision::Nothing);
    }

    #[test]
    fn closing_a_shared_order_withdraws_it_from_where_it_went() {
        let d = Sharing::contract_default().decide(&clusters(), &status("baise", "AL-INGOT-AL99.70", OrderState::Cancelled, 0, true, &["hechi"]));
        let Decision::Withdraw(w) = d else { panic!("{d:?}") };
        assert_eq!((w.kind, w.target_clusters.as_slice()), (SharedOrderKind::Withdrawn, ["hechi".to_string()].as_slice()));
    }

    #[test]
    fn bad_policies_are_reported_all_at_once() {
        let s: Sharing = toml::from_str(
            r#"
            [default]
            delay_minutes = -1
            targets = ["mars"]
            [cluster.atlantis]
            targets = []
            [[rule]]
            description = "matches nothing"
            [[rule]]
            description = "bad family"
            family = "GOLD-BAR"
            "#,
        )
        .unwrap();
        let problems: Vec<String> = s.check(&clusters().into_iter().collect(), &Catalog::embedded()).iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 8, "{problems:#?}");
    }

    proptest! {
        /// Redaction: a shared record never reveals what its policy hides, and
        /// never targets the home cluster.
        #[test]
        fn shares_reveal_only_what_the_policy_allows(buyer in any::<bool>(), cap in any::<bool>(), home in 0usize..4, mask in 1u8..16) {
            let targets: Vec<String> = clusters().into_iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, c)| c).collect();
            let mut s = Sharing::contract_default();
            s.default.reveal_buyer = Some(buyer);
            s.default.reveal_price_cap = Some(cap);
            s.default.targets = Some(targets.clone());
            let home = clusters()[home].clone();
            match s.decide(&clusters(), &status(&home, "AL-INGOT-AL99.70", OrderState::Open, 5, true, &[])) {
                Decision::Share { share, .. } => {
                    prop_assert_eq!(share.buyer_id.is_some(), buyer);
                    prop_assert_eq!(share.max_price_cny_per_t.is_some(), cap);
                    prop_assert!(!share.target_clusters.contains(&home));
                    prop_assert!(share.target_clusters.iter().all(|t| targets.contains(t)));
                }
                Decision::Nothing => prop_assert!(targets.iter().all(|t| *t == home)),
                Decision::Withdraw(_) => prop_assert!(false, "withdrawal of an open order"),
            }
        }
    }
}
