/// Groups inputs into batches under a padded-token budget. Inputs are sorted by
/// length, longest first, so each batch pads to its first input's length and
/// similar lengths share a batch; a batch grows while
/// `first_len * count <= max_tokens`, `count <= max_batch`, and the next input is at
/// least half the first one's length. That last rule keeps one long input from
/// padding many short ones: a rerank request's 200-token query would otherwise pad
/// its 40-token documents five-fold, and one more forward pass costs far less.
/// Every index appears in exactly one batch; an input longer than `max_tokens` gets
/// a batch of its own.
/// Returns indices into `lengths`, each batch in descending length order (ties in
/// index order). `max_batch` 0 acts as 1.
pub fn plan_batches(lengths: &[usize], max_tokens: usize, max_batch: usize) -> Vec<Vec<usize>> {
    let max_batch = max_batch.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));

    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut padded_len = 0usize;
    for i in order {
        match batches.last_mut() {
            Some(batch)
                if batch.len() < max_batch
                    && padded_len.saturating_mul(batch.len() + 1) <= max_tokens
                    && lengths[i].saturating_mul(2) >= padded_len =>
            {
                batch.push(i)
            }
            _ => {
                padded_len = lengths[i];
                batches.push(vec![i]);
            }
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::plan_batches;

    #[test]
    fn fills_batches_longest_first() {
        let lengths = [10, 50, 20, 50, 5, 200];
        assert_eq!(
            plan_batches(&lengths, 100, 8),
            vec![vec![5], vec![1, 3], vec![2, 0], vec![4]]
        );
        assert_eq!(
            plan_batches(&lengths, 1000, 2),
            vec![vec![5], vec![1, 3], vec![2, 0], vec![4]]
        );
        assert_eq!(
            plan_batches(&[40, 200, 60, 100], 1000, 8),
            vec![vec![1, 3], vec![2, 0]]
        );
        assert_eq!(plan_batches(&[3, 3], 100, 0), vec![vec![0], vec![1]]);
        assert!(plan_batches(&[], 100, 8).is_empty());
    }
}
