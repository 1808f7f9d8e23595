//! `TransportOffer`: a carrier offers room on a lane, or withdraws it.

use super::check::Check;
use super::*;
use crate::booking;

/// A lane's transit is at most a year: longer is a unit mix-up (minutes,
/// seconds), not a journey between Guangxi's clusters and ports.
pub const MAX_TRANSIT_HOURS: i64 = 8_760;

#[derive(Debug, Clone, PartialEq)]
pub struct TransportOffer {
    pub event_id: EventId,
    pub event_time: Millis,
    pub offer_id: String,
    pub kind: TransportOfferKind,
    pub carrier_id: EnterpriseId,
    pub mode: TransportMode,
    pub from_cluster: ClusterId,
    pub to_cluster: ClusterId,
    pub capacity: Kg,
    pub available_from: Millis,
    pub available_until: Millis,
    pub price: PricePerTonne,
    pub transit_hours: i64,
}

impl TransportOffer {
    /// Every problem at once; the carrier must be a partner of `topology/`.
    pub fn validate(w: &wire::TransportOffer, r: &Lookup) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let event_time = c.take(Millis::parse("event_time", w.event_time));
        let offer_id = c.take(EventId::parse(&*w.offer_id).map(|id| id.to_string()).map_err(|e| Invalid::new("offer_id", e.message)));
        let carrier_id = c.take(EnterpriseId::parse(&*w.carrier_id).map_err(|e| Invalid::new("carrier_id", e.message)));
        if carrier_id.is_some() {
            let known = r.topology.partner_by_carrier(&w.carrier_id).is_some();
            c.reference(if known { Ok(()) } else { Err(Invalid::new("carrier_id", format!("{} is no partner's carrier in topology/", w.carrier_id))) });
        }
        let from_cluster = c.cluster(r, "from_cluster", &w.from_cluster);
        let to_cluster = c.cluster(r, "to_cluster", &w.to_cluster);
        let capacity = match w.kind {
            TransportOfferKind::Withdrawn => c.take(Kg::parse("capacity_kg", w.capacity_kg)),
            TransportOfferKind::Offered => c.take(Kg::parse_positive("capacity_kg", w.capacity_kg)),
        };
        let available_from = c.take(Millis::parse("available_from", w.available_from));
        let available_until = c.take(Millis::parse("available_until", w.available_until));
        if let (Some(f), Some(u)) = (available_from, available_until) {
            c.rule(u > f, "available_until", || "is not after available_from".into());
        }
        let price = c.take(PricePerTonne::parse("price_cny_per_t", w.price_cny_per_t));
        c.rule((1..=MAX_TRANSIT_HOURS).contains(&w.transit_hours), "transit_hours", || format!("is {} h; a transit is 1 to {MAX_TRANSIT_HOURS} h", w.transit_hours));
        c.finish(|| {
            Some(TransportOffer {
                event_id: event_id?,
                event_time: event_time?,
                offer_id: offer_id?,
                kind: w.kind,
                carrier_id: carrier_id?,
                mode: w.mode,
                from_cluster: from_cluster?,
                to_cluster: to_cluster?,
                capacity: capacity?,
                available_from: available_from?,
                available_until: available_until?,
                price: price?,
                transit_hours: w.transit_hours,
            })
        })
    }

    pub fn lane(&self) -> booking::Lane {
        booking::Lane::new(self.from_cluster.as_str(), self.to_cluster.as_str())
    }

    /// What the booking engine reads of it.
    pub fn to_booking(&self) -> booking::Input {
        match self.kind {
            TransportOfferKind::Withdrawn => booking::Input::Withdrawn { lane: self.lane(), offer_id: self.offer_id.clone() },
            TransportOfferKind::Offered => booking::Input::Offered(booking::Offer {
                offer_id: self.offer_id.clone(),
                carrier_id: self.carrier_id.to_string(),
                mode: self.mode,
                lane: self.lane(),
                capacity_kg: self.capacity.to_wire(),
                available_from: self.available_from.0,
                available_until: self.available_until.0,
                price_cny_per_t: self.price.to_wire(),
                transit_hours: self.transit_hours,
            }),
        }
    }

    pub fn to_wire(&self) -> wire::TransportOffer {
        wire::TransportOffer {
            event_id: self.event_id.to_string(),
            event_time: self.event_time.0,
            offer_id: self.offer_id.clone(),
            kind: self.kind,
            carrier_id: self.carrier_id.to_string(),
            mode: self.mode,
            from_cluster: self.from_cluster.to_string(),
            to_cluster: self.to_cluster.to_string(),
            capacity_kg: self.capacity.to_wire(),
            available_from: self.available_from.0,
            available_until: self.available_until.0,
            price_cny_per_t: self.price.to_wire(),
            transit_hours: self.transit_hours,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer(r: &Lookup) -> wire::TransportOffer {
        wire::TransportOffer {
            event_id: "evt-off-1".into(),
            event_time: 1_796_083_200_000,
            offer_id: "OFF-BS-NN-1".into(),
            kind: TransportOfferKind::Offered,
            carrier_id: r.topology.partners[0].carrier_id.clone(),
            mode: TransportMode::Road,
            from_cluster: "baise".into(),
            to_cluster: "nanning".into(),
            capacity_kg: 99_000,
            available_from: 1_796_083_200_000,
            available_until: 1_796_688_000_000,
            price_cny_per_t: 95,
            transit_hours: 8,
        }
    }

    fn reference() -> (crate::catalog::Catalog, Topology) {
        (crate::catalog::Catalog::embedded(), Topology::embedded())
    }

    #[test]
    fn a_partners_offer_validates_and_round_trips() {
        let (catalog, topology) = reference();
        let r = Lookup { catalog: &catalog, topology: &topology };
        let w = offer(&r);
        let o = TransportOffer::validate(&w, &r).unwrap();
        assert_eq!(o.to_wire(), w);
        assert_eq!(o.lane().key(), "baise>nanning");
        assert!(matches!(o.to_booking(), booking::Input::Offered(b) if b.capacity_kg == 99_000 && b.lane == o.lane()));
    }

    #[test]
    fn every_problem_is_named_at_once_and_an_unknown_carrier_is_an_unknown_reference() {
        let (catalog, topology) = reference();
        let r = Lookup { catalog: &catalog, topology: &topology };
        let w = wire::TransportOffer {
            carrier_id: "91450100MA5L0ZZZ9X".into(),
            to_cluster: "guilin".into(),
            capacity_kg: 0,
            available_until: 1_796_000_000_000,
            transit_hours: 9_000,
            ..offer(&r)
        };
        let e = TransportOffer::validate(&w, &r).unwrap_err();
        let fields: Vec<&str> = e.problems.iter().map(|p| p.field.as_str()).collect();
        for f in ["carrier_id", "to_cluster", "capacity_kg", "available_until", "transit_hours"] {
            assert!(fields.contains(&f), "{f} not named: {e:?}");
        }
        assert_eq!(e.class, ErrorClass::UnknownReference, "{e:?}");
    }

    proptest! {
        /// The transit bound is exactly 1..=MAX_TRANSIT_HOURS, and a
        /// withdrawal may name no room.
        #[test]
        fn transit_and_room_bounds(hours in -10i64..10_000, kg in 0i64..200_000, withdrawn in any::<bool>()) {
            let (catalog, topology) = reference();
            let r = Lookup { catalog: &catalog, topology: &topology };
            let kind = if withdrawn { TransportOfferKind::Withdrawn } else { TransportOfferKind::Offered };
            let w = wire::TransportOffer { transit_hours: hours, capacity_kg: kg, kind, ..offer(&r) };
            let ok = TransportOffer::validate(&w, &r).is_ok();
            prop_assert_eq!(ok, (1..=MAX_TRANSIT_HOURS).contains(&hours) && (withdrawn || kg > 0));
        }
    }
}
