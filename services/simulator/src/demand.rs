//! The shape the generator gives demand over simulated time, per family and
//! cluster: a trend, a week, a working day, and seeded shocks. It multiplies
//! each order's tonnes, so forecasts of the simulated Guangxi have something
//! real to find and can be checked against what was intended. Over a week
//! the weekly and daily factors average 1, so the calibrated yearly volumes
//! hold; these are the generator's intentions, not published figures. On
//! the supply side, seeded smelter outages cut what one cluster declares of
//! one family for a few days ([`outage`]): the capacity gaps an outlook
//! should warn of.

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
/// Guangxi is UTC+8: the working day and the week are local.
const LOCAL: i64 = 8 * HOUR;
const YEAR: i64 = 365 * DAY;

/// Growth of demand per year, percent, by family: aluminium and copper for
/// new-energy vehicles, cables and grids grow; lead, as lead-acid batteries
/// give way, shrinks.
pub fn trend_pct(family: &str) -> f64 {
    match family {
        "AL-INGOT" | "AL2O3-SGA" | "BX-ORE" => 6.0,
        "CU-CATHODE" => 4.0,
        "SN-INGOT" => 3.0,
        "SB-INGOT" | "ZN-INGOT" => 1.0,
        "PB-INGOT" => -2.0,
        _ => 0.0,
    }
}

/// By local weekday (Monday first): buyers order on working days; weekends
/// are quiet. The seven average 1.
pub const WEEK: [f64; 7] = [1.12, 1.12, 1.12, 1.12, 1.12, 0.8, 0.6];

/// Local working hours (08:00-18:00) order more; the 24 hours average 1.
pub const WORK_HOURS: (i64, i64) = (8, 18);
pub const IN_HOURS: f64 = 1.3;
pub const OUT_OF_HOURS: f64 = (24.0 - 10.0 * IN_HOURS) / 14.0;

/// Every this many simulated days one family of one cluster has a shock ...
pub const SHOCK_EVERY_DAYS: i64 = 45;
/// ... lasting this long, demand times this (restocking after a price dip,
/// or buyers covering for a smelter's outage elsewhere).
pub const SHOCK_DAYS: i64 = 3;
pub const SHOCK_FACTOR: f64 = 1.6;

/// The families the shocks fall on, each in the cluster whose buyers take it.
const SHOCKABLE: [(&str, &str); 4] = [("AL-INGOT", "nanning"), ("CU-CATHODE", "nanning"), ("ZN-INGOT", "hechi"), ("AL2O3-SGA", "baise")];

/// splitmix64: a shock's place from the seed and its period, no state.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The shock of period `k` (from `start_ms`): its family, cluster and start.
pub fn shock(seed: u64, start_ms: i64, k: i64) -> (&'static str, &'static str, i64) {
    let h = mix(seed ^ (k as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let (family, cluster) = SHOCKABLE[(h % SHOCKABLE.len() as u64) as usize];
    let offset = ((h >> 8) % (SHOCK_EVERY_DAYS - SHOCK_DAYS) as u64) as i64;
    (family, cluster, start_ms + (k * SHOCK_EVERY_DAYS + offset) * DAY)
}

/// How much demand for `family` in `cluster` at `t_ms` differs from its
/// yearly mean, for a run that started at `start_ms` with `seed`.
pub fn factor(seed: u64, start_ms: i64, family: &str, cluster: &str, t_ms: i64) -> f64 {
    let years = (t_ms - start_ms) as f64 / YEAR as f64;
    let trend = 1.0 + trend_pct(family) / 100.0 * (years - 0.5);
    let local = t_ms + LOCAL;
    // 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
    let weekday = ((local.div_euclid(DAY) + 3) % 7) as usize;
    let hour = local.rem_euclid(DAY) / HOUR;
    let daily = if (WORK_HOURS.0..WORK_HOURS.1).contains(&hour) { IN_HOURS } else { OUT_OF_HOURS };
    let k = (t_ms - start_ms).div_euclid(SHOCK_EVERY_DAYS * DAY);
    let (f, c, from) = shock(seed, start_ms, k);
    let shocked = f == family && c == cluster && (from..from + SHOCK_DAYS * DAY).contains(&t_ms);
    trend * WEEK[weekday] * daily * if shocked { SHOCK_FACTOR } else { 1.0 }
}

/// Every this many simulated days one producing cluster's family has an outage ...
pub const OUTAGE_EVERY_DAYS: i64 = 60;
/// ... lasting this long, in which its producers declare this share of their lots.
pub const OUTAGE_DAYS: i64 = 5;
pub const OUTAGE_SHARE: f64 = 0.2;

/// Where outages fall: the large smelters and refineries.
const OUTAGES: [(&str, &str); 4] = [("AL-INGOT", "baise"), ("AL2O3-SGA", "baise"), ("ZN-INGOT", "hechi"), ("CU-CATHODE", "fangchenggang")];

/// The outage of period `k` (from `start_ms`): its family, cluster and start.
pub fn outage_of(seed: u64, start_ms: i64, k: i64) -> (&'static str, &'static str, i64) {
    let h = mix(!seed ^ (k as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let (family, cluster) = OUTAGES[(h % OUTAGES.len() as u64) as usize];
    let offset = ((h >> 8) % (OUTAGE_EVERY_DAYS - OUTAGE_DAYS) as u64) as i64;
    (family, cluster, start_ms + (k * OUTAGE_EVERY_DAYS + offset) * DAY)
}

/// Whether producers of `family` in `cluster` are in an outage at `t_ms`.
pub fn outage(seed: u64, start_ms: i64, family: &str, cluster: &str, t_ms: i64) -> bool {
    let k = (t_ms - start_ms).div_euclid(OUTAGE_EVERY_DAYS * DAY);
    let (f, c, from) = outage_of(seed, start_ms, k);
    f == family && c == cluster && (from..from + OUTAGE_DAYS * DAY).contains(&t_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_week_and_the_day_average_one_and_the_trend_is_centred_on_mid_year() {
        assert!((WEEK.iter().sum::<f64>() / 7.0 - 1.0).abs() < 1e-9);
        assert!(((10.0 * IN_HOURS + 14.0 * OUT_OF_HOURS) / 24.0 - 1.0).abs() < 1e-9);
        // A seed whose first period shocks nothing at these times: the mean over a week is the trend's.
        let start = 1_798_761_600_000; // 2027-01-01 00:00 UTC
        let mean = |from: i64| (0..7 * 24).map(|h| factor(1, start, "PB-INGOT", "hechi", from + h * HOUR)).sum::<f64>() / (7.0 * 24.0);
        assert!((mean(start + 26 * 7 * DAY) - 1.0).abs() < 0.01, "{}", mean(start + 26 * 7 * DAY));
        assert!(mean(start) > mean(start + 50 * 7 * DAY), "lead shrinks");
    }

    #[test]
    fn a_shock_lifts_its_family_in_its_cluster_for_its_days_only() {
        let start = 1_798_761_600_000;
        let (family, cluster, from) = shock(7, start, 2);
        assert!(from >= start + 2 * SHOCK_EVERY_DAYS * DAY && from + SHOCK_DAYS * DAY <= start + 3 * SHOCK_EVERY_DAYS * DAY);
        let t = from + DAY;
        let ratio = factor(7, start, family, cluster, t) / factor(7, start, family, cluster, t - 7 * DAY);
        assert!((ratio - SHOCK_FACTOR).abs() < 0.01, "{ratio}");
        let other = if cluster == "nanning" { "hechi" } else { "nanning" };
        let calm = factor(7, start, family, other, t) / factor(7, start, family, other, t - 7 * DAY);
        assert!((calm - 1.0).abs() < 0.01, "{calm}");
        assert_eq!(shock(7, start, 2), (family, cluster, from), "seeded");
    }
}
