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

/// Keys and values of the tokens a sequence has run so far, per layer (1, kv heads, len, head
/// dim), for [`Llama::extend`]. Cloning shares the tensors: a prefix can be forked.
#[derive(Clone, Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
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
        let (q, k, v) = self.qkv(layer, h)?;
        Ok(self.attend(&q, &k, &v, None)?.0)
    }

    /// q, k and v of normed rows: (n, heads · head dim), (n, kv heads · head dim) twice.
    fn qkv(&self, layer: usize, h: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        Ok((self.lin(h, layer, "attn_q")?, self.lin(h, layer, "attn_k")?, self.lin(h, layer, "attn_v")?))
    }

    /// Attention of one sequence's new rows (their q, k, v; they follow the `past` keys and values,
    /// if any) over the past and themselves, causally: the output (n, dim) and the keys and values
    /// of past + these rows, (1, kv heads, len, head dim) each, before grouped-query expansion.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        past: Option<&(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let c = &self.cfg;
        let n = q.dims()[0];
        let p = past.map_or(0, |(k, _)| k.dims()[2]);
        let total = p + n;
        if total > MAX_POS {
            return Err(Error::Invalid(format!("sequence of {total} tokens is longer than {MAX_POS}")));
        }
        let shape = |t: &Tensor, heads: usize| -> Result<Tensor> {
            Ok(t.reshape((1, n, heads, c.head_dim))?.transpose(1, 2)?.contiguous()?)
        };
        let (cos, sin) = (self.cos.narrow(0, p, n)?, self.sin.narrow(0, p, n)?);
        let q = candle_nn::rotary_emb::rope_i(&shape(q, c.n_head)?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope_i(&shape(k, c.n_kv_head)?, &cos, &sin)?;
        let v = shape(v, c.n_kv_head)?;
        let (k, v) = match past {
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            None => (k, v),
        };
        let rep = c.n_head / c.n_kv_head.max(1);
        let expand = |t: &Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(t.clone());
            }
            Ok(t.unsqueeze(2)?
                .expand((1, c.n_kv_head, rep, total, c.head_dim))?
                .reshape((1, c.n_head, total, c.head_dim))?)
        };
        let (ke, ve) = (expand(&k)?, expand(&v)?);
        let att = (q.matmul(&ke.t()?)? / (c.head_dim as f64).sqrt())?;
        // Row i is the token at position p + i: it sees keys 0 ..= p + i.
        let mask: Vec<f32> =
            (0..n).flat_map(|i| (0..total).map(move |j| if j > p + i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (n, total), &Device::Cpu)?;
        let att = candle_nn::ops::softmax_last_dim(&att.broadcast_add(&mask)?)?;
        let y = att.matmul(&ve.contiguous()?)?; // (1, heads, n, hd)
        Ok((y.transpose(1, 2)?.reshape((n, c.dim))?, (k, v)))
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

    /// Summed negative log-likelihood (nats) of `ids[1..]` given their prefixes, and the count.
    pub fn nll(&self, ids: &[u32]) -> Result<(f64, usize)> {
        if ids.len() < 2 {
            return Ok((0.0, 0));
        }
        let x = self.extend(ids, &mut KvCache::default())?;
        let n = ids.len() - 1;
        Ok((-self.logp(&x.narrow(0, 0, n)?, &ids[1..])?, n))
    }

    /// Summed log-probability (nats) of `targets`, each given the final-normed hidden state of
    /// the row before it (`rows`: (targets, dim)).
    pub fn logp(&self, rows: &Tensor, targets: &[u32]) -> Result<f64> {
        let logp = candle_nn::ops::log_softmax(&self.logits(rows)?, D::Minus1)?;
        let target = Tensor::new(targets, &Device::Cpu)?.unsqueeze(1)?;
        Ok(logp.gather(&target, 1)?.sum_all()?.to_scalar::<f32>()? as f64)
    }

    /// The output layer's logits of final-normed hidden states: (n, vocab).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let out = self.tensors.get("output.weight").unwrap_or(self.w("token_embd.weight")?);
        Ok(hidden.matmul(&out.t()?)?)
    }

    /// Runs `ids` after the tokens already in `cache` (positions continue from them), appends
    /// their keys and values to it, and returns their final-normed hidden states (n, dim): greedy
    /// generation and multiple-choice scoring without recomputing a shared prefix.
    pub fn extend(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let mut out = self.extend_many(&[ids], std::slice::from_mut(cache))?;
        out.pop().ok_or_else(|| Error::Invalid("no sequence to run".into()))
    }

    /// [`Llama::extend`] for several sequences at once, each after its own cache: the linear
    /// layers run on all their rows together (one pass over the weights), attention per sequence.
    pub fn extend_many(&self, ids: &[&[u32]], caches: &mut [KvCache]) -> Result<Vec<Tensor>> {
        if ids.len() != caches.len() {
            return Err(Error::Invalid(format!("{} sequences and {} caches", ids.len(), caches.len())));
        }
        if ids.iter().any(|s| s.is_empty()) {
            return Err(Error::Invalid("no tokens to run".into()));
        }
        let all: Vec<u32> = ids.iter().flat_map(|s| s.iter().copied()).collect();
        let mut x = self.embed(&all)?;
        let mut layers: Vec<Vec<(Tensor, Tensor)>> = vec![Vec::with_capacity(self.cfg.n_layer); ids.len()];
        for l in 0..self.cfg.n_layer {
            let (q, k, v) = self.qkv(l, &self.attn_in(l, &x)?)?;
            let mut outs = Vec::with_capacity(ids.len());
            let mut at = 0;
            for (s, seq) in ids.iter().enumerate() {
                let n = seq.len();
                let (q, k, v) = (q.narrow(0, at, n)?, k.narrow(0, at, n)?, v.narrow(0, at, n)?);
                let (y, kv) = self.attend(&q, &k, &v, caches[s].layers.get(l))?;
                outs.push(y);
                layers[s].push(kv);
                at += n;
            }
            let att = if outs.len() == 1 { outs.remove(0) } else { Tensor::cat(&outs, 0)? };
            x = self.attn_residual(l, &x, &att)?;
            let act = self.mlp_act(l, &self.mlp_in(l, &x)?)?;
            x = self.mlp_residual(l, &x, &act)?;
        }
        let x = self.norm(&x, "output_norm.weight")?;
        let mut out = Vec::with_capacity(ids.len());
        let mut at = 0;
        for ((seq, cache), kv) in ids.iter().zip(caches.iter_mut()).zip(layers) {
            cache.layers = kv;
            cache.len += seq.len();
            out.push(x.narrow(0, at, seq.len())?);
            at += seq.len();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;
    use std::collections::HashMap;

    /// A random two-layer model with grouped-query attention (4 heads over 2 key/value heads).
    fn tiny() -> Llama {
        let (dim, ffn, vocab, layers) = (16usize, 24usize, 40usize, 2usize);
        let mut md: HashMap<String, Value> = HashMap::new();
        md.insert("general.architecture".into(), Value::String("llama".into()));
        for (k, v) in [
            ("llama.attention.head_count", 4u32),
            ("llama.attention.head_count_kv", 2),
            ("llama.embedding_length", dim as u32),
            ("llama.block_count", layers as u32),
            ("llama.feed_forward_length", ffn as u32),
        ] {
            md.insert(k.into(), Value::U32(v));
        }
        let mut tensors = BTreeMap::new();
        let r = |shape: &[usize]| Tensor::randn(0f32, 0.3, shape, &Device::Cpu).unwrap();
        tensors.insert("token_embd.weight".to_string(), r(&[vocab, dim]));
        tensors.insert("output_norm.weight".to_string(), Tensor::ones(dim, DType::F32, &Device::Cpu).unwrap());
        for l in 0..layers {
            for (k, shape) in [
                ("attn_q", [dim, dim]),
                ("attn_k", [dim / 2, dim]),
                ("attn_v", [dim / 2, dim]),
                ("attn_output", [dim, dim]),
                ("ffn_gate", [ffn, dim]),
                ("ffn_up", [ffn, dim]),
                ("ffn_down", [dim, ffn]),
            ] {
                tensors.insert(linear_name(l, k), r(&shape));
            }
            for k in ["attn_norm", "ffn_norm"] {
                tensors.insert(format!("blk.{l}.{k}.weight"), Tensor::ones(dim, DType::F32, &Device::Cpu).unwrap());
            }
        }
        let m = GgufModel { path: "tiny".into(), metadata: md, tensors, source_dtypes: BTreeMap::new() };
        Llama::from_gguf(&m).unwrap()
    }

    fn nll_from_hidden(net: &Llama, hidden: &Tensor, ids: &[u32]) -> f64 {
        -net.logp(&hidden.narrow(0, 0, ids.len() - 1).unwrap(), &ids[1..]).unwrap()
    }

    /// The plain forward pass the pruning pipeline runs (each block through `attention`, no
    /// cache), as the reference `extend` must equal.
    fn plain_nll(net: &Llama, ids: &[u32]) -> f64 {
        let mut x = net.embed(ids).unwrap();
        for l in 0..net.cfg.n_layer {
            let att = net.attention(l, &net.attn_in(l, &x).unwrap()).unwrap();
            x = net.attn_residual(l, &x, &att).unwrap();
            let act = net.mlp_act(l, &net.mlp_in(l, &x).unwrap()).unwrap();
            x = net.mlp_residual(l, &x, &act).unwrap();
        }
        nll_from_hidden(net, &net.norm(&x, "output_norm.weight").unwrap(), ids)
    }

    #[test]
    fn a_sequence_run_in_pieces_through_the_cache_equals_the_full_forward() {
        let net = tiny();
        let ids: Vec<u32> = vec![3, 17, 5, 39, 0, 22, 8, 8, 31, 12, 1];
        let full = plain_nll(&net, &ids);
        let (nll, n) = net.nll(&ids).unwrap();
        assert_eq!(n, ids.len() - 1);
        assert!((nll - full).abs() < 1e-4 * full.abs().max(1.0), "{nll} vs {full}");
        // All at once, then a prefix of 4 followed by pieces of 1, 3 and the rest.
        let mut c = KvCache::default();
        let whole = net.extend(&ids, &mut c).unwrap();
        assert_eq!(c.len(), ids.len());
        let mut c = KvCache::default();
        let mut parts = vec![net.extend(&ids[..4], &mut c).unwrap()];
        parts.push(net.extend(&ids[4..5], &mut c).unwrap());
        parts.push(net.extend(&ids[5..8], &mut c).unwrap());
        parts.push(net.extend(&ids[8..], &mut c).unwrap());
        let pieces = Tensor::cat(&parts, 0).unwrap();
        for h in [&whole, &pieces] {
            let got = nll_from_hidden(&net, h, &ids);
            assert!((got - full).abs() < 1e-4 * full.abs().max(1.0), "{got} vs {full}");
        }
        // A fork of the cache does not see what the other branch appended.
        let mut a = KvCache::default();
        net.extend(&ids[..4], &mut a).unwrap();
        let mut b = a.clone();
        net.extend(&[9, 9, 9], &mut b).unwrap();
        let h1 = net.extend(&ids[4..6], &mut a).unwrap();
        let h2 = parts[1].clone();
        let d =
            (h1.narrow(0, 0, 1).unwrap() - h2).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "{d}");
        assert!(net.extend(&[], &mut a).is_err());
        // Several sequences at once, each after its own cache, equal each run alone.
        let mut base = KvCache::default();
        net.extend(&ids[..3], &mut base).unwrap();
        let seqs: [&[u32]; 3] = [&ids[3..7], &[4], &ids[1..3]];
        let mut caches = vec![base.clone(), base.clone(), KvCache::default()];
        let many = net.extend_many(&seqs, &mut caches).unwrap();
        for (i, s) in seqs.iter().enumerate() {
            let mut c = if i < 2 { base.clone() } else { KvCache::default() };
            let alone = net.extend(s, &mut c).unwrap();
            let d = (&many[i] - alone).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-4, "sequence {i}: {d}");
            assert_eq!(caches[i].len(), c.len());
        }
        assert!(net.extend_many(&seqs, &mut caches[..2]).is_err());
    }
}
