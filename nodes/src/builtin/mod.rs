//! Native nodes, one file per node (or per family of trivial ones).

mod canny;
mod clip_loader;
mod clip_text_encode;
mod clip_text_encode_sd3;
mod conditioning_list;
mod conditioning_zero_out;
mod cretok_encode;
mod cretok_load;
mod cretok_train;
mod custom_sampling;
mod delay;
mod empty_sd3_latent_image;
mod image_batch;
mod image_edit;
mod image_grid;
mod image_scale;
mod ksampler;
mod ksampler_advanced;
mod latent_composite;
mod latent_file;
mod latent_scale;
mod lists;
mod load_image;
mod load_sd3;
mod loader_options;
mod model_sampling_sd3;
mod preview_any;
mod preview_image;
mod primitive;
mod sample;
mod sampler_custom_advanced;
mod save_image;
mod save_text;
mod set_latent_noise_mask;
mod skip_layer_guidance_sd3;
mod string_concatenate;
mod string_to_int;
mod string_transform;
mod style_modifier;
mod unet_loader;
mod vae_decode;
mod vae_encode;
mod vae_loader;

use std::sync::Arc;

use crate::{Paths, Registry};

pub use canny::Canny;
pub use clip_loader::{ClipLoader, TripleClipLoader};
pub use clip_text_encode::ClipTextEncode;
pub use clip_text_encode_sd3::ClipTextEncodeSd3;
pub use conditioning_list::{
    ConditioningAverage, ConditioningCombine, ConditioningConcat, ConditioningSetTimestepRange,
};
pub use conditioning_zero_out::ConditioningZeroOut;
pub use cretok_encode::CreTokEncode;
pub use cretok_load::{CreTokLoad, EMBEDDINGS};
pub use cretok_train::CreTokTrain;
pub use custom_sampling::{
    BasicGuider, BasicScheduler, CfgGuider, DisableNoise, KSamplerSelect, RandomNoise, SplitSigmas,
};
pub use delay::Delay;
pub use empty_sd3_latent_image::{EmptyLatentImage, EmptySd3LatentImage};
pub use image_batch::ImageBatch;
pub use image_edit::{ImageCrop, ImageInvert};
pub use image_grid::ImageGrid;
pub use image_scale::{ImageScale, ImageScaleBy, ImageScaleToTotalPixels};
pub use ksampler::KSampler;
pub use ksampler_advanced::KSamplerAdvanced;
pub use latent_composite::LatentComposite;
pub use latent_file::{LoadLatent, SaveLatent};
pub use latent_scale::{LatentUpscale, LatentUpscaleBy};
pub use lists::{FloatRange, ImageListToBatch, IntRange, JoinTextList, TextToList};
pub use load_image::{LoadImage, LoadImageMask};
pub use load_sd3::CheckpointLoader;
pub use model_sampling_sd3::ModelSamplingSd3;
pub use preview_any::PreviewAny;
pub use preview_image::PreviewImage;
pub use primitive::{Primitive, PrimitiveKind};
pub use sample::Sample;
pub use sampler_custom_advanced::SamplerCustomAdvanced;
pub use save_image::SaveImage;
pub use save_text::SaveText;
pub use set_latent_noise_mask::SetLatentNoiseMask;
pub use skip_layer_guidance_sd3::SkipLayerGuidanceSd3;
pub use string_concatenate::StringConcatenate;
pub use string_to_int::StringToInt;
pub use string_transform::StringTransform;
pub use style_modifier::StyleModifier;
pub use unet_loader::UnetLoader;
pub use vae_decode::{VaeDecode, VaeDecodeTiled};
pub use vae_encode::VaeEncode;
pub use vae_loader::VaeLoader;

/// Registers every native node.
pub fn register_all(registry: &mut Registry, paths: Arc<Paths>) {
    for kind in PrimitiveKind::ALL {
        registry.register(Arc::new(Primitive(kind)));
    }
    registry.register(Arc::new(StringConcatenate));
    registry.register(Arc::new(StringToInt));
    registry.register(Arc::new(StringTransform));
    registry.register(Arc::new(SaveText));
    registry.register(Arc::new(Delay));
    registry.register(Arc::new(ClipTextEncode));
    registry.register(Arc::new(CheckpointLoader::load_sd3(Arc::clone(&paths))));
    registry.register(Arc::new(CheckpointLoader::checkpoint_loader_simple(
        Arc::clone(&paths),
    )));
    registry.register(Arc::new(CheckpointLoader::checkpoint_clip_loader(
        Arc::clone(&paths),
    )));
    registry.register(Arc::new(UnetLoader {
        paths: Arc::clone(&paths),
    }));
    registry.register(Arc::new(VaeLoader {
        paths: Arc::clone(&paths),
    }));
    registry.register(Arc::new(ClipLoader {
        paths: Arc::clone(&paths),
    }));
    registry.register(Arc::new(TripleClipLoader {
        paths: Arc::clone(&paths),
    }));
    registry.register(Arc::new(ClipTextEncodeSd3));
    registry.register(Arc::new(EmptySd3LatentImage));
    registry.register(Arc::new(EmptyLatentImage));
    registry.register(Arc::new(Sample));
    registry.register(Arc::new(KSampler));
    registry.register(Arc::new(KSamplerAdvanced));
    registry.register(Arc::new(SamplerCustomAdvanced));
    registry.register(Arc::new(KSamplerSelect));
    registry.register(Arc::new(BasicScheduler));
    registry.register(Arc::new(SplitSigmas));
    registry.register(Arc::new(RandomNoise));
    registry.register(Arc::new(DisableNoise));
    registry.register(Arc::new(CfgGuider));
    registry.register(Arc::new(BasicGuider));
    registry.register(Arc::new(ModelSamplingSd3));
    registry.register(Arc::new(SkipLayerGuidanceSd3));
    registry.register(Arc::new(ConditioningZeroOut));
    registry.register(Arc::new(ConditioningSetTimestepRange));
    registry.register(Arc::new(ConditioningCombine));
    registry.register(Arc::new(ConditioningConcat));
    registry.register(Arc::new(ConditioningAverage));
    registry.register(Arc::new(VaeDecode));
    registry.register(Arc::new(VaeDecodeTiled));
    registry.register(Arc::new(VaeEncode));
    registry.register(Arc::new(SaveImage));
    registry.register(Arc::new(PreviewImage));
    registry.register(Arc::new(CreTokTrain));
    registry.register(Arc::new(CreTokLoad {
        paths: Arc::clone(&paths),
    }));
    registry.register(Arc::new(CreTokEncode));
    registry.register(Arc::new(StyleModifier));
    registry.register(Arc::new(ImageGrid));
    registry.register(Arc::new(ImageBatch));
    registry.register(Arc::new(LoadImage {
        paths: Arc::clone(&paths),
    }));
    registry.register(Arc::new(LoadImageMask {
        paths: Arc::clone(&paths),
    }));
    registry.register(Arc::new(SaveLatent));
    registry.register(Arc::new(LoadLatent { paths }));
    registry.register(Arc::new(ImageScale));
    registry.register(Arc::new(ImageScaleBy));
    registry.register(Arc::new(ImageScaleToTotalPixels));
    registry.register(Arc::new(ImageInvert));
    registry.register(Arc::new(ImageCrop));
    registry.register(Arc::new(Canny));
    registry.register(Arc::new(PreviewAny));
    registry.register(Arc::new(LatentUpscale));
    registry.register(Arc::new(LatentUpscaleBy));
    registry.register(Arc::new(LatentComposite));
    registry.register(Arc::new(SetLatentNoiseMask));
    registry.register(Arc::new(TextToList));
    registry.register(Arc::new(FloatRange));
    registry.register(Arc::new(IntRange));
    registry.register(Arc::new(JoinTextList));
    registry.register(Arc::new(ImageListToBatch));
}
