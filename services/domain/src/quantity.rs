//! Quantities, prices and times as the contract states them: kilograms and
//! whole yuan per tonne as non-negative integers, times as UTC epoch millis.

use crate::Invalid;

/// A quantity in kilograms. The wire carries `long`; a negative value is refused here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Kg(u64);

impl Kg {
    pub const ZERO: Kg = Kg(0);

    pub fn parse(field: &str, wire: i64) -> Result<Self, Invalid> {
        u64::try_from(wire).map(Kg).map_err(|_| Invalid::new(field, format!("is {wire} kg; quantities are never negative")))
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
    /// arithmetic here only subtracts or takes minima, so this cannot overflow.
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
    pub fn parse(field: &str, wire: i64) -> Result<Self, Invalid> {
        u64::try_from(wire)
            .map(PricePerTonne)
            .map_err(|_| Invalid::new(field, format!("is {wire} CNY/t; prices are never negative")))
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
    /// 2000-01-01 and 2200-01-01: anything outside is a unit mix-up (seconds, micros), not a real date.
    const MIN: i64 = 946_684_800_000;
    const MAX: i64 = 7_258_118_400_000;

    pub fn parse(field: &str, wire: i64) -> Result<Self, Invalid> {
        if (Self::MIN..Self::MAX).contains(&wire) {
            Ok(Millis(wire))
        } else {
            Err(Invalid::new(field, format!("{wire} is not a plausible timestamp in milliseconds since 1970 (years 2000 to 2200)")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn kg_accepts_exactly_the_non_negative(v in any::<i64>()) {
            let parsed = Kg::parse("q", v);
            prop_assert_eq!(parsed.is_ok(), v >= 0);
            if let Ok(kg) = parsed { prop_assert_eq!(kg.to_wire(), v); }
        }

        #[test]
        fn positive_refuses_zero(v in 0i64..1000) {
            prop_assert_eq!(Kg::parse_positive("q", v).is_ok(), v > 0);
        }

        #[test]
        fn price_round_trips(v in 0i64..10_000_000) {
            prop_assert_eq!(PricePerTonne::parse("p", v).unwrap().to_wire(), v);
        }
    }

    #[test]
    fn timestamps_in_seconds_are_refused() {
        assert!(Millis::parse("t", 1_795_000_000).is_err());
        assert!(Millis::parse("t", 1_795_000_000_000).is_ok());
        assert!(Millis::parse("t", -1).is_err());
    }
}
