//! The pure, seeded event generator.

use orelink_domain::events::{CapacityKind, OrderKind, ShipmentStatus, TransportOfferKind, wire};
use orelink_domain::freight::Network;
use orelink_domain::ids::UnifiedSocialCreditCode;
use orelink_domain::topology::{Topology, TransportMode, topics};
use orelink_domain::workload::Xorshift;
use orelink_domain::Catalog;
use orelink_domain::catalog::split_code;

/// What a site produces, from `topology/` site ids. Mines, refineries and
/// smelters declare capacity of these families.
const PRODUCES: [(&str, &[&str]); 6] = [
    ("baise-jingxi-bauxite", &["BX-ORE"]),
    ("baise-debao-alumina", &["AL2O3-SGA"]),
    ("baise-pingguo-smelter", &["AL-INGOT"]),
    ("hechi-dachang-tin", &["SN-INGOT"]),
    ("hechi-chehe-antimony", &["SB-INGOT"]),
    ("hechi-jinchengjiang-smelter", &["ZN-INGOT", "PB-INGOT"]),
];

/// What a site buys: refineries buy ore, smelters alumina, processors and
/// manufacturers metal.
const BUYS: [(&str, &[&str]); 8] = [
    ("baise-debao-alumina", &["BX-ORE"]),
    ("baise-pingguo-smelter", &["AL2O3-SGA"]),
    ("baise-xinshan-processing", &["AL-INGOT"]),
    ("hechi-yizhou-processing", &["ZN-INGOT", "PB-INGOT", "SN-INGOT"]),
    ("fcg-copper-processing", &["CU-CATHODE"]),
    ("nanning-jiangnan-processing", &["AL-INGOT", "CU-CATHODE", "ZN-INGOT"]),
    ("nanning-liangqing-electronics", &["SN-INGOT", "CU-CATHODE"]),
    ("hechi-jinchengjiang-smelter", &["SB-INGOT"]),
];

/// Copper cathode comes from the Qisha smelter (imported concentrate through Fangchenggang port).
const COPPER_SITE: (&str, &[&str]) = ("fcg-qisha-copper", &["CU-CATHODE"]);

/// (family, spot price CNY/t for the lowest listed grade, premium per grade
/// step CNY/t, energy kWh/t (min, max)); sizes come from [`FLOWS`].
/// Late-2026 levels: aluminium ~20.5k, alumina ~3.2k, domestic bauxite ~450,
/// copper ~76k, tin ~265k, antimony ~150k, zinc ~23k, lead ~16.8k CNY/t.
/// Energy: electrolysis dominates aluminium (~13.3 MWh/t) and zinc (~3.1 MWh/t).
type Market = (&'static str, i64, i64, (i64, i64));
const MARKET: [Market; 8] = [
    ("AL-INGOT", 20_400, 60, (12_900, 13_800)),
    ("AL2O3-SGA", 3_200, 40, (260, 360)),
    ("BX-ORE", 450, 35, (12, 30)),
    ("CU-CATHODE", 76_000, 300, (320, 420)),
    ("SN-INGOT", 265_000, 1_500, (1_500, 2_500)),
    ("SB-INGOT", 150_000, 1_000, (1_800, 2_600)),
    ("ZN-INGOT", 23_000, 80, (2_950, 3_300)),
    ("PB-INGOT", 16_800, 50, (110, 190)),
];

/// One family's yearly flow out of its cluster, what it comes in, and where
/// the figure is from. Capacity is declared, and ordered, one lot at a time,
/// a lot being what one vehicle carries: so each family's events per year
/// are its tonnes over its mean lot, and Guangxi's size, not the event rate,
/// sets the tonnes. Orders ask for a part of a lot (`ORDER_SHARE`), so that
/// with orders drawn 1.5 times as often as capacity, demand and supply are
/// about even.
pub struct Flow {
    pub cluster: &'static str,
    pub family: &'static str,
    pub tonnes_per_year: i64,
    /// Tonnes per declared lot (min, max), from the mode it leaves by.
    pub lot_t: (i64, i64),
    pub source: &'static str,
}

/// A heavy truck under GB 1589-2016 (six axles, 49 t gross) carries 30-33 t;
/// a C70 rail wagon 60-70 t; tin and antimony ingots, a tonne worth
/// six to twelve of zinc, go out in part loads of a few one-tonne bundles.
const TRUCK: (i64, i64) = (30, 33);
const WAGON: (i64, i64) = (60, 70);
const PART_LOAD: (i64, i64) = (2, 8);

pub const FLOWS: [Flow; 8] = [
    Flow { cluster: "baise", family: "BX-ORE", tonnes_per_year: 23_000_000, lot_t: TRUCK, source: "derived: 2.3 t of bauxite per t of the alumina below (Baise's gibbsite-diaspore ores)" },
    Flow { cluster: "baise", family: "AL2O3-SGA", tonnes_per_year: 10_000_000, lot_t: WAGON, source: "Baise's alumina capacity target, 10 Mt (SMM, 2017); Guangxi's alumina output ran near 1 Mt a month (NBS by province)" },
    Flow { cluster: "baise", family: "AL-INGOT", tonnes_per_year: 2_600_000, lot_t: TRUCK, source: "Baise's primary aluminium capacity target, 2.6 Mt (SMM, 2017)" },
    Flow { cluster: "fangchenggang", family: "CU-CATHODE", tonnes_per_year: 400_000, lot_t: TRUCK, source: "Jinchuan's Fangcheng copper smelter, 400,000 t/y (Fastmarkets, on Trafigura's 30 % stake)" },
    Flow { cluster: "hechi", family: "ZN-INGOT", tonnes_per_year: 220_000, lot_t: TRUCK, source: "Nanfang Non-ferrous (Nandan) zinc plant, 600 t a day (People's Daily, 2010)" },
    Flow { cluster: "hechi", family: "PB-INGOT", tonnes_per_year: 55_000, lot_t: TRUCK, source: "derived: the zinc above times Guangxi's lead-to-zinc reserves, 1.50 Mt to 6.07 Mt (Guangxi's nonferrous reserves table, end of 2003); Hechi's lead comes out of the same ores" },
    Flow { cluster: "hechi", family: "SN-INGOT", tonnes_per_year: 9_000, lot_t: PART_LOAD, source: "China Tin Group's Gaofeng and Tongkeng mines in Nandan, around 9,000 t of tin a year (International Tin Association, not dated in the source read)" },
    Flow { cluster: "hechi", family: "SB-INGOT", tonnes_per_year: 9_400, lot_t: PART_LOAD, source: "Guangxi Huaxi Nonferrous (Nandan), 9,424 t of antimony concentrate in 2023 (company figures as summarised on Xueqiu)" },
];

/// A cluster's yearly demand of a family, where a public figure gives it.
/// Its buyers place that share of the family's orders; buyers in the other
/// clusters the rest, by size. A family with no row here is bought by all
/// its buyers by size alone.
pub struct Demand {
    pub cluster: &'static str,
    pub family: &'static str,
    pub tonnes_per_year: i64,
    pub source: &'static str,
}

pub const DEMAND: [Demand; 1] = [Demand {
    cluster: "nanning",
    family: "AL-INGOT",
    tonnes_per_year: 200_000,
    source: "Guangxi Nannan Aluminium Processing's plate, strip and extrusion plant in Nanning's Jiangnan district, 200,000 t a year (Nanning's announcement of the project; the page read gives no year)",
}];

/// A carrier's quote against the hub's planning freight for the route
/// (`topology/freight.toml`, itself within 2024-2025's public ranges), in
/// percent: spot road and rail rates in Guangxi move some 15 % either way
/// with the season (the sugarcane harvest, December to April, takes
/// Guangxi's trucks and wagons) and the return load.
const OFFER_PRICE_PCT: (i64, i64) = (85, 115);
/// A carrier's stated transit against the planning transit, in percent:
/// never faster than the route's handling plus distance at the mode's speed,
/// up to 30 % slower (waits at rail yards and river locks).
const OFFER_TRANSIT_PCT: (i64, i64) = (100, 130);

/// Room one offer makes, in tonnes, by the mode's units: a road haulier
/// offers a few trucks (3-10 loads of the family's lot), a railway a block of
/// wagons (4-10 lots of 60-70 t), a Xijiang barge 1,000-2,000 t (the river's
/// 1,000-t and 2,000-t class vessels), a coaster 3,000-5,000 t. For the
/// families shipped in part loads the same counts apply to their lots.
fn offer_room_t(mode: TransportMode, lot_t: (i64, i64), rng: &mut Xorshift) -> i64 {
    let mut between = |(lo, hi): (i64, i64)| lo + rng.below((hi - lo + 1) as u64) as i64;
    match mode {
        TransportMode::Road => between((3, 10)) * between(lot_t),
        TransportMode::Rail => between((4, 10)) * between(WAGON),
        TransportMode::River => between((1_000, 2_000)),
        TransportMode::Sea => between((3_000, 5_000)),
    }
}

/// An order asks for this share of a lot (percent), so demand (orders drawn
/// 30 times in 100, capacity 20) matches supply: 20 / 30 of it, a little less.
const ORDER_SHARE: (i64, i64) = (50, 80);

/// The flow of `family`.
fn flow(family: &str) -> &'static Flow {
    FLOWS.iter().find(|f| f.family == family).expect("every simulated family has a flow")
}

/// Declarations a year over all flows: each flow's tonnes over its mean lot.
const fn declarations_per_year() -> i64 {
    let mut n = 0;
    let mut i = 0;
    while i < FLOWS.len() {
        let f = &FLOWS[i];
        n += f.tonnes_per_year * 2 / (f.lot_t.0 + f.lot_t.1);
        i += 1;
    }
    n
}

/// Simulated time between two events. A fifth of the events declare
/// capacity, so a year of simulated time holds five times the declarations
/// the flows need: about 6.4 s per event. At the demo's default 300 events/s
/// that is one simulated day every 45 s of wall time; `--rate` changes how
/// fast simulated time runs, never how big Guangxi is.
pub const STEP_MS: i64 = 365 * 86_400_000 / (5 * declarations_per_year());
const DAY: i64 = 86_400_000;

/// The family part of a product code the generator itself made.
fn family_of(code: &str) -> String {
    split_code(code).map(|(family, _)| family.to_owned()).expect("the generator only makes well-formed codes")
}
const HOUR: i64 = 3_600_000;

/// Region part of a unified social credit code: the cluster's city.
fn region(cluster: &str) -> &'static str {
    match cluster {
        "baise" => "451000",
        "hechi" => "451200",
        "fangchenggang" => "450600",
        _ => "450100",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SimRecord {
    Order(wire::OrderEvent),
    Capacity(wire::CapacityEvent),
    Inventory(wire::InventoryEvent),
    Shipment(wire::ShipmentEvent),
    TransportOffer(wire::TransportOffer),
    /// Bytes that are not an event at all (a misconfigured legacy exporter).
    Garbage(Vec<u8>),
}

/// One event for one contract topic.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// Contract topic name (without any deployment namespace).
    pub topic: &'static str,
    pub key: String,
    pub record: SimRecord,
    /// True when the hub must refuse it (dead letter).
    pub malformed: bool,
}

#[derive(Clone)]
struct Firm {
    id: String,
    site: String,
    cluster: String,
    families: Vec<&'static str>,
    metered: bool,
}

struct OpenOrder {
    wire: wire::OrderEvent,
}

struct Shipment {
    wire: wire::ShipmentEvent,
    from: (f64, f64),
    to: (f64, f64),
    depart: i64,
    arrive: i64,
}

pub struct Generator {
    rng: Xorshift,
    /// The run's seed and start, which place demand's shocks (`demand`).
    seed: u64,
    start_ms: i64,
    now: i64,
    n: u64,
    /// Tags every id with the run (seed and start): two runs never share an
    /// id, so a second run on the same stack is new business, not duplicates.
    run: String,
    producers: Vec<Firm>,
    buyers: Vec<Firm>,
    ladders: Vec<(String, Vec<String>)>,
    orders: Vec<OpenOrder>,
    capacities: Vec<wire::CapacityEvent>,
    shipments: Vec<Shipment>,
    /// Carriers' offers not withdrawn yet.
    offers: Vec<wire::TransportOffer>,
    carriers: Vec<(String, Vec<TransportMode>)>,
    sites: Vec<(String, f64, f64, Vec<TransportMode>)>,
    /// Each site's cluster, in the order of `sites`.
    site_clusters: Vec<String>,
    network: Network,
}

/// Five base-36 characters from the seed and the start (splitmix64).
fn run_tag(seed: u64, start_ms: i64) -> String {
    let mut z = seed ^ (start_ms as u64).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (0..5)
        .map(|i| {
            let d = (z >> (i * 6)) % 36;
            char::from_digit(d as u32, 36).expect("below 36").to_ascii_uppercase()
        })
        .collect()
}

impl Generator {
    /// `start_ms`: the simulated clock's start; each event advances it by [`STEP_MS`].
    pub fn new(topology: &Topology, catalog: &Catalog, seed: u64, start_ms: i64) -> Generator {
        let mut rng = Xorshift::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
        let cluster_of = |site: &str| topology.site(site).and_then(|s| s.cluster.as_ref()).map(|c| c.to_string());
        let mut firm_no = 0u32;
        let mut firms = |rng: &mut Xorshift, table: &[(&str, &[&'static str])], per_site: u64| {
            let mut out = Vec::new();
            for (site, families) in table {
                let Some(cluster) = cluster_of(site) else { continue };
                for _ in 0..per_site + rng.below(per_site) {
                    firm_no += 1;
                    // 91 = enterprise legal person; region; 9 characters of organisation code.
                    let body = format!("91{}MA{:07}", region(&cluster), 1_000_000 + firm_no * 7 + rng.below(5) as u32);
                    let id = UnifiedSocialCreditCode::complete(&body[..17]).map(|c| c.as_str().to_owned()).unwrap_or(body);
                    out.push(Firm { id, site: site.to_string(), cluster: cluster.clone(), families: families.to_vec(), metered: rng.below(10) < 7 });
                }
            }
            out
        };
        let mut producers = firms(&mut rng, &PRODUCES, 12);
        producers.extend(firms(&mut rng, &[COPPER_SITE], 8));
        let buyers = firms(&mut rng, &BUYS, 20);
        let ladders = catalog.families().iter().map(|f| (f.family.clone(), f.grades.clone())).collect();
        let carriers = topology.partners.iter().map(|p| (p.carrier_id.clone(), p.modes.clone())).collect();
        let sites = topology.sites().map(|s| (s.id.to_string(), s.lat, s.lon, s.modes.clone())).collect();
        let site_clusters = topology.sites().map(|s| s.cluster.as_ref().map(|c| c.to_string()).unwrap_or_default()).collect();
        Generator {
            rng,
            seed,
            start_ms,
            now: start_ms,
            n: 0,
            run: run_tag(seed, start_ms),
            producers,
            buyers,
            ladders,
            orders: Vec::new(),
            capacities: Vec::new(),
            shipments: Vec::new(),
            offers: Vec::new(),
            carriers,
            sites,
            site_clusters,
            network: Network::new(topology),
        }
    }

    /// How many enterprises take part.
    pub fn enterprises(&self) -> usize {
        self.producers.len() + self.buyers.len()
    }

    fn between(&mut self, (lo, hi): (i64, i64)) -> i64 {
        lo + self.rng.below((hi - lo + 1) as u64) as i64
    }

    fn market(family: &str) -> &'static Market {
        MARKET.iter().find(|m| m.0 == family).expect("every simulated family has a market row")
    }

    fn grades(&self, family: &str) -> &[String] {
        &self.ladders.iter().find(|(f, _)| f == family).expect("family in catalog").1
    }

    fn event_id(&mut self, kind: &str) -> String {
        self.n += 1;
        format!("sim-{kind}-{}-{}", self.run, self.n)
    }

    /// A family drawn in proportion to its lots a year.
    fn family(&mut self) -> &'static str {
        let mut draw = self.rng.below(declarations_per_year() as u64) as i64;
        for f in &FLOWS {
            let lots = f.tonnes_per_year * 2 / (f.lot_t.0 + f.lot_t.1);
            if draw < lots {
                return f.family;
            }
            draw -= lots;
        }
        FLOWS[0].family
    }

    /// One of `firms` that deals in `family` and that `keep` keeps, by
    /// size: the k-th of them weighs 1/k (Zipf), so a few large smelters and
    /// mines carry most of the flow and many small firms the rest.
    fn firm_where(&mut self, buyer: bool, family: &str, keep: impl Fn(&Firm) -> bool) -> Firm {
        let firms = if buyer { &self.buyers } else { &self.producers };
        let dealing: Vec<usize> = firms.iter().enumerate().filter(|(_, f)| f.families.contains(&family) && keep(f)).map(|(i, _)| i).collect();
        assert!(!dealing.is_empty(), "no {} of {family} among the simulated firms", if buyer { "buyer" } else { "producer" });
        let weight = |k: usize| 1_000_000 / (k as u64 + 1);
        let mut draw = self.rng.below((0..dealing.len()).map(weight).sum());
        let mut chosen = dealing[0];
        for (k, &i) in dealing.iter().enumerate() {
            if draw < weight(k) {
                chosen = i;
                break;
            }
            draw -= weight(k);
        }
        let firms = if buyer { &self.buyers } else { &self.producers };
        firms[chosen].clone()
    }

    fn producer_of(&mut self, family: &str) -> Firm {
        self.firm_where(false, family, |_| true)
    }

    /// A buyer of `family`: in the cluster of its [`DEMAND`] row for that
    /// row's share of the family's flow, otherwise elsewhere.
    fn buyer_of(&mut self, family: &str) -> Firm {
        match DEMAND.iter().find(|d| d.family == family) {
            Some(d) => {
                let inside = (self.rng.below(1_000_000) as i64) < d.tonnes_per_year * 1_000_000 / flow(family).tonnes_per_year;
                self.firm_where(true, family, |f| (f.cluster == d.cluster) == inside)
            }
            None => self.firm_where(true, family, |_| true),
        }
    }

    fn order(&mut self) -> SimEvent {
        let family = self.family();
        let buyer = self.buyer_of(family);
        let m = Self::market(family);
        let grades = self.grades(family).to_vec();
        // Buyers mostly ask for the standard (lower) grades; some need the top ones.
        let rank = if self.rng.below(10) < 7 { self.rng.below(grades.len().div_ceil(2) as u64) as usize } else { self.rng.below(grades.len() as u64) as usize };
        let base = self.between(flow(family).lot_t) * self.between(ORDER_SHARE) / 100;
        // Demand's trend, week, working day and shocks (`demand`) shape the tonnes.
        let tonnes = ((base as f64 * crate::demand::factor(self.seed, self.start_ms, family, &buyer.cluster, self.now)).round() as i64).max(1);
        let price = m.1 + m.2 * rank as i64;
        // A cap somewhat above spot: room for freight, sometimes too tight.
        let cap = price + price * self.between((-2, 6)) / 100 + self.between((0, 400));
        let id = self.event_id("ord");
        let wire = wire::OrderEvent {
            event_id: id.clone(),
            event_time: self.now,
            order_id: format!("ORD-{}", &id[8..]),
            kind: OrderKind::Placed,
            cluster: buyer.cluster.clone(),
            buyer_id: buyer.id.clone(),
            product_code: format!("{family}-{}", grades[rank]),
            quantity_kg: tonnes * 1_000,
            deliver_by: self.now + self.between((3, 30)) * DAY,
            destination_site: buyer.site.clone(),
            max_price_cny_per_t: cap,
            allow_cross_cluster: self.rng.below(10) < 7,
        };
        self.orders.push(OpenOrder { wire: wire.clone() });
        SimEvent { topic: topics::MARKET, key: family.to_owned(), record: SimRecord::Order(wire), malformed: false }
    }

    fn capacity(&mut self) -> SimEvent {
        let family = self.family();
        let firm = self.producer_of(family);
        let m = Self::market(family);
        let grades = self.grades(family).to_vec();
        // Producers declare their better grades.
        let rank = grades.len() - 1 - self.rng.below(grades.len().div_ceil(2) as u64) as usize;
        let lot = flow(family).lot_t;
        let mut tonnes = self.between(lot);
        // A smelter outage (`demand::outage`): its cluster declares a fraction of its lots.
        if crate::demand::outage(self.seed, self.start_ms, family, &firm.cluster, self.now) {
            tonnes = ((tonnes as f64 * crate::demand::OUTAGE_SHARE).round() as i64).max(1);
        }
        let price = m.1 + m.2 * rank as i64;
        let from = self.now + self.between((0, 7)) * DAY;
        let id = self.event_id("cap");
        let wire = wire::CapacityEvent {
            event_id: id.clone(),
            event_time: self.now,
            capacity_id: format!("CAP-{}", &id[8..]),
            kind: CapacityKind::Declared,
            cluster: firm.cluster.clone(),
            provider_id: firm.id.clone(),
            site_id: firm.site.clone(),
            product_code: format!("{family}-{}", grades[rank]),
            quantity_kg: tonnes * 1_000,
            available_from: from,
            available_until: from + self.between((14, 60)) * DAY,
            price_cny_per_t: price + price * self.between((-3, 2)) / 100,
            // Some sell only part loads of at least a fifth of a lot.
            min_lot_kg: (self.between((0, 1)) * lot.0 / 5).min(tonnes) * 1_000,
            energy_kwh_per_t: firm.metered.then(|| self.between(m.3)),
        };
        self.capacities.push(wire.clone());
        SimEvent { topic: topics::MARKET, key: family.to_owned(), record: SimRecord::Capacity(wire), malformed: false }
    }

    fn amend_or_cancel(&mut self, cancel: bool) -> Option<SimEvent> {
        if self.orders.is_empty() {
            return None;
        }
        let i = self.rng.below(self.orders.len() as u64) as usize;
        let mut w = if cancel { self.orders.swap_remove(i).wire } else { self.orders[i].wire.clone() };
        w.event_id = self.event_id(if cancel { "cnl" } else { "amd" });
        w.event_time = self.now;
        if cancel {
            w.kind = OrderKind::Cancelled;
        } else {
            w.kind = OrderKind::Amended;
            w.quantity_kg = (w.quantity_kg * self.between((50, 120)) / 100).max(1_000);
            w.deliver_by = w.deliver_by.max(self.now + DAY) + self.between((0, 7)) * DAY;
        }
        let family = family_of(&w.product_code);
        Some(SimEvent { topic: topics::MARKET, key: family, record: SimRecord::Order(w), malformed: false })
    }

    fn withdraw(&mut self) -> Option<SimEvent> {
        if self.capacities.is_empty() {
            return None;
        }
        let i = self.rng.below(self.capacities.len() as u64) as usize;
        let mut w = self.capacities.swap_remove(i);
        w.event_id = self.event_id("wdr");
        w.event_time = self.now;
        w.kind = CapacityKind::Withdrawn;
        let family = family_of(&w.product_code);
        Some(SimEvent { topic: topics::MARKET, key: family, record: SimRecord::Capacity(w), malformed: false })
    }

    fn inventory(&mut self) -> SimEvent {
        let firm = if self.rng.below(2) == 0 { &self.producers } else { &self.buyers };
        let firm = firm[self.rng.below(firm.len() as u64) as usize].clone();
        let family = firm.families[self.rng.below(firm.families.len() as u64) as usize];
        let grades = self.grades(family).to_vec();
        let grade = &grades[self.rng.below(grades.len() as u64) as usize];
        // A site holds a few lots.
        let on_hand = self.between(flow(family).lot_t) * self.between((1, 20)) * 1_000;
        let reserved = on_hand * self.between((0, 60)) / 100;
        let id = self.event_id("inv");
        let w = wire::InventoryEvent {
            event_id: id,
            event_time: self.now,
            site_id: firm.site.clone(),
            product_code: format!("{family}-{grade}"),
            on_hand_kg: on_hand,
            reserved_kg: reserved,
        };
        SimEvent { topic: topics::INVENTORY, key: format!("{}/{}", w.site_id, w.product_code), record: SimRecord::Inventory(w), malformed: false }
    }

    /// A new shipment, or the next status of one under way (positions move along the route).
    fn shipment(&mut self) -> Option<SimEvent> {
        let advance = !self.shipments.is_empty() && self.rng.below(10) < 7;
        let w = if advance {
            let i = self.rng.below(self.shipments.len() as u64) as usize;
            let exception = self.rng.below(50) == 0;
            let now = self.now;
            let s = &mut self.shipments[i];
            let next = match s.wire.status {
                _ if exception => ShipmentStatus::Exception,
                ShipmentStatus::Planned => ShipmentStatus::PickedUp,
                ShipmentStatus::PickedUp | ShipmentStatus::Exception => ShipmentStatus::InTransit,
                ShipmentStatus::InTransit if now >= s.arrive => ShipmentStatus::Arrived,
                ShipmentStatus::InTransit => ShipmentStatus::InTransit,
                ShipmentStatus::Arrived => ShipmentStatus::Delivered,
                ShipmentStatus::Delivered => ShipmentStatus::Delivered,
            };
            let f = ((now - s.depart) as f64 / (s.arrive - s.depart).max(1) as f64).clamp(0.0, 1.0);
            s.wire.status = next;
            s.wire.event_time = now;
            let (lat, lon) = (s.from.0 + (s.to.0 - s.from.0) * f, s.from.1 + (s.to.1 - s.from.1) * f);
            s.wire.lat = Some((lat * 1e4).round() / 1e4);
            s.wire.lon = Some((lon * 1e4).round() / 1e4);
            let mut w = s.wire.clone();
            if next == ShipmentStatus::Delivered {
                self.shipments.swap_remove(i);
            }
            w.event_id = self.event_id("shp");
            w
        } else {
            let from = self.producers[self.rng.below(self.producers.len() as u64) as usize].clone();
            let to = self.buyers[self.rng.below(self.buyers.len() as u64) as usize].clone();
            let (fs, ts) = (self.network.site_index(&from.site)?, self.network.site_index(&to.site)?);
            let route = *self.network.routes(fs, ts).first()?;
            let carrier = self.carriers.iter().filter(|(_, modes)| modes.contains(&route.mode)).map(|(c, _)| c.clone()).next()?;
            let pos = |s: &str| self.sites.iter().find(|x| x.0 == s).map(|x| (x.1, x.2));
            let (fp, tp) = (pos(&from.site)?, pos(&to.site)?);
            let family = from.families[0];
            let id = self.event_id("shp");
            let depart = self.now + self.between((1, 12)) * HOUR;
            let arrive = depart + route.transit_ms();
            let w = wire::ShipmentEvent {
                event_id: id.clone(),
                event_time: self.now,
                shipment_id: format!("SHP-{}", &id[8..]),
                allocation_id: None,
                carrier_id: carrier,
                mode: route.mode,
                status: ShipmentStatus::Planned,
                from_site: from.site.clone(),
                to_site: to.site.clone(),
                quantity_kg: self.between(flow(family).lot_t) * 1_000,
                lat: Some(fp.0),
                lon: Some(fp.1),
                eta: Some(arrive),
            };
            self.shipments.push(Shipment { wire: w.clone(), from: fp, to: tp, depart, arrive });
            w
        };
        Some(SimEvent { topic: topics::SHIPMENTS, key: w.shipment_id.clone(), record: SimRecord::Shipment(w), malformed: false })
    }

    /// A carrier offers room on a lane its trade uses, or (one time in six)
    /// withdraws an offer it made. The lane is a flow's: a family drawn by
    /// its lots a year, a producer and a buyer of it. Offers are between
    /// clusters, so the mode is any a carrier runs between a site of each
    /// that has it (the firm's own site if it does, else its cluster's port
    /// or railhead: a Xijiang barge runs Pingguo or Tiandong to Nanning's
    /// Niuwan port); within a cluster, road and rail only. Prices and
    /// transits are the carrier's quote around the hub's planning figure for
    /// that route ([`OFFER_PRICE_PCT`], [`OFFER_TRANSIT_PCT`]); room comes
    /// in the mode's units ([`offer_room_t`]). Offers come 5 times in 100
    /// events, a quarter of the capacity declarations: over a simulated
    /// year about the flows' tonnes (6 % more with seed 11), spread over
    /// lanes and modes as trade spreads, so most allocations find a carrier
    /// and some (a lane's offers taken, a deadline too near) do not.
    fn offer(&mut self) -> Option<SimEvent> {
        if !self.offers.is_empty() && self.rng.below(6) == 0 {
            let i = self.rng.below(self.offers.len() as u64) as usize;
            let mut w = self.offers.swap_remove(i);
            w.event_id = self.event_id("owd");
            w.event_time = self.now;
            w.kind = TransportOfferKind::Withdrawn;
            let key = format!("{}>{}", w.from_cluster, w.to_cluster);
            return Some(SimEvent { topic: topics::TRANSPORT_OFFERS, key, record: SimRecord::TransportOffer(w), malformed: false });
        }
        let family = self.family();
        let (from, to) = (self.producer_of(family), self.buyer_of(family));
        let modes: Vec<TransportMode> = TransportMode::ALL
            .into_iter()
            .filter(|m| self.carriers.iter().any(|(_, run)| run.contains(m)))
            .filter(|m| from.cluster != to.cluster || matches!(m, TransportMode::Road | TransportMode::Rail))
            .filter(|m| self.site_for(&from, *m).is_some() && self.site_for(&to, *m).is_some())
            .collect();
        let mode = *modes.get(self.rng.below(modes.len().max(1) as u64) as usize)?;
        let (a, b) = (self.site_for(&from, mode)?, self.site_for(&to, mode)?);
        let route = *self.network.routes(self.network.site_index(a)?, self.network.site_index(b)?).iter().find(|r| r.mode == mode)?;
        let runs: Vec<String> = self.carriers.iter().filter(|(_, m)| m.contains(&route.mode)).map(|(c, _)| c.clone()).collect();
        let carrier = runs[self.rng.below(runs.len() as u64) as usize].clone();
        let room_t = offer_room_t(route.mode, flow(family).lot_t, &mut self.rng);
        let price = (route.freight_cny_per_t as i64 * self.between(OFFER_PRICE_PCT) / 100).max(1);
        let transit = ((route.transit_hours as i64 * self.between(OFFER_TRANSIT_PCT) + 99) / 100).max(1);
        let available_from = self.now + self.between((0, 48)) * HOUR;
        let id = self.event_id("off");
        let w = wire::TransportOffer {
            event_id: id.clone(),
            event_time: self.now,
            offer_id: format!("OFF-{}", &id[8..]),
            kind: TransportOfferKind::Offered,
            carrier_id: carrier,
            mode: route.mode,
            from_cluster: from.cluster.clone(),
            to_cluster: to.cluster.clone(),
            capacity_kg: room_t * 1_000,
            available_from,
            available_until: available_from + self.between((1, 14)) * DAY,
            price_cny_per_t: price,
            transit_hours: transit,
        };
        self.offers.push(w.clone());
        let key = format!("{}>{}", w.from_cluster, w.to_cluster);
        Some(SimEvent { topic: topics::TRANSPORT_OFFERS, key, record: SimRecord::TransportOffer(w), malformed: false })
    }

    /// Where `firm`'s goods take `mode`: its own site if the site has it,
    /// else the first site of its cluster that does.
    fn site_for(&self, firm: &Firm, mode: TransportMode) -> Option<&str> {
        let has = |i: usize| self.sites[i].3.contains(&mode);
        let own = self.sites.iter().position(|s| s.0 == firm.site).filter(|&i| has(i));
        own.or_else(|| (0..self.sites.len()).find(|&i| self.site_clusters[i] == firm.cluster && has(i))).map(|i| self.sites[i].0.as_str())
    }

    /// Something the hub must refuse: the DLQ's daily bread.
    fn malformed(&mut self) -> SimEvent {
        let mut e = match self.rng.below(4) {
            0 => SimEvent {
                topic: topics::MARKET,
                key: "AL-INGOT".into(),
                record: SimRecord::Garbage(format!("ORDER;{};AL 99.7;200t;ASAP", self.n).into_bytes()),
                malformed: true,
            },
            1 => {
                let mut e = self.order();
                self.orders.pop();
                if let SimRecord::Order(w) = &mut e.record {
                    w.product_code = format!("{}-AL99.99", &e.key);
                }
                e
            }
            2 => {
                let mut e = self.capacity();
                self.capacities.pop();
                if let SimRecord::Capacity(w) = &mut e.record {
                    w.quantity_kg = -w.quantity_kg;
                }
                e
            }
            _ => {
                let mut e = self.inventory();
                if let SimRecord::Inventory(w) = &mut e.record {
                    w.site_id = "guilin-yangshuo-yard".into();
                }
                e
            }
        };
        e.malformed = true;
        e
    }
}

impl Iterator for Generator {
    type Item = SimEvent;

    fn next(&mut self) -> Option<SimEvent> {
        self.now += STEP_MS;
        loop {
            let e = match self.rng.below(100) {
                0..=1 => Some(self.malformed()),
                2..=21 => Some(self.capacity()),
                22..=51 => Some(self.order()),
                52..=55 => self.amend_or_cancel(false),
                56..=58 => self.amend_or_cancel(true),
                59..=61 => self.withdraw(),
                62..=79 => Some(self.inventory()),
                80..=94 => self.shipment(),
                _ => self.offer(),
            };
            if e.is_some() {
                return e;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orelink_domain::events::{CapacityEvent, InventoryEvent, OrderEvent, Lookup, ShipmentEvent, TransportOffer};
    use std::collections::BTreeMap;

    const START: i64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z

    fn generator(seed: u64) -> Generator {
        Generator::new(&Topology::embedded(), &Catalog::embedded(), seed, START)
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let a: Vec<SimEvent> = generator(7).take(5_000).collect();
        let b: Vec<SimEvent> = generator(7).take(5_000).collect();
        assert_eq!(a, b);
        let c: Vec<SimEvent> = generator(8).take(5_000).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn well_formed_events_validate_and_malformed_ones_do_not() {
        let (catalog, topology) = (Catalog::embedded(), Topology::embedded());
        let r = Lookup { catalog: &catalog, topology: &topology };
        let mut per_topic: BTreeMap<&str, usize> = BTreeMap::new();
        let mut malformed = 0;
        for e in generator(42).take(20_000) {
            let ok = match &e.record {
                SimRecord::Order(w) => OrderEvent::validate(w, &r).map(|_| ()).map_err(|e| e.reason()),
                SimRecord::Capacity(w) => CapacityEvent::validate(w, &r).map(|_| ()).map_err(|e| e.reason()),
                SimRecord::Inventory(w) => InventoryEvent::validate(w, &r).map(|_| ()).map_err(|e| e.reason()),
                SimRecord::Shipment(w) => ShipmentEvent::validate(w, &r).map(|_| ()).map_err(|e| e.reason()),
                SimRecord::TransportOffer(w) => TransportOffer::validate(w, &r).map(|_| ()).map_err(|e| e.reason()),
                SimRecord::Garbage(_) => Err("garbage".into()),
            };
            assert_eq!(ok.is_err(), e.malformed, "{e:?}: {ok:?}");
            malformed += e.malformed as usize;
            *per_topic.entry(e.topic).or_default() += 1;
        }
        // Every topic gets traffic, and about 2 % is malformed.
        for t in [topics::MARKET, topics::INVENTORY, topics::SHIPMENTS, topics::TRANSPORT_OFFERS] {
            assert!(per_topic.get(t).copied().unwrap_or(0) > 500, "{per_topic:?}");
        }
        assert!((200..=600).contains(&malformed), "{malformed}");
    }

    /// Guangxi's size: one simulated year (seeded) declares each cluster's
    /// yearly flow of each family within 30 % of its figure in `FLOWS`, its
    /// orders take each `DEMAND` row's tonnes within 30 %, and they are worth
    /// (at their price caps) less than the whole industry's 393.7 bn CNY
    /// output value of 2024 (the seed). With `--nocapture` it prints the
    /// README's calibration column and every cluster's orders.
    #[test]
    fn a_simulated_year_is_the_size_of_guangxi() {
        let year_events = (365 * 86_400_000 / STEP_MS) as usize;
        let mut declared: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut ordered: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut order_value = 0i128;
        for e in generator(5).take(year_events) {
            match e.record {
                SimRecord::Capacity(w) if !e.malformed && w.kind == CapacityKind::Declared => {
                    *declared.entry((w.cluster.clone(), e.key.clone())).or_default() += w.quantity_kg / 1_000;
                }
                SimRecord::Order(w) if !e.malformed && w.kind == OrderKind::Placed => {
                    *ordered.entry((w.cluster.clone(), e.key.clone())).or_default() += w.quantity_kg / 1_000;
                    order_value += w.quantity_kg as i128 * w.max_price_cny_per_t as i128 / 1_000;
                }
                _ => {}
            }
        }
        for f in &FLOWS {
            let got = declared.remove(&(f.cluster.to_owned(), f.family.to_owned())).unwrap_or(0);
            eprintln!("{} {}: figure {} t, simulated year {got} t", f.cluster, f.family, f.tonnes_per_year);
            let off = (got - f.tonnes_per_year) as f64 / f.tonnes_per_year as f64;
            assert!(off.abs() <= 0.3, "{} {}: {got} t a year, the figure is {} t ({})", f.cluster, f.family, f.tonnes_per_year, f.source);
        }
        for ((cluster, family), t) in &ordered {
            eprintln!("{cluster} {family}: ordered {t} t");
        }
        for d in &DEMAND {
            let got = ordered.get(&(d.cluster.to_owned(), d.family.to_owned())).copied().unwrap_or(0);
            let off = (got - d.tonnes_per_year) as f64 / d.tonnes_per_year as f64;
            assert!(off.abs() <= 0.3, "{} orders {got} t of {} a year, the figure is {} t ({})", d.cluster, d.family, d.tonnes_per_year, d.source);
        }
        eprintln!("orders placed: {order_value} CNY at their caps");
        assert!(declared.is_empty(), "declared outside the flows: {declared:?}");
        assert!(order_value < 393_700_000_000, "orders worth {order_value} CNY a year at their caps");
        assert!(order_value > 50_000_000_000, "orders worth only {order_value} CNY a year: demand no longer follows supply");
    }

    /// The orders carry the week and the working day `demand` intends:
    /// over eight simulated weeks, Sunday's tonnes against a working day's,
    /// and working hours' against the night's, within a fifth of the
    /// intended ratios.
    #[test]
    fn orders_follow_the_intended_week_and_day() {
        let start = 1_798_761_600_000; // 2027-01-01 00:00 UTC, a Friday
        let mut g = Generator::new(&Topology::embedded(), &Catalog::embedded(), 9, start);
        let (mut by_weekday, mut by_hour) = ([0f64; 7], [0f64; 24]);
        for e in g.by_ref().take((56 * 86_400_000 / STEP_MS) as usize) {
            if let SimRecord::Order(w) = &e.record {
                if !e.malformed && w.kind == OrderKind::Placed {
                    let local = w.event_time + 8 * 3_600_000;
                    by_weekday[((local.div_euclid(86_400_000) + 3) % 7) as usize] += w.quantity_kg as f64;
                    by_hour[(local.rem_euclid(86_400_000) / 3_600_000) as usize] += w.quantity_kg as f64;
                }
            }
        }
        let workday = by_weekday[..5].iter().sum::<f64>() / 5.0;
        let sunday = by_weekday[6] / workday;
        let intended = crate::demand::WEEK[6] / crate::demand::WEEK[0];
        assert!((sunday / intended - 1.0).abs() < 0.2, "Sunday {sunday:.2} of a working day, intended {intended:.2}");
        let (day, night) = (by_hour[8..18].iter().sum::<f64>() / 10.0, (by_hour[..8].iter().sum::<f64>() + by_hour[18..].iter().sum::<f64>()) / 14.0);
        let intended = crate::demand::IN_HOURS / crate::demand::OUT_OF_HOURS;
        assert!((day / night / intended - 1.0).abs() < 0.2, "working hours {:.2} of the night's, intended {intended:.2}", day / night);
    }

    /// In a smelter outage its cluster declares a fifth of its usual
    /// tonnes of the family: the first outage of a seeded run, against the
    /// same days a week before, within 0.1 of the intended share.
    #[test]
    fn an_outage_cuts_what_its_cluster_declares() {
        let start = 1_798_761_600_000;
        let (family, cluster, from) = crate::demand::outage_of(4, start, 0);
        let days = crate::demand::OUTAGE_DAYS * 86_400_000;
        let (mut during, mut before) = (0i64, 0i64);
        for e in Generator::new(&Topology::embedded(), &Catalog::embedded(), 4, start).take(((from + days - start) / STEP_MS) as usize + 1) {
            if let SimRecord::Capacity(w) = &e.record {
                if !e.malformed && w.kind == CapacityKind::Declared && e.key == family && w.cluster == cluster {
                    if (from..from + days).contains(&w.event_time) {
                        during += w.quantity_kg;
                    } else if (from - 7 * 86_400_000..from - 7 * 86_400_000 + days).contains(&w.event_time) {
                        before += w.quantity_kg;
                    }
                }
            }
        }
        assert!(before > 0, "{family} {cluster}: nothing declared the week before");
        let share = during as f64 / before as f64;
        assert!((share - crate::demand::OUTAGE_SHARE).abs() < 0.1, "{family} in {cluster}: {share:.2} of the week before's tonnes");
    }

    /// Carriers offer room on the lanes the flows use, by modes they run:
    /// over a simulated year, a quarter of it times four, somewhat more
    /// room than the flows' tonnes, and the lanes among them.
    #[test]
    fn carriers_offer_room_on_the_lanes_of_the_flows() {
        let topology = Topology::embedded();
        let year_events = (365 * 86_400_000 / STEP_MS) as usize;
        let mut offered: BTreeMap<(String, TransportMode), i64> = BTreeMap::new();
        let mut withdrawn = 0;
        for e in generator(11).take(year_events / 4) {
            let SimRecord::TransportOffer(w) = e.record else { continue };
            let partner = topology.partner_by_carrier(&w.carrier_id).expect("a partner's carrier");
            assert!(partner.modes.contains(&w.mode), "{} does not run {:?}", partner.id, w.mode);
            assert_eq!(e.key, format!("{}>{}", w.from_cluster, w.to_cluster));
            match w.kind {
                TransportOfferKind::Offered => *offered.entry((e.key, w.mode)).or_default() += 4 * w.capacity_kg / 1_000,
                TransportOfferKind::Withdrawn => withdrawn += 1,
            }
        }
        let total: i64 = offered.values().sum();
        let flows: i64 = FLOWS.iter().map(|f| f.tonnes_per_year).sum();
        assert!((flows..=2 * flows).contains(&total), "{total} t a year offered against flows of {flows} t: {offered:?}");
        assert!(withdrawn > 100, "{withdrawn}");
        for lane in [("baise>nanning", TransportMode::Road), ("baise>nanning", TransportMode::River), ("hechi>nanning", TransportMode::Rail), ("fangchenggang>nanning", TransportMode::Road)] {
            assert!(offered.get(&(lane.0.to_owned(), lane.1)).is_some_and(|t| *t > 0), "no offers on {lane:?}: {offered:?}");
        }
    }

    #[test]
    fn enterprises_have_valid_credit_codes_in_their_cluster_region() {
        let g = generator(1);
        assert!(g.enterprises() > 200, "{}", g.enterprises());
        for f in g.producers.iter().chain(&g.buyers) {
            UnifiedSocialCreditCode::parse(&f.id).unwrap();
            assert_eq!(&f.id[2..8], region(&f.cluster));
        }
    }

    #[test]
    fn shipments_move_through_their_statuses_along_the_route() {
        let mut seen: BTreeMap<String, Vec<ShipmentStatus>> = BTreeMap::new();
        for e in generator(3).take(30_000) {
            if let SimRecord::Shipment(w) = e.record {
                seen.entry(w.shipment_id).or_default().push(w.status);
            }
        }
        let delivered = seen.values().filter(|s| s.last() == Some(&ShipmentStatus::Delivered)).count();
        assert!(delivered > 10, "{delivered} shipments delivered");
        for statuses in seen.values() {
            assert_eq!(statuses[0], ShipmentStatus::Planned);
        }
    }
}
