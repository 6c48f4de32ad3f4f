//! glibc's allocator, told to give pixel buffers back to the system when they are freed.
//!
//! By default glibc raises its mmap threshold up to 32 MB once a large block is freed, so later
//! decode/encode buffers (`/_next/image`) land in per-thread heaps that keep their pages after a
//! transform: a burst of cold requests left the server ~100 MB larger than the largest
//! transform needs. A fixed threshold maps every large block on its own and unmaps it on free.
//! Set once by `ferry start` before any thread exists (a process-wide setting, so the library
//! serving the images does not set it).
//!
//! The threshold sits just above the 1 MiB hash table libwebp's lossless coder allocates and
//! fills on every call (`VP8LHashChainFill`: 2^18 `int32`s; every WebP with alpha codes its
//! alpha plane with it), and freed heap memory up to 2 MiB stays mapped: with the threshold
//! at 128 KiB that table was fresh pages each time, and alpha.png → WebP took 7.8 ms instead of
//! 6.4 (`transform` example). Pixel buffers of real images stay above the threshold.

/// Blocks at least this large are mapped (and unmapped on free) on their own: 1 MiB + 64 KiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = (1 << 20) + (64 << 10);

/// Free memory at the top of a heap is returned to the system beyond this much: 2 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 2 << 20;

/// Fixes glibc's mmap and trim thresholds (no-op on other C libraries).
pub fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets allocator parameters; it takes the arena lock itself and the
    // values are ones glibc accepts (the mmap threshold at most HEAP_MAX / 2).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
