//! A Llama-family forward pass in f32 with candle, split into the pieces layer-by-layer pruning
//! needs: each linear layer's input can be taken out, and weights can be replaced in between.
//! GGUF stores Q and K rows in the interleaved-rotary order, so rotary embedding is `rope_i`.

use crate::error::{Error, Result};
use crate::gguf::{md_f32, md_u32, GgufModel};
use candle_core::{DType, Device, Tensor, D};
use std::collections::BTreeMap;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub dim: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub eps: f64,
    pub rope_base: f32,
    pub vocab: usize,
}

/// The linear layers of one block, in the order pruning visits them (q, k, v share an input;
/// so do gate and up).
pub const LINEARS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

pub fn linear_name(layer: usize, kind: &str) -> String {
    format!("blk.{layer}.{kind}.weight")
}

pub struct Llama {
    pub cfg: Config,
    pub tensors: BTreeMap<String, Tensor>,
    cos: Tensor,
    sin: Tensor,
}

const MAX_POS: usize = 4096;

impl Llama {
    pub fn from_gguf(m: &GgufModel) -> Result<Llama> {
        let arch = m.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        if arch != "llama" {
            return Err(Error::model(&m.path, format!("general.architecture `{arch}`: only `llama` is supported")));
        }
        let n_head = md_u32(m, "llama.attention.head_count")? as usize;
        let dim = md_u32(m, "llama.embedding_length")? as usize;
        let emb = m.tensors.get("token_embd.weight").ok_or_else(|| Error::model(&m.path, "no token_embd.weight"))?;
        let cfg = Config {
            n_layer: md_u32(m, "llama.block_count")? as usize,
            n_head,
            n_kv_head: md_u32(m, "llama.attention.head_count_kv").map(|v| v as usize).unwrap_or(n_head),
            dim,
            head_dim: dim / n_head.max(1),
            ffn: md_u32(m, "llama.feed_forward_length")? as usize,
            eps: md_f32(m, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64,
            rope_base: md_f32(m, "llama.rope.freq_base").unwrap_or(10000.0),
            vocab: emb.dims()[0],
        };
        for l in 0..cfg.n_layer {
            for k in LINEARS.iter().chain(&["attn_norm", "ffn_norm"]) {
                let n = format!("blk.{l}.{k}.weight");
                if !m.tensors.contains_key(&n) {
                    return Err(Error::model(&m.path, format!("missing tensor {n}")));
                }
            }
        }
        let half = cfg.head_dim / 2;
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / cfg.rope_base.powf(2.0 * i as f32 / cfg.head_dim as f32)).collect();
        let inv = Tensor::from_vec(inv, (1, half), &Device::Cpu)?;
        let pos = Tensor::arange(0u32, MAX_POS as u32, &Device::Cpu)?.to_dtype(DType::F32)?.reshape((MAX_POS, 1))?;
        let freqs = pos.matmul(&inv)?;
        Ok(Llama { cos: freqs.cos()?, sin: freqs.sin()?, tensors: m.tensors.clone(), cfg })
    }

    pub fn w(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::Invalid(format!("no tensor {name}")))
    }

    fn lin(&self, x: &Tensor, layer: usize, kind: &str) -> Result<Tensor> {
        Ok(x.matmul(&self.w(&linear_name(layer, kind))?.t()?)?)
    }

    fn norm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(x, self.w(name)?, self.cfg.eps as f32)?)
    }

    /// Token embeddings of one sequence: (L, dim).
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let idx = Tensor::new(ids, &Device::Cpu)?;
        Ok(self.w("token_embd.weight")?.index_select(&idx, 0)?)
    }

    /// The input of q, k and v.
    pub fn attn_in(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.norm(x, &format!("blk.{layer}.attn_norm.weight"))
    }

    /// Causal self-attention from the normed input, before the output projection: (L, dim).
    pub fn attention(&self, layer: usize, h: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let l = h.dims()[0];
        if l > MAX_POS {
            return Err(Error::Invalid(format!("sequence of {l} tokens is longer than {MAX_POS}")));
        }
        let shape = |t: Tensor, heads: usize| -> Result<Tensor> {
            Ok(t.reshape((1, l, heads, c.head_dim))?.transpose(1, 2)?.contiguous()?)
        };
        let (cos, sin) = (self.cos.narrow(0, 0, l)?, self.sin.narrow(0, 0, l)?);
        let q = candle_nn::rotary_emb::rope_i(&shape(self.lin(h, layer, "attn_q")?, c.n_head)?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope_i(&shape(self.lin(h, layer, "attn_k")?, c.n_kv_head)?, &cos, &sin)?;
        let v = shape(self.lin(h, layer, "attn_v")?, c.n_kv_head)?;
        let rep = c.n_head / c.n_kv_head.max(1);
        let expand = |t: Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(t);
            }
            Ok(t.unsqueeze(2)?.expand((1, c.n_kv_head, rep, l, c.head_dim))?.reshape((1, c.n_head, l, c.head_dim))?)
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let att = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?;
        let mask: Vec<f32> =
            (0..l).flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (l, l), &Device::Cpu)?;
        let att = candle_nn::ops::softmax_last_dim(&att.broadcast_add(&mask)?)?;
        let y = att.matmul(&v.contiguous()?)?; // (1, heads, L, hd)
        Ok(y.transpose(1, 2)?.reshape((l, c.dim))?)
    }

    /// x + attention output projected.
    pub fn attn_residual(&self, layer: usize, x: &Tensor, att: &Tensor) -> Result<Tensor> {
        Ok((x + self.lin(att, layer, "attn_output")?)?)
    }

    /// The input of gate and up.
    pub fn mlp_in(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        self.norm(x, &format!("blk.{layer}.ffn_norm.weight"))
    }

    /// The input of down: silu(gate) · up.
    pub fn mlp_act(&self, layer: usize, h2: &Tensor) -> Result<Tensor> {
        let g = candle_nn::ops::silu(&self.lin(h2, layer, "ffn_gate")?)?;
        Ok((g * self.lin(h2, layer, "ffn_up")?)?)
    }

    pub fn mlp_residual(&self, layer: usize, x: &Tensor, act: &Tensor) -> Result<Tensor> {
        Ok((x + self.lin(act, layer, "ffn_down")?)?)
    }

    /// One whole block.
    pub fn block(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        let att = self.attention(layer, &self.attn_in(layer, x)?)?;
        let x = self.attn_residual(layer, x, &att)?;
        let act = self.mlp_act(layer, &self.mlp_in(layer, &x)?)?;
        self.mlp_residual(layer, &x, &act)
    }

    /// Summed negative log-likelihood (nats) of `ids[1..]` given their prefixes, and the count.
    pub fn nll(&self, ids: &[u32]) -> Result<(f64, usize)> {
        if ids.len() < 2 {
            return Ok((0.0, 0));
        }
        let mut x = self.embed(ids)?;
        for l in 0..self.cfg.n_layer {
            x = self.block(l, &x)?;
        }
        let x = self.norm(&x, "output_norm.weight")?;
        let out = self.tensors.get("output.weight").unwrap_or(self.w("token_embd.weight")?);
        let n = ids.len() - 1;
        let logits = x.narrow(0, 0, n)?.matmul(&out.t()?)?; // (n, vocab)
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let target = Tensor::new(&ids[1..], &Device::Cpu)?.unsqueeze(1)?;
        let picked = logp.gather(&target, 1)?.sum_all()?.to_scalar::<f32>()?;
        Ok((-(picked as f64), n))
    }
}
