//! Times SparseGPT's pieces on one block of SmolLM2-135M's shapes (random weights, an H with the
//! spread of real activations): the factor of each input (q/k/v, attn_output and gate/up: 576
//! inputs; ffn_down: 1536) and the 2:4 prune of each layer. `cargo run --release -p
//! compression-worker --example prune_bench [-- REPEATS]`. Prints one line per piece and the block's
//! total (× 30 blocks ≈ the prune phase without the forward passes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use compression_worker::prune::mask::Pattern;
use compression_worker::prune::sparsegpt;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn h_of(cols: usize, tokens: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f64> {
    // X: tokens × cols with a shared component and per-column scales; H = XᵀX.
    let scale: Vec<f64> = (0..cols).map(|j| 0.2 + 3.0 * ((j * 13 % 17) as f64 / 17.0)).collect();
    let x: Vec<f64> = (0..tokens * cols)
        .map(|k| {
            let j = k % cols;
            scale[j] * rng.gen_range(-1.0..1.0)
        })
        .collect();
    let mut h = vec![0f64; cols * cols];
    for s in 0..tokens {
        let row = &x[s * cols..(s + 1) * cols];
        for i in 0..cols {
            let ri = row[i];
            for (hj, &rj) in h[i * cols..(i + 1) * cols].iter_mut().zip(row) {
                *hj += ri * rj;
            }
        }
    }
    h
}

fn main() {
    let repeats: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let pattern: Pattern = "2:4".parse().unwrap();
    let h576 = h_of(576, 1024, &mut rng);
    let h1536 = h_of(1536, 2048, &mut rng);
    let w = |rows: usize, cols: usize, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        (0..rows * cols).map(|_| rng.gen_range(-0.1f32..0.1)).collect()
    };
    let mut total = 0.0;
    let time = |label: &str, f: &mut dyn FnMut()| {
        let mut best = f64::INFINITY;
        for _ in 0..repeats {
            let t = Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{label:<40} {:>8.1} ms (best of {repeats})", best * 1e3);
        best
    };
    let f576 = sparsegpt::factor(&h576, 576, 0.01).unwrap();
    let f1536 = sparsegpt::factor(&h1536, 1536, 0.01).unwrap();
    total += 3.0
        * time("factor 576 (3 inputs a block)", &mut || {
            sparsegpt::factor(&h576, 576, 0.01).unwrap();
        });
    total += time("factor 1536 (ffn_down)", &mut || {
        sparsegpt::factor(&h1536, 1536, 0.01).unwrap();
    });
    for (name, rows, f) in [
        ("prune attn_q 576×576", 576, &f576),
        ("prune attn_k 192×576", 192, &f576),
        ("prune attn_v 192×576", 192, &f576),
        ("prune attn_output 576×576", 576, &f576),
        ("prune ffn_gate 1536×576", 1536, &f576),
        ("prune ffn_up 1536×576", 1536, &f576),
        ("prune ffn_down 576×1536", 576, &f1536),
    ] {
        let cols = if std::ptr::eq(f, &f1536) { 1536 } else { 576 };
        let w0 = w(rows, cols, &mut rng);
        total += time(name, &mut || {
            let mut x = w0.clone();
            sparsegpt::prune_with(&mut x, rows, f, pattern, 128).unwrap();
        });
    }
    println!("{:<40} {:>8.1} ms; × 30 blocks = {:.1} s", "one block (factors + prunes)", total * 1e3, total * 30.0);
}
