//! The Hugging Face layout: a folder with `config.json`, `model.safetensors` and `tokenizer.json`.
//! Read into the same in-memory model the GGUF reader gives (GGUF tensor names; Q and K rows
//! permuted to the interleaved-rotary order GGUF uses, as llama.cpp's converter does), and written
//! back from it (names mapped, Q and K permuted back, F16 or F32).

use crate::error::{Error, Result};
use crate::gguf::{GgufModel, Value};
use crate::llama::Config;
use crate::tokenizer::Tok;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// (GGUF name suffix, HF name suffix) per block.
const BLOCK: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, kind) = rest.split_once('.')?;
    let kind = kind.strip_suffix(".weight")?;
    let (_, hf) = BLOCK.iter().find(|(g, _)| *g == kind)?;
    Some(format!("model.layers.{layer}.{hf}.weight"))
}

/// GGUF's row order for Q / K from HF's (`heads` = heads of that projection).
fn permute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    Ok(w.reshape((heads, 2, rows / heads / 2, cols))?.transpose(1, 2)?.reshape((rows, cols))?)
}

fn unpermute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    Ok(w.reshape((heads, rows / heads / 2, 2, cols))?.transpose(1, 2)?.reshape((rows, cols))?)
}

/// Writes the model as a Hugging Face folder.
pub fn write(dir: &Path, tensors: &BTreeMap<String, Tensor>, cfg: &Config, tok: &Tok, dtype: DType) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in tensors {
        let Some(hf) = hf_name(name) else { continue };
        let t = if name.ends_with("attn_q.weight") {
            unpermute(t, cfg.n_head)?
        } else if name.ends_with("attn_k.weight") {
            unpermute(t, cfg.n_kv_head)?
        } else {
            t.clone()
        };
        out.insert(hf, t.to_dtype(dtype)?.contiguous()?);
    }
    candle_core::safetensors::save(&out, dir.join("model.safetensors"))?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg.dim, "intermediate_size": cfg.ffn, "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.eps, "rope_theta": cfg.rope_base, "vocab_size": cfg.vocab,
        "tie_word_embeddings": !tensors.contains_key("output.weight"), "bos_token_id": tok.bos, "eos_token_id": tok.eos,
        "torch_dtype": if dtype == DType::F16 { "float16" } else { "float32" }, "hidden_act": "silu",
    });
    let p = dir.join("config.json");
    std::fs::write(&p, serde_json::to_string_pretty(&config).unwrap_or_default()).map_err(|e| Error::io(&p, e))?;
    tok.save(&dir.join("tokenizer.json"))
}

/// Reads a Hugging Face folder into GGUF naming and metadata.
pub fn read(dir: &Path) -> Result<(GgufModel, Tok)> {
    let cp = dir.join("config.json");
    let text = std::fs::read_to_string(&cp).map_err(|e| Error::io(&cp, e))?;
    let c: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::model(&cp, e.to_string()))?;
    let num = |k: &str| -> Result<u64> {
        c[k].as_u64().ok_or_else(|| Error::model(&cp, format!("`{k}` missing or not an integer")))
    };
    let (n_layer, n_head, dim, ffn) =
        (num("num_hidden_layers")?, num("num_attention_heads")?, num("hidden_size")?, num("intermediate_size")?);
    let n_kv = c["num_key_value_heads"].as_u64().unwrap_or(n_head);
    let st = dir.join("model.safetensors");
    let raw = candle_core::safetensors::load(&st, &Device::Cpu).map_err(|e| Error::model(&st, e.to_string()))?;
    let mut tensors = BTreeMap::new();
    let mut wanted: Vec<String> = vec!["token_embd.weight".into(), "output_norm.weight".into()];
    for l in 0..n_layer {
        for (g, _) in BLOCK {
            wanted.push(format!("blk.{l}.{g}.weight"));
        }
    }
    if raw.contains_key("lm_head.weight") && c["tie_word_embeddings"].as_bool() != Some(true) {
        wanted.push("output.weight".into());
    }
    for g in wanted {
        let hf = hf_name(&g).ok_or_else(|| Error::Invalid(format!("no HF name for {g}")))?;
        let t = raw.get(&hf).ok_or_else(|| Error::model(&st, format!("missing tensor {hf}")))?.to_dtype(DType::F32)?;
        let t = if g.ends_with("attn_q.weight") {
            permute(&t, n_head as usize)?
        } else if g.ends_with("attn_k.weight") {
            permute(&t, n_kv as usize)?
        } else {
            t
        };
        tensors.insert(g, t);
    }
    let mut md = HashMap::new();
    md.insert("general.architecture".to_string(), Value::String("llama".into()));
    md.insert("llama.block_count".to_string(), Value::U32(n_layer as u32));
    md.insert("llama.attention.head_count".to_string(), Value::U32(n_head as u32));
    md.insert("llama.attention.head_count_kv".to_string(), Value::U32(n_kv as u32));
    md.insert("llama.embedding_length".to_string(), Value::U32(dim as u32));
    md.insert("llama.feed_forward_length".to_string(), Value::U32(ffn as u32));
    md.insert(
        "llama.attention.layer_norm_rms_epsilon".to_string(),
        Value::F32(c["rms_norm_eps"].as_f64().unwrap_or(1e-5) as f32),
    );
    md.insert("llama.rope.freq_base".to_string(), Value::F32(c["rope_theta"].as_f64().unwrap_or(10000.0) as f32));
    let source_dtypes = tensors.keys().map(|k| (k.clone(), candle_core::quantized::GgmlDType::F32)).collect();
    // `eos_token_id` is an id or a list of them (the first ends generation here).
    let eos = c["eos_token_id"].as_u64().or_else(|| c["eos_token_id"].get(0).and_then(|e| e.as_u64()));
    let tok = Tok::from_file(
        &dir.join("tokenizer.json"),
        c["bos_token_id"].as_u64().map(|b| b as u32),
        eos.map(|e| e as u32),
    )?;
    Ok((GgufModel { path: dir.to_path_buf(), metadata: md, tensors, source_dtypes }, tok))
}
