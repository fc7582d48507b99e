//! The data map of a sparse image: which byte ranges of the file hold data; everything
//! else reads as zeros. Ferric's conductor offers it next to every image it serves, so the
//! agent downloads only the data of a mostly empty raw image instead of gigabytes of
//! zeros.
//!
//! Protocol (an extension; other servers simply do not offer it):
//! - Every image reply of a server that can build maps carries [`ADVERTISE_HEADER`].
//! - A `GET` of the same URL with `Accept: ` [`MEDIA_TYPE`] answers with the map as JSON
//!   (`Content-Type` [`MEDIA_TYPE`]) instead of the image: the same resource, another
//!   representation, so signed or query-string URLs need no rewriting.
//! - The map carries the image's strong `ETag`; the data ranges are then fetched with
//!   `Range` + `If-Range: <etag>`, so an image replaced in between is noticed and the
//!   download starts over without the map.

use serde::{Deserialize, Serialize};

/// Media type of the map representation.
pub const MEDIA_TYPE: &str = "application/vnd.ferric.data-map+json";

/// Response header announcing that the map is available for this image.
pub const ADVERTISE_HEADER: &str = "ferric-data-map";

/// Holes shorter than this are sent as data: a range request costs more than sending
/// them, and the map stays short.
pub const MIN_HOLE: u64 = 1 << 20;

/// The most data ranges a map may list; past this the server coalesces further.
pub const MAX_RANGES: usize = 65_536;

/// Largest JSON body a client accepts for a map.
pub const MAX_BODY_BYTES: u64 = 8 << 20;

/// The map of one image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataMap {
    /// The image's size in bytes.
    pub size: u64,
    /// The image's strong entity tag when the map was made (quoted, as in `ETag`).
    pub etag: String,
    /// `[offset, length]` of each data range, in order, not overlapping, not touching.
    pub data: Vec<[u64; 2]>,
}

/// Why a received map cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataMapError {
    #[error("data range {index} is empty")]
    EmptyRange { index: usize },
    #[error("data range {index} ends past the image's {size} bytes")]
    PastEnd { index: usize, size: u64 },
    #[error("data range {index} overlaps or precedes the one before it")]
    Unordered { index: usize },
    #[error("the map lists {count} data ranges; at most {MAX_RANGES} are accepted")]
    TooManyRanges { count: usize },
    #[error("the map's etag {0:?} is not a strong entity tag")]
    BadEtag(String),
}

impl DataMap {
    /// Checks the map's shape: ranges non-empty, in order, within `size`.
    pub fn validate(&self) -> Result<(), DataMapError> {
        if self.data.len() > MAX_RANGES {
            return Err(DataMapError::TooManyRanges { count: self.data.len() });
        }
        let strong = self.etag.len() >= 2 && self.etag.starts_with('"') && self.etag.ends_with('"');
        if !strong {
            return Err(DataMapError::BadEtag(self.etag.clone()));
        }
        let mut previous_end = 0u64;
        for (index, &[offset, len]) in self.data.iter().enumerate() {
            if len == 0 {
                return Err(DataMapError::EmptyRange { index });
            }
            let end = offset
                .checked_add(len)
                .filter(|&end| end <= self.size)
                .ok_or(DataMapError::PastEnd { index, size: self.size })?;
            if index > 0 && offset <= previous_end {
                return Err(DataMapError::Unordered { index });
            }
            previous_end = end;
        }
        Ok(())
    }

    /// Bytes of data the map lists.
    pub fn data_bytes(&self) -> u64 {
        self.data.iter().map(|&[_, len]| len).sum()
    }

    /// Where `pos` falls: `Ok(end)` when inside a data range ending at `end`, `Err(next)`
    /// when inside a hole that ends at `next` (the next range's start, or the size).
    pub fn locate(&self, pos: u64) -> Result<u64, u64> {
        // The first range ending after `pos`.
        let i = self.data.partition_point(|&[offset, len]| offset.saturating_add(len) <= pos);
        match self.data.get(i) {
            Some(&[offset, len]) if offset <= pos => Ok(offset.saturating_add(len)),
            Some(&[offset, _]) => Err(offset),
            None => Err(self.size),
        }
    }
}

/// Builds the ranges of a map from the file's data extents as the file system reports
/// them (in order): holes shorter than `min_hole` are merged into the data around them,
/// and `min_hole` doubles until at most [`MAX_RANGES`] ranges remain.
pub fn coalesce(extents: &[(u64, u64)], mut min_hole: u64) -> Vec<[u64; 2]> {
    loop {
        let mut out: Vec<[u64; 2]> = Vec::new();
        for &(offset, len) in extents.iter().filter(|(_, len)| *len > 0) {
            match out.last_mut() {
                Some([start, run])
                    if offset < start.saturating_add(*run).saturating_add(min_hole) =>
                {
                    let end = offset.saturating_add(len).max(start.saturating_add(*run));
                    *run = end - *start;
                }
                _ => out.push([offset, len]),
            }
        }
        if out.len() <= MAX_RANGES {
            return out;
        }
        min_hole = min_hole.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(size: u64, data: Vec<[u64; 2]>) -> DataMap {
        DataMap { size, etag: "\"a-1\"".into(), data }
    }

    #[test]
    fn validation_names_the_bad_range() {
        assert_eq!(map(100, vec![[0, 10], [20, 80]]).validate(), Ok(()));
        assert_eq!(map(100, vec![]).validate(), Ok(()));
        for (data, expected) in [
            (vec![[0, 0]], DataMapError::EmptyRange { index: 0 }),
            (vec![[0, 10], [95, 6]], DataMapError::PastEnd { index: 1, size: 100 }),
            (vec![[u64::MAX, 2]], DataMapError::PastEnd { index: 0, size: 100 }),
            (vec![[10, 10], [5, 1]], DataMapError::Unordered { index: 1 }),
            (vec![[10, 10], [20, 1]], DataMapError::Unordered { index: 1 }),
        ] {
            assert_eq!(map(100, data.clone()).validate(), Err(expected), "{data:?}");
        }
        let weak = DataMap { size: 1, etag: "W/\"x\"".into(), data: vec![] };
        assert!(matches!(weak.validate(), Err(DataMapError::BadEtag(_))));
        let many = map(u64::MAX, (0..=MAX_RANGES as u64).map(|i| [i * 4, 2]).collect());
        assert!(matches!(many.validate(), Err(DataMapError::TooManyRanges { .. })));
    }

    #[test]
    fn locate_finds_ranges_and_holes() {
        let m = map(100, vec![[10, 10], [50, 5]]);
        assert_eq!(m.locate(0), Err(10));
        assert_eq!(m.locate(10), Ok(20));
        assert_eq!(m.locate(19), Ok(20));
        assert_eq!(m.locate(20), Err(50));
        assert_eq!(m.locate(54), Ok(55));
        assert_eq!(m.locate(55), Err(100));
        assert_eq!(m.data_bytes(), 15);
    }

    #[test]
    fn coalescing_merges_small_holes_and_bounds_the_count() {
        assert_eq!(coalesce(&[(0, 4), (6, 2), (100, 1), (101, 3)], 4), vec![[0, 8], [100, 4]]);
        assert_eq!(coalesce(&[(0, 4), (0, 2), (3, 0)], 4), vec![[0, 4]]);
        let extents: Vec<(u64, u64)> = (0..MAX_RANGES as u64 + 10).map(|i| (i * 8, 1)).collect();
        let out = coalesce(&extents, 2);
        assert!(out.len() <= MAX_RANGES);
        // Nothing lost: every extent is inside some range.
        for (offset, len) in extents {
            assert!(out.iter().any(|&[o, l]| o <= offset && offset + len <= o + l));
        }
    }
}
