//! `ShipmentEvent`: a shipment's status, from planned to delivered.

use super::check::Check;
use super::*;

#[derive(Debug, Clone, PartialEq)]
pub struct ShipmentEvent {
    pub event_id: EventId,
    pub event_time: Millis,
    pub shipment_id: ShipmentId,
    pub allocation_id: Option<AllocationId>,
    pub carrier_id: EnterpriseId,
    pub mode: TransportMode,
    pub status: ShipmentStatus,
    pub from_site: SiteId,
    pub to_site: SiteId,
    pub quantity: Kg,
    pub position: Option<(f64, f64)>,
    pub eta: Option<Millis>,
}

impl ShipmentEvent {
    pub fn validate(w: &wire::ShipmentEvent, r: &Lookup) -> Result<Self, Rejection> {
        let mut c = Check::new();
        let event_id = c.take(EventId::parse(&*w.event_id));
        let event_time = c.take(Millis::parse("event_time", w.event_time));
        let shipment_id = c.take(ShipmentId::parse(&*w.shipment_id));
        let allocation_id = match &w.allocation_id {
            None => Some(None),
            Some(a) => c.take(AllocationId::parse(&**a).map(Some)),
        };
        let carrier_id = c.take(EnterpriseId::parse(&*w.carrier_id).map_err(|e| Invalid::new("carrier_id", e.message)));
        let from_site = c.site(r, "from_site", &w.from_site);
        let to_site = c.site(r, "to_site", &w.to_site);
        let quantity = c.take(Kg::parse_positive("quantity_kg", w.quantity_kg));
        let position = match (w.lat, w.lon) {
            (None, None) => Some(None),
            (Some(lat), Some(lon)) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => Some(Some((lat, lon))),
            (Some(lat), Some(lon)) => c.take(Err(Invalid::new("lat", format!("({lat}, {lon}) is not a position on Earth")))),
            _ => c.take(Err(Invalid::new("lat", "lat and lon come together or not at all"))),
        };
        let eta = match w.eta {
            None => Some(None),
            Some(e) => c.take(Millis::parse("eta", e).map(Some)),
        };
        c.finish(|| {
            Some(ShipmentEvent {
                event_id: event_id?,
                event_time: event_time?,
                shipment_id: shipment_id?,
                allocation_id: allocation_id?,
                carrier_id: carrier_id?,
                mode: w.mode,
                status: w.status,
                from_site: from_site?,
                to_site: to_site?,
                quantity: quantity?,
                position: position?,
                eta: eta?,
            })
        })
    }

    pub fn to_wire(&self) -> wire::ShipmentEvent {
        wire::ShipmentEvent {
            event_id: self.event_id.to_string(),
            event_time: self.event_time.0,
            shipment_id: self.shipment_id.to_string(),
            allocation_id: self.allocation_id.as_ref().map(|a| a.to_string()),
            carrier_id: self.carrier_id.to_string(),
            mode: self.mode,
            status: self.status,
            from_site: self.from_site.to_string(),
            to_site: self.to_site.to_string(),
            quantity_kg: self.quantity.to_wire(),
            lat: self.position.map(|p| p.0),
            lon: self.position.map(|p| p.1),
            eta: self.eta.map(|e| e.0),
        }
    }
}
