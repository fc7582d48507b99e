//! What a decoder hands to the writer: bytes for a range of the target, or a range that
//! must read back as zeros.

/// A piece of the decoded image, addressed by its offset on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent<'a> {
    /// `bytes` belong at `offset`.
    Data { offset: u64, bytes: &'a [u8] },
    /// `len` bytes at `offset` must read back as zeros.
    Zero { offset: u64, len: u64 },
}

impl Extent<'_> {
    /// The first target byte this extent covers.
    pub fn offset(&self) -> u64 {
        match self {
            Extent::Data { offset, .. } | Extent::Zero { offset, .. } => *offset,
        }
    }

    /// How many target bytes this extent covers.
    pub fn len(&self) -> u64 {
        match self {
            Extent::Data { bytes, .. } => bytes.len() as u64,
            Extent::Zero { len, .. } => *len,
        }
    }

    /// Whether the extent covers nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the last target byte this extent covers, or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset().checked_add(self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_bounds() {
        let data = Extent::Data { offset: 10, bytes: b"abc" };
        assert_eq!((data.offset(), data.len(), data.end()), (10, 3, Some(13)));
        let zero = Extent::Zero { offset: u64::MAX, len: 2 };
        assert_eq!(zero.end(), None);
        assert!(Extent::Zero { offset: 5, len: 0 }.is_empty());
    }
}
