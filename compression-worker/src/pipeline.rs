//! Sequential layer-by-layer pruning (as SparseGPT does): the calibration windows run through the
//! blocks one at a time; inside a block, q/k/v are pruned on their shared input, then the
//! attention is recomputed through the pruned q/k/v to get the output projection's input, and so
//! on through gate/up and down; the block's output (through every pruned weight) is the next
//! block's input. Every linear layer's objective ‖WX − ŴX‖² is computed from H = XᵀX.

use crate::error::{Error, Result};
use crate::llama::{linear_name, Llama};
use crate::prune::mask::{self, Pattern};
use crate::prune::sparsegpt;
use candle_core::{Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Magnitude,
    Wanda,
    Sparsegpt,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub sparsity: f64,
    /// The pattern holds (every N:M group, every row's share).
    pub pattern_ok: bool,
    /// ‖WX − ŴX‖²_F over the calibration tokens, and relative to ‖WX‖²_F.
    pub error: f64,
    pub rel_error: f64,
}

/// H = Σ XᵀX over the windows' inputs (each (L, d)), in f64.
fn gram(xs: &[Tensor]) -> Result<(Vec<f64>, usize)> {
    let d = xs.first().map_or(0, |x| x.dims()[1]);
    let mut h = vec![0f64; d * d];
    for x in xs {
        let g: Vec<f32> = x.t()?.matmul(x)?.flatten_all()?.to_vec1()?;
        for (a, b) in h.iter_mut().zip(g) {
            *a += b as f64;
        }
    }
    Ok((h, d))
}

/// H of one input, with SparseGPT's factor when the method needs it (shared by the layers that
/// read the same input).
struct Input {
    h: Vec<f64>,
    /// H as an f32 tensor, for the reported objective.
    ht: Tensor,
    factor: Option<sparsegpt::Factor>,
}

fn input(xs: &[Tensor], method: Method, opts: &sparsegpt::Options) -> Result<Input> {
    let (h, d) = gram(xs)?;
    let factor = match method {
        Method::Sparsegpt => Some(sparsegpt::factor(&h, d, opts.damp).map_err(Error::Invalid)?),
        _ => None,
    };
    let ht = Tensor::from_vec(h.iter().map(|&x| x as f32).collect::<Vec<f32>>(), (d, d), &Device::Cpu)?;
    Ok(Input { h, ht, factor })
}

fn prune_linear(
    net: &mut Llama,
    layer: usize,
    kind: &str,
    inp: &Input,
    method: Method,
    pattern: Pattern,
    opts: &sparsegpt::Options,
) -> Result<LayerReport> {
    let h = &inp.h;
    let name = linear_name(layer, kind);
    let t = net.w(&name)?;
    let (rows, cols) = t.dims2()?;
    let w0: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let mut w = w0.clone();
    match method {
        Method::Magnitude => mask::magnitude(&mut w, rows, cols, pattern),
        Method::Wanda => {
            let diag: Vec<f64> = (0..cols).map(|j| h[j * cols + j]).collect();
            mask::wanda(&mut w, rows, cols, &diag, pattern)
        }
        Method::Sparsegpt => {
            let f = inp.factor.as_ref().ok_or_else(|| Error::Invalid("no SparseGPT factor".into()))?;
            sparsegpt::prune_with(&mut w, rows, f, pattern, opts.block)
                .map_err(|e| Error::Invalid(format!("{name}: {e}")))?
        }
    }
    // ‖(W − Ŵ)X‖² = Σ (δ H) ∘ δ and ‖WX‖², through one f32 matmul each (mask::layer_error is the
    // f64 reference the tests use; this is the fast path for the report).
    let ht = &inp.ht;
    let quad = |d: Vec<f32>| -> Result<f64> {
        let d = Tensor::from_vec(d, (rows, cols), &Device::Cpu)?;
        Ok(d.matmul(ht)?.mul(&d)?.sum_all()?.to_scalar::<f32>()? as f64)
    };
    let error = quad(w0.iter().zip(&w).map(|(a, b)| a - b).collect())?;
    let base = quad(w0.clone())?;
    let report = LayerReport {
        name: name.clone(),
        rows,
        cols,
        sparsity: mask::sparsity(&w),
        pattern_ok: mask::check(&w, rows, cols, pattern).is_ok(),
        error,
        rel_error: error / base.max(1e-30),
    };
    net.tensors.insert(name, Tensor::from_vec(w, (rows, cols), &Device::Cpu)?);
    Ok(report)
}

/// Prunes every linear layer of every block; `progress(done_blocks, total)` after each block.
pub fn prune_model(
    net: &mut Llama,
    calib: &[Vec<u32>],
    method: Method,
    pattern: Pattern,
    opts: &sparsegpt::Options,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LayerReport>> {
    let mut xs: Vec<Tensor> = calib.iter().map(|ids| net.embed(ids)).collect::<Result<_>>()?;
    let mut reports = Vec::new();
    let n = net.cfg.n_layer;
    for l in 0..n {
        let hs: Vec<Tensor> = xs.iter().map(|x| net.attn_in(l, x)).collect::<Result<_>>()?;
        let h = input(&hs, method, opts)?;
        for kind in ["attn_q", "attn_k", "attn_v"] {
            reports.push(prune_linear(net, l, kind, &h, method, pattern, opts)?);
        }
        let atts: Vec<Tensor> = hs.iter().map(|h| net.attention(l, h)).collect::<Result<_>>()?;
        let h = input(&atts, method, opts)?;
        reports.push(prune_linear(net, l, "attn_output", &h, method, pattern, opts)?);
        let xs2: Vec<Tensor> = xs.iter().zip(&atts).map(|(x, a)| net.attn_residual(l, x, a)).collect::<Result<_>>()?;
        let h2s: Vec<Tensor> = xs2.iter().map(|x| net.mlp_in(l, x)).collect::<Result<_>>()?;
        let h = input(&h2s, method, opts)?;
        for kind in ["ffn_gate", "ffn_up"] {
            reports.push(prune_linear(net, l, kind, &h, method, pattern, opts)?);
        }
        let acts: Vec<Tensor> = h2s.iter().map(|h| net.mlp_act(l, h)).collect::<Result<_>>()?;
        let h = input(&acts, method, opts)?;
        reports.push(prune_linear(net, l, "ffn_down", &h, method, pattern, opts)?);
        xs = xs2.iter().zip(&acts).map(|(x, a)| net.mlp_residual(l, x, a)).collect::<Result<_>>()?;
        progress(l + 1, n);
    }
    Ok(reports)
}

/// Perplexity over windows.
pub fn perplexity(net: &Llama, windows: &[Vec<u32>]) -> Result<f64> {
    let (mut nll, mut count) = (0.0, 0usize);
    for w in windows {
        let (a, b) = net.nll(w)?;
        nll += a;
        count += b;
    }
    Ok((nll / count.max(1) as f64).exp())
}
