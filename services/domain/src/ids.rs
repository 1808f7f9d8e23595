//! Identifier newtypes, each parsed once at the edge. Held inline up to 24
//! bytes (`CompactString`): most ids and every credit code need no heap
//! allocation, so a decoded event is one contiguous value.

use crate::Invalid;
use compact_str::CompactString;
use std::fmt;

/// Rules shared by every free-form id: 1 to 128 bytes of printable ASCII, no spaces.
/// Ids travel as Kafka keys, Redis keys and URL path segments, so anything
/// invisible or ambiguous there is refused up front.
fn check_id(field: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if s.len() > 128 {
        return Err(Invalid::new(field, format!("is {} bytes long, at most 128 allowed", s.len())));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(Invalid::new(field, format!("contains the character {c:?}; use printable ASCII without spaces")));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        id_type!($(#[$doc])* $name, $field, check_id);
    };
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(CompactString);

        impl $name {
            pub fn parse(s: impl Into<CompactString>) -> Result<Self, Invalid> {
                let s = s.into();
                $check($field, &s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = CompactString::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(/// Unique per event; the hub processes an `event_id` once.
    EventId, "event_id");
id_type!(OrderId, "order_id");
id_type!(CapacityId, "capacity_id");
id_type!(ShipmentId, "shipment_id");
id_type!(AllocationId, "allocation_id");
id_type!(/// A buyer, provider or carrier; usually an 18-character unified social credit code.
    EnterpriseId, "enterprise_id");
id_type!(/// A site declared in `topology/`: a slug, since it is part of the
    /// compacted inventory key `site_id/product_code`.
    SiteId, "site_id", check_slug);
id_type!(/// A logistics partner: a slug, since it names the partner's topic.
    PartnerId, "partner_id", check_slug);

id_type!(/// A cluster id: a slug (it appears in topic names, metric labels and
    /// Kubernetes names).
    ClusterId, "cluster", check_slug);

/// Slugs name things in topic names and Kubernetes objects: `[a-z0-9-]`, 1..=40, no leading/trailing `-`.
pub fn check_slug(field: &str, s: &str) -> Result<(), Invalid> {
    let ok_chars = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if s.is_empty() || s.len() > 40 || !ok_chars || s.starts_with('-') || s.ends_with('-') {
        return Err(Invalid::new(
            field,
            format!("{s:?} is not a slug: 1 to 40 of a-z, 0-9 and '-', not starting or ending with '-'"),
        ));
    }
    Ok(())
}

/// A unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters
/// from `0-9A-Z` without I, O, S, V, Z, the last one a check character.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnifiedSocialCreditCode(String);

const USCC_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

impl UnifiedSocialCreditCode {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let bytes = s.as_bytes();
        if bytes.len() != 18 {
            return Err(Invalid::new("uscc", format!("has {} characters, 18 expected", bytes.len())));
        }
        let mut values = [0u32; 18];
        for (i, b) in bytes.iter().enumerate() {
            values[i] = USCC_ALPHABET
                .iter()
                .position(|a| a == b)
                .ok_or_else(|| Invalid::new("uscc", format!("character {:?} is not allowed", *b as char)))?
                as u32;
        }
        let expected = Self::check_value(&values[..17]);
        if values[17] != expected {
            return Err(Invalid::new("uscc", "check character does not match"));
        }
        Ok(Self(s.to_owned()))
    }

    /// Completes 17 valid characters with their check character.
    pub fn complete(first17: &str) -> Result<Self, Invalid> {
        let mut values = Vec::with_capacity(17);
        for b in first17.bytes() {
            let v = USCC_ALPHABET
                .iter()
                .position(|a| *a == b)
                .ok_or_else(|| Invalid::new("uscc", format!("character {:?} is not allowed", b as char)))?;
            values.push(v as u32);
        }
        if values.len() != 17 {
            return Err(Invalid::new("uscc", "17 characters expected before the check character"));
        }
        let check = USCC_ALPHABET[Self::check_value(&values) as usize] as char;
        Ok(Self(format!("{first17}{check}")))
    }

    fn check_value(values: &[u32]) -> u32 {
        let sum: u32 = values.iter().zip(USCC_WEIGHTS).map(|(v, w)| v * w).sum();
        (31 - sum % 31) % 31
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_refuse_empty_long_and_spaces() {
        assert!(OrderId::parse("").is_err());
        assert!(OrderId::parse("a b").is_err());
        assert!(OrderId::parse("x".repeat(129)).is_err());
        assert_eq!(OrderId::parse("ORD-2026-0001").unwrap().as_str(), "ORD-2026-0001");
    }

    #[test]
    fn cluster_ids_are_slugs() {
        assert!(ClusterId::parse("baise").is_ok());
        assert!(ClusterId::parse("fangchenggang").is_ok());
        assert!(ClusterId::parse("Baise").is_err());
        assert!(ClusterId::parse("-baise").is_err());
        assert!(ClusterId::parse("bai se").is_err());
    }

    #[test]
    fn uscc_known_good_and_tampered() {
        // 91450000198230081F is a public USCC shape; we build one through `complete`
        // and check that changing any character breaks it.
        let code = UnifiedSocialCreditCode::complete("91451000MA5KXXXX0").unwrap();
        assert!(UnifiedSocialCreditCode::parse(code.as_str()).is_ok());
        let mut tampered = code.as_str().to_owned().into_bytes();
        tampered[5] = if tampered[5] == b'1' { b'2' } else { b'1' };
        assert!(UnifiedSocialCreditCode::parse(std::str::from_utf8(&tampered).unwrap()).is_err());
        assert!(UnifiedSocialCreditCode::parse("91451000MA5KXXXXOI").is_err());
    }

    proptest! {
        #[test]
        fn printable_ids_round_trip(s in "[!-~]{1,128}") {
            let id = EventId::parse(s.clone()).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
        }

        #[test]
        fn ids_with_whitespace_are_refused(a in "[a-z]{0,10}", b in "[a-z]{0,10}", ws in "[ \t\n]") {
            let s = format!("{a}{ws}{b}");
            prop_assert!(EventId::parse(s).is_err());
        }

        #[test]
        fn uscc_complete_then_parse(body in "[0-9ABCDEFGHJKLMNPQRTUWXY]{17}") {
            let code = UnifiedSocialCreditCode::complete(&body).unwrap();
            prop_assert!(UnifiedSocialCreditCode::parse(code.as_str()).is_ok());
        }
    }
}
