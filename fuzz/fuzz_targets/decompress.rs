//! Compressed images come from the network: any bytes must decode or fail cleanly, with
//! output handed over in bounded pieces.
#![no_main]

use ferric_agent::image::decompress::{
    CompressionKind, DecompressError, Decompressor, OUTPUT_CHUNK,
};
use libfuzzer_sys::fuzz_target;

/// Stops a run once this much has been produced: a small input may legitimately expand
/// enormously, and the fuzzer is after crashes, not throughput.
const MAX_OUTPUT: u64 = 64 << 20;

#[derive(Debug)]
enum Stop {
    Enough,
    Decode,
}

impl From<DecompressError> for Stop {
    fn from(_: DecompressError) -> Self {
        Stop::Decode
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else { return };
    let kind = match control % 3 {
        0 => CompressionKind::Gzip,
        1 => CompressionKind::Xz,
        _ => CompressionKind::Zstd,
    };
    let piece = usize::from(control / 3).max(1);
    let Ok(mut d) = Decompressor::new(kind) else { return };
    let mut total = 0u64;
    let mut sink = |b: &[u8]| -> Result<(), Stop> {
        assert!(b.len() <= OUTPUT_CHUNK);
        total += b.len() as u64;
        if total > MAX_OUTPUT {
            return Err(Stop::Enough);
        }
        Ok(())
    };
    for chunk in input.chunks(piece) {
        if d.feed(chunk, &mut sink).is_err() {
            return;
        }
    }
    let _ = d.finish(&mut sink);
});
