//! qcow2 images come from the network: any bytes must either be refused with an error or
//! decode to extents that cover the virtual size exactly once and never leave it.
#![no_main]

use ferric_agent::image::extent::Extent;
use ferric_agent::image::qcow2::{open, Qcow2Decoder, Qcow2Error};
use libfuzzer_sys::fuzz_target;

/// Decoding is skipped for images whose mapped data could not fit in a fuzzer's memory
/// budget anyway (the extents are counted, not stored).
const MAX_EXTENTS: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&control, file)) = data.split_first() else { return };
    // Low bit: whether the file length is known up front; the rest: the piece size.
    let file_len = (control & 1 == 0).then_some(file.len() as u64);
    let piece = usize::from(control >> 1).max(1) * 37;
    let mut read = |offset: u64, len: usize| -> Result<Vec<u8>, Qcow2Error> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(file.len());
        let end = start.saturating_add(len).min(file.len());
        Ok(file[start..end].to_vec())
    };
    let Ok(plan) = open(&mut read, file_len) else { return };
    let size = plan.virtual_size();
    if plan.clusters().len() + plan.zero_ranges().len() > MAX_EXTENTS {
        return;
    }
    let mut covered: Vec<(u64, u64)> = Vec::new();
    let mut sink = |e: Extent<'_>| -> Result<(), Qcow2Error> {
        let end = e.end().expect("extent end overflows");
        assert!(end <= size, "extent {:#x}+{:#x} past virtual size {size:#x}", e.offset(), e.len());
        assert!(!e.is_empty(), "empty extent at {:#x}", e.offset());
        covered.push((e.offset(), e.len()));
        Ok(())
    };
    let mut decoder = Qcow2Decoder::new(plan);
    for chunk in file.chunks(piece) {
        if decoder.feed(chunk, &mut sink).is_err() {
            return;
        }
    }
    if decoder.finish(&mut sink).is_err() {
        return;
    }
    covered.sort_unstable();
    let mut at = 0u64;
    for (offset, len) in covered {
        assert_eq!(offset, at, "guest bytes at {at:#x} covered twice or not at all");
        at += len;
    }
    assert_eq!(at, size, "extents stop short of the virtual size");
});
