//! Quantities, prices and times as the contract states them: kilograms and
//! whole yuan per tonne as non-negative integers, times as UTC epoch millis,
//! each refused outside the contract's plausible values (v1.1). Within those
//! bounds every product of a quantity and a price fits in an `i64` with room
//! to spare; arithmetic on them is still checked.

use crate::Invalid;

/// The contract's plausible values (v1.1).
pub mod bounds {
    /// 10 Mt: the most one event may carry.
    pub const MAX_KG: i64 = 10_000_000_000;
    /// CNY per tonne.
    pub const MAX_PRICE: i64 = 1_000_000_000;
    /// kWh per tonne.
    pub const MAX_ENERGY: i64 = 1_000_000;
    /// 2000-01-01T00:00Z, inclusive.
    pub const MIN_MILLIS: i64 = 946_684_800_000;
    /// 2100-01-01T00:00Z, exclusive.
    pub const MAX_MILLIS: i64 = 4_102_444_800_000;
}

/// A quantity in kilograms. The wire carries `long`; a negative value is refused here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Kg(u64);

impl Kg {
    pub const ZERO: Kg = Kg(0);

    /// 0 to 10 Mt.
    pub fn parse(field: &str, wire: i64) -> Result<Self, Invalid> {
        if wire < 0 {
            return Err(Invalid::new(field, format!("is {wire} kg; quantities are never negative")));
        }
        if wire > bounds::MAX_KG {
            return Err(Invalid::new(field, format!("is {wire} kg, over the bound of {} kg (10 Mt per event)", bounds::MAX_KG)));
        }
        Ok(Kg(wire as u64))
    }
    /// Like `parse`, and zero is refused too (an order or a declaration of nothing is a mistake).
    pub fn parse_positive(field: &str, wire: i64) -> Result<Self, Invalid> {
        match Self::parse(field, wire)? {
            Kg(0) => Err(Invalid::new(field, "must be more than 0 kg")),
            kg => Ok(kg),
        }
    }
    pub const fn new(kg: u64) -> Self {
        Kg(kg)
    }
    pub const fn get(self) -> u64 {
        self.0
    }
    /// The wire form. Values above i64::MAX cannot be built from the wire, and
    /// arithmetic here only subtracts, takes minima or adds checked, so this
    /// saturates only on a value no parse admits.
    pub fn to_wire(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
    pub fn tonnes(self) -> f64 {
        self.0 as f64 / 1000.0
    }
    pub fn saturating_sub(self, other: Kg) -> Kg {
        Kg(self.0.saturating_sub(other.0))
    }
    pub fn checked_add(self, other: Kg) -> Option<Kg> {
        self.0.checked_add(other.0).map(Kg)
    }
}

impl std::fmt::Display for Kg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} kg", self.0)
    }
}

/// A price in whole yuan (CNY) per tonne.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct PricePerTonne(u64);

impl PricePerTonne {
    /// A price: more than 0, at most 1e9 CNY/t.
    pub fn parse(field: &str, wire: i64) -> Result<Self, Invalid> {
        match Self::parse_charge(field, wire)? {
            PricePerTonne(0) => Err(Invalid::new(field, "is 0 CNY/t; a price is more than 0")),
            p => Ok(p),
        }
    }
    /// A charge that may be nothing (freight within one site): 0 to 1e9 CNY/t.
    pub fn parse_charge(field: &str, wire: i64) -> Result<Self, Invalid> {
        if wire < 0 {
            return Err(Invalid::new(field, format!("is {wire} CNY/t; prices are never negative")));
        }
        if wire > bounds::MAX_PRICE {
            return Err(Invalid::new(field, format!("is {wire} CNY/t, over the bound of {} CNY/t", bounds::MAX_PRICE)));
        }
        Ok(PricePerTonne(wire as u64))
    }
    pub const fn new(cny: u64) -> Self {
        PricePerTonne(cny)
    }
    pub const fn get(self) -> u64 {
        self.0
    }
    pub fn to_wire(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

/// A UTC instant in milliseconds since the epoch (Avro `timestamp-millis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    /// From 2000-01-01 (inclusive) to 2100-01-01 (exclusive), UTC: anything
    /// outside is a unit mix-up (seconds, micros), not a real date.
    pub fn parse(field: &str, wire: i64) -> Result<Self, Invalid> {
        if (bounds::MIN_MILLIS..bounds::MAX_MILLIS).contains(&wire) {
            Ok(Millis(wire))
        } else {
            Err(Invalid::new(
                field,
                format!("{wire} is outside the bounds of a timestamp in milliseconds since 1970 (2000-01-01 to 2100-01-01 UTC)"),
            ))
        }
    }
    /// `self` plus `hours`, or `None` past what an `i64` holds.
    pub fn checked_add_hours(self, hours: u64) -> Option<Millis> {
        i64::try_from(hours).ok()?.checked_mul(3_600_000)?.checked_add(self.0).map(Millis)
    }
}

/// Energy intensity: null, or 0 to 1e6 kWh/t.
pub fn parse_energy(field: &str, wire: Option<i64>) -> Result<Option<u64>, Invalid> {
    match wire {
        None => Ok(None),
        Some(e) if e < 0 => Err(Invalid::new(field, format!("is {e}; energy is never negative"))),
        Some(e) if e > bounds::MAX_ENERGY => Err(Invalid::new(field, format!("is {e} kWh/t, over the bound of {} kWh/t", bounds::MAX_ENERGY))),
        Some(e) => Ok(Some(e as u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn kg_accepts_exactly_the_plausible(v in any::<i64>()) {
            let parsed = Kg::parse("q", v);
            prop_assert_eq!(parsed.is_ok(), (0..=bounds::MAX_KG).contains(&v));
            if let Ok(kg) = parsed { prop_assert_eq!(kg.to_wire(), v); }
        }

        #[test]
        fn positive_refuses_zero(v in 0i64..1000) {
            prop_assert_eq!(Kg::parse_positive("q", v).is_ok(), v > 0);
        }

        #[test]
        fn prices_are_refused_outside_their_bounds(v in any::<i64>()) {
            prop_assert_eq!(PricePerTonne::parse("p", v).is_ok(), (1..=bounds::MAX_PRICE).contains(&v));
            prop_assert_eq!(PricePerTonne::parse_charge("p", v).is_ok(), (0..=bounds::MAX_PRICE).contains(&v));
            if let Ok(p) = PricePerTonne::parse("p", v) { prop_assert_eq!(p.to_wire(), v); }
        }

        #[test]
        fn energy_is_refused_outside_its_bounds(v in any::<i64>()) {
            prop_assert_eq!(parse_energy("e", Some(v)).is_ok(), (0..=bounds::MAX_ENERGY).contains(&v));
        }

        /// The contract's promise: within bounds, a quantity's value (tonnes
        /// times CNY per tonne) and its energy (kg times kWh per tonne) fit an
        /// i64 with room to spare; kg times CNY per tonne itself needs a u64.
        #[test]
        fn bounded_products_fit(q in 0i64..=bounds::MAX_KG, p in 0i64..=bounds::MAX_PRICE, e in 0i64..=bounds::MAX_ENERGY) {
            let kg_cny = (q as u64).checked_mul(p as u64);
            prop_assert!(kg_cny.is_some());
            prop_assert!(kg_cny.unwrap() / 1000 < (i64::MAX / 100) as u64);
            prop_assert!(q.checked_mul(e).and_then(|x| x.checked_mul(100)).is_some());
        }

        #[test]
        fn hours_added_to_a_bounded_time_never_wrap(t in bounds::MIN_MILLIS..bounds::MAX_MILLIS, h in any::<u64>()) {
            let r = Millis(t).checked_add_hours(h);
            if h < 1_000_000 { prop_assert!(r.is_some()); }
            if let Some(m) = r { prop_assert!(m.0 >= t); }
        }
    }

    #[test]
    fn timestamps_in_seconds_are_refused() {
        assert!(Millis::parse("t", 1_795_000_000).is_err());
        assert!(Millis::parse("t", 1_795_000_000_000).is_ok());
        assert!(Millis::parse("t", -1).is_err());
        assert!(Millis::parse("t", bounds::MIN_MILLIS).is_ok());
        assert!(Millis::parse("t", bounds::MAX_MILLIS - 1).is_ok());
        assert!(Millis::parse("t", bounds::MAX_MILLIS).is_err());
        let e = Millis::parse("deliver_by", i64::MAX).unwrap_err();
        assert!(e.to_string().starts_with("deliver_by:") && e.to_string().contains("2100-01-01"), "{e}");
    }

    #[test]
    fn the_reason_names_the_field_and_the_bound() {
        let e = Kg::parse_positive("quantity_kg", 9_000_000_000_000_000_000).unwrap_err();
        assert_eq!(e.field, "quantity_kg");
        assert!(e.message.contains("10000000000 kg"), "{e}");
        let e = PricePerTonne::parse("price_cny_per_t", 2_000_000_000).unwrap_err();
        assert!(e.message.contains("1000000000 CNY/t"), "{e}");
    }
}
