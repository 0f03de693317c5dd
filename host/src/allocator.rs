//! Giving freed heap memory back to the operating system. glibc keeps the
//! pages of freed large blocks mapped; after a prompt drops its latents and
//! images the process would still show them in its RSS without a trim.

/// Returns the allocator's free pages to the operating system (glibc
/// `malloc_trim`); elsewhere a no-op.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only releases free memory the allocator owns; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
