//! ComfyUI's `LoadImage` and `LoadImageMask`: a picture from the input folder
//! (where `/upload/image` puts the editor's uploads) as an `IMAGE` and a `MASK`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use sha2::{Digest, Sha256};

use crate::sd3::types::{Image, Mask};
use crate::{
    data_type, fsutil, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema,
    OutputSpec, Paths, RunContext, Value,
};

/// The largest picture decoded (width × height): 64 megapixels, 768 MiB as f32 RGB.
pub const MAX_PIXELS: u64 = 64 << 20;
/// The largest side, as ComfyUI's `MAX_RESOLUTION`.
const MAX_SIDE: u32 = 16_384;
/// Files listed in the combo, and folders deep (uploads may go into a subfolder).
const MAX_LISTED: usize = 10_000;
const MAX_DEPTH: usize = 2;
const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "webp", "bmp"];

/// `LoadImage`: the picture's RGB and `1 - alpha` as a mask (an empty 64×64
/// mask when it has no alpha), upright by its EXIF orientation.
pub struct LoadImage {
    pub paths: Arc<Paths>,
}

/// `LoadImageMask`: one channel of a picture as a mask (`alpha` inverted, as ComfyUI).
pub struct LoadImageMask {
    pub paths: Arc<Paths>,
}

impl Node for LoadImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadImage", "image")
            .display_name("Load Image")
            .description("A picture from the input folder (upload one with the button).")
            .input(InputSpec::required("image", image_choice(&self.paths)))
            .output(OutputSpec::named("IMAGE", data_type::IMAGE))
            .output(OutputSpec::named("MASK", data_type::MASK))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let picture = open(&self.paths, inputs.string("image")?)?;
        let (image, mask) = image_and_mask(&picture).map_err(anyhow::Error::from)?;
        Ok(NodeOutput::values(vec![
            Value::handle(image),
            Value::handle(mask),
        ]))
    }

    fn fingerprint(&self, inputs: &Inputs) -> Option<String> {
        file_fingerprint(&self.paths, inputs)
    }
}

impl Node for LoadImageMask {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadImageMask", "mask")
            .display_name("Load Image (as Mask)")
            .description("One channel of a picture from the input folder as a mask.")
            .input(InputSpec::required("image", image_choice(&self.paths)))
            .input(InputSpec::required(
                "channel",
                InputKind::combo(["alpha", "red", "green", "blue"]),
            ))
            .output(OutputSpec::named("MASK", data_type::MASK))
    }

    fn run(&self, inputs: &Inputs, _ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let picture = open(&self.paths, inputs.string("image")?)?;
        let channel = match inputs.string("channel")? {
            "red" => 0,
            "green" => 1,
            "blue" => 2,
            _ => 3,
        };
        let mask = channel_mask(&picture, channel).map_err(anyhow::Error::from)?;
        Ok(NodeOutput::values(vec![Value::handle(mask)]))
    }

    fn fingerprint(&self, inputs: &Inputs) -> Option<String> {
        file_fingerprint(&self.paths, inputs)
    }
}

/// The pictures of the input folder, with the editor's upload button.
fn image_choice(paths: &Paths) -> InputKind {
    let root = paths.input_dir();
    let mut found = Vec::new();
    list_pictures(&root, &root, 0, &mut found);
    found.sort();
    InputKind::image_upload(found)
}

fn list_pictures(root: &Path, dir: &Path, depth: usize, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if found.len() >= MAX_LISTED {
            return;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth + 1 < MAX_DEPTH {
            list_pictures(root, &path, depth + 1, found);
        } else if kind.is_file() && is_picture(&path) {
            let relative = path.strip_prefix(root).ok().and_then(Path::to_str);
            found.extend(relative.map(|r| r.replace('\\', "/")));
        }
    }
}

fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn picture_path(paths: &Paths, name: &str) -> Result<PathBuf, NodeError> {
    fsutil::confined_join(&paths.input_dir(), name)
        .map_err(|e| NodeError::invalid_input("image", format!("{e:#}")))
}

/// Decodes a picture within [`MAX_PIXELS`], upright, first frame only.
fn open(paths: &Paths, name: &str) -> Result<DynamicImage, NodeError> {
    let path = picture_path(paths, name)?;
    let fail =
        |e: &dyn std::fmt::Display| NodeError::invalid_input("image", format!("{name}: {e}"));
    let mut reader = ImageReader::open(&path)
        .map_err(|e| fail(&e))?
        .with_guessed_format()
        .map_err(|e| fail(&e))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 4 * 2);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| fail(&e))?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(fail(&format!(
            "{width}x{height} is more than the {} megapixels a picture may have",
            MAX_PIXELS >> 20
        )));
    }
    let orientation = decoder.orientation().map_err(|e| fail(&e))?;
    let mut picture = DynamicImage::from_decoder(decoder).map_err(|e| fail(&e))?;
    picture.apply_orientation(orientation);
    Ok(picture)
}

/// `[1, h, w, 3]` RGB in 0..=1 and the `1 - alpha` mask `[1, h, w]`.
fn image_and_mask(picture: &DynamicImage) -> candle_core::Result<(Image, Mask)> {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let rgba = picture.to_rgba32f().into_raw();
    let rgb: Vec<f32> = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let pixels = Tensor::from_vec(rgb, (1, h, w, 3), &Device::Cpu)?;
    let mask = if picture.color().has_alpha() {
        let inverse_alpha = rgba.chunks_exact(4).map(|p| 1.0 - p[3]).collect();
        Tensor::from_vec(inverse_alpha, (1, h, w), &Device::Cpu)?
    } else {
        Tensor::zeros((1, 64, 64), candle_core::DType::F32, &Device::Cpu)?
    };
    Ok((Image { pixels }, Mask { values: mask }))
}

/// Channel `c` of RGBA as a mask; alpha (3) inverted; a missing alpha gives an empty 64×64 mask.
fn channel_mask(picture: &DynamicImage, c: usize) -> candle_core::Result<Mask> {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let values = if c == 3 && !picture.color().has_alpha() {
        Tensor::zeros((1, 64, 64), candle_core::DType::F32, &Device::Cpu)?
    } else {
        let rgba = picture.to_rgba32f().into_raw();
        let channel = rgba
            .chunks_exact(4)
            .map(|p| if c == 3 { 1.0 - p[3] } else { p[c] });
        Tensor::from_vec(channel.collect(), (1, h, w), &Device::Cpu)?
    };
    Ok(Mask { values })
}

/// The SHA-256 of the chosen file, so a file replaced under the same name runs
/// again instead of coming from the cache (ComfyUI's `IS_CHANGED`).
fn file_fingerprint(paths: &Paths, inputs: &Inputs) -> Option<String> {
    let path = picture_path(paths, inputs.string("image").ok()?).ok()?;
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(_) => return None,
        }
    }
    Some(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    fn input_folder() -> (tempfile::TempDir, Arc<Paths>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Arc::new(Paths::new(dir.path(), None));
        std::fs::create_dir_all(paths.input_dir().join("pasted")).unwrap();
        (dir, paths)
    }

    #[test]
    fn loads_rgb_and_the_inverted_alpha_and_lists_uploads() {
        let (_dir, paths) = input_folder();
        let mut picture = RgbaImage::new(3, 2);
        picture.put_pixel(0, 0, Rgba([255, 0, 0, 255]));
        picture.put_pixel(2, 1, Rgba([0, 0, 255, 0]));
        picture
            .save(paths.input_dir().join("pasted/a.png"))
            .unwrap();
        std::fs::write(paths.input_dir().join("notes.txt"), "no").unwrap();

        let node = LoadImage {
            paths: Arc::clone(&paths),
        };
        match node.schema().find_input("image").unwrap().kind.clone() {
            InputKind::Combo { options, .. } => assert_eq!(options, ["pasted/a.png"]),
            other => panic!("{other:?}"),
        }
        let inputs = Inputs::new().with("image", Value::String("pasted/a.png".into()));
        let cancel = crate::CancelToken::new();
        let out = node
            .run(
                &inputs,
                &RunContext::new("1", &paths, &cancel, &crate::NullSink),
            )
            .unwrap();
        let Value::Handle(image) = &out.values[0] else {
            panic!("no image")
        };
        let image = image.clone().downcast::<Image>().unwrap();
        assert_eq!(image.pixels.dims(), [1, 2, 3, 3]);
        let first: Vec<f32> = image.pixels.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(&first[..3], [1.0, 0.0, 0.0]);
        let Value::Handle(mask) = &out.values[1] else {
            panic!("no mask")
        };
        let mask = mask.clone().downcast::<Mask>().unwrap();
        let mask: Vec<f32> = mask.values.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(mask, [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert!(node.fingerprint(&inputs).is_some());
    }

    #[test]
    fn refuses_paths_out_of_the_input_folder_and_non_pictures() {
        let (_dir, paths) = input_folder();
        std::fs::write(paths.input_dir().join("fake.png"), "not a png").unwrap();
        let node = LoadImage {
            paths: Arc::clone(&paths),
        };
        let cancel = crate::CancelToken::new();
        let ctx = RunContext::new("1", &paths, &cancel, &crate::NullSink);
        for name in ["../secret.png", "/etc/passwd", "fake.png", "missing.png"] {
            let inputs = Inputs::new().with("image", Value::String(name.into()));
            let error = node.run(&inputs, &ctx).unwrap_err();
            assert!(
                matches!(&error, NodeError::InvalidInput { input, .. } if input == "image"),
                "{name}: {error}"
            );
        }
    }
}
