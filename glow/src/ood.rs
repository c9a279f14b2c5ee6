//! Out-of-distribution scores: how well a model's per-image bits/dim tells the images of
//! another dataset from those of its own. Nalisnick et al. ("Do Deep Generative Models
//! Know What They Don't Know?", 2019) found that Glow trained on CIFAR-10 gives SVHN's
//! digits *fewer* bits/dim than CIFAR-10's own test images, so that bits/dim used as a
//! detector of strangers scores below chance. The `ood` example computes both datasets'
//! per-image bits/dim, draws their histograms ([`crate::picture::save_histogram`]) and
//! reports [`auroc`].

/// The area under the ROC curve of `score` as a detector of `positives` among
/// `negatives`: the probability that a random positive scores above a random negative,
/// ties counting one half (the Mann–Whitney statistic over the product of the counts).
/// 1 separates perfectly, 0.5 is chance, below 0.5 ranks them the wrong way round.
/// `None` when either side is empty or a score is not finite.
pub fn auroc(positives: &[f64], negatives: &[f64]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    if positives.iter().chain(negatives).any(|v| !v.is_finite()) {
        return None;
    }
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|&v| (v, true))
        .chain(negatives.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' ranks (1-based, ties given their mean rank).
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * all[i..j].iter().filter(|e| e.1).count() as f64;
        i = j;
    }
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::auroc;

    /// The definition, pair by pair.
    fn by_pairs(pos: &[f64], neg: &[f64]) -> f64 {
        let mut wins = 0.0;
        for &p in pos {
            for &n in neg {
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        wins / (pos.len() * neg.len()) as f64
    }

    #[test]
    fn auroc_is_the_fraction_of_pairs_ranked_right() {
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), Some(1.0));
        assert_eq!(auroc(&[1.0, 2.0], &[3.0, 4.0]), Some(0.0));
        assert_eq!(auroc(&[1.0, 3.0], &[2.0]), Some(0.5));
        assert_eq!(auroc(&[2.0], &[2.0]), Some(0.5));
        // Ties and interleavings against the pairwise count.
        let pos = [1.0, 2.0, 2.0, 5.0, 7.0, 7.0, 9.0];
        let neg = [0.5, 2.0, 3.0, 7.0, 7.0, 8.0];
        assert_eq!(auroc(&pos, &neg), Some(by_pairs(&pos, &neg)));
        assert_eq!(auroc(&[], &[1.0]), None);
        assert_eq!(auroc(&[f64::NAN], &[1.0]), None);
    }
}
