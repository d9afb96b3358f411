//! GGUF in and out: every tensor dequantized to f32 on read; on write, 2-D weights as F16 or Q8_0
//! (both keep exact zeros: Q8_0 stores a per-32 scale and int8 values, so 0 → 0), 1-D tensors
//! (norms) as F32, and the source's metadata with `general.file_type` updated.

use crate::error::{Error, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use gguf_file::Value;

/// A model read from GGUF, all tensors f32 on the CPU.
pub struct GgufModel {
    pub path: PathBuf,
    pub metadata: HashMap<String, Value>,
    pub tensors: BTreeMap<String, Tensor>,
    /// Each tensor's storage type in the file.
    pub source_dtypes: BTreeMap<String, GgmlDType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutType {
    F16,
    #[value(name = "q8_0")]
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl OutType {
    fn ggml(self) -> GgmlDType {
        match self {
            OutType::F16 => GgmlDType::F16,
            OutType::Q8_0 => GgmlDType::Q8_0,
        }
    }
    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7).
    fn file_type(self) -> u32 {
        match self {
            OutType::F16 => 1,
            OutType::Q8_0 => 7,
        }
    }
}

pub fn read(path: &Path) -> Result<GgufModel> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| Error::model(path, format!("not a GGUF file: {e}")))?;
    let mut tensors = BTreeMap::new();
    let mut source_dtypes = BTreeMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let q = content.tensor(&mut f, name, &Device::Cpu).map_err(|e| Error::model(path, format!("{name}: {e}")))?;
        source_dtypes.insert(name.clone(), q.dtype());
        tensors.insert(name.clone(), q.dequantize(&Device::Cpu)?);
    }
    Ok(GgufModel { path: path.to_path_buf(), metadata: content.metadata, tensors, source_dtypes })
}

/// Writes `tensors` with `metadata` (its `general.file_type` replaced) as GGUF.
pub fn write(
    path: &Path,
    metadata: &HashMap<String, Value>,
    tensors: &BTreeMap<String, Tensor>,
    out: OutType,
) -> Result<()> {
    let mut md: Vec<(String, Value)> = metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.file_type")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.push(("general.file_type".into(), Value::U32(out.file_type())));
    md.sort_by(|a, b| a.0.cmp(&b.0));
    let mut qs: Vec<(String, QTensor)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = if t.rank() >= 2 { out.ggml() } else { GgmlDType::F32 };
        // Q8_0 needs rows in blocks of 32; anything else stays F16.
        let dtype = match dtype {
            GgmlDType::Q8_0 if t.dims().last().is_some_and(|d| d % 32 != 0) => GgmlDType::F16,
            d => d,
        };
        qs.push((name.clone(), QTensor::quantize(t, dtype)?));
    }
    write_file(path, &md, &qs)
}

/// One GGUF file of `metadata` and `tensors` (as given).
fn write_file(path: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(f);
    let md_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &md_refs, &t_refs)?;
    std::io::Write::flush(&mut w).map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Writes a llama.cpp LoRA adapter (`--lora FILE`): for each linear layer `NAME`, `NAME.lora_a` =
/// V (R × inputs) and `NAME.lora_b` = U (outputs × R), F32, so llama.cpp adds U·(V·x) to the
/// layer's output; `adapter.lora.alpha` = R makes its scale alpha / rank = 1.
pub fn write_lora(
    path: &Path,
    architecture: &str,
    name: &str,
    rank: usize,
    adapters: &BTreeMap<String, (Tensor, Tensor)>,
) -> Result<()> {
    let md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(architecture.to_string())),
        ("general.type".into(), Value::String("adapter".into())),
        ("general.name".into(), Value::String(name.to_string())),
        ("adapter.type".into(), Value::String("lora".into())),
        ("adapter.lora.alpha".into(), Value::F32(rank as f32)),
    ];
    let mut qs: Vec<(String, QTensor)> = Vec::with_capacity(2 * adapters.len());
    for (layer, (u, v)) in adapters {
        qs.push((format!("{layer}.lora_a"), QTensor::quantize(v, GgmlDType::F32)?));
        qs.push((format!("{layer}.lora_b"), QTensor::quantize(u, GgmlDType::F32)?));
    }
    write_file(path, &md, &qs)
}

/// A metadata value as u32 / f32 / string list, with an error naming the key.
pub fn md_u32(m: &GgufModel, key: &str) -> Result<u32> {
    m.metadata
        .get(key)
        .and_then(|v| v.to_u32().ok())
        .ok_or_else(|| Error::model(&m.path, format!("metadata `{key}` missing or not an integer")))
}

pub fn md_f32(m: &GgufModel, key: &str) -> Option<f32> {
    m.metadata.get(key).and_then(|v| v.to_f32().ok())
}

pub fn md_strings(m: &GgufModel, key: &str) -> Result<Vec<String>> {
    let arr = m
        .metadata
        .get(key)
        .and_then(|v| v.to_vec().ok())
        .ok_or_else(|| Error::model(&m.path, format!("metadata `{key}` missing or not an array")))?;
    arr.iter()
        .map(|v| v.to_string().cloned().map_err(|_| Error::model(&m.path, format!("metadata `{key}`: not strings"))))
        .collect()
}
