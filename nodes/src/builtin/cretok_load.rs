//! `CreTokLoad`: a token file from the models `embeddings/` folder as a `CRETOK` value
//! (docs/cretok.md, "The token file").

use std::sync::Arc;

use crate::cretok::CreTokToken;
use crate::fsutil::confined_join;
use crate::{
    data_type, InputKind, InputSpec, Inputs, Node, NodeError, NodeOutput, NodeSchema, OutputSpec,
    Paths, RunContext, Value,
};

/// The models subfolder token files live in (ComfyUI's `embeddings`).
pub const EMBEDDINGS: &str = "embeddings";

/// Loads a token file; the combo lists the embeddings folder.
pub struct CreTokLoad {
    pub paths: Arc<Paths>,
}

impl Node for CreTokLoad {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CreTokLoad", "cretok/loaders")
            .display_name("Load CreTok Token")
            .description("Loads a CreTok token (clip_l / clip_g vectors) from models/embeddings.")
            .input(InputSpec::required(
                "token_name",
                InputKind::combo(self.paths.list_models(EMBEDDINGS, false)),
            ))
            .output(OutputSpec::new(data_type::CRETOK))
    }

    fn run(&self, inputs: &Inputs, ctx: &RunContext) -> Result<NodeOutput, NodeError> {
        let name = inputs.string("token_name")?;
        let path = confined_join(&ctx.paths.model_folder(EMBEDDINGS), name)
            .map_err(|e| NodeError::invalid_input("token_name", format!("{e:#}")))?;
        let token = CreTokToken::load(&path)
            .map_err(|e| NodeError::invalid_input("token_name", format!("{e:#}")))?;
        Ok(NodeOutput::values(vec![Value::handle(token)]))
    }

    fn fingerprint(&self, literal_inputs: &Inputs) -> Option<String> {
        let name = literal_inputs.string("token_name").ok()?;
        let path = confined_join(&self.paths.model_folder(EMBEDDINGS), name).ok()?;
        let modified = std::fs::metadata(path).ok()?.modified().ok()?;
        Some(format!("{modified:?}"))
    }
}
