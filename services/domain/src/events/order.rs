//! `OrderEvent`: a buyer places, amends or cancels an order.

use super::check::Check;
use super::*;

#[derive(Debug, Clone, PartialEq)]
pub struct OrderEvent {
    pub event_id: EventId,
    pub event_time: Millis,
    pub order_id: OrderId,
    pub kind: OrderKind,
    pub cluster: ClusterId,
    pub buyer_id: EnterpriseId,
    pub product: ProductCode,
    pub quantity: Kg,
    pub deliver_by: Millis,
    pub destination_site: SiteId,
    pub max_price: PricePerTonne,
    pub allow_cross_cluster: bool,
}

impl OrderEvent {
    pub fn validate(w: &wire::OrderEvent, r: &Lookup) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let event_time = c.take(Millis::parse("event_time", w.event_time));
        let order_id = c.take(OrderId::parse(&*w.order_id));
        let cluster = c.cluster(r, "cluster", &w.cluster);
        let buyer_id = c.take(EnterpriseId::parse(&*w.buyer_id).map_err(|e| Invalid::new("buyer_id", e.message)));
        let product = c.product(r, &w.product_code);
        // A cancellation need not restate a quantity; anything else orders something.
        let quantity = if w.kind == OrderKind::Cancelled {
            c.take(Kg::parse("quantity_kg", w.quantity_kg))
        } else {
            c.take(Kg::parse_positive("quantity_kg", w.quantity_kg))
        };
        let deliver_by = c.take(Millis::parse("deliver_by", w.deliver_by));
        // A placement or amendment must leave time to deliver; cancelling an order
        // whose deadline has passed is normal.
        if let (Some(t), Some(d), false) = (event_time, deliver_by, w.kind == OrderKind::Cancelled) {
            c.rule(d > t, "deliver_by", || "is not after event_time".into());
        }
        let destination_site = c.site(r, "destination_site", &w.destination_site);
        let max_price = c.take(PricePerTonne::parse("max_price_cny_per_t", w.max_price_cny_per_t));
        c.finish(|| {
            Some(OrderEvent {
                event_id: event_id?,
                event_time: event_time?,
                order_id: order_id?,
                kind: w.kind,
                cluster: cluster?,
                buyer_id: buyer_id?,
                product: product?,
                quantity: quantity?,
                deliver_by: deliver_by?,
                destination_site: destination_site?,
                max_price: max_price?,
                allow_cross_cluster: w.allow_cross_cluster,
            })
        })
    }

    pub fn to_wire(&self) -> wire::OrderEvent {
        wire::OrderEvent {
            event_id: self.event_id.to_string(),
            event_time: self.event_time.0,
            order_id: self.order_id.to_string(),
            kind: self.kind,
            cluster: self.cluster.to_string(),
            buyer_id: self.buyer_id.to_string(),
            product_code: self.product.to_string(),
            quantity_kg: self.quantity.to_wire(),
            deliver_by: self.deliver_by.0,
            destination_site: self.destination_site.to_string(),
            max_price_cny_per_t: self.max_price.to_wire(),
            allow_cross_cluster: self.allow_cross_cluster,
        }
    }
}
