//! Finding, opening and indexing the files of a checkpoint.

use crate::Error;
use crate::pack::{PackInfo, Unpacked};
use crate::source::Source;
use lowbit_dtype::{Dtype, GgmlType};
use lowbit_gguf::{Gguf, Value};
use lowbit_safetensors::{Safetensors, SeekTable};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Largest index file accepted (FLUX's is 60 KB).
const MAX_INDEX_LEN: u64 = 64 * 1024 * 1024;

/// The container format of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One safetensors file.
    Safetensors,
    /// Several safetensors files tied by a `*.safetensors.index.json`.
    ShardedSafetensors,
    /// A GGUF v2/v3 file.
    Gguf,
    /// A safetensors file in a zstd pack (`formats/zstd.md`).
    SafetensorsZstd,
}

impl Format {
    /// Name used in reports and JSON (`"safetensors"`, `"safetensors-sharded"`, `"gguf"`,
    /// `"safetensors-zstd"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::ShardedSafetensors => "safetensors-sharded",
            Format::Gguf => "gguf",
            Format::SafetensorsZstd => "safetensors-zstd",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a tensor's elements are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StorageType {
    /// A dense safetensors dtype.
    Dense(Dtype),
    /// A ggml type from a GGUF file (dense or block-quantized).
    Ggml(GgmlType),
}

impl StorageType {
    /// Display name: the safetensors dtype (`BF16`, `F8_E4M3`) or ggml type (`Q4_K`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            StorageType::Dense(d) => d.name(),
            StorageType::Ggml(t) => t.name(),
        }
    }
}

impl fmt::Display for StorageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Name as stored.
    pub name: String,
    /// Shape in torch order, outermost first (GGUF dimensions are reversed to match).
    pub shape: Vec<u64>,
    /// Storage type.
    pub ty: StorageType,
    /// Number of elements.
    pub params: u64,
    /// Bytes of storage.
    pub bytes: u64,
    /// Index of the file holding it.
    pub(crate) file: usize,
    /// Absolute offset of its data in that file.
    pub(crate) offset: u64,
}

impl Tensor {
    /// Storage bits per element (0 for an empty tensor).
    #[must_use]
    pub fn bits_per_weight(&self) -> f64 {
        if self.params == 0 { 0.0 } else { self.bytes as f64 * 8.0 / self.params as f64 }
    }

    /// Elements per row: the innermost dimension (1 for a scalar).
    #[must_use]
    pub fn row_len(&self) -> u64 {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of rows: all dimensions but the innermost.
    #[must_use]
    pub fn n_rows(&self) -> u64 {
        if self.shape.is_empty() { 1 } else { self.shape[..self.shape.len() - 1].iter().product() }
    }
}

/// File-level metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum Metadata {
    /// safetensors `__metadata__` (of the first shard, for sharded checkpoints).
    Safetensors(BTreeMap<String, String>),
    /// GGUF header fields and key-value metadata.
    Gguf {
        /// GGUF version.
        version: u32,
        /// Tensor data alignment.
        alignment: u64,
        /// Key-value entries in file order.
        kvs: Vec<(String, Value)>,
    },
}

/// An open checkpoint: its files stay mapped while it lives.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    format: Format,
    files: Vec<Source>,
    /// The index file of a sharded checkpoint, with its device and inode.
    index: Option<(PathBuf, (u64, u64))>,
    tensors: Vec<Tensor>,
    by_name: HashMap<String, usize>,
    metadata: Metadata,
}

impl Checkpoint {
    /// Opens a safetensors file, a sharded checkpoint (index file or a directory holding one, or
    /// a diffusers model folder with a `transformer/` subfolder), or a GGUF file.
    ///
    /// # Errors
    /// When the path cannot be read or is not a valid checkpoint; the message names the file and,
    /// where there is one, the tensor.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, Error> {
        let path = path.as_ref();
        let meta =
            std::fs::metadata(path).map_err(|e| Error::Io { path: path.to_owned(), source: e })?;
        let mut ckpt = if meta.is_dir() { open_dir(path)? } else { open_file(path)? };
        ckpt.path = path.to_owned();
        ckpt.by_name = ckpt.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(ckpt)
    }

    /// The path it was opened from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Container format.
    #[must_use]
    pub fn format(&self) -> Format {
        self.format
    }

    /// Every tensor, in file order (shard by shard for sharded checkpoints).
    #[must_use]
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// A tensor by name.
    #[must_use]
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// File-level metadata.
    #[must_use]
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The files making up the checkpoint.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// Every file read to open the checkpoint (the shards, and the index of a sharded one), each
    /// with the device and inode it had when opened. A writer compares its output with these,
    /// so that no spelling of a path (links, `..`, bind mounts) can make it replace an input.
    pub fn input_files(&self) -> impl Iterator<Item = (&Path, (u64, u64))> {
        self.files
            .iter()
            .map(|f| (f.path.as_path(), f.id))
            .chain(self.index.iter().map(|(p, id)| (p.as_path(), *id)))
    }

    /// The elements of a metadata array of a GGUF checkpoint, decoded one at a time.
    pub fn array_items<'a>(
        &'a self,
        array: &'a crate::gguf::Array,
    ) -> impl Iterator<Item = Value> + 'a {
        let file: &[u8] = if self.format == Format::Gguf { self.files[0].bytes() } else { &[] };
        array.items(file)
    }

    /// The file holding a tensor.
    #[must_use]
    pub fn file_of(&self, t: &Tensor) -> &Path {
        &self.files[t.file].path
    }

    pub(crate) fn source(&self, t: &Tensor) -> &Source {
        &self.files[t.file]
    }

    /// A tensor's stored bytes, borrowed from the mapping.
    ///
    /// In a zstd pack, a frame that fails to decompress gives an empty slice: use
    /// [`Checkpoint::try_raw`] or [`Checkpoint::prepare_layer`] first to hear why.
    #[must_use]
    pub fn raw(&self, t: &Tensor) -> &[u8] {
        self.try_raw(t).unwrap_or_default()
    }

    /// A tensor's stored bytes, borrowed from the mapping (of the decompressed data, in a zstd
    /// pack, which decompresses the tensor's frame on first access).
    ///
    /// # Errors
    /// In a zstd pack, a frame that does not decompress (damaged data, no room for the temporary
    /// file); the message names the tensor.
    pub fn try_raw(&self, t: &Tensor) -> Result<&[u8], Error> {
        // Validated against the file when parsed; a `Tensor` from another checkpoint gets nothing.
        let Some(file) = self.files.get(t.file) else { return Ok(&[]) };
        let bytes = file.slice(t.offset, t.bytes).map_err(|reason| Error::Io {
            path: file.path.clone(),
            source: std::io::Error::other(reason),
        })?;
        Ok(bytes.unwrap_or_default())
    }

    /// Makes every stored tensor of `layer` ready to read: in a zstd pack, decompresses their
    /// frames (each once); in a Nunchaku file, re-lays their layer; so that a damaged frame or
    /// layer is reported here, naming its tensor, rather than as a short read in
    /// [`Checkpoint::raw`]. Does nothing for other formats.
    ///
    /// # Errors
    /// As [`Checkpoint::try_raw`].
    pub fn prepare_layer(&self, layer: &crate::Layer) -> Result<(), Error> {
        if self.files.iter().all(|f| f.pack.is_none() && f.relaid.is_none()) {
            return Ok(());
        }
        for t in layer.stored.iter().filter_map(|n| self.tensor(n)) {
            self.try_raw(t)?;
        }
        Ok(())
    }

    /// Sizes of a zstd pack: compressed, decompressed, frames; `None` for other formats.
    #[must_use]
    pub fn pack_info(&self) -> Option<PackInfo> {
        let f = self.files.first()?;
        f.pack.as_ref().map(|p| p.info(f.bytes().len() as u64))
    }
}

fn empty(
    format: Format,
    files: Vec<Source>,
    tensors: Vec<Tensor>,
    metadata: Metadata,
) -> Checkpoint {
    Checkpoint {
        path: PathBuf::new(),
        format,
        files,
        index: None,
        tensors,
        by_name: HashMap::new(),
        metadata,
    }
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gguf,
    Safetensors,
    Index,
    Pack,
}

/// Recognises a file by its content: the `GGUF` magic; a safetensors header (8-byte length, then
/// a JSON object); a JSON object (an index); a zstd frame (a zstd pack). When the content matches
/// nothing, the extension picks the parser whose error explains what is wrong; it never
/// overrides the content.
fn sniff(path: &Path, bytes: &[u8]) -> Option<Kind> {
    if bytes.starts_with(b"GGUF") {
        return Some(Kind::Gguf);
    }
    if bytes.starts_with(&lowbit_safetensors::pack::FRAME_MAGIC) {
        return Some(Kind::Pack);
    }
    let header_len = bytes.first_chunk::<8>().map(|b| u64::from_le_bytes(*b));
    let st = bytes.get(8) == Some(&b'{');
    let json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match (st, json) {
        (true, true) => {
            // Both readings start with `{`: a safetensors header length must fit the file.
            let fits = header_len.is_some_and(|n| n <= bytes.len() as u64 - 8);
            return Some(if fits { Kind::Safetensors } else { Kind::Index });
        }
        (true, false) => return Some(Kind::Safetensors),
        (false, true) => return Some(Kind::Index),
        (false, false) => {}
    }
    if has_ext(path, "gguf") {
        Some(Kind::Gguf)
    } else if has_ext(path, "safetensors") || has_ext(path, "sft") {
        Some(Kind::Safetensors)
    } else if has_ext(path, "json") {
        Some(Kind::Index)
    } else {
        None
    }
}

fn open_file(path: &Path) -> Result<Checkpoint, Error> {
    let src = Source::open(path)?;
    match sniff(path, src.bytes()) {
        Some(Kind::Gguf) => open_gguf(src),
        Some(Kind::Index) => open_index(src),
        Some(Kind::Pack) => open_pack(src),
        Some(Kind::Safetensors) => {
            let (tensors, meta) = safetensors_tensors(&src, 0)?;
            if let Some(flavor) = crate::relay::recognise(&tensors, &meta) {
                return open_relaid(src, flavor, &tensors, &meta);
            }
            Ok(empty(Format::Safetensors, vec![src], tensors, Metadata::Safetensors(meta)))
        }
        None => Err(Error::NotACheckpoint {
            path: path.to_owned(),
            reason: "not a safetensors, GGUF or index file (no GGUF magic, no JSON header)".into(),
        }),
    }
}

fn open_gguf(src: Source) -> Result<Checkpoint, Error> {
    let g = Gguf::parse(src.bytes())
        .map_err(|source| Error::Gguf { path: src.path.clone(), source })?;
    let tensors = g
        .tensors()
        .iter()
        .map(|t| Tensor {
            name: t.name.clone(),
            shape: t.shape(),
            ty: StorageType::Ggml(t.ty),
            params: t.numel(),
            bytes: t.size,
            file: 0,
            offset: g.data_start() + t.offset,
        })
        .collect();
    let (version, alignment) = (g.version(), g.alignment());
    let metadata = Metadata::Gguf { version, alignment, kvs: g.into_kvs() };
    Ok(empty(Format::Gguf, vec![src], tensors, metadata))
}

fn open_pack(mut src: Source) -> Result<Checkpoint, Error> {
    if !SeekTable::recognise(src.bytes()).1 {
        let reason = "a zstd file without a seek table at its end: not a lowbit zstd pack, or \
                      one cut short (`zstd -d` decompresses a whole zstd file)";
        return Err(Error::NotACheckpoint { path: src.path.clone(), reason: reason.into() });
    }
    let (unpacked, header) = Unpacked::open(&src)?;
    src.pack = Some(unpacked);
    let tensors = header_tensors(&header);
    let metadata = Metadata::Safetensors(header.metadata);
    Ok(empty(Format::SafetensorsZstd, vec![src], tensors, metadata))
}

/// The tensors a safetensors header describes, in the checkpoint's first (only) file.
fn header_tensors(header: &lowbit_safetensors::Header) -> Vec<Tensor> {
    header
        .tensors
        .iter()
        .map(|t| Tensor {
            name: t.name.clone(),
            shape: t.shape.clone(),
            ty: StorageType::Dense(t.dtype),
            params: t.numel(),
            bytes: t.data.end - t.data.start,
            file: 0,
            offset: header.data_start + t.data.start,
        })
        .collect()
}

/// A Nunchaku file, read as the natural `svdq-w4a4` file it re-lays (`crate::relay`).
fn open_relaid(
    mut src: Source,
    flavor: crate::relay::Flavor,
    tensors: &[Tensor],
    meta: &BTreeMap<String, String>,
) -> Result<Checkpoint, Error> {
    let (relaid, header) = crate::relay::Relaid::plan(&src, flavor, tensors, meta)?;
    src.relaid = Some(relaid);
    let tensors = header_tensors(&header);
    let metadata = Metadata::Safetensors(header.metadata);
    Ok(empty(Format::Safetensors, vec![src], tensors, metadata))
}

fn safetensors_tensors(
    src: &Source,
    file: usize,
) -> Result<(Vec<Tensor>, BTreeMap<String, String>), Error> {
    let st = Safetensors::parse(src.bytes())
        .map_err(|source| Error::Safetensors { path: src.path.clone(), source })?;
    let tensors = st
        .tensors()
        .iter()
        .map(|t| Tensor {
            name: t.name.clone(),
            shape: t.shape.clone(),
            ty: StorageType::Dense(t.dtype),
            params: t.numel(),
            bytes: t.data.end - t.data.start,
            file,
            offset: st.data_start() + t.data.start,
        })
        .collect();
    Ok((tensors, st.metadata().clone()))
}

fn open_dir(dir: &Path) -> Result<Checkpoint, Error> {
    let io = |source| Error::Io { path: dir.to_owned(), source };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(&io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(&io)?;
    entries.sort();
    let named = |suffix: &str| -> Vec<&PathBuf> {
        entries.iter().filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix)).collect()
    };
    let list = |ps: &[&PathBuf]| {
        ps.iter()
            .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let indexes = named(".safetensors.index.json");
    let singles = named(".safetensors");
    let ggufs = named(".gguf");
    match (indexes.len(), singles.len(), ggufs.len()) {
        (1, _, _) => return open_file(indexes[0]),
        (n, _, _) if n > 1 => {
            return Err(Error::NotACheckpoint {
                path: dir.to_owned(),
                reason: format!("several index files ({}); pass the one to use", list(&indexes)),
            });
        }
        (0, 1, 0) => return open_file(singles[0]),
        (0, 0, 1) => return open_file(ggufs[0]),
        (0, 0, 0) => {}
        _ => {
            let mut all = singles.clone();
            all.extend(&ggufs);
            return Err(Error::NotACheckpoint {
                path: dir.to_owned(),
                reason: format!(
                    "several checkpoint files ({}) and no *.safetensors.index.json; pass one file",
                    list(&all)
                ),
            });
        }
    }
    let transformer = dir.join("transformer");
    if transformer.is_dir() {
        return open_dir(&transformer);
    }
    Err(Error::NotACheckpoint {
        path: dir.to_owned(),
        reason: "directory holds no *.safetensors.index.json, *.safetensors or *.gguf file and no transformer/ folder".into(),
    })
}

fn open_index(src: Source) -> Result<Checkpoint, Error> {
    let index = src.path.as_path();
    let bad = |reason: String| Error::Index { path: index.to_owned(), reason };
    let len = src.bytes().len() as u64;
    if len > MAX_INDEX_LEN {
        return Err(bad(format!("index is {len} bytes, above the {MAX_INDEX_LEN}-byte limit")));
    }
    let text = std::str::from_utf8(src.bytes())
        .map_err(|e| bad(format!("not valid UTF-8 (at byte {})", e.valid_up_to())))?;
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Some(map) = json.get("weight_map").and_then(serde_json::Value::as_object) else {
        return Err(bad("no `weight_map` object".into()));
    };
    let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tensor, file) in map {
        let Some(file) = file.as_str() else {
            return Err(bad(format!("weight_map entry for `{tensor}` is not a file name")));
        };
        let plain = Path::new(file).components().all(|c| matches!(c, Component::Normal(_)));
        if !plain || file.is_empty() {
            return Err(bad(format!(
                "weight_map entry for `{tensor}` names `{file}`, which is not a file beside the index"
            )));
        }
        shards.entry(file).or_default().push(tensor);
    }
    if shards.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files = Vec::with_capacity(shards.len());
    let mut tensors = Vec::new();
    let mut metadata = None;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, (file, listed)) in shards.iter().enumerate() {
        let shard_path = dir.join(file);
        if !shard_path.is_file() {
            return Err(bad(format!("shard `{file}` (holding `{}`) does not exist", listed[0])));
        }
        let src = Source::open(&shard_path)?;
        let (shard_tensors, meta) = safetensors_tensors(&src, i)?;
        metadata.get_or_insert(meta);
        for name in listed {
            if !shard_tensors.iter().any(|t| t.name == *name) {
                return Err(bad(format!(
                    "tensor `{name}` is mapped to `{file}` but that shard does not hold it"
                )));
            }
        }
        for t in shard_tensors {
            if let Some(&other) = seen.get(&t.name) {
                let other: &Source = &files[other];
                return Err(bad(format!(
                    "tensor `{}` is in both `{}` and `{file}`",
                    t.name,
                    other.path.file_name().unwrap_or_default().to_string_lossy()
                )));
            }
            seen.insert(t.name.clone(), i);
            tensors.push(t);
        }
        files.push(src);
    }
    let metadata = Metadata::Safetensors(metadata.unwrap_or_default());
    let mut ckpt = empty(Format::ShardedSafetensors, files, tensors, metadata);
    ckpt.index = Some((index.to_owned(), src.id));
    Ok(ckpt)
}
