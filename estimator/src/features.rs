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
/// occurrence. Counting goes through a small per-thread open-addressing table (stamped per call,
/// so nothing is cleared; it grows with the text and stays in L1 for a prompt of a few hundred
/// characters) instead of a dense counter over all 2^20 buckets, whose random accesses missed the
/// cache on every n-gram: this is the hot path of every prediction.
pub fn term_counts(text: &str) -> Vec<(u32, f32)> {
    thread_local! {
        static TABLE: std::cell::RefCell<Counter> = const { std::cell::RefCell::new(Counter::new()) };
    }
    TABLE.with(|cell| {
        let mut table = cell.borrow_mut();
        table.start(text.len());
        let mut out: Vec<(u32, f32)> = Vec::with_capacity(text.len() + 8);
        let mut add = |h: u64| table.add((h & DIM_MASK) as u32, &mut out);
        let mut prev: Option<u64> = None;
        // " word ", lower-cased: an ASCII word's bytes are its characters, so its 4-grams hash
        // straight from this buffer (the same hashes as through `char`s).
        let mut ascii: Vec<u8> = Vec::with_capacity(32);
        if text.is_ascii() {
            // ASCII text: words are runs of ASCII letters and digits, lower-cased as they are
            // copied (what lower-casing the text and splitting on non-alphanumerics gives).
            ascii.push(b' ');
            for &b in text.as_bytes() {
                if b.is_ascii_alphanumeric() {
                    ascii.push(b.to_ascii_lowercase());
                } else if ascii.len() > 1 {
                    ascii.push(b' ');
                    ascii_word(&ascii, &mut prev, &mut add);
                    ascii.truncate(1);
                }
            }
            if ascii.len() > 1 {
                ascii.push(b' ');
                ascii_word(&ascii, &mut prev, &mut add);
            }
            return out;
        }
        let lower = text.to_lowercase();
        let mut padded: Vec<char> = Vec::with_capacity(32);
        let mut buf = [0u8; 16];
        for w in lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            if w.is_ascii() {
                ascii.clear();
                ascii.push(b' ');
                ascii.extend_from_slice(w.as_bytes());
                ascii.push(b' ');
                ascii_word(&ascii, &mut prev, &mut add);
                continue;
            }
            add(fnv1a(1, w.as_bytes()));
            if let Some(hp) = prev {
                add(fnv1a(hp, w.as_bytes()));
            }
            prev = Some(fnv1a(2, w.as_bytes()));
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
        out
    })
}

/// The n-grams of one ASCII word given as " word " (lower-cased): its unigram, its bigram with
/// the previous word (`prev`, updated), and its character 4-grams (word-bounded, as
/// scikit-learn's char_wb; the whole " word " when it is shorter).
fn ascii_word(padded: &[u8], prev: &mut Option<u64>, add: &mut impl FnMut(u64)) {
    let w = &padded[1..padded.len() - 1];
    add(fnv1a(1, w));
    if let Some(hp) = *prev {
        add(fnv1a(hp, w));
    }
    *prev = Some(fnv1a(2, w));
    if padded.len() <= 4 {
        add(fnv1a(3, padded));
    } else {
        for win in padded.windows(4) {
            add(fnv1a(3, win));
        }
    }
}

/// The counting table of `term_counts`: slot = (call stamp, feature, index into the output).
/// A slot whose stamp is not the current call's is empty.
struct Counter {
    slots: Vec<(u32, u32, u32)>,
    stamp: u32,
}

impl Counter {
    const fn new() -> Counter {
        Counter { slots: Vec::new(), stamp: 0 }
    }

    /// A new call on a text of `len` bytes (at most about one n-gram per byte): a table of 4 to 8
    /// slots per byte, so it never grows mid-call (it still could), shrunk again after a long
    /// text so a short one's table stays small and cache-resident.
    fn start(&mut self, len: usize) {
        let want = (4 * len).next_power_of_two().max(256);
        if self.slots.len() < want || self.slots.len() > 4 * want {
            self.slots = vec![(0, 0, 0); want];
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Wrapped: stale stamps could read as current.
            self.slots.fill((0, 0, 0));
            self.stamp = 1;
        }
    }

    fn slot(&self, feature: u32) -> usize {
        let bits = self.slots.len().trailing_zeros();
        let mut i = (feature.wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize;
        let mask = self.slots.len() - 1;
        loop {
            let s = self.slots[i];
            if s.0 != self.stamp || s.1 == feature {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// Counts one occurrence of `feature` (saturating at 65,535, as a u16 counter would).
    fn add(&mut self, feature: u32, out: &mut Vec<(u32, f32)>) {
        let i = self.slot(feature);
        if self.slots[i].0 == self.stamp {
            let c = &mut out[self.slots[i].2 as usize].1;
            if *c < 65_535.0 {
                *c += 1.0;
            }
            return;
        }
        self.slots[i] = (self.stamp, feature, out.len() as u32);
        out.push((feature, 1.0));
        // This call's features are `out`'s entries.
        if 2 * out.len() > self.slots.len() {
            // Half full: double and re-insert this call's features from `out`.
            self.slots = vec![(0, 0, 0); 2 * self.slots.len()];
            for (k, &(f, _)) in out.iter().enumerate() {
                let j = self.slot(f);
                self.slots[j] = (self.stamp, f, k as u32);
            }
        }
    }
}

/// 1 + ln(count), the sublinear term frequency; small counts (nearly all) from a table of the
/// same values.
pub fn sublinear_tf(count: f32) -> f32 {
    static LN: std::sync::LazyLock<[f32; 16]> =
        std::sync::LazyLock::new(|| std::array::from_fn(|c| 1.0 + (c as f32).ln()));
    let c = count as usize;
    if (1..16).contains(&c) && c as f32 == count {
        LN[c]
    } else {
        1.0 + count.ln()
    }
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
        let mut v: SparseVec = counts.iter().map(|&(k, c)| (k, sublinear_tf(c) * self.weight(k))).collect();
        normalize(&mut v);
        v
    }
}

/// Scales `v` to unit L2 norm (an all-zero vector stays as it is).
pub fn normalize(v: &mut SparseVec) {
    let norm = v.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        for (_, w) in v {
            *w /= norm;
        }
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
        // A long text grows the table past its first size (same counts as the reference).
        let long: String = (0..3000).map(|i| format!("w{} ", i % 1500)).collect();
        let mut got = term_counts(&long);
        got.sort_by_key(|p| p.0);
        assert_eq!(got, reference(&long));
        assert_eq!(term_counts("a a"), c);
    }
}
