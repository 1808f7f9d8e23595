//! `InventoryEvent`: a site's stock of one product (compacted by site and product).

use super::check::Check;
use super::*;

#[derive(Debug, Clone, PartialEq)]
pub struct InventoryEvent {
    pub event_id: EventId,
    pub event_time: Millis,
    pub site_id: SiteId,
    pub product: ProductCode,
    pub on_hand: Kg,
    pub reserved: Kg,
}

impl InventoryEvent {
    pub fn validate(w: &wire::InventoryEvent, r: &Lookup) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let event_time = c.take(Millis::parse("event_time", w.event_time));
        let site_id = c.site(r, "site_id", &w.site_id);
        let product = c.product(r, &w.product_code);
        let on_hand = c.take(Kg::parse("on_hand_kg", w.on_hand_kg));
        let reserved = c.take(Kg::parse("reserved_kg", w.reserved_kg));
        if let (Some(o), Some(res)) = (on_hand, reserved) {
            c.rule(res <= o, "reserved_kg", || format!("{res} reserved is more than the {o} on hand"));
        }
        c.finish(|| {
            Some(InventoryEvent {
                event_id: event_id?,
                event_time: event_time?,
                site_id: site_id?,
                product: product?,
                on_hand: on_hand?,
                reserved: reserved?,
            })
        })
    }

    /// The compacted topic's key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.site_id, self.product)
    }

    pub fn to_wire(&self) -> wire::InventoryEvent {
        wire::InventoryEvent {
            event_id: self.event_id.to_string(),
            event_time: self.event_time.0,
            site_id: self.site_id.to_string(),
            product_code: self.product.to_string(),
            on_hand_kg: self.on_hand.to_wire(),
            reserved_kg: self.reserved.to_wire(),
        }
    }
}
