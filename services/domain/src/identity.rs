//! Whose an event is: the one binding every door applies (the gateway's API
//! keys, the edge relay's site keys, an enterprise's Kafka principal). An
//! enterprise speaks for itself: orders as their buyer, capacity as its
//! provider, inventory of the sites it operates, shipments it carries or
//! sends from its sites. Pure: the topology says who operates which site.

use crate::events::{CapacityEvent, InventoryEvent, OrderEvent, ShipmentEvent};
use crate::topology::Enterprise;

/// The identity fields of one contract event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Claim<'a> {
    Order { buyer: &'a str },
    Capacity { provider: &'a str },
    Inventory { site: &'a str },
    Shipment { carrier: &'a str, from_site: &'a str },
}

impl<'a> Claim<'a> {
    pub fn order(e: &'a OrderEvent) -> Self {
        Claim::Order { buyer: e.buyer_id.as_str() }
    }
    pub fn capacity(e: &'a CapacityEvent) -> Self {
        Claim::Capacity { provider: e.provider_id.as_str() }
    }
    pub fn inventory(e: &'a InventoryEvent) -> Self {
        Claim::Inventory { site: e.site_id.as_str() }
    }
    pub fn shipment(e: &'a ShipmentEvent) -> Self {
        Claim::Shipment { carrier: e.carrier_id.as_str(), from_site: e.from_site.as_str() }
    }
}

impl Enterprise {
    pub fn operates(&self, site: &str) -> bool {
        self.sites.iter().any(|s| s.as_str() == site)
    }

    /// `Ok` when the event is this enterprise's own; otherwise why not, for the dead letter.
    pub fn speaks_for(&self, claim: Claim<'_>) -> Result<(), String> {
        let own = match claim {
            Claim::Order { buyer } => buyer == self.id,
            Claim::Capacity { provider } => provider == self.id,
            Claim::Inventory { site } => self.operates(site),
            Claim::Shipment { carrier, from_site } => carrier == self.id || self.operates(from_site),
        };
        if own {
            return Ok(());
        }
        Err(match claim {
            Claim::Order { buyer } => format!("an order of buyer {buyer} on the ingest topic of enterprise {}", self.id),
            Claim::Capacity { provider } => format!("capacity of provider {provider} on the ingest topic of enterprise {}", self.id),
            Claim::Inventory { site } => format!("inventory of site {site}, which enterprise {} does not operate", self.id),
            Claim::Shipment { carrier, from_site } => {
                format!("a shipment carried by {carrier} from site {from_site}: enterprise {} is neither the carrier nor operates the site", self.id)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SiteId;
    use proptest::prelude::*;

    fn pingguo() -> Enterprise {
        Enterprise {
            id: "91451000MA5L0CHG10".into(),
            name: "Pingguo".into(),
            name_zh: "平果".into(),
            sites: vec![SiteId::parse("baise-pingguo-smelter").unwrap()],
        }
    }

    #[test]
    fn an_enterprise_speaks_for_itself_and_its_sites_only() {
        let e = pingguo();
        assert_eq!(e.speaks_for(Claim::Order { buyer: "91451000MA5L0CHG10" }), Ok(()));
        assert_eq!(e.speaks_for(Claim::Capacity { provider: "91451000MA5L0CHG10" }), Ok(()));
        assert_eq!(e.speaks_for(Claim::Inventory { site: "baise-pingguo-smelter" }), Ok(()));
        assert_eq!(e.speaks_for(Claim::Shipment { carrier: "91450600MA5L0BGL1P", from_site: "baise-pingguo-smelter" }), Ok(()));
        assert_eq!(e.speaks_for(Claim::Shipment { carrier: "91451000MA5L0CHG10", from_site: "fcg-port" }), Ok(()));
        let no = e.speaks_for(Claim::Order { buyer: "91451200MA5L0HXT20" }).unwrap_err();
        assert!(no.contains("buyer 91451200MA5L0HXT20"), "{no}");
        assert!(e.speaks_for(Claim::Inventory { site: "hechi-dachang-tin" }).unwrap_err().contains("does not operate"));
        assert!(e.speaks_for(Claim::Shipment { carrier: "91450600MA5L0BGL1P", from_site: "fcg-port" }).is_err());
    }

    proptest! {
        /// Another id is never this enterprise's, whatever it is.
        #[test]
        fn no_other_id_passes(other in "[0-9A-Z]{18}") {
            let e = pingguo();
            prop_assume!(other != e.id);
            let claims = [Claim::Order { buyer: &other }, Claim::Capacity { provider: &other }, Claim::Shipment { carrier: &other, from_site: "fcg-port" }];
            for claim in claims {
                prop_assert!(e.speaks_for(claim).is_err(), "{:?}", claim);
            }
        }
    }
}
