//! Checksum files come from a URL the agent is given: any text must parse or fail cleanly.
#![no_main]

use ferric_shared::image_info::parse_checksum_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line names the image; the rest is the checksum file.
    let text = String::from_utf8_lossy(data);
    let (name, body) = text.split_once('\n').unwrap_or(("image.qcow2", &text));
    if let Ok(digest) = parse_checksum_file(body, name) {
        // Whatever is accepted is a hex digest taken from the file.
        assert!(!digest.is_empty());
        assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest:?}");
    }
});
