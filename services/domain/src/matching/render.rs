//! Decisions rendered into the contract's records (allocations with their
//! explanation, order statuses): text is made here only, at the edge, when a
//! record is written; a restore renders nothing.

use super::*;


impl Book {
    pub(super) fn render_status(&self, net: &Network, d: &Status, cause: &EventId) -> wire::OrderStatus {
        let o = &self.orders[d.order as usize];
        let home = o.home as usize;
        wire::OrderStatus {
            event_id: format!("{cause}/{}", o.id),
            status_at: d.at,
            version: d.version as i32,
            state: d.state,
            order_id: o.id.to_string(),
            cluster: net.cluster_name(home).to_owned(),
            buyer_id: o.buyer.to_string(),
            product_code: self.product(o.rank).to_string(),
            destination_site: net.site_name(o.dest as usize).to_owned(),
            deliver_by: d.deliver_by,
            max_price_cny_per_t: o.max_price as i64,
            allow_cross_cluster: o.allow_cross,
            remaining_kg: d.remaining_kg as i64,
            allocated_kg: d.allocated_kg as i64,
            shared_to: (0..net.cluster_count()).filter(|c| *c != home && d.visible & (1 << c) != 0).map(|c| net.cluster_name(c).to_owned()).collect(),
        }
    }

    pub(super) fn render_fill(&self, net: &Network, f: &Fill) -> wire::Allocation {
        let (o, c, route) = (&self.orders[f.order as usize], &self.caps[f.cap as usize], &f.route);
        let (o_home, c_cluster, c_site) = (o.home as usize, c.cluster as usize, c.site as usize);
        let home = c.cluster == o.home;
        let freight = route.freight_cny_per_t as i64;
        let landed = c.price + route.freight_cny_per_t as u64;
        let product = self.product(c.rank);
        let summary = format!(
            "{} from {} ({}, {}) by {} {} km in {} h: {} + {} freight = {} CNY/t within the {} cap; rank {}",
            product,
            net.site_name(c_site),
            net.cluster_name(c_cluster),
            if home { "home cluster" } else { "shared" },
            route.mode.as_str(),
            route.distance_km,
            route.transit_hours,
            c.price,
            freight,
            landed,
            o.max_price,
            f.rank
        );
        wire::Allocation {
            allocation_id: format!("ALC-{}-{}", o.id, f.number),
            order_id: o.id.to_string(),
            capacity_id: c.id.to_string(),
            order_cluster: net.cluster_name(o_home).to_owned(),
            capacity_cluster: net.cluster_name(c_cluster).to_owned(),
            buyer_id: o.buyer.to_string(),
            provider_id: c.provider.to_string(),
            product_code: product.to_string(),
            quantity_kg: f.quantity_kg as i64,
            price_cny_per_t: c.price as i64,
            freight_cny_per_t: freight,
            from_site: net.site_name(c_site).to_owned(),
            destination_site: net.site_name(o.dest as usize).to_owned(),
            decided_at: f.decided_at,
            explanation: wire::Explanation {
                rank: f.rank as i32,
                home_cluster: home,
                requested_product_code: self.product(o.rank).to_string(),
                landed_cost_cny_per_t: landed as i64,
                distance_km: route.distance_km as i64,
                transit_hours: route.transit_hours as i64,
                mode: route.mode,
                energy_kwh_per_t: c.energy.map(|e| e as i64),
                summary,
            },
            pick_up: Some(c.available_from.max(o.event_time)),
            deliver_by: Some(o.deliver_by),
        }
    }
}

