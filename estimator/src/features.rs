//! Hashed text features: word 1–2-grams and character 4-grams (within word boundaries), TF-IDF
//! weighted (sublinear tf, smoothed idf fitted on the training texts), L2-normalized. Sparse.

/// Number of hash buckets (2^20): collisions are rare at this vocabulary size.
pub const DIM_BITS: u32 = 20;
const DIM_MASK: u64 = (1 << DIM_BITS) - 1;

/// A sparse vector: (feature index, weight), indices unique (in no particular order).
pub type SparseVec = Vec<(u32, f32)>;

/// FNV-1a, 64 bits, its offset basis xored with `seed` (0: plain FNV-1a): stable across runs and
/// platforms. The hashed features, the embedding cache's keys, record ids from feedback, and the
/// router's prompt hashes all use it.
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Number of feature buckets.
pub const DIM: usize = 1 << DIM_BITS;

/// Raw term counts of a text: (hashed feature index, count), unique, in order of first
/// occurrence. Counting goes through a per-thread dense counter (2 MB per thread, reset after
/// each call) instead of sorting the n-gram hashes: this is the hot path of every prediction.
pub fn term_counts(text: &str) -> Vec<(u32, f32)> {
    thread_local! {
        static COUNTS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    COUNTS.with(|cell| {
        let mut counts = cell.borrow_mut();
        if counts.len() < DIM {
            counts.resize(DIM, 0);
        }
        let mut order: Vec<u32> = Vec::with_capacity(text.len() + 8);
        let mut add = |h: u64| {
            let i = (h & DIM_MASK) as u32;
            let c = &mut counts[i as usize];
            if *c == 0 {
                order.push(i);
            }
            *c = c.saturating_add(1);
        };
        let lower = if text.is_ascii() { text.to_ascii_lowercase() } else { text.to_lowercase() };
        let mut padded: Vec<char> = Vec::with_capacity(32);
        let mut ascii: Vec<u8> = Vec::with_capacity(32);
        let mut prev: Option<u64> = None;
        let mut buf = [0u8; 16];
        for w in lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            add(fnv1a(1, w.as_bytes()));
            // Word bigram (previous word, this word).
            if let Some(hp) = prev {
                add(fnv1a(hp, w.as_bytes()));
            }
            prev = Some(fnv1a(2, w.as_bytes()));
            // Character 4-grams of " word " (word-bounded, as scikit-learn's char_wb); an ASCII
            // word's bytes are its characters (the same hashes, without decoding).
            if w.is_ascii() {
                ascii.clear();
                ascii.push(b' ');
                ascii.extend_from_slice(w.as_bytes());
                ascii.push(b' ');
                if ascii.len() <= 4 {
                    add(fnv1a(3, &ascii));
                } else {
                    for win in ascii.windows(4) {
                        add(fnv1a(3, win));
                    }
                }
                continue;
            }
            padded.clear();
            padded.push(' ');
            padded.extend(w.chars());
            padded.push(' ');
            if padded.len() <= 4 {
                let mut n = 0;
                for c in &padded {
                    n += c.encode_utf8(&mut buf[n..]).len();
                }
                add(fnv1a(3, &buf[..n]));
            } else {
                for win in padded.windows(4) {
                    let mut n = 0;
                    for c in win {
                        n += c.encode_utf8(&mut buf[n..]).len();
                    }
                    add(fnv1a(3, &buf[..n]));
                }
            }
        }
        order
            .into_iter()
            .map(|i| {
                let c = std::mem::replace(&mut counts[i as usize], 0);
                (i, c as f32)
            })
            .collect()
    })
}

/// Inverse document frequencies fitted on a corpus (dense over the hashed feature space).
#[derive(Debug, Clone)]
pub struct Idf {
    pub n_docs: usize,
    df: Vec<u32>,
    weight: Vec<f32>,
}

impl Idf {
    pub fn fit<'a>(docs: impl IntoIterator<Item = &'a Vec<(u32, f32)>>) -> Idf {
        let mut df = vec![0u32; DIM];
        let mut n_docs = 0;
        for d in docs {
            n_docs += 1;
            for (k, _) in d {
                df[*k as usize] += 1;
            }
        }
        let weight = df.iter().map(|&d| ((n_docs as f32 + 1.0) / (d as f32 + 1.0)).ln() + 1.0).collect();
        Idf { n_docs, df, weight }
    }

    pub fn df(&self, feature: u32) -> u32 {
        self.df.get(feature as usize).copied().unwrap_or(0)
    }

    pub fn weight(&self, feature: u32) -> f32 {
        self.weight.get(feature as usize).copied().unwrap_or(1.0)
    }

    /// TF-IDF vector of a document's counts, L2-normalized (empty text → empty).
    pub fn transform(&self, counts: &[(u32, f32)]) -> SparseVec {
        let mut v: SparseVec = counts.iter().map(|&(k, c)| (k, (1.0 + c.ln()) * self.weight(k))).collect();
        let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, w) in &mut v {
                *w /= norm;
            }
        }
        v
    }
}

/// Cosine similarity of two L2-normalized sparse vectors whose indices are sorted.
pub fn dot(a: &SparseVec, b: &SparseVec) -> f32 {
    let (mut i, mut j, mut s) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                s += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The features as first written (every word's 4-grams through `char`s), against which the
    /// ASCII fast path must give the same counts.
    fn reference(text: &str) -> Vec<(u32, f32)> {
        let mut counts: std::collections::BTreeMap<u32, f32> = Default::default();
        let mut add = |h: u64| *counts.entry((h & DIM_MASK) as u32).or_default() += 1.0;
        let mut prev: Option<u64> = None;
        for w in text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            add(fnv1a(1, w.as_bytes()));
            if let Some(hp) = prev {
                add(fnv1a(hp, w.as_bytes()));
            }
            prev = Some(fnv1a(2, w.as_bytes()));
            let padded: Vec<char> = std::iter::once(' ').chain(w.chars()).chain(std::iter::once(' ')).collect();
            let windows: Vec<&[char]> = if padded.len() <= 4 { vec![&padded[..]] } else { padded.windows(4).collect() };
            for win in windows {
                add(fnv1a(3, win.iter().collect::<String>().as_bytes()));
            }
        }
        counts.into_iter().collect()
    }

    #[test]
    fn ascii_fast_path_counts_the_same_features() {
        for text in [
            "What is the capital of France? Paris, of course.",
            "Integrate x^2 dx from 0 to 1; a, an, I.",
            "Crème brûlée in Zürich costs 12 CHF — naïve café prices",
            "ΑΒΓ δέλτα and plain words mixed",
            "",
        ] {
            let mut got = term_counts(text);
            got.sort_by_key(|p| p.0);
            assert_eq!(got, reference(text), "{text}");
        }
    }

    #[test]
    fn similar_texts_score_higher() {
        let texts = ["what is the capital of france", "what is the capital of spain", "solve 2x + 3 = 7 for x"];
        let counts: Vec<_> = texts.iter().map(|t| term_counts(t)).collect();
        let idf = Idf::fit(&counts);
        let v: Vec<_> = counts
            .iter()
            .map(|c| {
                let mut v = idf.transform(c);
                v.sort_by_key(|x| x.0);
                v
            })
            .collect();
        assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-5);
        assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]));
        assert!(idf.transform(&term_counts("")).is_empty());
        // Counts: "a a" has the unigram twice, one bigram, and the 4-gram " a " twice.
        let c = term_counts("a a");
        assert_eq!(c.iter().map(|x| x.1).sum::<f32>(), 5.0);
        assert_eq!(c.len(), 3);
        // The per-thread counter is reset between calls.
        assert_eq!(term_counts("a a"), c);
    }
}
