//! `CapacityEvent`: a provider declares or withdraws capacity at a site.

use super::check::Check;
use super::*;

#[derive(Debug, Clone, PartialEq)]
pub struct CapacityEvent {
    pub event_id: EventId,
    pub event_time: Millis,
    pub capacity_id: CapacityId,
    pub kind: CapacityKind,
    pub cluster: ClusterId,
    pub provider_id: EnterpriseId,
    pub site_id: SiteId,
    pub product: ProductCode,
    pub quantity: Kg,
    pub available_from: Millis,
    pub available_until: Millis,
    pub price: PricePerTonne,
    pub min_lot: Kg,
    pub energy_kwh_per_t: Option<u64>,
}

impl CapacityEvent {
    pub fn validate(w: &wire::CapacityEvent, r: &Lookup) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let event_time = c.take(Millis::parse("event_time", w.event_time));
        let capacity_id = c.take(CapacityId::parse(&*w.capacity_id));
        let cluster = c.cluster(r, "cluster", &w.cluster);
        let provider_id = c.take(EnterpriseId::parse(&*w.provider_id).map_err(|e| Invalid::new("provider_id", e.message)));
        let site_id = c.site(r, "site_id", &w.site_id);
        if let (Some(cl), Some(s)) = (&cluster, &site_id) {
            let home = r.topology.site(s.as_str()).and_then(|s| s.cluster.as_ref());
            c.rule(home == Some(cl), "site_id", || format!("{s} is not a site of cluster {cl}"));
        }
        let product = c.product(r, &w.product_code);
        let quantity = if w.kind == CapacityKind::Withdrawn {
            c.take(Kg::parse("quantity_kg", w.quantity_kg))
        } else {
            c.take(Kg::parse_positive("quantity_kg", w.quantity_kg))
        };
        let available_from = c.take(Millis::parse("available_from", w.available_from));
        let available_until = c.take(Millis::parse("available_until", w.available_until));
        if let (Some(f), Some(u)) = (available_from, available_until) {
            c.rule(u > f, "available_until", || "is not after available_from".into());
        }
        let price = c.take(PricePerTonne::parse("price_cny_per_t", w.price_cny_per_t));
        let min_lot = c.take(Kg::parse("min_lot_kg", w.min_lot_kg));
        if let (Some(m), Some(q), CapacityKind::Declared) = (min_lot, quantity, w.kind) {
            c.rule(m <= q, "min_lot_kg", || format!("{m} is more than the {q} declared"));
        }
        let energy = c.take(crate::quantity::parse_energy("energy_kwh_per_t", w.energy_kwh_per_t));
        c.finish(|| {
            Some(CapacityEvent {
                event_id: event_id?,
                event_time: event_time?,
                capacity_id: capacity_id?,
                kind: w.kind,
                cluster: cluster?,
                provider_id: provider_id?,
                site_id: site_id?,
                product: product?,
                quantity: quantity?,
                available_from: available_from?,
                available_until: available_until?,
                price: price?,
                min_lot: min_lot?,
                energy_kwh_per_t: energy?,
            })
        })
    }

    pub fn to_wire(&self) -> wire::CapacityEvent {
        wire::CapacityEvent {
            event_id: self.event_id.to_string(),
            event_time: self.event_time.0,
            capacity_id: self.capacity_id.to_string(),
            kind: self.kind,
            cluster: self.cluster.to_string(),
            provider_id: self.provider_id.to_string(),
            site_id: self.site_id.to_string(),
            product_code: self.product.to_string(),
            quantity_kg: self.quantity.to_wire(),
            available_from: self.available_from.0,
            available_until: self.available_until.0,
            price_cny_per_t: self.price.to_wire(),
            min_lot_kg: self.min_lot.to_wire(),
            energy_kwh_per_t: self.energy_kwh_per_t.map(|e| e as i64),
        }
    }
}
