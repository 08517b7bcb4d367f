//! Reciprocal-rank fusion (Cormack, Clarke & Büttcher, 2009): needs ranks only, so BM25's
//! unbounded scores and cosines combine without calibration.
use std::collections::HashMap;

use crate::{top_k, Hit};

/// The paper's constant: damps the weight of the very top ranks.
const K: f64 = 60.0;

/// Each document scores Σ 1/(60 + rank) over the lists that hold it (ranks from 1); the top `k`,
/// best first, ties by corpus order.
pub fn fuse(lists: &[&[Hit]], k: usize) -> Vec<Hit> {
    let mut fused: HashMap<usize, f64> = HashMap::new();
    for list in lists {
        for (rank, hit) in list.iter().enumerate() {
            *fused.entry(hit.doc).or_default() += 1.0 / (K + (rank + 1) as f64);
        }
    }
    let hits = fused
        .into_iter()
        .map(|(doc, score)| Hit { doc, score })
        .collect();
    top_k(hits, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(docs: &[usize]) -> Vec<Hit> {
        // Scores are ignored by fusion: make them disagree with the order to prove it.
        docs.iter()
            .enumerate()
            .map(|(i, &doc)| Hit {
                doc,
                score: i as f64,
            })
            .collect()
    }

    #[test]
    fn fuses_by_reciprocal_rank() {
        let a = list(&[1, 2, 3]);
        let b = list(&[3, 1, 4]);
        let fused = fuse(&[&a, &b], 10);
        let order: Vec<usize> = fused.iter().map(|h| h.doc).collect();
        // 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62; 4: 1/63.
        assert_eq!(order, [1, 3, 2, 4]);
        assert!((fused[0].score - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-12);
        assert!((fused[3].score - 1.0 / 63.0).abs() < 1e-12);
        assert_eq!(fuse(&[&a, &b], 2).len(), 2);
        // Equal fused scores fall back to corpus order.
        let tie = fuse(&[&list(&[9]), &list(&[5])], 10);
        assert_eq!(tie.iter().map(|h| h.doc).collect::<Vec<_>>(), [5, 9]);
        assert!(fuse(&[], 10).is_empty());
    }
}
