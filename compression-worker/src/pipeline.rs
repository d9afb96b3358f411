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

/// Seconds the prune phase spent in each stage (the model card's `prune_stages_s`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StageTimes {
    /// The calibration windows through the blocks (each layer's input taken out).
    pub forward: f64,
    /// H = XᵀX of each input, and SparseGPT's factor of it.
    pub hessian: f64,
    /// The pruning itself (masks and weight updates).
    pub prune: f64,
    /// Each layer's reconstruction error for the card.
    pub report: f64,
}

/// H = Σ XᵀX over the windows' inputs (each (L, d)): the windows stacked, one product (f32
/// accumulation in gemm), returned in f64.
fn gram(xs: &[Tensor]) -> Result<(Vec<f64>, usize)> {
    let d = xs.first().map_or(0, |x| x.dims()[1]);
    if xs.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let x = Tensor::cat(xs, 0)?;
    let g: Vec<f32> = x.t()?.contiguous()?.matmul(&x)?.flatten_all()?.to_vec1()?;
    Ok((g.into_iter().map(f64::from).collect(), d))
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

/// How every layer is pruned.
struct Recipe<'a> {
    method: Method,
    pattern: Pattern,
    opts: &'a sparsegpt::Options,
}

fn prune_linear(
    net: &mut Llama,
    (layer, kind): (usize, &str),
    inp: &Input,
    recipe: &Recipe,
    times: &mut StageTimes,
) -> Result<LayerReport> {
    let Recipe { method, pattern, opts } = *recipe;
    let t0 = std::time::Instant::now();
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
    times.prune += t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    // ‖(W − Ŵ)X‖² = Σ (δ H) ∘ δ and ‖WX‖², through one f32 matmul each (mask::layer_error is the
    // f64 reference the tests use; this is the fast path for the report).
    let ht = &inp.ht;
    let quad = |d: Vec<f32>| -> Result<f64> {
        let d = Tensor::from_vec(d, (rows, cols), &Device::Cpu)?;
        Ok(d.matmul(ht)?.mul(&d)?.sum_all()?.to_scalar::<f32>()? as f64)
    };
    let error = quad(w0.iter().zip(&w).map(|(a, b)| a - b).collect())?;
    let base = quad(w0)?;
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
    times.report += t1.elapsed().as_secs_f64();
    Ok(report)
}

/// Runs `f`, adding the seconds it took to `slot`.
fn timed<T>(slot: &mut f64, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = std::time::Instant::now();
    let r = f();
    *slot += t.elapsed().as_secs_f64();
    r
}

/// Prunes every linear layer of every block; `progress(done_blocks, total)` after each block.
pub fn prune_model(
    net: &mut Llama,
    calib: &[Vec<u32>],
    method: Method,
    pattern: Pattern,
    opts: &sparsegpt::Options,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<LayerReport>, StageTimes)> {
    let mut tm = StageTimes::default();
    let recipe = Recipe { method, pattern, opts };
    let mut reports = Vec::new();
    let mut xs: Vec<Tensor> = timed(&mut tm.forward, || calib.iter().map(|ids| net.embed(ids)).collect())?;
    let n = net.cfg.n_layer;
    for l in 0..n {
        let hs: Vec<Tensor> = timed(&mut tm.forward, || xs.iter().map(|x| net.attn_in(l, x)).collect())?;
        let h = timed(&mut tm.hessian, || input(&hs, method, opts))?;
        for kind in ["attn_q", "attn_k", "attn_v"] {
            reports.push(prune_linear(net, (l, kind), &h, &recipe, &mut tm)?);
        }
        let atts: Vec<Tensor> = timed(&mut tm.forward, || hs.iter().map(|h| net.attention(l, h)).collect())?;
        let h = timed(&mut tm.hessian, || input(&atts, method, opts))?;
        reports.push(prune_linear(net, (l, "attn_output"), &h, &recipe, &mut tm)?);
        let (xs2, h2s) = timed(&mut tm.forward, || {
            let xs2: Vec<Tensor> =
                xs.iter().zip(&atts).map(|(x, a)| net.attn_residual(l, x, a)).collect::<Result<_>>()?;
            let h2s: Vec<Tensor> = xs2.iter().map(|x| net.mlp_in(l, x)).collect::<Result<_>>()?;
            Ok((xs2, h2s))
        })?;
        let h = timed(&mut tm.hessian, || input(&h2s, method, opts))?;
        for kind in ["ffn_gate", "ffn_up"] {
            reports.push(prune_linear(net, (l, kind), &h, &recipe, &mut tm)?);
        }
        let acts: Vec<Tensor> = timed(&mut tm.forward, || h2s.iter().map(|h| net.mlp_act(l, h)).collect())?;
        let h = timed(&mut tm.hessian, || input(&acts, method, opts))?;
        reports.push(prune_linear(net, (l, "ffn_down"), &h, &recipe, &mut tm)?);
        xs = timed(&mut tm.forward, || xs2.iter().zip(&acts).map(|(x, a)| net.mlp_residual(l, x, a)).collect())?;
        progress(l + 1, n);
    }
    Ok((reports, tm))
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
