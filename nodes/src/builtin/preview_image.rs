use crate::sd3::types::Image;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, RunContext,
};

use super::save_image::save_images;

/// Shows images in the editor: PNGs in the temp folder (ComfyUI `PreviewImage`).
pub struct PreviewImage;

impl Node for PreviewImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("PreviewImage", "image")
            .display_name("Preview Image")
            .description("Shows the images without keeping them.")
            .input(InputSpec::required(
                "images",
                InputKind::link(data_type::IMAGE),
            ))
            .output_node()
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let images = inputs.handle::<Image>("images")?;
        // Numbered files never collide, so one fixed stem suffices.
        let ui = save_images(&images, &ctx.paths.temp_dir(), "ComfyUI_temp", "temp", ctx)?;
        Ok(NodeOutput::default().with_ui(ui))
    }
}
