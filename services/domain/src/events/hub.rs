//! Records the hub writes itself (allocations, order statuses): checked for
//! shape and plausible values only.

use super::check::Check;
use super::*;

/// Records the hub writes itself are checked only for shape: ids and codes
/// parse, quantities are sane. They are trusted otherwise.
pub fn validate_allocation(w: &wire::Allocation, r: &Lookup) -> Result<(), Rejection> {
    let mut c = Check::new();
    c.take(AllocationId::parse(&*w.allocation_id));
    c.take(OrderId::parse(&*w.order_id));
    c.take(CapacityId::parse(&*w.capacity_id));
    c.cluster(r, "order_cluster", &w.order_cluster);
    c.cluster(r, "capacity_cluster", &w.capacity_cluster);
    c.product(r, &w.product_code);
    c.take(Kg::parse_positive("quantity_kg", w.quantity_kg));
    c.take(PricePerTonne::parse("price_cny_per_t", w.price_cny_per_t));
    c.take(PricePerTonne::parse_charge("freight_cny_per_t", w.freight_cny_per_t));
    c.take(Millis::parse("decided_at", w.decided_at));
    if let Some(t) = w.pick_up {
        c.take(Millis::parse("pick_up", t));
    }
    if let Some(t) = w.deliver_by {
        c.take(Millis::parse("deliver_by", t));
    }
    c.finish(|| Some(()))
}

/// The booker's record, checked for shape and plausible values like an allocation.
pub fn validate_booking(w: &wire::Booking, r: &Lookup) -> Result<(), Rejection> {
    let mut c = Check::new();
    c.take(AllocationId::parse(&*w.allocation_id));
    c.cluster(r, "from_cluster", &w.from_cluster);
    c.cluster(r, "to_cluster", &w.to_cluster);
    c.take(Kg::parse_positive("quantity_kg", w.quantity_kg));
    c.take(Millis::parse("pick_up", w.pick_up));
    c.take(Millis::parse("decided_at", w.decided_at));
    c.take(PricePerTonne::parse_charge("planning_freight_cny_per_t", w.planning_freight_cny_per_t));
    c.rule(w.booked == (w.offer_id.is_some() && w.carrier_id.is_some() && w.mode.is_some() && w.arrival.is_some() && w.price_cny_per_t.is_some()), "booked", || {
        "a booked part names its offer, carrier, mode, arrival and price; an unbooked one none of them".into()
    });
    if let Some(p) = w.price_cny_per_t {
        c.take(PricePerTonne::parse_charge("price_cny_per_t", p));
    }
    c.finish(|| Some(()))
}

/// A capacity-gap alert: its cell exists and its numbers are within the contract's bounds.
pub fn validate_alert(w: &wire::Alert, r: &Lookup) -> Result<(), Rejection> {
    let mut c = Check::new();
    c.take(EventId::parse(&*w.alert_id));
    c.cluster(r, "cluster", &w.cluster);
    c.rule(r.catalog.has_family(&w.family), "family", || format!("{} is no product family of the catalog", w.family));
    c.take(Millis::parse("opened_at", w.opened_at));
    c.take(Millis::parse("at", w.at));
    c.rule(w.at >= w.opened_at, "at", || "is before opened_at".into());
    c.rule((1..=24 * 366).contains(&w.horizon_hours), "horizon_hours", || format!("is {}", w.horizon_hours));
    for (field, kg) in [("demand_kg", w.demand_kg), ("remaining_kg", w.remaining_kg), ("expected_kg", w.expected_kg)] {
        c.take(Kg::parse(field, kg));
    }
    c.finish(|| Some(()))
}

/// The matcher's order status, checked for shape and plausible values like
/// an allocation: what reads it (share, view) never sees numbers no event admits.
pub fn validate_order_status(w: &wire::OrderStatus, r: &Lookup) -> Result<(), Rejection> {
    let mut c = Check::new();
    c.take(EventId::parse(&*w.event_id));
    c.take(Millis::parse("status_at", w.status_at));
    c.rule(w.version >= 1, "version", || format!("is {}; versions start at 1", w.version));
    c.take(OrderId::parse(&*w.order_id));
    c.cluster(r, "cluster", &w.cluster);
    c.product(r, &w.product_code);
    c.take(Millis::parse("deliver_by", w.deliver_by));
    c.take(PricePerTonne::parse("max_price_cny_per_t", w.max_price_cny_per_t));
    c.take(Kg::parse("remaining_kg", w.remaining_kg));
    c.take(Kg::parse("allocated_kg", w.allocated_kg));
    for t in &w.shared_to {
        c.cluster(r, "shared_to", t);
    }
    c.finish(|| Some(()))
}
