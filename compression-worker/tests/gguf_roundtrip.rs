//! GGUF written by the worker keeps pruned zeros exactly (Q8_0 and F16), keeps the metadata, and
//! reads back; a file that is not GGUF is a clear error.

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
