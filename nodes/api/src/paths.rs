use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The folders the product reads and writes, all under one data directory
/// unless the models folder is given separately. A headless run may move a
/// model folder or the input folder elsewhere for itself (`cretok train`'s
/// `--out`, `--pairs` and `--tiny`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    moved_model_folders: BTreeMap<String, PathBuf>,
    moved_input_dir: Option<PathBuf>,
}

/// Files a model folder may list.
const MODEL_EXTENSIONS: &[&str] = &["safetensors", "sft"];

impl Paths {
    /// `models_dir` defaults to `<data_dir>/models`.
    pub fn new(data_dir: impl Into<PathBuf>, models_dir: Option<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        let models_dir = models_dir.unwrap_or_else(|| data_dir.join("models"));
        Paths {
            data_dir,
            models_dir,
            moved_model_folders: BTreeMap::new(),
            moved_input_dir: None,
        }
    }

    /// These paths with the model subfolder `folder` at `dir`.
    pub fn with_model_folder(mut self, folder: &str, dir: impl Into<PathBuf>) -> Self {
        self.moved_model_folders
            .insert(folder.to_owned(), dir.into());
        self
    }

    /// These paths with the input folder at `dir`.
    pub fn with_input_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.moved_input_dir = Some(dir.into());
        self
    }

    pub fn output_dir(&self) -> PathBuf {
        self.data_dir.join("output")
    }

    pub fn input_dir(&self) -> PathBuf {
        match &self.moved_input_dir {
            Some(dir) => dir.clone(),
            None => self.data_dir.join("input"),
        }
    }

    pub fn temp_dir(&self) -> PathBuf {
        self.data_dir.join("temp")
    }

    pub fn user_dir(&self) -> PathBuf {
        self.data_dir.join("user")
    }

    /// A ComfyUI-style model subfolder: `checkpoints`, `text_encoders`, `embeddings`.
    pub fn model_folder(&self, folder: &str) -> PathBuf {
        match self.moved_model_folders.get(folder) {
            Some(dir) => dir.clone(),
            None => self.models_dir.join(folder),
        }
    }

    /// The model subfolders that exist.
    pub fn model_folders(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.models_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// Model files (and, with `with_dirs`, diffusers-style folders) in a model
    /// subfolder, as paths relative to it with `/` separators, sorted.
    pub fn list_models(&self, folder: &str, with_dirs: bool) -> Vec<String> {
        let root = self.model_folder(folder);
        let mut found = Vec::new();
        collect_models(&root, &root, with_dirs, &mut found);
        found.sort();
        found
    }

    /// Model files in several subfolders read as one (ComfyUI's folder aliases:
    /// `diffusion_models` and `unet`, `text_encoders` and `clip`), each name once, sorted.
    pub fn list_models_in(&self, folders: &[&str]) -> Vec<String> {
        let mut found: Vec<String> = folders
            .iter()
            .flat_map(|folder| self.list_models(folder, false))
            .collect();
        found.sort();
        found.dedup();
        found
    }

    /// Where `name` (relative, `/`-separated) is in the first of `folders` that has it.
    pub fn find_model(&self, folders: &[&str], name: &str) -> anyhow::Result<PathBuf> {
        for folder in folders {
            let path = crate::fsutil::safe_join(&self.model_folder(folder), name)?;
            if path.is_file() {
                return Ok(path);
            }
        }
        let searched: Vec<String> = folders
            .iter()
            .map(|f| self.model_folder(f).display().to_string())
            .collect();
        anyhow::bail!("`{name}` is not in {}", searched.join(" or "))
    }
}

fn collect_models(root: &Path, dir: &Path, with_dirs: bool, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let relative = || {
            path.strip_prefix(root)
                .ok()
                .and_then(|p| p.to_str())
                .map(|s| s.replace('\\', "/"))
        };
        if path.is_dir() {
            if with_dirs && path.join("model_index.json").is_file() {
                found.extend(relative());
            } else {
                collect_models(root, &path, with_dirs, found);
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MODEL_EXTENSIONS.contains(&e))
        {
            found.extend(relative());
        }
    }
}
