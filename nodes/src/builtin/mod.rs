//! Native nodes, one file per node (or per family of trivial ones).

mod clip_text_encode;
mod cretok_encode;
mod cretok_load;
mod cretok_train;
mod delay;
mod primitive;
mod save_text;
mod string_concatenate;
mod string_to_int;
mod string_transform;
mod style_modifier;

use std::sync::Arc;

use crate::{Paths, Registry};

pub use clip_text_encode::ClipTextEncode;
pub use cretok_encode::CreTokEncode;
pub use cretok_load::{CreTokLoad, EMBEDDINGS};
pub use cretok_train::{encoder_refs, CreTokTrain};
pub use delay::Delay;
pub use primitive::{Primitive, PrimitiveKind};
pub use save_text::SaveText;
pub use string_concatenate::StringConcatenate;
pub use string_to_int::StringToInt;
pub use string_transform::StringTransform;
pub use style_modifier::StyleModifier;

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
    registry.register(Arc::new(CreTokTrain));
    registry.register(Arc::new(CreTokLoad { paths }));
    registry.register(Arc::new(CreTokEncode));
    registry.register(Arc::new(StyleModifier));
}
