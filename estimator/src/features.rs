//! Hashed text features: word 1–2-grams and character 4-grams (within word boundaries), TF-IDF
//! weighted (sublinear tf, smoothed idf fitted on the training texts), L2-normalized. Sparse.

/// Number of hash buckets (2^20): collisions are rare at this vocabulary size.
pub const DIM_BITS: u32 = 20;
const DIM_MASK: u64 = (1 << DIM_BITS) - 1;

/// A sparse vector: (feature index, weight), indices sorted and unique.
pub type SparseVec = Vec<(u32, f32)>;

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Number of feature buckets.
pub const DIM: usize = 1 << DIM_BITS;

/// Raw term counts of a text: (hashed feature index, count), sorted by index, unique.
pub fn term_counts(text: &str) -> Vec<(u32, f32)> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let mut hashes: Vec<u32> = Vec::with_capacity(words.len() * 8);
    let mut add = |h: u64| hashes.push((h & DIM_MASK) as u32);
    let mut padded: Vec<char> = Vec::with_capacity(32);
    for (i, w) in words.iter().enumerate() {
        add(fnv1a(1, w.as_bytes()));
        if let Some(next) = words.get(i + 1) {
            let h = fnv1a(2, w.as_bytes());
            add(fnv1a(h, next.as_bytes()));
        }
        // Character 4-grams of " word " (word-bounded, as scikit-learn's char_wb).
        padded.clear();
        padded.push(' ');
        padded.extend(w.chars());
        padded.push(' ');
        let mut buf = [0u8; 16];
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
    hashes.sort_unstable();
    let mut counts: Vec<(u32, f32)> = Vec::with_capacity(hashes.len());
    for h in hashes {
        match counts.last_mut() {
            Some((k, c)) if *k == h => *c += 1.0,
            _ => counts.push((h, 1.0)),
        }
    }
    counts
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

    /// TF-IDF vector of a document's counts (sorted by index), L2-normalized (empty text → empty).
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

/// Cosine similarity of two L2-normalized sparse vectors.
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

    #[test]
    fn similar_texts_score_higher() {
        let texts = ["what is the capital of france", "what is the capital of spain", "solve 2x + 3 = 7 for x"];
        let counts: Vec<_> = texts.iter().map(|t| term_counts(t)).collect();
        let idf = Idf::fit(&counts);
        let v: Vec<_> = counts.iter().map(|c| idf.transform(c)).collect();
        assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-5);
        assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]));
        assert!(idf.transform(&term_counts("")).is_empty());
    }
}
