//! The editor's UI format (LiteGraph's serialization, schema version 0.4 and 1):
//! `{nodes: [{id, type, mode, inputs, widgets_values, ...}], links: [...]}`.
//! Subgraph definitions (`definitions.subgraphs`) hold the inside of the
//! nodes whose type is a definition's id.
//! Only what conversion needs is read; everything else is ignored.

use serde::Deserialize;
use serde_json::Value as Json;

/// Node modes as the editor stores them.
pub mod mode {
    /// Muted ("never"): the node and everything only it feeds are left out.
    pub const MUTED: u8 = 2;
    /// Bypassed: each output is fed by the node's input of the same type.
    pub const BYPASSED: u8 = 4;
}

/// A saved editor workflow.
#[derive(Debug, Clone, Deserialize)]
pub struct UiWorkflow {
    pub nodes: Vec<UiNode>,
    #[serde(default)]
    pub links: Vec<UiLink>,
    #[serde(default)]
    pub definitions: UiDefinitions,
}

/// The reusable parts a workflow carries.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UiDefinitions {
    #[serde(default)]
    pub subgraphs: Vec<UiSubgraph>,
}

/// A subgraph definition: its instances are nodes whose type is `id`. Inside,
/// links from node [`SUBGRAPH_INPUT_NODE`] carry the instance's inputs, and
/// each output lists the links that feed it.
#[derive(Debug, Clone, Deserialize)]
pub struct UiSubgraph {
    pub id: String,
    #[serde(default)]
    pub inputs: Vec<UiSubgraphSlot>,
    #[serde(default)]
    pub outputs: Vec<UiSubgraphSlot>,
    #[serde(default)]
    pub nodes: Vec<UiNode>,
    #[serde(default)]
    pub links: Vec<UiLink>,
}

/// One input or output of a subgraph and the inner links attached to it.
#[derive(Debug, Clone, Deserialize)]
pub struct UiSubgraphSlot {
    pub name: String,
    #[serde(rename = "linkIds", default)]
    pub link_ids: Vec<u64>,
}

/// The origin id of links from a subgraph's inputs.
pub const SUBGRAPH_INPUT_NODE: &str = "-10";

/// One node of the canvas.
#[derive(Debug, Clone, Deserialize)]
pub struct UiNode {
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    #[serde(rename = "type")]
    pub class_type: String,
    #[serde(default)]
    pub mode: u8,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub inputs: Vec<UiInput>,
    #[serde(default)]
    pub outputs: Vec<UiOutput>,
    /// Positional widget values (an object by widget name in some extensions).
    #[serde(default)]
    pub widgets_values: Json,
}

/// One input socket; `widget` is set when it stands for a widget (converted
/// to an input, or any widget in newer frontends).
#[derive(Debug, Clone, Deserialize)]
pub struct UiInput {
    pub name: String,
    #[serde(rename = "type", default, deserialize_with = "type_string")]
    pub data_type: String,
    #[serde(default)]
    pub link: Option<u64>,
    /// `{name}` of the widget the input stands for, if any.
    #[serde(default)]
    pub widget: Option<Json>,
}

/// One output socket.
#[derive(Debug, Clone, Deserialize)]
pub struct UiOutput {
    #[serde(rename = "type", default, deserialize_with = "type_string")]
    pub data_type: String,
}

/// A link `[id, origin_id, origin_slot, target_id, target_slot, type]` (0.4),
/// or the same fields as an object (schema 1).
#[derive(Debug, Clone)]
pub struct UiLink {
    pub id: u64,
    pub origin_id: String,
    pub origin_slot: usize,
}

impl<'de> Deserialize<'de> for UiLink {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = Json::deserialize(d)?;
        let field = |index: usize, name: &str| match &json {
            Json::Array(items) => items.get(index).cloned(),
            Json::Object(map) => map.get(name).cloned(),
            _ => None,
        };
        let parse = || -> Option<UiLink> {
            Some(UiLink {
                id: field(0, "id")?.as_u64()?,
                origin_id: id_text(&field(1, "origin_id")?)?,
                origin_slot: field(2, "origin_slot")?.as_u64()? as usize,
            })
        };
        parse().ok_or_else(|| serde::de::Error::custom(format!("malformed link {json}")))
    }
}

impl UiWorkflow {
    /// Whether a JSON document looks like an editor workflow rather than an API prompt.
    pub fn detect(json: &Json) -> bool {
        json.get("nodes").is_some_and(Json::is_array)
            && json.get("links").is_none_or(Json::is_array)
    }

    pub fn parse(json: &Json) -> Result<Self, serde_json::Error> {
        UiWorkflow::deserialize(json)
    }

    pub fn node(&self, id: &str) -> Option<&UiNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn link(&self, id: u64) -> Option<&UiLink> {
        self.links.iter().find(|l| l.id == id)
    }

    pub fn subgraph(&self, id: &str) -> Option<&UiSubgraph> {
        self.definitions.subgraphs.iter().find(|s| s.id == id)
    }
}

/// Node ids are numbers in saved files (strings inside subgraphs); prompts use strings.
fn id_text(json: &Json) -> Option<String> {
    match json {
        Json::Number(n) => Some(n.to_string()),
        Json::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let json = Json::deserialize(d)?;
    id_text(&json).ok_or_else(|| serde::de::Error::custom(format!("node id {json}")))
}

/// Socket types are strings, except `-1` (LiteGraph's "event") in old files.
fn type_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Json::deserialize(d)? {
        Json::String(s) => s,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_array_and_object_links() {
        let ui = UiWorkflow::parse(&json!({
            "nodes": [{"id": 3, "type": "A", "inputs": [{"name": "x", "type": "INT", "link": 9}]}],
            "links": [[9, 1, 0, 3, 0, "INT"], {"id": 10, "origin_id": "2", "origin_slot": 1}]
        }))
        .unwrap();
        assert_eq!(ui.node("3").unwrap().inputs[0].link, Some(9));
        assert_eq!(ui.link(9).unwrap().origin_id, "1");
        assert_eq!(ui.link(10).unwrap().origin_slot, 1);
    }

    #[test]
    fn tells_ui_from_api() {
        assert!(UiWorkflow::detect(&json!({"nodes": [], "links": []})));
        assert!(!UiWorkflow::detect(
            &json!({"1": {"class_type": "A", "inputs": {}}})
        ));
    }
}
