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
