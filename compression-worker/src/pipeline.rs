//! Sequential layer-by-layer pruning (as SparseGPT does): the calibration windows run through the
//! blocks one at a time; inside a block, q/k/v are pruned on their shared input, then the
//! attention is recomputed through the pruned q/k/v to get the output projection's input, and so
//! on through gate/up and down; the block's output (through every pruned weight) is the next
//! block's input. Every linear layer's objective ‖WX − ŴX‖² is computed from H = XᵀX.

use crate::error::{Error, Result};
use crate::llama::{linear_name, Llama};
use crate::prune::mask::{self, Pattern};
use crate::prune::{alps, linalg, lowrank, sparsegpt};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Magnitude,
    Wanda,
    Sparsegpt,
    /// ADMM on the layer objective with the pattern's projection and a rising penalty, then
    /// conjugate gradients on the kept weights (`prune/alps.rs`).
    Alps,
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
    /// Stored parameters: the non-zeros of S, plus R·(rows + cols) with `--low-rank`.
    pub params: usize,
    /// With `--low-rank`: the error of the first round's S alone (the method without the
    /// correction), for comparison with `error` (S + UV).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_sparse_only: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alps: Option<alps::Stats>,
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

/// What the method computes once from H for every layer that reads the input.
enum Factor {
    None,
    Sparsegpt(sparsegpt::Factor),
    Alps(alps::Factor),
}

/// H of one input, with the method's factor of it (shared by the layers that read the same input).
struct Input {
    h: Vec<f64>,
    /// H as an f32 tensor, for the reported objective.
    ht: Tensor,
    factor: Factor,
}

fn input(xs: &[Tensor], recipe: &Recipe) -> Result<Input> {
    let (h, d) = gram(xs)?;
    let factor = match recipe.method {
        Method::Sparsegpt => {
            Factor::Sparsegpt(sparsegpt::factor(&h, d, recipe.sparsegpt.damp).map_err(Error::Invalid)?)
        }
        Method::Alps => Factor::Alps(alps::factor(&h, d, recipe.alps).map_err(Error::Invalid)?),
        Method::Magnitude | Method::Wanda => Factor::None,
    };
    let ht = Tensor::from_vec(h.iter().map(|&x| x as f32).collect::<Vec<f32>>(), (d, d), &Device::Cpu)?;
    Ok(Input { h, ht, factor })
}

/// How every layer is pruned.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    pub method: Method,
    pub pattern: Pattern,
    pub sparsegpt: sparsegpt::Options,
    pub alps: alps::Options,
    /// `--low-rank R`: W ≈ S + UV, S in the pattern (`prune/lowrank.rs`).
    pub low_rank: Option<lowrank::Options>,
    /// Seeds the rank step's random start.
    pub seed: u64,
}

/// What `prune_model` did: per-layer reports, stage times, and with `--low-rank` each layer's S
/// (the pruned GGUF's weights; the network itself then holds S + UV) and its U (rows × R) and V
/// (R × cols).
pub struct Pruned {
    pub layers: Vec<LayerReport>,
    pub times: StageTimes,
    pub sparse: BTreeMap<String, Tensor>,
    pub adapters: BTreeMap<String, (Tensor, Tensor)>,
}

/// Prunes `w` in place with the recipe's method; ALPS's statistics when it ran.
fn prune_weights(
    w: &mut [f32],
    (rows, cols): (usize, usize),
    inp: &mut Input,
    recipe: &Recipe,
) -> Result<Option<alps::Stats>> {
    let pattern = recipe.pattern;
    match (recipe.method, &mut inp.factor) {
        (Method::Magnitude, _) => mask::magnitude(w, rows, cols, pattern),
        (Method::Wanda, _) => {
            let diag: Vec<f64> = (0..cols).map(|j| inp.h[j * cols + j]).collect();
            mask::wanda(w, rows, cols, &diag, pattern)
        }
        (Method::Sparsegpt, Factor::Sparsegpt(f)) => {
            sparsegpt::prune_with(w, rows, f, pattern, recipe.sparsegpt.block).map_err(Error::Invalid)?
        }
        (Method::Alps, Factor::Alps(f)) => {
            return Ok(Some(alps::prune_with(w, rows, f, pattern).map_err(Error::Invalid)?));
        }
        (m, _) => return Err(Error::Invalid(format!("{m:?}: its factor of H was not computed"))),
    }
    Ok(None)
}

fn prune_linear(
    net: &mut Llama,
    (layer, kind): (usize, &str),
    inp: &mut Input,
    recipe: &Recipe,
    out: &mut Pruned,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let name = linear_name(layer, kind);
    let t = net.w(&name)?;
    let (rows, cols) = t.dims2()?;
    let w0: Vec<f32> = t.flatten_all()?.to_vec1()?;
    // The layer's name before what went wrong (once: the message may already say "invalid input").
    let named = |e: Error| match e {
        Error::Invalid(m) => Error::Invalid(format!("{name}: {m}")),
        e => Error::Invalid(format!("{name}: {e}")),
    };
    // The weights the network computes with (S, or S + UV), S itself when it differs (with
    // --low-rank), the correction.
    let (w, sparse, alps_stats, corr, s_alone) = match recipe.low_rank {
        None => {
            let mut w = w0.clone();
            let st = prune_weights(&mut w, (rows, cols), inp, recipe).map_err(named)?;
            (w, None, st, None, None)
        }
        Some(lr) => {
            let mut l = vec![0f32; rows * cols];
            let mut warm: Option<Vec<f64>> = None;
            let mut last = None;
            let mut s_alone = None;
            for round in 0..lr.rounds.max(1) {
                let mut s: Vec<f32> = w0.iter().zip(&l).map(|(a, b)| a - b).collect();
                let st = prune_weights(&mut s, (rows, cols), inp, recipe).map_err(named)?;
                if round == 0 {
                    s_alone = Some(s.clone());
                }
                let m: Vec<f32> = w0.iter().zip(&s).map(|(a, b)| a - b).collect();
                let seed = recipe.seed.wrapping_mul(0x9e37_79b9).wrapping_add((layer * 64 + round) as u64);
                let mut c = lowrank::correction(&m, (rows, cols), &inp.h, &lr, warm.as_deref(), seed)
                    .map_err(|e| named(Error::Invalid(e)))?;
                l = c.product(rows, cols).map_err(|e| named(Error::Invalid(e)))?;
                warm = Some(std::mem::take(&mut c.p));
                last = Some((s, st, c));
            }
            let (s, st, c) = last.ok_or_else(|| Error::Invalid("no low-rank round ran".into()))?;
            let w: Vec<f32> = s.iter().zip(&l).map(|(a, b)| a + b).collect();
            (w, Some(s), st, Some(c), s_alone)
        }
    };
    let s = sparse.as_deref().unwrap_or(&w);
    out.times.prune += t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    // ‖(W − Ŵ)X‖² = Σ (δ H) ∘ δ and ‖WX‖², through one f32 matmul each (mask::layer_error is the
    // f64 reference the tests use; this is the fast path for the report).
    let quad = |d: Vec<f32>| linalg::quadratic_form(d, rows, &inp.ht).map_err(|e| named(Error::Invalid(e)));
    let error = quad(w0.iter().zip(&w).map(|(a, b)| a - b).collect())?;
    let error_sparse_only = match &s_alone {
        Some(sa) => Some(quad(w0.iter().zip(sa).map(|(a, b)| a - b).collect())?),
        None => None,
    };
    let base = quad(w0)?;
    let rank = corr.as_ref().map_or(0, |c| c.rank);
    let report = LayerReport {
        name: name.clone(),
        rows,
        cols,
        sparsity: mask::sparsity(s),
        pattern_ok: mask::check(s, rows, cols, recipe.pattern).is_ok(),
        error,
        rel_error: error / base.max(1e-30),
        params: lowrank::parameters(s, rows, cols, rank),
        error_sparse_only,
        alps: alps_stats,
    };
    if let (Some(c), Some(s)) = (corr, sparse) {
        let u = Tensor::from_vec(c.u, (rows, c.rank), &Device::Cpu)?;
        let v = Tensor::from_vec(c.v, (c.rank, cols), &Device::Cpu)?;
        out.adapters.insert(name.clone(), (u, v));
        out.sparse.insert(name.clone(), Tensor::from_vec(s, (rows, cols), &Device::Cpu)?);
    }
    net.tensors.insert(name, Tensor::from_vec(w, (rows, cols), &Device::Cpu)?);
    out.layers.push(report);
    out.times.report += t1.elapsed().as_secs_f64();
    Ok(())
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
    recipe: &Recipe,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Pruned> {
    let mut out =
        Pruned { layers: Vec::new(), times: StageTimes::default(), sparse: BTreeMap::new(), adapters: BTreeMap::new() };
    let mut xs: Vec<Tensor> = timed(&mut out.times.forward, || calib.iter().map(|ids| net.embed(ids)).collect())?;
    let n = net.cfg.n_layer;
    for l in 0..n {
        let hs: Vec<Tensor> = timed(&mut out.times.forward, || xs.iter().map(|x| net.attn_in(l, x)).collect())?;
        let mut h = timed(&mut out.times.hessian, || input(&hs, recipe))?;
        for kind in ["attn_q", "attn_k", "attn_v"] {
            prune_linear(net, (l, kind), &mut h, recipe, &mut out)?;
        }
        let atts: Vec<Tensor> = timed(&mut out.times.forward, || hs.iter().map(|h| net.attention(l, h)).collect())?;
        let mut h = timed(&mut out.times.hessian, || input(&atts, recipe))?;
        prune_linear(net, (l, "attn_output"), &mut h, recipe, &mut out)?;
        let (xs2, h2s) = timed(&mut out.times.forward, || {
            let xs2: Vec<Tensor> =
                xs.iter().zip(&atts).map(|(x, a)| net.attn_residual(l, x, a)).collect::<Result<_>>()?;
            let h2s: Vec<Tensor> = xs2.iter().map(|x| net.mlp_in(l, x)).collect::<Result<_>>()?;
            Ok((xs2, h2s))
        })?;
        let mut h = timed(&mut out.times.hessian, || input(&h2s, recipe))?;
        for kind in ["ffn_gate", "ffn_up"] {
            prune_linear(net, (l, kind), &mut h, recipe, &mut out)?;
        }
        let acts: Vec<Tensor> = timed(&mut out.times.forward, || h2s.iter().map(|h| net.mlp_act(l, h)).collect())?;
        let mut h = timed(&mut out.times.hessian, || input(&acts, recipe))?;
        prune_linear(net, (l, "ffn_down"), &mut h, recipe, &mut out)?;
        xs = timed(&mut out.times.forward, || xs2.iter().zip(&acts).map(|(x, a)| net.mlp_residual(l, x, a)).collect())?;
        progress(l + 1, n);
    }
    Ok(out)
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
