//! Recycled chunk buffers for the image path.
//!
//! A source hands out a fresh buffer per chunk, and the last stage done with it (decoder
//! or hash thread) drops it. Freeing and allocating a MiB-sized buffer per chunk makes
//! the allocator return it to the kernel and map it again (musl does so for every large
//! allocation), so every page of every chunk was faulted in anew: for a 4 GiB image a
//! million page faults, more system time than the copy itself. The stages give their
//! buffers back here instead and the sources take them from here.

use std::sync::{Arc, Mutex, PoisonError};

/// At most this many bytes of capacity wait here; beyond it buffers are freed.
const MAX_FREE_BYTES: usize = 16 << 20;

struct Free {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

static FREE: Mutex<Free> = Mutex::new(Free { buffers: Vec::new(), bytes: 0 });

fn pop() -> Option<Vec<u8>> {
    let mut free = FREE.lock().unwrap_or_else(PoisonError::into_inner);
    let buffer = free.buffers.pop()?;
    free.bytes -= buffer.capacity();
    Some(buffer)
}

/// An empty buffer with room for at least `capacity` bytes.
pub fn take_empty(capacity: usize) -> Vec<u8> {
    let mut buffer = pop().unwrap_or_default();
    buffer.clear();
    buffer.reserve(capacity);
    buffer
}

/// A buffer of exactly `len` bytes whose contents are unspecified (the caller overwrites
/// them, e.g. with a read).
pub fn take_filled(len: usize) -> Vec<u8> {
    let mut buffer = pop().unwrap_or_default();
    // Only bytes beyond the recycled length are zeroed; the rest keep old data.
    buffer.resize(len, 0);
    buffer
}

/// Gives a buffer back for reuse.
pub fn give(buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    if capacity == 0 {
        return;
    }
    let mut free = FREE.lock().unwrap_or_else(PoisonError::into_inner);
    if free.bytes + capacity <= MAX_FREE_BYTES {
        free.bytes += capacity;
        free.buffers.push(buffer);
    }
}

/// Gives a shared buffer back if this was its last holder.
pub fn give_shared(buffer: Arc<Vec<u8>>) {
    if let Ok(buffer) = Arc::try_unwrap(buffer) {
        give(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_their_memory_and_the_pool_is_bounded() {
        // Other tests use the pool concurrently: assert only on what this test owns.
        let mut b = take_filled(4096);
        assert_eq!(b.len(), 4096);
        b[0] = 7;
        let ptr = b.as_ptr();
        give(b);
        let again = take_empty(1024);
        assert!(again.is_empty() && again.capacity() >= 1024);
        let shared = Arc::new(vec![1u8; 10]);
        let other = shared.clone();
        give_shared(shared); // still held elsewhere: not recycled, not freed
        assert_eq!(other[..], [1u8; 10]);
        give_shared(other);
        // A buffer larger than the bound is never kept.
        give(Vec::with_capacity(MAX_FREE_BYTES + 1));
        let free = FREE.lock().unwrap();
        assert!(free.bytes <= MAX_FREE_BYTES);
        let _ = ptr;
    }
}
