//! A checkpoint's safetensors files, open two ways: memory-mapped, for tensor views (names,
//! shapes, and the bytes the int8 quantiser reads in place), and as plain files, for copying
//! tensors into memory with large positional reads: one tensor, or a whole component's in the
//! order they lie in the file.
//!
//! Copies read rather than go through the map because of what happens when the model does not
//! leave room for the file in the page cache (SD3-medium with T5: 15.5 GiB of weights from a
//! 15.7 GB file on a 24 GB machine): every page touched through the map is faulted in alone and
//! stays mapped until released, while a read asks the disk for megabytes at a time and leaves
//! behind only clean, unmapped cache that the kernel drops first.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Result, Tensor};
use half::vec::HalfBitsVecExt;
use rayon::prelude::*;
use safetensors::tensor::{Metadata, TensorView};
use safetensors::Dtype;

use crate::sd3::raw::mmap::{mmap, release_tensor_pages};

/// Bytes one read asks for: enough for the disk to stream, few enough that a tensor of a few
/// megabytes is still read (and, from the page cache, copied) on every thread.
const READ_CHUNK: usize = 1 << 20;

/// The largest safetensors header accepted (the `safetensors` crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Where a tensor's bytes lie: which file, and the byte range in it.
#[derive(Debug, Clone, Copy)]
struct Place {
    file: usize,
    start: u64,
    len: usize,
}

/// Safetensors files (several for a sharded checkpoint) seen as one set of named tensors.
pub struct TensorFiles {
    map: MmapedSafetensors,
    files: Vec<(File, PathBuf)>,
    places: HashMap<String, Place>,
}

impl TensorFiles {
    /// Maps and opens `paths`. The files must not be modified while this lives (see
    /// [`mmap`]).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let map = mmap(paths)?;
        let mut files = Vec::with_capacity(paths.len());
        let mut places = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let mut file = File::open(path)?;
            for (name, (start, len)) in data_ranges(&mut file, path)? {
                places.insert(
                    name,
                    Place {
                        file: index,
                        start,
                        len,
                    },
                );
            }
            files.push((file, path.clone()));
        }
        Ok(Self { map, files, places })
    }

    /// The view of tensor `name`.
    pub fn get(&self, name: &str) -> Result<TensorView<'_>> {
        self.map.get(name)
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> Vec<(String, TensorView<'_>)> {
        self.map.tensors()
    }

    /// Tensor `name` on `device`, converted by candle from the map.
    pub fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        self.map.load(name, device)
    }

    /// Reads tensor `name`'s bytes into `to`, which must be exactly as long, in large reads
    /// spread over all threads.
    pub fn read_into(&self, name: &str, to: &mut [u8]) -> Result<()> {
        let Some(place) = self.places.get(name) else {
            candle_core::bail!("no tensor `{name}` in the checkpoint's files");
        };
        self.check_length(name, place, to.len())?;
        let (file, path) = &self.files[place.file];
        to.par_chunks_mut(READ_CHUNK)
            .enumerate()
            .try_for_each(|(i, chunk)| read_at(file, chunk, place.start + (i * READ_CHUNK) as u64))
            .map_err(|e| {
                candle_core::Error::Msg(format!("{}: reading `{name}`: {e}", path.display()))
            })
    }

    /// Whether tensor `name`, at `place`, fills a buffer of `len` bytes exactly.
    fn check_length(&self, name: &str, place: &Place, len: usize) -> Result<()> {
        if place.len != len {
            candle_core::bail!(
                "{}: `{name}` holds {} bytes, {len} expected",
                self.files[place.file].1.display(),
                place.len,
            );
        }
        Ok(())
    }

    /// Tensor `name`, stored in f16, bf16 or f32, read into a CPU tensor of its dtype and
    /// shape.
    pub fn read_tensor(&self, name: &str) -> Result<Tensor> {
        let view = self.get(name)?;
        let Some(mut buffer) = Buffer::zeroed(view.dtype(), view.shape()) else {
            candle_core::bail!("`{name}`: {:?} is not read, only mapped", view.dtype());
        };
        self.read_into(name, buffer.bytes_mut())?;
        buffer.into_tensor()
    }

    /// Every f16, bf16 or f32 tensor whose name `wanted` accepts, read as CPU tensors in one
    /// pass over the files in the order their bytes lie, in 1 MiB reads on every thread: the
    /// order a disk streams fastest, whichever order a model then asks for them in.
    pub fn read_ahead(&self, wanted: impl Fn(&str) -> bool) -> Result<HashMap<String, Tensor>> {
        let mut chosen = self
            .places
            .iter()
            .filter(|(name, _)| wanted(name))
            .filter_map(|(name, place)| {
                let view = self.map.get(name).ok()?;
                let buffer = Buffer::zeroed(view.dtype(), view.shape())?;
                Some((name, *place, buffer))
            })
            .collect::<Vec<_>>();
        chosen.sort_unstable_by_key(|(_, place, _)| (place.file, place.start));
        let mut reads = Vec::new();
        for (name, place, buffer) in &mut chosen {
            let bytes = buffer.bytes_mut();
            self.check_length(name, place, bytes.len())?;
            for (i, chunk) in bytes.chunks_mut(READ_CHUNK).enumerate() {
                reads.push((place.file, place.start + (i * READ_CHUNK) as u64, chunk));
            }
        }
        // Each thread takes the next read in file order (not a half of the list each): the
        // threads read side by side, one stream that the kernel's readahead follows.
        reads
            .into_iter()
            .par_bridge()
            .try_for_each(|(file, offset, chunk)| {
                let (file, path) = &self.files[file];
                read_at(file, chunk, offset).map_err(|e| {
                    candle_core::Error::Msg(format!(
                        "{}: reading at byte {offset}: {e}",
                        path.display()
                    ))
                })
            })?;
        chosen
            .into_iter()
            .map(|(name, _, buffer)| Ok((name.clone(), buffer.into_tensor()?)))
            .collect()
    }

    /// Gives back this process's mapped pages of tensor `name`, once its bytes have been
    /// used through the map (see [`release_tensor_pages`]).
    pub fn release_pages(&self, name: &str) {
        release_tensor_pages(&self.map, name);
    }
}

/// A CPU tensor's values, zeroed (fresh pages from the allocator), to be read into.
enum Buffer {
    F16(Vec<u16>, Vec<usize>),
    BF16(Vec<u16>, Vec<usize>),
    F32(Vec<f32>, Vec<usize>),
}

impl Buffer {
    /// A buffer for a tensor of `dtype` and `shape`, for the dtypes kept as read.
    fn zeroed(dtype: Dtype, shape: &[usize]) -> Option<Self> {
        let count = shape.iter().product::<usize>();
        let shape = shape.to_vec();
        match dtype {
            Dtype::F16 => Some(Self::F16(vec![0; count], shape)),
            Dtype::BF16 => Some(Self::BF16(vec![0; count], shape)),
            Dtype::F32 => Some(Self::F32(vec![0.0; count], shape)),
            _ => None,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Self::F16(bits, _) | Self::BF16(bits, _) => bytemuck::cast_slice_mut(bits),
            Self::F32(values, _) => bytemuck::cast_slice_mut(values),
        }
    }

    /// The tensor of the little-endian values read.
    fn into_tensor(self) -> Result<Tensor> {
        match self {
            Self::F16(bits, shape) => {
                Tensor::from_vec(bits.reinterpret_into::<half::f16>(), shape, &Device::Cpu)
            }
            Self::BF16(bits, shape) => {
                Tensor::from_vec(bits.reinterpret_into::<half::bf16>(), shape, &Device::Cpu)
            }
            Self::F32(values, shape) => Tensor::from_vec(values, shape, &Device::Cpu),
        }
    }
}

#[cfg(unix)]
fn read_at(file: &File, to: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, to, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut to: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !to.is_empty() {
        match file.seek_read(to, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => (to, offset) = (&mut to[n..], offset + n as u64),
        }
    }
    Ok(())
}

/// Each tensor's absolute byte range (start, length) in a safetensors file, from its header
/// (an 8-byte little-endian length, then the JSON the `safetensors` crate reads as [`Metadata`],
/// whose offsets count from the header's end).
fn data_ranges(file: &mut File, path: &Path) -> Result<Vec<(String, (u64, usize))>> {
    let mut length = [0u8; 8];
    file.read_exact(&mut length)?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_HEADER_BYTES {
        candle_core::bail!("{}: a header of {header_len} bytes", path.display());
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)?;
    let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| {
        candle_core::Error::Msg(format!(
            "{}: unreadable safetensors header: {e}",
            path.display()
        ))
    })?;
    let data_start = 8 + header_len;
    Ok(metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (start, end) = info.data_offsets;
            (name, (data_start + start as u64, end - start))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};

    use super::*;

    /// Two shards; `big` spans more than one read chunk and ends part-way into the last.
    fn shards(dir: &Path) -> Vec<PathBuf> {
        let big_len = READ_CHUNK / 4 * 2 + 12_345;
        let big = Tensor::arange(0f32, big_len as f32, &Device::Cpu).unwrap();
        let small = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F16))
            .and_then(|t| t.reshape((2, 3)))
            .unwrap();
        let one = Tensor::new(&[7f32], &Device::Cpu).unwrap();
        let files = [
            (
                "a.safetensors",
                HashMap::from([("big".to_string(), big), ("one".to_string(), one)]),
            ),
            (
                "b.safetensors",
                HashMap::from([("small".to_string(), small)]),
            ),
        ];
        files
            .into_iter()
            .map(|(file, tensors)| {
                let path = dir.join(file);
                candle_core::safetensors::save(&tensors, &path).unwrap();
                path
            })
            .collect()
    }

    #[test]
    fn reads_each_tensor_of_each_shard_byte_for_byte_as_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let files = TensorFiles::open(&shards(dir.path())).unwrap();
        for name in ["big", "one", "small"] {
            let mapped = files.get(name).unwrap().data().to_vec();
            let mut read = vec![0u8; mapped.len()];
            files.read_into(name, &mut read).unwrap();
            assert!(read == mapped, "`{name}` differs");
        }
    }

    #[test]
    fn reads_ahead_the_wanted_tensors_of_every_shard_as_read_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = TensorFiles::open(&shards(dir.path())).unwrap();
        let ahead = files.read_ahead(|name| name != "one").unwrap();
        let mut names = ahead.keys().cloned().collect::<Vec<_>>();
        names.sort();
        assert_eq!(names, ["big", "small"]);
        for (name, tensor) in &ahead {
            let alone = files.read_tensor(name).unwrap();
            assert_eq!(
                (tensor.dtype(), tensor.dims()),
                (alone.dtype(), alone.dims())
            );
            let mapped = files.load(name, &Device::Cpu).unwrap();
            let same = tensor
                .eq(&mapped)
                .unwrap()
                .flatten_all()
                .unwrap()
                .min(0)
                .unwrap();
            assert_eq!(same.to_scalar::<u8>().unwrap(), 1, "`{name}` differs");
        }
    }

    #[test]
    fn refuses_a_buffer_of_the_wrong_length_and_an_unknown_name() {
        let dir = tempfile::tempdir().unwrap();
        let files = TensorFiles::open(&shards(dir.path())).unwrap();
        let short = files.read_into("small", &mut [0u8; 11]).unwrap_err();
        assert!(
            short
                .to_string()
                .contains("`small` holds 12 bytes, 11 expected"),
            "{short}"
        );
        let unknown = files.read_into("nothing", &mut [0u8; 4]).unwrap_err();
        assert!(
            unknown.to_string().contains("no tensor `nothing`"),
            "{unknown}"
        );
    }
}
