//! `cretok checkpoint random`'s files: the real variants' headers are detected by the loader as
//! real files are (header only: the data is a hole in a sparse file), and a small table written
//! in full loads and holds the values promised.

use cretok_nodes::sd3::checkpoint::layouts::{Components, TensorTable, Variant};
use cretok_nodes::sd3::checkpoint::random_file::{data_len, header, write_random, HalfDType};
use cretok_nodes::sd3::checkpoint::{Sd3Checkpoint, TextEncoderKind};
use cretok_nodes::sd3::clip::ClipConfig;
use cretok_nodes::sd3::{mmdit, vae};

/// The header of `table`, followed by a hole as long as its data.
fn header_only_file(dir: &std::path::Path, table: &TensorTable) -> std::path::PathBuf {
    let path = dir.join("header-only.safetensors");
    let bytes = header(table, HalfDType::F16, &[]);
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(bytes.len() as u64 + data_len(table)).unwrap();
    path
}

#[test]
fn real_size_variants_are_detected_from_their_headers() {
    let dir = tempfile::tempdir().unwrap();
    let expected = [
        (
            Variant::Sd3Medium,
            "SD3-medium (24 blocks, 24 heads × 64)",
            true,
            false,
        ),
        (
            Variant::Sd3MediumT5,
            "SD3-medium (24 blocks, 24 heads × 64)",
            true,
            true,
        ),
        (
            Variant::Sd35Medium,
            "SD3.5-medium (MMDiT-X) (24 blocks, 24 heads × 64)",
            false,
            false,
        ),
        (
            Variant::Sd35Large,
            "SD3.5-large (38 blocks, 38 heads × 64)",
            false,
            false,
        ),
    ];
    for (variant, summary, clips, t5) in expected {
        let components = variant.components();
        let table = components.single_file_tensors().unwrap();
        let path = header_only_file(dir.path(), &table);
        let ckpt = Sd3Checkpoint::open(&path, &[]).unwrap();
        assert_eq!(ckpt.mmdit_config, components.mmdit, "{}", variant.name());
        assert_eq!(ckpt.vae_config(), Some(&vae::Config::sd3()));
        assert!(ckpt.summary().starts_with(summary), "{}", ckpt.summary());
        for kind in [TextEncoderKind::ClipL, TextEncoderKind::ClipG] {
            assert_eq!(ckpt.text_encoder(kind).is_some(), clips, "{kind:?}");
        }
        assert_eq!(ckpt.text_encoder(TextEncoderKind::T5Xxl).is_some(), t5);
        assert_eq!(ckpt.summary().contains("t5xxl missing"), !t5);
    }
}

#[test]
fn sd3_medium_with_t5_has_the_released_file_s_tensors_and_size() {
    let table = Variant::Sd3MediumT5
        .components()
        .single_file_tensors()
        .unwrap();
    assert_eq!(table.len(), 1668);
    // `sd3_medium_incl_clips_t5xxlfp16.safetensors` is 15,761,038,590 bytes: this data plus a
    // JSON header of about 240 KB (its formatting is the writer's).
    let header_len = 15_761_038_590 - data_len(&table);
    assert!((200_000..300_000).contains(&header_len), "{header_len}");
}

#[test]
fn a_small_table_is_written_in_full_and_loads() {
    let components = Components {
        mmdit: mmdit::Config::tiny_sd3(),
        vae: vae::Config::tiny(),
        clips: Some((ClipConfig::tiny_l(), ClipConfig::tiny_g())),
        t5: None,
    };
    let table = components.single_file_tensors().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.safetensors");
    let mut reported = Vec::new();
    write_random(&path, &table, HalfDType::F16, 7, &[], |n| reported.push(n)).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len < 16 << 20, "{len} bytes");
    assert_eq!(reported.last(), Some(&len));
    assert!(reported.windows(2).all(|w| w[0] < w[1]));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left");

    let ckpt = Sd3Checkpoint::open(&path, &[]).unwrap();
    assert_eq!(ckpt.mmdit_config, components.mmdit);
    ckpt.load_mmdit(candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, table.keys().cloned().collect::<Vec<_>>());
    for (name, view) in file.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F16);
        assert_eq!(view.shape(), table[&name].as_slice());
        for pair in view.data().chunks_exact(2) {
            let v = half::f16::from_le_bytes([pair[0], pair[1]]).to_f32();
            assert!(v.is_normal() && v.abs() < 1.0 / 64.0, "{name}: {v}");
        }
    }
}
