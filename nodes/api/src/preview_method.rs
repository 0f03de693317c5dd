//! Whether samplers send latent previews, as ComfyUI decides it: off unless
//! the server was started with `--preview-method`, or a prompt asks for them
//! in `extra_data.preview_method` (the editor's "Live preview method" setting).

/// How latent previews are made; [`PreviewMethod::None`] sends none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreviewMethod {
    #[default]
    None,
    /// The fixed latent-to-RGB map (no extra model).
    Latent2Rgb,
    /// The best method available: latent2rgb here (there is no TAESD).
    Auto,
}

impl PreviewMethod {
    /// The names ComfyUI accepts, `taesd` included (served as `auto`).
    pub const NAMES: [&'static str; 4] = ["none", "latent2rgb", "auto", "taesd"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Self::None),
            "latent2rgb" => Some(Self::Latent2Rgb),
            "auto" | "taesd" => Some(Self::Auto),
            _ => None,
        }
    }

    /// A prompt's method: its `extra_data.preview_method` when that names one,
    /// else (missing, `"default"`, anything else) the server's `default`.
    pub fn for_prompt(extra_data: &serde_json::Value, default: Self) -> Self {
        extra_data
            .get("preview_method")
            .and_then(serde_json::Value::as_str)
            .and_then(Self::parse)
            .unwrap_or(default)
    }

    pub fn is_on(self) -> bool {
        self != Self::None
    }
}

#[cfg(test)]
mod tests {
    use super::PreviewMethod;
    use serde_json::json;

    #[test]
    fn a_prompt_overrides_the_server_default_only_with_a_known_method() {
        let server = PreviewMethod::None;
        let of = |extra| PreviewMethod::for_prompt(&extra, server);
        assert_eq!(of(json!({})), PreviewMethod::None);
        assert_eq!(
            of(json!({"preview_method": "default"})),
            PreviewMethod::None
        );
        assert_eq!(of(json!({"preview_method": 3})), PreviewMethod::None);
        assert_eq!(of(json!({"preview_method": "auto"})), PreviewMethod::Auto);
        assert_eq!(of(json!({"preview_method": "taesd"})), PreviewMethod::Auto);
        assert_eq!(
            of(json!({"preview_method": "latent2rgb"})),
            PreviewMethod::Latent2Rgb
        );
        let on = PreviewMethod::Latent2Rgb;
        let none = json!({"preview_method": "none"});
        assert_eq!(PreviewMethod::for_prompt(&none, on), PreviewMethod::None);
        assert_eq!(PreviewMethod::for_prompt(&json!({}), on), on);
        assert!(on.is_on() && !PreviewMethod::None.is_on());
    }
}
