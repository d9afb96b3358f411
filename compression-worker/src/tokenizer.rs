//! The model's tokenizer from its GGUF metadata (`tokenizer.ggml.*`): byte-level BPE (the `gpt2`
//! kind SmolLM2 and most Llama-family GGUFs carry), built with the `tokenizers` crate.

use crate::error::{Error, Result};
use crate::gguf::{md_strings, GgufModel};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

/// GGUF `tokenizer.ggml.token_type` of control tokens.
const CONTROL_TOKEN: i64 = 3;

pub struct Tok {
    inner: Tokenizer,
    pub bos: Option<u32>,
    /// End of a turn or text (`tokenizer.ggml.eos_token_id`): generation stops there.
    pub eos: Option<u32>,
}

impl Tok {
    pub fn from_gguf(m: &GgufModel) -> Result<Tok> {
        let kind = m.metadata.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        if kind != "gpt2" {
            return Err(Error::model(
                &m.path,
                format!("tokenizer.ggml.model `{kind}`: only byte-level BPE (`gpt2`) is supported"),
            ));
        }
        let tokens = md_strings(m, "tokenizer.ggml.tokens")?;
        let merges = md_strings(m, "tokenizer.ggml.merges")?;
        // Control tokens (type 3: `<|im_start|>`, `<|im_end|>`, …) are single ids in chat text,
        // as llama.cpp reads them, not BPE pieces.
        let types: Vec<i64> = m
            .metadata
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|a| a.iter().map(|t| t.to_i32().map(i64::from).unwrap_or(1)).collect())
            .unwrap_or_default();
        let special: Vec<tokenizers::AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == CONTROL_TOKEN)
            .map(|(n, _)| tokenizers::AddedToken::from(n.clone(), true))
            .collect();
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
        let merges: Vec<(String, String)> =
            merges.iter().filter_map(|s| s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()))).collect();
        let bpe =
            BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::default()));
        inner.add_special_tokens(&special);
        let id = |k: &str| m.metadata.get(k).and_then(|v| v.to_u32().ok());
        Ok(Tok { inner, bos: id("tokenizer.ggml.bos_token_id"), eos: id("tokenizer.ggml.eos_token_id") })
    }

    /// A `tokenizer.json` (Hugging Face layout).
    pub fn from_file(path: &std::path::Path, bos: Option<u32>, eos: Option<u32>) -> Result<Tok> {
        let inner = Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Tok { inner, bos, eos })
    }

    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        self.inner.save(path, false).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?.get_ids().to_vec())
    }

    /// A token's text (control tokens as written, e.g. `<|im_start|>`).
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer(e.to_string()))
    }
}
