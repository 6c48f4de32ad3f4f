//! glibc's allocator, told to give pixel buffers back to the system when they are freed.
//!
//! By default glibc raises its mmap threshold up to 32 MB once a large block is freed, so later
//! decode/encode buffers (`/_next/image`) land in per-thread heaps that keep their pages after a
//! transform: a burst of cold requests left the server ~100 MB larger than the largest
//! transform needs. A fixed threshold maps every large block on its own and unmaps it on free.
//! Set once by `ferry start` before any thread exists (a process-wide setting, so the library
//! serving the images does not set it).

/// Blocks at least this large are mapped (and unmapped on free) on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes glibc's mmap threshold (no-op on other C libraries).
pub fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets allocator parameters; it takes the arena lock itself and the
    // value is one glibc accepts (at most HEAP_MAX / 2).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
