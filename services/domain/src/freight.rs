//! Freight and transit time between sites, from `topology/freight.toml`.
//!
//! Distances are computed once (haversine, in whole km) when the network is
//! built; everything after that is integer arithmetic, so matching is
//! deterministic to the byte.

use crate::topology::{Topology, TransportMode};
use crate::Invalid;
use rustc_hash::FxHashMap as HashMap;

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSpec {
    pub mode: TransportMode,
    pub route_factor_pct: u32,
    pub rate_fen_per_tkm: u32,
    pub handling_cny_per_t: u32,
    pub speed_kmh: u32,
    pub handling_hours: u32,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FreightTable {
    #[serde(rename = "mode")]
    pub modes: Vec<ModeSpec>,
}

impl FreightTable {
    pub fn check(&self) -> Vec<Invalid> {
        let mut p = Vec::new();
        for m in &self.modes {
            let here = format!("freight {}", m.mode.as_str());
            if self.modes.iter().filter(|x| x.mode == m.mode).count() > 1 {
                p.push(Invalid::new(&here, "declared twice"));
            }
            if m.speed_kmh == 0 || m.route_factor_pct < 100 {
                p.push(Invalid::new(&here, "speed_kmh must be > 0 and route_factor_pct at least 100"));
            }
        }
        if !self.modes.iter().any(|m| m.mode == TransportMode::Road) {
            p.push(Invalid::new("freight", "ROAD must be declared"));
        }
        p
    }

    fn spec(&self, mode: TransportMode) -> Option<&ModeSpec> {
        self.modes.iter().find(|m| m.mode == mode)
    }
}

/// Great-circle distance in km (mean Earth radius 6371 km).
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

/// One way to move goods between two sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub mode: TransportMode,
    pub distance_km: u32,
    pub freight_cny_per_t: u32,
    pub transit_hours: u32,
}

impl Route {
    pub fn transit_ms(&self) -> i64 {
        self.transit_hours as i64 * 3_600_000
    }
}

/// Routes between every pair of sites, cheapest first.
#[derive(Debug, Clone)]
pub struct Network {
    sites: Vec<String>,
    clusters: Vec<String>,
    site_cluster: Vec<usize>,
    /// Sites per cluster, precomputed: the engine walks them for every order it matches.
    cluster_sites: Vec<Vec<usize>>,
    /// routes[a * n + b], cheapest first; a == b has one free, instant route.
    routes: Vec<Vec<Route>>,
    /// min_freight[a * n + b]: the search reads it for every site it considers.
    min_freight: Vec<u32>,
    /// Indexes by id: the engine looks a site and a cluster up for every
    /// order and capacity, and a scan compares many strings.
    site_index: HashMap<String, usize>,
    cluster_index: HashMap<String, usize>,
}

impl Network {
    pub fn new(topology: &Topology) -> Network {
        let clusters: Vec<String> = topology.clusters.iter().map(|c| c.id.to_string()).collect();
        let sites: Vec<&crate::topology::Site> = topology.clusters.iter().flat_map(|c| c.sites.iter()).collect();
        let site_cluster: Vec<usize> = sites
            .iter()
            .map(|s| clusters.iter().position(|c| Some(c.as_str()) == s.cluster.as_ref().map(|x| x.as_str())).unwrap_or(0))
            .collect();
        let cluster_sites = (0..clusters.len()).map(|c| (0..sites.len()).filter(|s| site_cluster[*s] == c).collect()).collect();
        let n = sites.len();
        let mut routes = Vec::with_capacity(n * n);
        for a in &sites {
            for b in &sites {
                if a.id == b.id {
                    routes.push(vec![Route { mode: TransportMode::Road, distance_km: 0, freight_cny_per_t: 0, transit_hours: 0 }]);
                    continue;
                }
                let straight = haversine_km(a.lat, a.lon, b.lat, b.lon);
                let mut list: Vec<Route> = TransportMode::ALL
                    .iter()
                    .filter(|m| a.modes.contains(m) && b.modes.contains(m))
                    .filter_map(|m| topology.freight.spec(*m))
                    .map(|spec| {
                        let km = (straight * spec.route_factor_pct as f64 / 100.0).round() as u32;
                        Route {
                            mode: spec.mode,
                            distance_km: km,
                            freight_cny_per_t: spec.handling_cny_per_t + (spec.rate_fen_per_tkm * km).div_ceil(100),
                            transit_hours: spec.handling_hours + km.div_ceil(spec.speed_kmh),
                        }
                    })
                    .collect();
                list.sort_by_key(|r| (r.freight_cny_per_t, r.transit_hours, r.mode));
                routes.push(list);
            }
        }
        let sites: Vec<String> = sites.iter().map(|s| s.id.to_string()).collect();
        // The first of equal ids wins, as a scan would find it.
        let index = |ids: &[String]| {
            let mut m = HashMap::default();
            for (i, id) in ids.iter().enumerate().rev() {
                m.insert(id.clone(), i);
            }
            m
        };
        let min_freight = routes.iter().map(|r| r.first().map_or(0, |r| r.freight_cny_per_t)).collect();
        Network { site_index: index(&sites), cluster_index: index(&clusters), min_freight, sites, clusters, site_cluster, cluster_sites, routes }
    }

    pub fn site_index(&self, id: &str) -> Option<usize> {
        self.site_index.get(id).copied()
    }
    pub fn cluster_index(&self, id: &str) -> Option<usize> {
        self.cluster_index.get(id).copied()
    }
    pub fn site_name(&self, i: usize) -> &str {
        &self.sites[i]
    }
    pub fn cluster_name(&self, i: usize) -> &str {
        &self.clusters[i]
    }
    pub fn cluster_of(&self, site: usize) -> usize {
        self.site_cluster[site]
    }
    pub fn site_count(&self) -> usize {
        self.sites.len()
    }
    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }
    /// Sites of a cluster, in topology order.
    pub fn sites_of(&self, cluster: usize) -> &[usize] {
        &self.cluster_sites[cluster]
    }

    /// Every route from `a` to `b`, cheapest first.
    pub fn routes(&self, a: usize, b: usize) -> &[Route] {
        &self.routes[a * self.sites.len() + b]
    }

    /// The cheapest freight from `a` to `b` by any mode: a lower bound for pruning.
    pub fn min_freight(&self, a: usize, b: usize) -> u32 {
        self.min_freight[a * self.sites.len() + b]
    }

    /// The cheapest route from `a` to `b` that arrives by `deadline` when dispatched at `dispatch`.
    pub fn cheapest_in_time(&self, a: usize, b: usize, dispatch: i64, deadline: i64) -> Option<&Route> {
        self.routes(a, b).iter().find(|r| dispatch.saturating_add(r.transit_ms()) <= deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_a_known_distance() {
        // Nanning (22.82, 108.32) to Baise (23.90, 106.62): about 211 km as the crow flies.
        let d = haversine_km(22.82, 108.32, 23.90, 106.62);
        assert!((205.0..218.0).contains(&d), "{d}");
    }

    #[test]
    fn routes_are_cheapest_first_and_river_is_cheap_but_slow() {
        let t = Topology::embedded();
        let n = Network::new(&t);
        let pingguo = n.site_index("baise-pingguo-smelter").unwrap();
        let niuwan = n.site_index("nanning-niuwan-port").unwrap();
        let routes = n.routes(pingguo, niuwan);
        assert!(routes.len() >= 3, "{routes:?}");
        assert!(routes.windows(2).all(|w| w[0].freight_cny_per_t <= w[1].freight_cny_per_t));
        let river = routes.iter().find(|r| r.mode == TransportMode::River).unwrap();
        let road = routes.iter().find(|r| r.mode == TransportMode::Road).unwrap();
        assert!(river.freight_cny_per_t < road.freight_cny_per_t && river.transit_hours > road.transit_hours);
        // A tight deadline forces the faster, dearer mode.
        let fast = n.cheapest_in_time(pingguo, niuwan, 0, road.transit_ms()).unwrap();
        assert_eq!(fast.mode, TransportMode::Road);
        assert_eq!(n.routes(pingguo, pingguo)[0].freight_cny_per_t, 0);
    }

    #[test]
    fn every_pair_has_a_route() {
        let n = Network::new(&Topology::embedded());
        for a in 0..n.site_count() {
            for b in 0..n.site_count() {
                assert!(!n.routes(a, b).is_empty(), "{} -> {}", n.site_name(a), n.site_name(b));
            }
        }
    }
}
