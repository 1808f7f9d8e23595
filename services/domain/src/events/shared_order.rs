//! `SharedOrder`: an order remainder shared with other clusters, or the share withdrawn.

use super::check::Check;
use super::*;

/// An order remainder shared with other clusters (or the share withdrawn).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedOrder {
    pub event_id: EventId,
    pub shared_at: Millis,
    pub kind: SharedOrderKind,
    pub order_id: OrderId,
    pub origin_cluster: ClusterId,
    pub target_clusters: Vec<ClusterId>,
    pub product: ProductCode,
    pub remaining: Kg,
    pub deliver_by: Millis,
    pub destination_site: SiteId,
    pub buyer_id: Option<EnterpriseId>,
    pub max_price: Option<PricePerTonne>,
    wire: wire::SharedOrder,
}

impl SharedOrder {
    pub fn validate(w: &wire::SharedOrder, r: &Lookup) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let shared_at = c.take(Millis::parse("shared_at", w.shared_at));
        let order_id = c.take(OrderId::parse(&*w.order_id));
        let origin = c.cluster(r, "origin_cluster", &w.origin_cluster);
        let targets: Vec<Option<ClusterId>> = w.target_clusters.iter().map(|t| c.cluster(r, "target_clusters", t)).collect();
        let product = c.product(r, &w.product_code);
        let remaining = c.take(Kg::parse("remaining_kg", w.remaining_kg));
        let deliver_by = c.take(Millis::parse("deliver_by", w.deliver_by));
        let destination_site = c.site(r, "destination_site", &w.destination_site);
        let buyer_id = match &w.buyer_id {
            None => Some(None),
            Some(b) => c.take(EnterpriseId::parse(&**b).map(Some)),
        };
        let max_price = match w.max_price_cny_per_t {
            None => Some(None),
            Some(p) => c.take(PricePerTonne::parse("max_price_cny_per_t", p).map(Some)),
        };
        c.finish(|| {
            Some(SharedOrder {
                event_id: event_id?,
                shared_at: shared_at?,
                kind: w.kind,
                order_id: order_id?,
                origin_cluster: origin?,
                target_clusters: targets.into_iter().collect::<Option<Vec<_>>>()?,
                product: product?,
                remaining: remaining?,
                deliver_by: deliver_by?,
                destination_site: destination_site?,
                buyer_id: buyer_id?,
                max_price: max_price?,
                wire: w.clone(),
            })
        })
    }

    pub fn to_wire(&self) -> wire::SharedOrder {
        self.wire.clone()
    }
}
