//! Memory-mapped safetensors files, and giving back the pages of tensors already read through the map.

use std::path::PathBuf;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::Result;

/// Memory-maps safetensors files (several for sharded checkpoints).
///
/// The one assumption of this module that no check makes: the files are not modified while
/// the map lives (the contract of candle's `VarBuilder::from_mmaped_safetensors`, and of every
/// loader that maps weights).
pub fn mmap(paths: &[PathBuf]) -> Result<MmapedSafetensors> {
    // SAFETY: the files are opened read-only and must not be modified while the checkpoint is
    // loaded, the same contract as candle's `VarBuilder::from_mmaped_safetensors`.
    unsafe { MmapedSafetensors::multi(paths) }
}

/// Unmaps from this process the pages wholly inside tensor `name`'s bytes in `files` (a
/// tensor that has been converted or quantised from the map), so that a loaded model is not resident twice (in its
/// tensors and in the file pages they came from: SD3-medium with T5 is 15.7 GB). The pages
/// stay in the page cache; reading the bytes again maps them again. A name `files` lacks is
/// ignored.
pub fn release_tensor_pages(files: &MmapedSafetensors, name: &str) {
    #[cfg(unix)]
    if let Ok(view) = files.get(name) {
        release_mapped_pages(view.data());
    }
    #[cfg(not(unix))]
    let _ = (files, name);
}

/// `bytes` must lie in a read-only file mapping: [`release_tensor_pages`] takes them from an
/// [`MmapedSafetensors`], which holds nothing else.
#[cfg(unix)]
fn release_mapped_pages(bytes: &[u8]) {
    // SAFETY: sysconf has no preconditions. The range is whole pages inside `bytes`, which lie
    // in a read-only file mapping (every `MmapedSafetensors` tensor does). MADV_DONTNEED on a
    // file mapping that is never written drops this process's references to the pages: a
    // later read faults them in again from the file with the same contents (the files are not
    // modified while mapped, `mmap`'s contract), so every slice into the map stays valid.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(1) as usize;
        let start = (bytes.as_ptr() as usize).next_multiple_of(page);
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}
