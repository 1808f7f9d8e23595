//! Product codes and the catalog of families and grade ladders.
//!
//! A code is `<METAL>-<FORM>-<GRADE>`; the family is `<METAL>-<FORM>`. Grades
//! are listed lowest to highest purity, so a ladder position is a rank: a
//! higher grade may fill an order for a lower one of the same family, never
//! the reverse and never across families.

use crate::Invalid;
use compact_str::CompactString;
use std::collections::BTreeMap;
use std::fmt;

/// The longest grade ladder a family may have (the matcher buckets capacity by grade).
pub const MAX_GRADES: usize = 16;

/// A product family, `<METAL>-<FORM>`, e.g. `AL-INGOT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Family(String);

impl Family {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product code known to the catalog, with its grade's rank in the family ladder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ProductCode {
    /// Inline (every catalog code is under 24 bytes): no allocation per event.
    code: CompactString,
    family_len: usize,
    rank: u16,
}

impl ProductCode {
    pub fn as_str(&self) -> &str {
        &self.code
    }
    pub fn family(&self) -> Family {
        Family(self.code[..self.family_len].to_owned())
    }
    pub fn family_str(&self) -> &str {
        &self.code[..self.family_len]
    }
    pub fn grade(&self) -> &str {
        &self.code[self.family_len + 1..]
    }
    /// Position on the family's ladder, 0 = lowest purity.
    pub fn rank(&self) -> u16 {
        self.rank
    }
    /// A code the engine learnt from the catalog before, read back from a
    /// book snapshot: its shape is checked again, its rank taken as recorded.
    pub(crate) fn restore(code: &str, rank: u16) -> Result<ProductCode, Invalid> {
        let (family, _) = split_code(code)?;
        Ok(ProductCode { code: code.into(), family_len: family.len(), rank })
    }
    /// Whether a lot of `self` may fill an order for `requested`: same family, grade at least as high.
    pub fn can_fill(&self, requested: &ProductCode) -> bool {
        self.family_str() == requested.family_str() && self.rank >= requested.rank
    }
}

impl fmt::Display for ProductCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

/// Splits a code into family and grade by shape alone: `METAL` and `FORM` are
/// `[A-Z0-9]+`, `GRADE` is `[A-Z0-9.-]+`.
pub fn split_code(s: &str) -> Result<(&str, &str), Invalid> {
    let shape_err = || Invalid::new("product_code", format!("{s:?} is not of the form <METAL>-<FORM>-<GRADE>"));
    let mut parts = s.splitn(3, '-');
    let metal = parts.next().ok_or_else(shape_err)?;
    let form = parts.next().ok_or_else(shape_err)?;
    let grade = parts.next().ok_or_else(shape_err)?;
    let seg_ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let grade_ok = !grade.is_empty()
        && grade.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !grade.ends_with('-');
    if !seg_ok(metal) || !seg_ok(form) || !grade_ok {
        return Err(shape_err());
    }
    Ok((&s[..metal.len() + 1 + form.len()], grade))
}

/// The family part of a product code already checked elsewhere
/// (`AL-INGOT-AL99.70` -> `AL-INGOT`); a code of another shape is returned whole.
pub fn family_of(code: &str) -> &str {
    split_code(code).map(|(family, _)| family).unwrap_or(code)
}

/// One family as the catalog file declares it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FamilySpec {
    pub family: String,
    pub name: String,
    pub name_zh: String,
    /// The national standard the grades follow, e.g. `GB/T 1196-2023`.
    pub standard: String,
    /// Lowest to highest purity.
    pub grades: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(rename = "family")]
    families: Vec<FamilySpec>,
}

/// The product catalog: every family with its grade ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    families: Vec<FamilySpec>,
    /// family -> grade -> rank
    ladders: BTreeMap<String, BTreeMap<String, u16>>,
}

impl Catalog {
    /// Parses a catalog TOML document and checks it; every problem is reported.
    pub fn from_toml(text: &str) -> Result<Self, Vec<Invalid>> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| vec![Invalid::new("catalog", e.to_string())])?;
        Self::from_specs(file.families)
    }

    pub fn from_specs(families: Vec<FamilySpec>) -> Result<Self, Vec<Invalid>> {
        let mut problems = Vec::new();
        let mut ladders: BTreeMap<String, BTreeMap<String, u16>> = BTreeMap::new();
        for f in &families {
            let here = format!("catalog.{}", f.family);
            if ladders.contains_key(&f.family) {
                problems.push(Invalid::new(&here, "family declared twice"));
                continue;
            }
            if f.grades.is_empty() || f.grades.len() > crate::catalog::MAX_GRADES {
                problems.push(Invalid::new(&here, format!("has {} grades; 1 to {} allowed", f.grades.len(), MAX_GRADES)));
            }
            let mut ladder = BTreeMap::new();
            for (rank, grade) in f.grades.iter().enumerate() {
                let code = format!("{}-{}", f.family, grade);
                match split_code(&code) {
                    Ok((family, _)) if family == f.family => {}
                    Ok(_) => problems.push(Invalid::new(&here, format!("family {:?} must be <METAL>-<FORM>", f.family))),
                    Err(e) => problems.push(Invalid::new(&here, e.message)),
                }
                if ladder.insert(grade.clone(), rank as u16).is_some() {
                    problems.push(Invalid::new(&here, format!("grade {grade} listed twice")));
                }
            }
            ladders.insert(f.family.clone(), ladder);
        }
        if problems.is_empty() { Ok(Catalog { families, ladders }) } else { Err(problems) }
    }

    /// The catalog shipped in `schemas/catalog.toml`.
    pub fn embedded() -> Catalog {
        Self::from_toml(include_str!("../../../schemas/catalog.toml")).expect("the embedded catalog is checked by its tests")
    }

    pub fn families(&self) -> &[FamilySpec] {
        &self.families
    }

    /// Parses a product code and checks it against the catalog.
    pub fn parse(&self, s: &str) -> Result<ProductCode, Invalid> {
        let (family, grade) = split_code(s)?;
        let ladder = self
            .ladders
            .get(family)
            .ok_or_else(|| Invalid::new("product_code", format!("{s}: unknown product family {family}")))?;
        let rank = *ladder
            .get(grade)
            .ok_or_else(|| Invalid::new("product_code", format!("{s}: {grade} is not a grade of {family}")))?;
        Ok(ProductCode { code: s.into(), family_len: family.len(), rank })
    }

    /// Whether a family exists (keys of the family-keyed topics).
    pub fn has_family(&self, family: &str) -> bool {
        self.ladders.contains_key(family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cat() -> Catalog {
        Catalog::embedded()
    }

    #[test]
    fn embedded_catalog_has_the_required_ladders() {
        let c = cat();
        let al: Vec<_> = ["AL99.50", "AL99.60", "AL99.70", "AL99.85", "AL99.90", "AL99.95"]
            .iter()
            .map(|g| c.parse(&format!("AL-INGOT-{g}")).unwrap().rank())
            .collect();
        assert!(al.windows(2).all(|w| w[0] < w[1]), "aluminium ladder must rise: {al:?}");
        let cu2 = c.parse("CU-CATHODE-CU-CATH-2").unwrap();
        let cu1 = c.parse("CU-CATHODE-CU-CATH-1").unwrap();
        assert!(cu1.can_fill(&cu2) && !cu2.can_fill(&cu1));
        assert_eq!(cu1.family_str(), "CU-CATHODE");
        assert_eq!(cu1.grade(), "CU-CATH-1");
        for code in ["ZN-INGOT-ZN99.995", "SN-INGOT-SN99.90", "SB-INGOT-SB99.65", "PB-INGOT-PB99.994"] {
            c.parse(code).unwrap();
        }
        assert!(c.has_family("AL2O3-SGA"));
    }

    #[test]
    fn unknown_codes_are_refused_with_a_reason() {
        let c = cat();
        assert!(c.parse("AL-INGOT-AL99.99").unwrap_err().message.contains("not a grade"));
        assert!(c.parse("AU-BAR-AU99.99").unwrap_err().message.contains("unknown product family"));
        assert!(c.parse("al-ingot-AL99.70").unwrap_err().message.contains("not of the form"));
        assert!(c.parse("AL-INGOT").is_err());
        assert!(c.parse("").is_err());
    }

    #[test]
    fn no_substitution_across_families() {
        let c = cat();
        let zn = c.parse("ZN-INGOT-ZN99.995").unwrap();
        let pb = c.parse("PB-INGOT-PB99.940").unwrap();
        assert!(!zn.can_fill(&pb) && !pb.can_fill(&zn));
    }

    #[test]
    fn bad_catalogs_report_every_problem() {
        let text = r#"
            [[family]]
            family = "AL-INGOT"
            name = "a"
            name_zh = "a"
            standard = "x"
            grades = ["A", "A"]
            [[family]]
            family = "AL-INGOT"
            name = "b"
            name_zh = "b"
            standard = "x"
            grades = ["B"]
            [[family]]
            family = "cu"
            name = "c"
            name_zh = "c"
            standard = "x"
            grades = []
        "#;
        let errs = Catalog::from_toml(text).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    proptest! {
        /// Substitution is exactly "same family and rank not lower".
        #[test]
        fn substitution_only_upwards_within_a_family(a in 0usize..64, b in 0usize..64) {
            let c = cat();
            let all: Vec<ProductCode> = c.families().iter()
                .flat_map(|f| f.grades.iter().map(move |g| format!("{}-{}", f.family, g)))
                .map(|s| c.parse(&s).unwrap())
                .collect();
            let (x, y) = (&all[a % all.len()], &all[b % all.len()]);
            let expected = x.family() == y.family() && x.rank() >= y.rank();
            prop_assert_eq!(x.can_fill(y), expected);
        }

        /// Any string either parses to a code whose text is the input, or is refused; never a panic.
        #[test]
        fn parse_is_total(s in "\\PC{0,30}") {
            if let Ok(code) = cat().parse(&s) { prop_assert_eq!(code.as_str(), s.as_str()); }
        }
    }
}
