//! Where a subscriber stands in a topic: the next offset to read, per
//! partition. It is the SSE event id (`Last-Event-ID`), so a stream resumed
//! with the id of the last event it got neither loses nor repeats anything.
//! Text form: `<partition>-<next offset>` joined by `.`, e.g. `0-12.1-7.2-30`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<i32, i64>);

impl Cursor {
    pub fn parse(text: &str) -> Result<Cursor, String> {
        let mut at = BTreeMap::new();
        if text.trim().is_empty() {
            return Ok(Cursor(at));
        }
        for part in text.trim().split('.') {
            let (p, o) = part.split_once('-').ok_or_else(|| format!("cursor part {part:?}: expected <partition>-<offset>"))?;
            let p: i32 = p.parse().map_err(|_| format!("cursor part {part:?}: the partition is not a number"))?;
            let o: i64 = o.parse().map_err(|_| format!("cursor part {part:?}: the offset is not a number"))?;
            if p < 0 || o < 0 {
                return Err(format!("cursor part {part:?}: negative"));
            }
            if at.insert(p, o).is_some() {
                return Err(format!("cursor names partition {p} twice"));
            }
        }
        Ok(Cursor(at))
    }

    /// The next offset to read in `partition`, if the cursor has one.
    pub fn next(&self, partition: i32) -> Option<i64> {
        self.0.get(&partition).copied()
    }

    /// Records that the message at `offset` was delivered.
    pub fn advance(&mut self, partition: i32, offset: i64) {
        self.0.insert(partition, offset + 1);
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (p, o)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}-{o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn advances_and_prints() {
        let mut c = Cursor::default();
        c.advance(1, 6);
        c.advance(0, 11);
        assert_eq!(c.to_string(), "0-12.1-7");
        assert_eq!(c.next(1), Some(7));
        assert_eq!(c.next(2), None);
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["x", "0-", "-1-3", "0-1.0-2", "0-a", "0:1"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Cursor::parse("").unwrap(), Cursor::default());
    }

    proptest! {
        #[test]
        fn round_trips(m in proptest::collection::btree_map(0i32..64, 0i64..i64::MAX, 0..8)) {
            let c = Cursor(m);
            prop_assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
        }
    }
}
