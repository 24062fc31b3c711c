//! Placeholder: replaced by the calibration reader.

use crate::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Calibration statistics (`formats/calibration.md`).
#[derive(Debug)]
pub struct Calibration {
    path: PathBuf,
    groups: usize,
    boundaries: Vec<f64>,
    json: String,
    by_name: HashMap<String, Vec<f32>>,
}

impl Calibration {
    /// Opens a statistics file.
    ///
    /// # Errors
    /// Always, in this placeholder.
    pub fn open(path: &Path) -> Result<Calibration, Error> {
        Err(Error::Svdq {
            tensor: String::new(),
            reason: format!("{} unsupported", path.display()),
        })
    }

    /// Timestep groups.
    #[must_use]
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Group boundaries.
    #[must_use]
    pub fn boundaries(&self) -> &[f64] {
        &self.boundaries
    }

    /// The raw metadata.
    #[must_use]
    pub fn metadata_json(&self) -> &str {
        &self.json
    }

    /// G×K statistics of a BFL weight.
    #[must_use]
    pub fn absmax(&self, bfl_weight: &str) -> Option<&[f32]> {
        self.by_name.get(bfl_weight).map(Vec::as_slice)
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}
