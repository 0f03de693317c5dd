//! Workflow files as users share them: the editor's UI format (nodes, links,
//! positional widget values and subgraphs), its conversion to the API format the
//! executor runs, and the files `cretok run` accepts (API, UI, or a PNG
//! written by SaveImage).

pub mod convert;
pub mod png_text;
pub mod source;
pub mod subgraph;
pub mod ui;
pub mod widgets;

pub use convert::{to_api, ConvertError};
pub use source::{load, WorkflowFile};
